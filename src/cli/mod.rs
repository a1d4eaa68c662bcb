//! Command-line definitions (clap) and dispatch to the per-command modules.

mod arch;
mod bench;
mod compare;
mod data;
mod device;
#[cfg(feature = "gpu")]
mod devices;
mod eval;
mod export;
mod models;
mod predict;
mod report;
mod serve;
mod sweep;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
// Help wraps to the terminal ($COLUMNS in a pipe), at most 100 columns wide.
#[command(
    name = "lenet",
    version,
    about = "Train, evaluate and serve LeNet on MNIST and Fashion-MNIST",
    max_term_width = 100
)]
pub struct Cli {
    /// Folder holding the dataset's IDX files (searched first; also $LENET_DATA).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the layer table: output shapes and parameter counts.
    Summary {
        #[command(flatten)]
        arch: arch::ArchArgs,
        /// Print the architecture as a TOML file to edit (for --arch FILE) instead.
        #[arg(long)]
        toml: bool,
    },
    /// Train a LeNet (d2l's settings by default) and save the run.
    Train(Box<train::TrainArgs>),
    /// Evaluate a checkpoint: loss, accuracy, per-class accuracy, confusion matrix.
    Eval(eval::EvalArgs),
    /// Export a checkpoint: ONNX, a pure PyTorch state_dict, or its logits on a split.
    Export(export::ExportArgs),
    /// Classify your own images (PNG, JPEG, BMP), or a dataset's into a captioned grid.
    Predict(Box<predict::PredictArgs>),
    /// Write a run's self-contained HTML report: config, metrics, curves, confusion matrix, errors.
    Report(report::ReportArgs),
    /// Overlay the learning curves of several runs in one picture.
    Compare(compare::CompareArgs),
    /// Measure train and eval throughput (examples/sec), with warm-up and repeats.
    Bench(Box<bench::BenchArgs>),
    /// A local web page: draw a digit or upload a photo and watch every layer read it.
    Serve(Box<serve::ServeArgs>),
    /// The trained models inside lenet: list them, show a card, export one.
    Models {
        #[command(subcommand)]
        cmd: Option<models::ModelsCommand>,
    },
    /// Many runs from one file: plan, run (Slurm arrays, Kubernetes Indexed Jobs, or
    /// here), report.
    #[command(subcommand)]
    Sweep(sweep::SweepCommand),
    /// Get, check and look at the datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// List the GPU adapters (Vulkan, Metal, DX12) and say where --device auto would run.
    #[cfg(feature = "gpu")]
    Devices,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Summary { arch, toml } => {
            let spec = arch.spec("d2l")?;
            println!("{}", if toml { spec.to_toml() } else { spec.summary()? });
            Ok(())
        }
        Command::Train(args) => train::run(*args, cli.data_dir.as_deref()),
        Command::Eval(args) => eval::run(args, cli.data_dir.as_deref()),
        Command::Export(args) => export::run(args, cli.data_dir.as_deref()),
        Command::Predict(args) => predict::run(*args, cli.data_dir.as_deref()),
        Command::Report(args) => report::run(args, cli.data_dir.as_deref()),
        Command::Compare(args) => compare::run(args),
        Command::Bench(args) => bench::run(*args, cli.data_dir.as_deref()),
        Command::Serve(args) => serve::run(*args, cli.data_dir.as_deref()),
        Command::Models { cmd } => models::run(cmd, cli.data_dir.as_deref()),
        Command::Sweep(cmd) => sweep::run(cmd, cli.data_dir.as_deref()),
        Command::Data(cmd) => data::run(cmd, cli.data_dir.as_deref()),
        #[cfg(feature = "gpu")]
        Command::Devices => devices::run(),
    }
}
