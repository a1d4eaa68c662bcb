//! A run directory: `runs/<name>/` with config.toml, metrics.csv,
//! checkpoints/epoch-NNN.safetensors, best.safetensors and last.safetensors.
//! Every file is written atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::atomic::write_atomic;
use crate::checkpoint::{self, Checkpoint};
use crate::trainer::{EpochMetrics, TrainConfig};
use crate::viz::{self, curves::Curves, curves::CurvesPlot};

pub struct RunDir {
    pub path: PathBuf,
}

/// The checkpoint a run resumes from, and what failed to load beside it.
pub struct Newest {
    pub path: PathBuf,
    /// Its finished epochs, and the batches of the next one when it stopped mid-epoch.
    pub epoch: usize,
    pub batches: usize,
    /// Checkpoints in the folder that do not load, with why.
    pub unreadable: Vec<String>,
}

/// Whether `name` is one of [`RunDir::epoch_checkpoint`]'s files.
fn is_epoch_file(name: &str) -> bool {
    name.starts_with("epoch-") && name.ends_with(".safetensors")
}

impl RunDir {
    /// A new run folder under `root`: `name`, or `<arch>-<dataset>-N` with the
    /// first free N. An explicit name that already holds checkpoints is refused,
    /// so that no earlier run is overwritten.
    pub fn create(root: &Path, name: Option<&str>, config: &TrainConfig) -> Result<Self> {
        let path = match name {
            Some(n) => {
                let run = Self { path: root.join(n) };
                // A run killed before its first checkpoint left nothing to lose: it
                // starts again in place.
                if let Some(newest) = run.checkpoints().into_iter().next() {
                    bail!(
                        "{} already holds a run ({}): continue it with --resume {}, or choose another --name",
                        run.path.display(),
                        newest.display(),
                        run.path.display()
                    );
                }
                run.remove_stale_temp_files();
                run.path
            }
            None => {
                let base = format!("{}-{}", config.arch.name, config.dataset);
                (1..).map(|i| root.join(format!("{base}-{i}"))).find(|p| !p.exists()).expect("unbounded")
            }
        };
        std::fs::create_dir_all(path.join("checkpoints"))
            .map_err(|e| anyhow::anyhow!("cannot create run folder {}: {e}", path.display()))?;
        Ok(Self { path })
    }

    /// The checkpoint files in the folder, last.safetensors first, then the epochs'
    /// newest first (best.safetensors is a copy of one of them).
    pub fn checkpoints(&self) -> Vec<PathBuf> {
        let mut epochs: Vec<PathBuf> = std::fs::read_dir(self.path.join("checkpoints"))
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.file_name().is_some_and(|n| is_epoch_file(&n.to_string_lossy())))
                    .collect()
            })
            .unwrap_or_default();
        epochs.sort();
        epochs.reverse();
        let last = self.last();
        last.is_file().then_some(last).into_iter().chain(epochs).collect()
    }

    /// The checkpoint to resume from: the one furthest on (finished epochs, then
    /// batches of an interrupted one) among those that load; a kill between writing
    /// an epoch's file and `last` leaves the epoch's the newer. Those that do not load
    /// are listed beside it (an error says what the folder holds when none loads).
    pub fn newest_checkpoint(&self) -> Result<Newest> {
        let mut best: Option<((usize, usize), PathBuf)> = None;
        let mut unreadable = Vec::new();
        for path in self.checkpoints() {
            match checkpoint::load(&path, None) {
                Ok(ck) => {
                    let batches = ck.meta.partial.get("batches_done").and_then(|b| b.as_u64()).unwrap_or(0) as usize;
                    let at = (ck.meta.epoch, batches);
                    if best.as_ref().is_none_or(|(b, _)| at > *b) {
                        best = Some((at, path));
                    }
                }
                Err(e) => unreadable.push(e.to_string()),
            }
        }
        match best {
            Some(((epoch, batches), path)) => Ok(Newest { path, epoch, batches, unreadable }),
            None if unreadable.is_empty() => bail!("{} holds no checkpoint to resume from", self.path.display()),
            None => bail!("no checkpoint in {} loads: {}", self.path.display(), unreadable.join("; ")),
        }
    }

    /// Remove the temp files of this run's writes that a kill interrupted
    /// (`.NAME.XXXXXX.tmp` beside a file the run writes, see [`crate::atomic`]): never
    /// a finished file, nor another program's.
    pub fn remove_stale_temp_files(&self) {
        const OURS: [&str; 8] = [
            "config.toml",
            "metrics.csv",
            "last.safetensors",
            "best.safetensors",
            "curves.csv",
            "curves.svg",
            "curves.png",
            "confusion.png",
        ];
        let of = |name: &str| -> Option<String> {
            let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
            let (dest, random) = inner.rsplit_once('.')?;
            (random.len() == 6).then(|| dest.to_string())
        };
        for (dir, in_checkpoints) in [(self.path.clone(), false), (self.path.join("checkpoints"), true)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Some(dest) = of(&entry.file_name().to_string_lossy()) else { continue };
                let ours = if in_checkpoints { is_epoch_file(&dest) } else { OURS.contains(&dest.as_str()) };
                if ours && entry.path().is_file() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// The run folder a checkpoint belongs to: `<run>/checkpoints/x` or `<run>/x`.
    pub fn of_checkpoint(ckpt: &Path) -> Self {
        let dir = ckpt.parent().unwrap_or(Path::new("."));
        let path = if dir.file_name().is_some_and(|n| n == "checkpoints") { dir.parent().unwrap_or(dir) } else { dir };
        Self { path: path.to_path_buf() }
    }

    pub fn epoch_checkpoint(&self, epoch: usize) -> PathBuf {
        self.path.join("checkpoints").join(format!("epoch-{epoch:03}.safetensors"))
    }
    pub fn best(&self) -> PathBuf {
        self.path.join("best.safetensors")
    }
    pub fn last(&self) -> PathBuf {
        self.path.join("last.safetensors")
    }

    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        write_atomic(&self.path.join("config.toml"), config.to_toml().as_bytes())?;
        Ok(())
    }

    pub fn write_metrics(&self, history: &[EpochMetrics]) -> Result<()> {
        let mut csv = String::from(EpochMetrics::CSV_HEADER);
        csv.push('\n');
        for m in history {
            csv += &m.csv_row();
            csv.push('\n');
        }
        write_atomic(&self.path.join("metrics.csv"), csv.as_bytes())?;
        Ok(())
    }

    /// The run's name: its folder's.
    pub fn name(&self) -> String {
        let abs = self.path.canonicalize().unwrap_or_else(|_| self.path.clone());
        abs.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    /// curves.csv (the data), curves.svg and curves.png (d2l's plot), for
    /// the config's planned epochs; rewritten after every epoch.
    pub fn write_curves(&self, history: &[EpochMetrics], config: &TrainConfig) -> Result<()> {
        let curves = Curves::from_history(&self.name(), history, config.epochs);
        write_atomic(&self.path.join("curves.csv"), curves.to_csv().as_bytes())?;
        let plot = CurvesPlot::for_run(&curves, Some(config));
        viz::save(&plot, &self.path.join("curves.svg"))?;
        viz::save(&plot, &self.path.join("curves.png"))?;
        Ok(())
    }

    /// Save `last` alone: where an interrupted epoch stopped.
    pub fn save_last(&self, ck: &Checkpoint) -> Result<()> {
        let bytes = checkpoint::to_bytes(ck).map_err(anyhow::Error::msg)?;
        write_atomic(&self.last(), &bytes)?;
        Ok(())
    }

    /// Save the epoch's checkpoint, `last`, and `best` when it is the best.
    pub fn save_epoch(&self, ck: &Checkpoint, is_best: bool) -> Result<()> {
        let bytes = checkpoint::to_bytes(ck).map_err(anyhow::Error::msg)?;
        write_atomic(&self.epoch_checkpoint(ck.meta.epoch), &bytes)?;
        write_atomic(&self.last(), &bytes)?;
        if is_best {
            write_atomic(&self.best(), &bytes)?;
        }
        Ok(())
    }
}
