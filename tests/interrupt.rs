//! Training stopped at any moment loses nothing (issue 24, item 1): `lenet train` killed
//! with SIGKILL many times, some kills landing inside a checkpoint write, or stopped with
//! SIGINT (Ctrl-C) mid-epoch, leaves checkpoints that all load, resumes from the newest
//! with `--resume RUN`, and finishes with the uninterrupted run's weights, bit for bit.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/toy_idx.rs"]
mod toy_idx;

use lenet::checkpoint::{self, Checkpoint};
use lenet::internal::run::RunDir;
use lenet::trainer::EpochMetrics;

const EPOCHS: &str = "12";

fn saved(run: &Path) -> bool {
    !RunDir { path: run.to_path_buf() }.checkpoints().is_empty()
}

fn lenet(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
    cmd.env_remove("LENET_DATA").env("HOME", "/nonexistent-home").arg("--data-dir").arg(data);
    cmd
}

/// The command a user gives: the run's own first command while nothing is saved (it
/// starts again in place), `--resume RUN` once a checkpoint is there.
fn train(data: &Path, run: &Path) -> Command {
    let mut cmd = lenet(data);
    cmd.arg("train");
    if !saved(run) {
        cmd.args(["--dataset", "mnist", "--arch", "relu", "--optimizer", "adam", "--lr", "0.003"]);
        cmd.args(["--batch", "16", "--threads", "1", "--device", "cpu", "--epochs", EPOCHS, "--run-dir"]);
    } else {
        cmd.arg("--resume");
    }
    cmd.arg(run).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn finish(child: Child) -> (std::process::ExitStatus, String, String) {
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every checkpoint in the run folder loads, and nothing but temp files of an
/// interrupted write lies beside them.
fn all_checkpoints_load(run: &Path) -> Vec<Checkpoint> {
    let files = RunDir { path: run.to_path_buf() }.checkpoints();
    files.iter().map(|f| checkpoint::load(f, None).unwrap_or_else(|e| panic!("{}: {e}", f.display()))).collect()
}

fn temp_files(run: &Path) -> Vec<PathBuf> {
    [run.to_path_buf(), run.join("checkpoints")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tmp"))
        .collect()
}

fn history(ck: &Checkpoint) -> Vec<EpochMetrics> {
    serde_json::from_value(ck.meta.history.clone()).unwrap()
}

/// The finished run equals the uninterrupted one: weights and optimizer state bit for
/// bit, and every epoch's measured losses and accuracies.
fn assert_same_run(run: &Path, reference: &Path) {
    let (a, b) = (checkpoint::load(run.join("last.safetensors"), None).unwrap(), reference_last(reference));
    assert!(a.params.iter().zip(&b.params).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ");
    assert_eq!(a.optim, b.optim, "optimizer state differs");
    assert!(a.meta.partial.is_null());
    let (ha, hb) = (history(&a), history(&b));
    assert_eq!(ha.len(), hb.len());
    for (x, y) in ha.iter().zip(&hb) {
        let key = |m: &EpochMetrics| (m.epoch, m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.lr);
        assert_eq!(key(x), key(y), "epoch {} measured otherwise", x.epoch);
        assert_eq!(x.points.len(), y.points.len());
    }
    assert!(temp_files(run).is_empty(), "left behind: {:?}", temp_files(run));
}

fn reference_last(reference: &Path) -> Checkpoint {
    checkpoint::load(reference.join("last.safetensors"), None).unwrap()
}

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    root: PathBuf,
    reference: PathBuf,
    /// How long the uninterrupted run took.
    wall: Duration,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    toy_idx::write_toy_dataset(&data);
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let (status, out, err) = finish(train(&data, &reference).spawn().unwrap());
    assert!(status.success(), "{out}\n{err}");
    let wall = started.elapsed();
    Setup { root: dir.path().to_path_buf(), _dir: dir, data, reference, wall }
}

#[test]
fn killed_at_any_moment_resumes_to_the_same_bits() {
    let s = setup();
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let (mut kills, mut in_write, mut restarts_in_place, mut runs) = (0, 0, 0, 0);
    // Kills up to a bit past the reference's time for one epoch and its start-up, so
    // that each try gets about one epoch further, or not. A run that finishes before
    // the 50th kill is checked, and the kills go on with a fresh one.
    let per_epoch = s.wall / EPOCHS.parse::<u32>().unwrap();
    let window = per_epoch * 2;
    let mut run;
    loop {
        run = s.root.join(format!("killed-{runs}"));
        runs += 1;
        for attempt in 0.. {
            // Given its first command again after a kill that came before any checkpoint.
            restarts_in_place += usize::from(attempt > 0 && !saved(&run));
            let mut child = train(&s.data, &run).spawn().unwrap();
            if kills >= 50 {
                let (status, out, err) = finish(child);
                assert!(status.success(), "{out}\n{err}");
                break;
            }
            let started = Instant::now();
            if kills % 3 == 2 {
                // Timed into a checkpoint write: as soon as a temp file shows.
                while started.elapsed() < window * 4 && temp_files(&run).is_empty() {
                    std::hint::spin_loop();
                }
            } else if attempt < 2 {
                // Before the first checkpoint.
                std::thread::sleep(per_epoch.mul_f64(rng.gen_range(0.0..0.5)));
            } else {
                std::thread::sleep(window.mul_f64(rng.gen_range(0.0..1.0)));
            }
            let _ = child.kill();
            let (status, out, err) = finish(child);
            if status.success() {
                break; // it finished before the kill
            }
            assert!(status.code().is_none(), "died of the kill, not of an error:\n{out}\n{err}");
            kills += 1;
            in_write += usize::from(!temp_files(&run).is_empty());
            all_checkpoints_load(&run);
        }
        assert_same_run(&run, &s.reference);
        if kills >= 50 {
            break;
        }
    }
    println!(
        "{kills} kills over {runs} runs ({in_write} inside a write, {restarts_in_place} restarts before the first \
         checkpoint); reference run {:.2} s",
        s.wall.as_secs_f64()
    );
    assert!(in_write >= 5, "only {in_write} kills landed inside a checkpoint write");
    assert!(restarts_in_place >= 2, "only {restarts_in_place} runs killed before their first checkpoint");

    // The first command again, over a folder that holds a run: refused, naming files
    // that are there.
    let mut cmd = lenet(&s.data);
    cmd.args(["train", "--dataset", "mnist", "--arch", "relu", "--epochs", "1", "--run-dir"]).arg(&run);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("already holds a run"), "{err}");
    assert!(err.contains(&format!("--resume {}", run.display())), "{err}");
    for word in err.split_whitespace().map(|w| w.trim_matches(|c| "(),:".contains(c))) {
        if word.contains("safetensors") || word.starts_with(run.to_str().unwrap()) {
            assert!(Path::new(word).exists(), "the message names {word}, which is not there: {err}");
        }
    }
}

/// Send SIGINT once the run has started training, after `delay`.
fn interrupt_after(child: &mut Child, delay: Duration) -> Vec<String> {
    // "training on …" is printed once Ctrl-C is handled.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            return lines; // it ended before training
        }
        lines.push(line.clone());
        if line.starts_with("training on") {
            break;
        }
    }
    std::thread::sleep(delay);
    let sent = Command::new("kill").args(["-s", "INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    for line in stdout.lines() {
        lines.push(line.unwrap());
    }
    lines
}

#[test]
fn ctrl_c_stops_at_a_batch_saves_and_resumes_to_the_same_bits() {
    let s = setup();
    let run = s.root.join("stopped");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let per_epoch = s.wall / EPOCHS.parse::<u32>().unwrap();
    let (mut stops, mut mid_epoch_resumes) = (0, 0);
    loop {
        let mut child = train(&s.data, &run).spawn().unwrap();
        let lines = interrupt_after(&mut child, per_epoch.mul_f64(rng.gen_range(0.0..1.5)));
        let (status, _, err) = finish(child);
        let out = lines.concat();
        mid_epoch_resumes += usize::from(out.contains("after its batch"));
        if status.success() {
            break;
        }
        assert_eq!(status.code(), Some(130), "stopped by Ctrl-C:\n{out}\n{err}");
        stops += 1;
        assert!(err.contains("training stopped at epoch"), "{err}");
        assert!(err.contains(&format!("to go on: lenet train --resume {}", run.display())), "{err}");
        let last = checkpoint::load(run.join("last.safetensors"), None).unwrap();
        let done: usize = last.meta.partial.get("batches_done").and_then(|b| b.as_u64()).unwrap_or(0) as usize;
        assert!(
            // Inside an epoch, or at its end (all of the toy set's 600 / 16 batches).
            err.contains(&format!("after batch {done} of")) || err.contains("after batch 38 of 38"),
            "the message says where it stopped: {err} (saved: epoch {}, batch {done})",
            last.meta.epoch
        );
        all_checkpoints_load(&run);
        assert!(stops < 40, "it never finishes");
    }
    println!("{stops} stops, {mid_epoch_resumes} resumed inside an epoch");
    assert!(stops >= 5, "only {stops} stops");
    assert!(mid_epoch_resumes >= 3, "only {mid_epoch_resumes} resumes inside an epoch");
    assert_same_run(&run, &s.reference);
}
