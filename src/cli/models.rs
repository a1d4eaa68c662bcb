//! `lenet models`: the trained models inside the binary (src/models/), and the
//! argument that takes a checkpoint file or a shipped model's name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use lenet::checkpoint;
use lenet::data;
use lenet::internal::atomic::write_atomic;
use lenet::internal::engine::cpu::CpuEngine;
use lenet::models::{self, model_of, ModelCard, ModelSource};
use lenet::network::Network;
use lenet::trainer::TrainConfig;

/// The model a command works on: a checkpoint file or a shipped model's name, or
/// `--model NAME`.
#[derive(Args, Debug)]
pub struct ModelArg {
    /// The checkpoint (.safetensors), or the name of a shipped model (`lenet models`).
    #[arg(value_name = "CKPT|MODEL", required_unless_present = "model")]
    pub checkpoint: Option<String>,
    /// A shipped model, by name (`lenet models` lists them).
    #[arg(long, value_name = "NAME", conflicts_with = "checkpoint")]
    pub model: Option<String>,
}

impl ModelArg {
    pub fn source(&self) -> Result<ModelSource> {
        source(self.checkpoint.as_deref(), self.model.as_deref())
    }
}

/// `--model NAME` (a shipped model), else the file or name `arg`.
pub fn source(arg: Option<&str>, model: Option<&str>) -> Result<ModelSource> {
    match (model, arg) {
        (Some(name), _) => Ok(ModelSource::Shipped(models::find(name)?)),
        (None, Some(arg)) => ModelSource::parse(arg),
        (None, None) => bail!("say which model: a checkpoint file, or --model NAME (`lenet models` lists them)"),
    }
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// List the shipped models with their test accuracy (the default).
    List,
    /// Print a shipped model's card: how it was trained and how well it does.
    Show { name: String },
    /// Write a shipped model to a file (safetensors, PyTorch state_dict keys).
    Export { name: String, file: PathBuf },
    /// Make a model and its card from a finished run (what scripts/train-models does):
    /// RUN_DIR's last checkpoint, evaluated on the test set, into OUT/NAME.safetensors
    /// and OUT/NAME.toml.
    Pack {
        run_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// The command that trained it, for the card.
        #[arg(long)]
        command: String,
        #[arg(long, value_name = "DIR", default_value = "models")]
        out: PathBuf,
    },
}

pub fn run(cmd: Option<ModelsCommand>, data_dir: Option<&Path>) -> Result<()> {
    match cmd.unwrap_or(ModelsCommand::List) {
        ModelsCommand::List => {
            println!(
                "{:<22} {:<14} {:<13} {:>13} {:>11}",
                "name", "dataset", "architecture", "test accuracy", "parameters"
            );
            for m in models::SHIPPED {
                let c = m.card();
                println!(
                    "{:<22} {:<14} {:<13} {:>13.4} {:>11}",
                    m.name,
                    c.dataset.to_string(),
                    c.architecture,
                    c.test_accuracy,
                    c.parameters
                );
            }
            println!("\n`lenet models show NAME` for a model's card; the name goes wherever a checkpoint does:");
            println!(
                "lenet predict --model mnist-lenet5 photo.png, lenet eval mnist-relu, lenet train --init mnist-relu"
            );
            Ok(())
        }
        ModelsCommand::Show { name } => {
            print!("{}", models::find(&name)?.card_text());
            Ok(())
        }
        ModelsCommand::Export { name, file } => {
            let m = models::find(&name)?;
            write_atomic(&file, m.bytes())?;
            println!("wrote {} ({name}, {} bytes)", file.display(), m.bytes().len());
            Ok(())
        }
        ModelsCommand::Pack { run_dir, name, command, out } => pack(&run_dir, &name, &command, &out, data_dir),
    }
}

/// The model and card of the run in `run_dir`.
fn pack(run_dir: &Path, name: &str, command: &str, out: &Path, data_dir: Option<&Path>) -> Result<()> {
    let ck = checkpoint::load(run_dir.join("last.safetensors"), None)?;
    let config: TrainConfig = serde_json::from_value(ck.meta.config.clone())
        .with_context(|| format!("{}: no training config in its last checkpoint", run_dir.display()))?;
    let model = model_of(&ck);
    let bytes = checkpoint::to_bytes(&model).map_err(anyhow::Error::msg)?;
    // The test accuracy as `lenet eval` measures it, on the CPU engine.
    let test = data::load_part(config.dataset, data_dir, data::Part::Test)?;
    let mut net = Network::new(CpuEngine::new(config.threads)?, &model.spec)?;
    net.set_params(&model.params)?;
    let result = net.evaluate(&test);
    let correct: usize = (0..10).map(|c| result.confusion[c][c]).sum();
    let card = ModelCard {
        name: name.to_string(),
        dataset: config.dataset,
        architecture: model.spec.name.clone(),
        parameters: model.params.len(),
        command: command.to_string(),
        seed: config.seed,
        epochs: ck.meta.epoch,
        threads: config.threads,
        isa: lenet::internal::layers::simd::isa().env_name().to_string(),
        cpu: cpu_name(),
        lenet_version: env!("CARGO_PKG_VERSION").to_string(),
        date: models::today(),
        train_seconds: train_seconds(&run_dir.join("metrics.csv"))?,
        test_accuracy: result.accuracy,
        test_errors: result.count - correct,
        per_class_accuracy: result.per_class_accuracy().iter().map(|a| (a * 1e4).round() / 1e4).collect(),
        sha256: hex::encode(Sha256::digest(&bytes)),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (model_path, card_path) = (out.join(format!("{name}.safetensors")), out.join(format!("{name}.toml")));
    write_atomic(&model_path, &bytes)?;
    write_atomic(&card_path, card.to_toml().as_bytes())?;
    println!(
        "wrote {} ({} bytes) and {}: test accuracy {:.4}",
        model_path.display(),
        bytes.len(),
        card_path.display(),
        card.test_accuracy
    );
    Ok(())
}

/// The sum of a run's per-epoch wall times (metrics.csv's `seconds`).
fn train_seconds(metrics: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(metrics).with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "seconds")
        .with_context(|| format!("{}: no seconds column", metrics.display()))?;
    let secs: f64 = lines.filter_map(|l| l.split(',').nth(col)?.parse::<f64>().ok()).sum();
    Ok((secs * 10.0).round() / 10.0)
}

/// The CPU's model name (Linux), for the card.
fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name =
        info.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{} ({cores} cores)", name.unwrap_or_else(|| std::env::consts::ARCH.to_string()))
}
