//! Sweeps: many training runs planned from one file, run one trial per scheduler task
//! (a Slurm array task, a Kubernetes Indexed Job pod, or a local worker) and reported
//! together.
//!
//! A sweep folder, on a filesystem every worker sees:
//!
//! ```text
//! sweep.toml            the sweep file as planned
//! trials.jsonl          one trial per line: index, name, swept values, train options
//! arch/                 copies of the architecture files the trials name
//! runs/0003/            trial 3's run folder (config, metrics, checkpoints, curves)
//! results/0003.json     trial 3's result, written atomically once it finished
//! results/0003.failed.json   why trial 3 failed (a retry removes it)
//! locks/0003.lock       held (flock) by the worker running trial 3
//! logs/                 workers' output
//! ```
//!
//! A trial is claimed by locking its lock file, so two workers given the same index
//! never both train it; the kernel drops the lock when a worker dies, so a requeued
//! or restarted task takes the trial over and resumes it from its newest checkpoint.

pub mod launch;
pub mod plan;
pub mod report;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::atomic::write_atomic;
use crate::checkpoint;
use crate::run::RunDir;
use crate::trainer::{best_epoch, mean_examples_per_sec, EpochMetrics, TrainConfig};

pub use plan::{SweepFile, Trial};

/// A trial that failed on its own account (it diverged): recorded in
/// `results/NNNN.failed.json`; `lenet sweep run` exits with
/// [`launch::EXIT_TRIAL_FAILED`] so a scheduler does not retry it.
#[derive(Debug, thiserror::Error)]
#[error("trial {index} failed: {error}")]
pub struct TrialFailed {
    pub index: usize,
    pub error: String,
}

/// The local runner was stopped by a signal; each trial saved where it was.
#[derive(Debug, thiserror::Error)]
#[error("the sweep was stopped; its trials resume from their checkpoints")]
pub struct SweepStopped;

/// A sweep folder (see the module doc).
pub struct SweepDir {
    pub path: PathBuf,
}

/// What a finished trial measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub index: usize,
    pub name: String,
    pub swept: Map<String, Value>,
    /// Epochs trained.
    pub epochs: usize,
    /// The last epoch's running train loss, train accuracy, validation and test accuracy.
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_acc: Option<f64>,
    pub test_acc: f64,
    /// The epoch of best.safetensors and its accuracy (validation, else test).
    pub best_epoch: usize,
    pub best_acc: f64,
    /// Wall seconds of all epochs (evaluation included), and training examples per second.
    pub seconds: f64,
    pub examples_per_sec: f64,
    /// The machine that finished it, and when (seconds since 1970).
    pub host: String,
    pub finished_at: u64,
}

/// Why a trial failed (a diverged run, bad settings, missing data).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialFailure {
    pub index: usize,
    pub name: String,
    pub swept: Map<String, Value>,
    pub error: String,
    /// Whether running it again may succeed (a full disk, missing data), unlike a
    /// trial that diverged.
    #[serde(default)]
    pub retry: bool,
    pub host: String,
    pub failed_at: u64,
}

/// Where a trial stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Done(Box<TrialResult>),
    Failed(Box<TrialFailure>),
    /// A worker holds its lock now (who: host, pid, since).
    Running(String),
    /// Started, not running: killed or stopped, to be resumed (epochs done so far).
    Stopped(usize),
    Pending,
}

/// The lock on one trial: while it lives no other worker runs the trial.
pub struct Claim {
    _file: File,
    pub index: usize,
}

pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TrialResult {
    /// The result of a run's history (`history`: every epoch, in order).
    pub fn of(trial: &Trial, history: &[EpochMetrics]) -> Result<Self> {
        let last = history.last().with_context(|| format!("trial {} trained no epoch", trial.index))?;
        let best = best_epoch(history);
        Ok(Self {
            index: trial.index,
            name: trial.name.clone(),
            swept: trial.swept.clone(),
            epochs: last.epoch,
            train_loss: last.train_loss,
            train_acc: last.train_acc,
            val_acc: last.val_acc,
            test_acc: last.test_acc,
            best_epoch: best.epoch,
            best_acc: best.selection_acc(),
            seconds: history.iter().map(|m| m.seconds).sum(),
            examples_per_sec: mean_examples_per_sec(history),
            host: hostname(),
            finished_at: now(),
        })
    }
}

impl SweepDir {
    pub fn trials_file(&self) -> PathBuf {
        self.path.join("trials.jsonl")
    }
    fn stem(index: usize) -> String {
        format!("{index:04}")
    }
    /// Trial `index`'s run folder.
    pub fn run_dir(&self, index: usize) -> PathBuf {
        self.path.join("runs").join(Self::stem(index))
    }
    pub fn result_file(&self, index: usize) -> PathBuf {
        self.path.join("results").join(format!("{}.json", Self::stem(index)))
    }
    pub fn failure_file(&self, index: usize) -> PathBuf {
        self.path.join("results").join(format!("{}.failed.json", Self::stem(index)))
    }
    pub fn lock_file(&self, index: usize) -> PathBuf {
        self.path.join("locks").join(format!("{}.lock", Self::stem(index)))
    }
    /// Where a local worker writes trial `index`'s output.
    pub fn log_file(&self, index: usize) -> PathBuf {
        self.path.join("logs").join(format!("{}.log", Self::stem(index)))
    }

    /// Write a planned sweep into `out`: the sweep file, its architecture files and
    /// trials.jsonl. Planning the same file again changes nothing; a folder holding
    /// another plan is refused, so no finished trial is ever paired with a new config.
    /// Returns whether the plan was new.
    pub fn create(out: &Path, source: &Path, file: &SweepFile) -> Result<(Self, Vec<Trial>, bool)> {
        let trials = file.trials();
        let mut jsonl = String::new();
        for t in &trials {
            jsonl += &serde_json::to_string(t)?;
            jsonl.push('\n');
        }
        let dir = Self { path: out.to_path_buf() };
        let trials_file = dir.trials_file();
        if let Ok(existing) = fs::read_to_string(&trials_file) {
            if existing == jsonl {
                return Ok((dir, trials, false));
            }
            bail!(
                "{} holds another sweep's plan ({} trials): plan into a new folder, or delete it first",
                out.display(),
                existing.lines().count()
            );
        }
        for (written, found) in file.arch_files() {
            let text = fs::read_to_string(&found)
                .with_context(|| format!("arch = \"{written}\": cannot read {}", found.display()))?;
            crate::spec::Spec::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("arch = \"{written}\" ({}): {e}", found.display()))?;
            let copy = out.join(plan::arch_copy(&written));
            if let Ok(other) = fs::read_to_string(&copy) {
                if other != text {
                    bail!("two architecture files are both called {}: rename one", copy.display());
                }
            }
            write_atomic(&copy, text.as_bytes())?;
        }
        let source_text = fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
        write_atomic(&out.join("sweep.toml"), &source_text)?;
        // Last: a folder with trials.jsonl is a whole plan.
        write_atomic(&trials_file, jsonl.as_bytes())?;
        Ok((dir, trials, true))
    }

    /// Open a planned sweep folder and read its trials.
    pub fn open(path: &Path) -> Result<(Self, Vec<Trial>)> {
        let dir = Self { path: path.to_path_buf() };
        let file = dir.trials_file();
        let text = fs::read_to_string(&file).with_context(|| {
            format!("{} is not a sweep folder (no trials.jsonl): make one with `lenet sweep plan`", path.display())
        })?;
        let mut trials = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t: Trial = serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not a trial", file.display(), i + 1))?;
            if t.index != i {
                bail!("{}: line {} holds trial {}", file.display(), i + 1, t.index);
            }
            trials.push(t);
        }
        if trials.is_empty() {
            bail!("{} lists no trials", file.display());
        }
        Ok((dir, trials))
    }

    /// The swept axes in the sweep file's order (from its copy in the folder).
    pub fn axes(&self, trials: &[Trial]) -> Vec<String> {
        let from_file = SweepFile::load(&self.path.join("sweep.toml")).map(|f| f.axes()).unwrap_or_default();
        let mut axes: Vec<String> =
            from_file.into_iter().filter(|a| trials.iter().any(|t| t.swept.contains_key(a))).collect();
        for t in trials {
            for k in t.swept.keys() {
                if !axes.contains(k) {
                    axes.push(k.clone());
                }
            }
        }
        axes
    }

    /// Lock trial `index` for this process. When another worker holds it, `waiting`
    /// hears who, and the call waits until that worker is done or dead (the kernel then
    /// drops its lock): a trial is never trained by two at once, nor given up while its
    /// holder may still fail.
    pub fn claim(&self, index: usize, waiting: impl FnOnce(&str)) -> Result<Claim> {
        let path = self.lock_file(index);
        let locks = self.path.join("locks");
        fs::create_dir_all(&locks).with_context(|| format!("cannot create {}", locks.display()))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                waiting(holder.trim());
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        // Who holds it, for the other workers' messages and the report.
        let holder = format!("{} pid {} since {}", hostname(), std::process::id(), now());
        (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(holder.as_bytes())
        })()
        .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Claim { _file: file, index })
    }

    /// Who runs trial `index` now, if anyone (a lock held by a live worker).
    fn holder(&self, index: usize) -> Option<String> {
        let mut file = File::open(self.lock_file(index)).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Some(holder.trim().to_string())
            }
        }
    }

    pub fn result(&self, index: usize) -> Option<TrialResult> {
        serde_json::from_slice(&fs::read(self.result_file(index)).ok()?).ok()
    }

    pub fn failure(&self, index: usize) -> Option<TrialFailure> {
        serde_json::from_slice(&fs::read(self.failure_file(index)).ok()?).ok()
    }

    pub fn status(&self, trial: &Trial) -> Status {
        if let Some(r) = self.result(trial.index) {
            return Status::Done(Box::new(r));
        }
        if let Some(who) = self.holder(trial.index) {
            return Status::Running(who);
        }
        if let Some(f) = self.failure(trial.index) {
            return Status::Failed(Box::new(f));
        }
        let run = RunDir { path: self.run_dir(trial.index) };
        match run.checkpoints().is_empty() {
            true => Status::Pending,
            false => Status::Stopped(run.newest_checkpoint().map_or(0, |n| n.epoch)),
        }
    }

    /// The finished training of trial `index`'s run folder (its config and history),
    /// if it trained every epoch: a worker killed after training but before writing
    /// the result leaves one.
    pub fn finished_run(&self, index: usize) -> Option<(TrainConfig, Vec<EpochMetrics>)> {
        let run = RunDir { path: self.run_dir(index) };
        let newest = run.newest_checkpoint().ok()?;
        let ck = checkpoint::load(&newest.path, None).ok()?;
        let config: TrainConfig = serde_json::from_value(ck.meta.config).ok()?;
        let history: Vec<EpochMetrics> = serde_json::from_value(ck.meta.history).ok()?;
        (ck.meta.partial.is_null() && ck.meta.epoch >= config.epochs && history.len() == ck.meta.epoch)
            .then_some((config, history))
    }

    /// Write a finished trial's result (atomically) and clear an earlier failure.
    pub fn record_result(&self, _claim: &Claim, result: &TrialResult) -> Result<()> {
        write_atomic(&self.result_file(result.index), serde_json::to_string_pretty(result)?.as_bytes())?;
        let _ = fs::remove_file(self.failure_file(result.index));
        Ok(())
    }

    /// Record why a trial failed (`retry`: whether another attempt may succeed); a
    /// later success removes it.
    pub fn record_failure(&self, _claim: &Claim, trial: &Trial, error: &str, retry: bool) -> Result<()> {
        let failure = TrialFailure {
            index: trial.index,
            name: trial.name.clone(),
            swept: trial.swept.clone(),
            error: error.to_string(),
            retry,
            host: hostname(),
            failed_at: now(),
        };
        write_atomic(&self.failure_file(trial.index), serde_json::to_string_pretty(&failure)?.as_bytes())?;
        Ok(())
    }
}
