//! Command-line definitions (clap) and dispatch to the per-command modules.

mod data;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "lenet", version, about = "Train, evaluate and serve LeNet on MNIST and Fashion-MNIST")]
pub struct Cli {
    /// Folder holding the dataset's IDX files (searched first; also $LENET_DATA).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Get, check and look at the datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Data(cmd) => data::run(cmd, cli.data_dir.as_deref()),
    }
}
