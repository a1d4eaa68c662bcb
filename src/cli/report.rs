//! `lenet report <run-dir>`: the run's self-contained HTML page.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use lenet::internal::atomic::write_atomic;
use lenet::internal::report::{Report, ReportOptions};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run folder (runs/<name>).
    pub run_dir: PathBuf,
    /// Where to write the page (default: <run-dir>/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The checkpoint to evaluate (default: the run's best.safetensors, else last.safetensors).
    #[arg(long, value_name = "CKPT")]
    pub checkpoint: Option<PathBuf>,
    /// How many misclassified test images to show.
    #[arg(long, default_value_t = 40)]
    pub misclassified: usize,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

pub fn run(args: ReportArgs, data_dir: Option<&Path>) -> Result<()> {
    let opts = ReportOptions {
        data_dir,
        checkpoint: args.checkpoint.clone(),
        threads: args.threads,
        misclassified: args.misclassified,
    };
    let report = Report::build(&args.run_dir, &opts)?;
    if let Some(problem) = &report.eval_problem {
        eprintln!("warning: the report has no confusion matrix: {problem}");
    }
    let html = report.to_html()?;
    let out = args.out.unwrap_or_else(|| args.run_dir.join("report.html"));
    write_atomic(&out, html.as_bytes())?;
    println!("wrote {} ({} KB)", out.display(), html.len().div_ceil(1024));
    Ok(())
}
