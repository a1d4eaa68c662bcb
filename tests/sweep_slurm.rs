//! A sweep on a real Slurm (issue 25, item 5): a single-node cluster from Debian's
//! packages (munged, slurmctld and slurmd started by scripts/slurm-local, no systemd)
//! runs a 2×2×2 sweep as an 8-task job array from `lenet sweep sbatch`; one task,
//! cancelled with `scancel` mid-run, requeues itself, resumes from its checkpoint and
//! finishes with the weights of an uninterrupted run; another gets the time limit's
//! warning (USR1 to the batch shell) and does the same; the report aggregates all 8 with
//! no result twice.
//!
//! Needs root (the daemons) and the packages (`scripts/slurm-local install`, which
//! scripts/test runs as root and in CI, where LENET_REQUIRE_SLURM=1 makes a missing
//! Slurm a failure instead of a skip).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "common/toy_idx.rs"]
mod toy_idx;

use lenet::checkpoint;
use lenet::internal::run::RunDir;
use lenet::internal::sweep::SweepDir;

/// Enough that the cancelled task is mid-run (an epoch of the toy data takes ~0.1 s).
const EPOCHS: usize = 50;

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn lenet(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet"));
    cmd.env_remove("LENET_DATA").env_remove("SLURM_ARRAY_TASK_ID").env_remove("JOB_COMPLETION_INDEX");
    cmd.arg("--data-dir").arg(data);
    cmd
}

/// Slurm's daemons up, or why this machine cannot have them.
fn slurm() -> Result<(), String> {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !root {
        return Err("not root: slurmctld and slurmd need it".into());
    }
    if Command::new("sbatch").arg("--version").output().is_err() {
        return Err("no sbatch: run scripts/slurm-local install".into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local");
    let o = Command::new(&script).arg("start").output().map_err(|e| format!("{}: {e}", script.display()))?;
    match o.status.success() {
        true => Ok(()),
        false => Err(format!("scripts/slurm-local start failed: {}", text(&o))),
    }
}

/// Cancels the job however the test ends, so no task outlives it.
struct Job(String);
impl Drop for Job {
    fn drop(&mut self) {
        // A task whose trap requeues it needs a second cancel; KILL skips the trap.
        let _ = Command::new("scancel").args(["--full", "--signal=KILL", &self.0]).output();
        let _ = Command::new("scancel").arg(&self.0).output();
    }
}

fn squeue(job: &str) -> String {
    sh(Command::new("squeue").args(["-h", "-j", job, "-o", "%i %T"]))
}

fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool, job: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(secs), "{what}: not after {secs} s; the queue:\n{}", squeue(job));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_8_task_array_survives_a_scancel_and_reports() {
    if let Err(why) = slurm() {
        if std::env::var_os("LENET_REQUIRE_SLURM").is_some() {
            panic!("LENET_REQUIRE_SLURM is set, but: {why}");
        }
        eprintln!("skipping the Slurm test: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    toy_idx::write_toy_dataset(&data);
    let sweep = format!(
        "[base]\ndataset = \"mnist\"\nbatch = 16\ndevice = \"cpu\"\noptimizer = \"adam\"\nepochs = {EPOCHS}\n\
         [grid]\narch = [\"relu\", \"d2l\"]\nlr = [0.003, 0.01]\nseed = [1, 2]\n"
    );
    let file = tmp.path().join("sweep.toml");
    std::fs::write(&file, sweep).unwrap();
    let dir = tmp.path().join("sw");
    sh(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&dir));
    let script = sh(lenet(&data).args(["sweep", "sbatch"]).arg(&dir).args(["--cpus-per-task", "1"]));
    let script_file = tmp.path().join("sweep.sbatch");
    std::fs::write(&script_file, &script).unwrap();
    let job = sh(Command::new("sbatch").arg("--parsable").arg(&script_file)).trim().to_string();
    let job = Job(job.split(';').next().unwrap().to_string());
    let victim = format!("{}_1", job.0);
    let warned = format!("{}_2", job.0);

    // Cancel task 1 once it has saved a checkpoint, mid-run.
    let run1 = dir.join("runs/0001");
    wait_until("task 1's first checkpoint", 180, || !RunDir { path: run1.clone() }.checkpoints().is_empty(), &job.0);
    sh(Command::new("scancel").arg(&victim));
    // Task 2 hears what the script asks Slurm to send 120 s before a time limit.
    let run2 = dir.join("runs/0002");
    wait_until("task 2's first checkpoint", 180, || !RunDir { path: run2.clone() }.checkpoints().is_empty(), &job.0);
    // scancel's status says nothing here: the signal reaches the batch shell, which requeues
    // the task; scancel, still retrying, then finds the job "in transitional state" and
    // ends with "already completing or completed" (status 1) once the old run is gone.
    // What the task did is checked below, from its log and `scontrol`.
    let signalled = Command::new("scancel").args(["--batch", "--signal=USR1", &warned]).output().unwrap();
    let sweep = SweepDir { path: dir.clone() };
    wait_until("all 8 results", 600, || (0..8).all(|i| sweep.result_file(i).is_file()), &job.0);
    wait_until("the array to leave the queue", 60, || squeue(&job.0).trim().is_empty(), &job.0);

    let log = std::fs::read_to_string(dir.join(format!("logs/slurm-{}.out", victim))).unwrap();
    assert!(log.contains("back in the queue"), "task 1 did not requeue itself:\n{log}");
    assert!(log.contains("resuming"), "task 1 started over instead of resuming:\n{log}");
    assert!(log.contains("training stopped at epoch"), "task 1 was not stopped mid-run:\n{log}");
    let shown = sh(Command::new("scontrol").args(["show", "job", &victim]));
    assert!(shown.contains("Restarts=1"), "{shown}");
    let log = std::fs::read_to_string(dir.join(format!("logs/slurm-{}.out", warned))).unwrap();
    for said in ["training stopped at epoch", "back in the queue", "resuming"] {
        assert!(
            log.contains(said),
            "task 2, warned of its time limit, never said '{said}':\n{log}\nscancel: {}",
            text(&signalled)
        );
    }
    // scancel retries a signal the job cannot take while it is requeued, so the rerun may
    // be stopped and requeued once more: fine, it resumes again.
    let shown = sh(Command::new("scontrol").args(["show", "job", &warned]));
    assert!(!shown.contains("Restarts=0"), "{shown}\n{log}");

    // No result twice, none failed, no epoch trained twice.
    let results: Vec<_> = std::fs::read_dir(dir.join("results")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(results.len(), 8, "{results:?}");
    for i in 0..8 {
        let run = sweep.run_dir(i);
        let rows = std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().skip(1).count();
        assert_eq!(rows, EPOCHS, "trial {i}");
        assert_eq!(sweep.result(i).unwrap().epochs, EPOCHS);
    }
    // The cancelled trial ends where an uninterrupted run of it ends, bit for bit.
    let reference = tmp.path().join("reference");
    sh(lenet(&data).args(["sweep", "plan"]).arg(&file).arg("--out").arg(&reference));
    let threads = std::fs::read_to_string(run1.join("config.toml")).unwrap();
    assert!(threads.contains("threads = 1"), "the task ran on its one CPU: {threads}");
    sh(lenet(&data).args(["sweep", "run"]).arg(&reference).args(["--index", "1", "--threads", "1"]));
    let last = |run: PathBuf| checkpoint::load(run.join("last.safetensors"), None).unwrap().params;
    let (a, b) = (last(run1.clone()), last(reference.join("runs/0001")));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "the resumed trial's weights differ");

    let report = sh(lenet(&data).args(["sweep", "report"]).arg(&dir));
    assert!(report.contains("8 trials: 8 done, 0 failed"), "{report}");
    assert_eq!(report.matches("2/2").count(), 4, "four configurations, two seeds each:\n{report}");
    assert!(report.contains("best: arch="), "{report}");
}
