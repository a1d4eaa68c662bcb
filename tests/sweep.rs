//! Sweeps (issue 25) on this machine: a sweep file planned into trials, run by index
//! (as a scheduler's task would) and with `--local -j 2`, killed and resumed, claimed
//! by two workers at once, failing, and reported. The same commands on a real Slurm
//! are tests/sweep_slurm.rs; the Kubernetes manifest is tests/sweep_k8s.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/toy_idx.rs"]
mod toy_idx;

use lenet::checkpoint;
use lenet::internal::run::RunDir;
use lenet::internal::sweep::report::mean_std;
use lenet::internal::sweep::{SweepDir, TrialFailure, TrialResult};

fn lenet(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
    cmd.env_remove("LENET_DATA").env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX");
    cmd.env("HOME", "/nonexistent-home").arg("--data-dir").arg(data);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    text(&o)
}

/// A toy dataset and a sweep file in a fresh folder.
fn setup(sweep: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    toy_idx::write_toy_dataset(&data);
    let file = dir.path().join("sweep.toml");
    std::fs::write(&file, sweep).unwrap();
    (dir, data, file)
}

const BASE: &str = "[base]\ndataset = \"mnist\"\nbatch = 16\nthreads = 1\ndevice = \"cpu\"\noptimizer = \"adam\"\n";

fn results(dir: &Path) -> Vec<TrialResult> {
    let (sweep, trials) = SweepDir::open(dir).unwrap();
    trials.iter().filter_map(|t| sweep.result(t.index)).collect()
}

fn metrics_rows(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().skip(1).filter(|l| !l.is_empty()).count()
}

#[test]
fn a_sweep_is_planned_run_here_and_reported() {
    // An architecture file beside the sweep file, next to a preset.
    let sweep =
        format!("{BASE}epochs = 2\n[grid]\narch = [\"relu\", \"nets/tanh.toml\"]\nlr = [0.003, 0.01]\nseed = [1, 2]\n");
    let (tmp, data, file) = setup(&sweep);
    let nets = tmp.path().join("nets");
    std::fs::create_dir_all(&nets).unwrap();
    let toml = ok(lenet(&data).args(["summary", "--arch", "relu", "--activation", "tanh", "--toml"]));
    std::fs::write(nets.join("tanh.toml"), toml).unwrap();
    let dir = tmp.path().join("sw");

    let out = ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    assert!(out.contains("8 trials"), "{out}");
    let planned = std::fs::read(dir.join("trials.jsonl")).unwrap();
    assert_eq!(planned.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 8);
    assert!(dir.join("arch/tanh.toml").is_file(), "the architecture travels with the sweep");
    // The same file plans the same trials: nothing changes.
    let again = ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    assert!(again.contains("nothing changed"), "{again}");
    assert_eq!(std::fs::read(dir.join("trials.jsonl")).unwrap(), planned);

    let out = ok(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--local", "-j", "2"]));
    assert!(out.contains("8 finished, 0 failed"), "{out}");
    let res = results(&dir);
    assert_eq!(res.len(), 8);
    for r in &res {
        // The result is what the trial's run folder measured.
        let run = dir.join(format!("runs/{:04}", r.index));
        let ck = checkpoint::load(run.join("last.safetensors"), None).unwrap();
        let history: Vec<lenet::trainer::EpochMetrics> = serde_json::from_value(ck.meta.history).unwrap();
        assert_eq!((r.epochs, history.len(), metrics_rows(&run)), (2, 2, 2));
        assert_eq!(r.test_acc, history[1].test_acc);
        assert_eq!(r.train_loss, history[1].train_loss);
    }
    let tanh = res.iter().find(|r| r.name.starts_with("arch=nets/tanh.toml")).unwrap();
    let cfg = std::fs::read_to_string(dir.join(format!("runs/{:04}/config.toml", tanh.index))).unwrap();
    assert!(cfg.contains("tanh"), "the trial trained the file's architecture: {cfg}");
    // Once finished, nothing is left to run.
    let out = ok(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--local", "-j", "2"]));
    assert!(out.contains("0 of 8 trials to run"), "{out}");

    let out = ok(lenet(&data).args(["sweep", "report"]).arg(&dir));
    assert!(out.contains("8 trials: 8 done, 0 failed"), "{out}");
    // Mean ± sample std over the two seeds of each configuration, computed here.
    let mut best = (f64::MIN, String::new());
    for arch in ["relu", "nets/tanh.toml"] {
        for lr in ["0.003", "0.01"] {
            let accs: Vec<f64> = res
                .iter()
                .filter(|r| r.name.starts_with(&format!("arch={arch} lr={lr} ")))
                .map(|r| r.test_acc)
                .collect();
            assert_eq!(accs.len(), 2);
            let (m, s) = mean_std(&accs);
            let cell = format!("{m:.4} ± {:.4}", s.unwrap());
            let row = out.lines().find(|l| l.contains(arch) && l.contains(&format!(" {lr} "))).unwrap();
            assert!(row.contains(&cell) && row.contains("2/2"), "{row} lacks {cell}");
            if m > best.0 {
                best = (m, format!("arch={arch} lr={lr}"));
            }
        }
    }
    assert!(out.contains(&format!("best: {} (test acc {:.4}", best.1, best.0)), "{out}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("data-axis=\"arch\"") && html.contains("data-axis=\"lr\""), "a plot per swept axis");
    assert!(!html.contains("data-axis=\"seed\""), "seeds are averaged, not plotted");
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("every trial finished"));
    assert!(html.contains(&format!("<b>{}</b>", best.1)));
}

/// Epochs of the trials that are killed: many more than the ~1 it takes to kill one.
const EPOCHS: usize = 40;

/// Trial 0 of a one-trial sweep, trained by `sweep run --index 0`.
fn one_trial(epochs: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let sweep = format!("{BASE}epochs = {epochs}\narch = \"relu\"\n[grid]\nlr = [0.003]\n");
    let (tmp, data, file) = setup(&sweep);
    let dir = tmp.path().join("sw");
    ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    (tmp, data, dir)
}

fn wait_for_checkpoint(run: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while (RunDir { path: run.to_path_buf() }).checkpoints().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the trial ended before its first checkpoint");
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_trial_resumes_and_ends_as_an_uninterrupted_one() {
    let (_a, data, reference) = one_trial(EPOCHS);
    ok(lenet(&data).args(["sweep", "run"]).arg(&reference).args(["--index", "0"]));
    let (_b, data, dir) = one_trial(EPOCHS);
    let run = dir.join("runs/0000");
    // SIGKILL once a checkpoint is there: no result, nothing failed, the trial is stopped.
    let mut child =
        lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "0"]).stdout(Stdio::null()).spawn().unwrap();
    wait_for_checkpoint(&run, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(metrics_rows(&run) < EPOCHS, "killed mid-run, not after it");
    let sweep = SweepDir { path: dir.clone() };
    assert!(sweep.result(0).is_none() && sweep.failure(0).is_none());
    let report = ok(lenet(&data).args(["sweep", "report"]).arg(&dir));
    assert!(report.contains("0 done, 0 failed, 0 running, 1 stopped"), "{report}");
    // SIGTERM (what Slurm and Kubernetes send) once it trains again: it saves where it
    // was and exits 130; still no result, nothing failed.
    let mut child =
        lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "0"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen += &line;
        seen.push('\n');
        if line.starts_with("training on") {
            break;
        }
    }
    assert!(seen.contains("resuming"), "the second attempt resumes the killed one: {seen}");
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert_eq!(child.wait().unwrap().code(), Some(130), "{seen}{}", rest.join("\n"));
    assert!(sweep.result(0).is_none() && sweep.failure(0).is_none());
    let out = ok(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "0"]));
    let (r, r0) = (sweep.result(0).unwrap(), SweepDir { path: reference.clone() }.result(0).unwrap());
    assert_eq!(metrics_rows(&run), EPOCHS, "no epoch twice in metrics.csv: {out}");
    let (a, b) = (
        checkpoint::load(run.join("last.safetensors"), None).unwrap(),
        checkpoint::load(reference.join("runs/0000/last.safetensors"), None).unwrap(),
    );
    assert!(a.params.iter().zip(&b.params).all(|(x, y)| x.to_bits() == y.to_bits()), "weights differ");
    assert_eq!((r.test_acc, r.train_loss, r.epochs), (r0.test_acc, r0.train_loss, r0.epochs));
    // Run again: a finished trial is left as it is.
    let before = std::fs::read(sweep.result_file(0)).unwrap();
    let out = ok(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "0"]));
    assert!(out.contains("is finished"), "{out}");
    assert_eq!(std::fs::read(sweep.result_file(0)).unwrap(), before);
}

#[test]
fn two_workers_given_one_index_train_it_once() {
    let (_t, data, dir) = one_trial(4);
    let sweep = SweepDir { path: dir.clone() };
    // This test holds the trial's lock, as a worker would: another worker waits for it.
    std::fs::create_dir_all(dir.join("locks")).unwrap();
    let lock = std::fs::File::create(sweep.lock_file(0)).unwrap();
    lock.lock().unwrap();
    let spawn = || {
        let mut cmd = lenet(&data);
        cmd.args(["sweep", "run"]).arg(&dir).args(["--index", "0"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (a, b) = (spawn(), spawn());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!dir.join("runs/0000").exists(), "a worker trained a trial another holds");
    drop(lock);
    // Now both race for it: one trains, the other waits for it and finds it finished.
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{}\n{}", text(&a), text(&b));
    let (ta, tb) = (text(&a), text(&b));
    assert!(ta.contains("running elsewhere") && tb.contains("running elsewhere"), "{ta}\n---\n{tb}");
    let trained = [&ta, &tb].iter().filter(|t| t.contains("training on")).count();
    let found = [&ta, &tb].iter().filter(|t| t.contains("is finished")).count();
    assert_eq!((trained, found), (1, 1), "{ta}\n---\n{tb}");
    assert_eq!(metrics_rows(&dir.join("runs/0000")), 4);
    assert_eq!(sweep.result(0).unwrap().epochs, 4);
}

#[test]
fn the_index_comes_from_the_scheduler() {
    let sweep = format!("{BASE}epochs = 1\narch = \"relu\"\n[grid]\nseed = [1, 2, 3]\n");
    let (tmp, data, file) = setup(&sweep);
    let dir = tmp.path().join("sw");
    ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    ok(lenet(&data).args(["sweep", "run"]).arg(&dir).env("SLURM_ARRAY_TASK_ID", "2"));
    ok(lenet(&data).args(["sweep", "run"]).arg(&dir).env("JOB_COMPLETION_INDEX", "1"));
    let done: Vec<usize> = results(&dir).iter().map(|r| r.index).collect();
    assert_eq!(done, [1, 2]);
    let o = run(lenet(&data).args(["sweep", "run"]).arg(&dir));
    assert!(!o.status.success() && text(&o).contains("which trial?"), "{}", text(&o));
    let o = run(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "3"]));
    assert!(text(&o).contains("has 3 trials (0 to 2)"), "{}", text(&o));
}

#[test]
fn a_failed_trial_is_recorded_reported_and_not_retried_unasked() {
    // SGD at lr 1e9 diverges: a property of the trial, not of the worker.
    let sweep = "[base]\ndataset = \"mnist\"\nbatch = 16\nthreads = 1\ndevice = \"cpu\"\nepochs = 1\narch = \"relu\"\n\
                 [grid]\nlr = [0.1, 1e9]\n";
    let (tmp, data, file) = setup(sweep);
    let dir = tmp.path().join("sw");
    ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    let o = run(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--index", "1"]));
    assert_eq!(o.status.code(), Some(lenet::internal::sweep::launch::EXIT_TRIAL_FAILED), "{}", text(&o));
    let f: TrialFailure =
        serde_json::from_slice(&std::fs::read(dir.join("results/0001.failed.json")).unwrap()).unwrap();
    assert!(f.error.contains("diverged") || f.error.contains("NaN"), "{}", f.error);
    let out = ok(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--local"]));
    assert!(out.contains("1 of 2 trials to run") && out.contains("--retry-failed"), "{out}");
    let report = ok(lenet(&data).args(["sweep", "report"]).arg(&dir));
    assert!(report.contains("1 done, 1 failed"), "{report}");
    assert!(report.contains("lr=1000000000: failed on"), "{report}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("id=\"missing\"") && html.contains("failed on"));
    let out = run(lenet(&data).args(["sweep", "run"]).arg(&dir).args(["--local", "--retry-failed"]));
    assert!(
        text(&out).contains("1 of 2 trials to run") && text(&out).contains("0 finished, 1 failed"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_sweeps_are_refused_when_planned() {
    let (tmp, data, file) = setup("[grid]\nlr = [0.1, -1]\n");
    let dir = tmp.path().join("sw");
    let plan = |file: &Path| run(lenet(&data).args(["sweep", "plan"]).arg(file).arg("--out").arg(&dir));
    let o = plan(&file);
    assert!(!o.status.success() && text(&o).contains("trial 1 (lr=-1)"), "{}", text(&o));
    assert!(!dir.exists(), "nothing is written for a refused plan");
    std::fs::write(&file, "[base]\ncolour = \"red\"\n").unwrap();
    let o = plan(&file);
    assert!(text(&o).contains("--colour"), "{}", text(&o));
    std::fs::write(&file, "[grid]\narch = [\"missing.toml\"]\n").unwrap();
    let o = plan(&file);
    assert!(text(&o).contains("missing.toml"), "{}", text(&o));
    // A folder with another plan is not overwritten.
    std::fs::write(&file, "[grid]\nlr = [0.1, 0.2]\n").unwrap();
    assert!(plan(&file).status.success());
    std::fs::write(&file, "[grid]\nlr = [0.1, 0.3]\n").unwrap();
    let o = plan(&file);
    assert!(text(&o).contains("holds another sweep's plan"), "{}", text(&o));
}

#[test]
fn the_slurm_script_runs_every_trial_as_an_array_task() {
    let (tmp, data, file) = setup("[grid]\nlr = [0.1, 0.2, 0.3]\nseed = [1, 2]\n");
    let dir = tmp.path().join("sw");
    ok(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    let s = ok(lenet(&data).args(["sweep", "sbatch"]).arg(&dir).args(["--parallel", "3", "--time", "1:00:00"]));
    let abs = std::path::absolute(&dir).unwrap();
    assert!(s.starts_with("#!/bin/bash\n"));
    for line in ["#SBATCH --array=0-5%3", "#SBATCH --requeue", "#SBATCH --time=1:00:00", "#SBATCH --cpus-per-task=2"] {
        assert!(s.lines().any(|l| l == line), "{line} missing:\n{s}");
    }
    assert!(s.contains(&format!("#SBATCH --output={}/logs/slurm-%A_%a.out", abs.display())), "{s}");
    assert!(s.contains(&format!("sweep run {}", abs.display())), "{s}");
    assert!(s.contains("scontrol requeue"), "{s}");
    // bash reads it.
    let check = Command::new("bash").arg("-n").stdin(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    check.stdin.as_ref().unwrap().write_all(s.as_bytes()).unwrap();
    assert!(check.wait_with_output().unwrap().status.success());
}

#[test]
fn the_example_sweep_files_plan() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sweeps");
    let tmp = tempfile::tempdir().unwrap();
    for (file, trials, first) in
        [("d2l-exercises.toml", 24, "activation=sigmoid pool=avg lr=0.1 seed=1"), ("random-adam.toml", 16, "lr=")]
    {
        let dir = tmp.path().join(file);
        let out = ok(lenet(tmp.path()).args(["sweep", "plan"]).arg(examples.join(file)).arg("--out").arg(&dir));
        assert!(out.contains(&format!("{trials} trials")), "{out}");
        let (_, planned) = SweepDir::open(&dir).unwrap();
        assert!(planned[0].name.starts_with(first), "{}", planned[0].name);
        assert!(planned[0].name.ends_with("seed=1"), "the seed last: {}", planned[0].name);
    }
}
