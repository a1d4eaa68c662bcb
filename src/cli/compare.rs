//! `lenet compare <run-dir>...`: the learning curves of several runs in one picture.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use lenet::internal::viz::curves::{ComparePlot, Curves};
use lenet::internal::viz::save;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders (runs/<name>), each with curves.csv or metrics.csv.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// The picture: .png or .svg.
    #[arg(long, default_value = "compare.png")]
    pub out: PathBuf,
    /// Legend names, one per run in order (default: the folders' names).
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
}

pub fn run(args: CompareArgs) -> Result<()> {
    if !args.labels.is_empty() && args.labels.len() != args.runs.len() {
        bail!("{} --label for {} runs: give one per run, or none", args.labels.len(), args.runs.len());
    }
    let mut runs = Vec::with_capacity(args.runs.len());
    for (i, dir) in args.runs.iter().enumerate() {
        let mut c = Curves::load_run(dir)?;
        if let Some(l) = args.labels.get(i) {
            c.label = l.clone();
        }
        runs.push(c);
    }
    save(&ComparePlot { runs: &runs }, &args.out)?;
    let width = runs.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
    println!(
        "{:<width$}  {:>6}  {:>10}  {:>9}  {:>8}  {:>13}",
        "run", "epochs", "train loss", "train acc", "test acc", "best test acc"
    );
    for r in &runs {
        let (loss, acc) = r.points.last().map_or((f64::NAN, f64::NAN), |p| (p.train_loss, p.train_acc));
        let test = r.evals.last().map_or(f64::NAN, |e| e.test_acc);
        let best = r.evals.iter().map(|e| e.test_acc).fold(f64::NAN, f64::max);
        let done = r.evals.last().map_or(0, |e| e.epoch);
        println!("{:<width$}  {done:>6}  {loss:>10.4}  {acc:>9.4}  {test:>8.4}  {best:>13.4}", r.label);
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
