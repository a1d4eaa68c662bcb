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

impl RunDir {
    /// A new run folder under `root`: `name`, or `<arch>-<dataset>-N` with the
    /// first free N. An explicit name that already holds checkpoints is refused,
    /// so that no earlier run is overwritten.
    pub fn create(root: &Path, name: Option<&str>, config: &TrainConfig) -> Result<Self> {
        let path = match name {
            Some(n) => {
                let p = root.join(n);
                if p.join("checkpoints").exists() || p.join("last.safetensors").exists() {
                    bail!(
                        "{} already holds a run: continue it with --resume {}, or choose another --name",
                        p.display(),
                        p.join("last.safetensors").display()
                    );
                }
                p
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
