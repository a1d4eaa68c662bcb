//! `lenet bench`: train and eval throughput (median and spread of repeats), time from
//! process start to the first trained batch, peak RSS, and the sgemm peak of the machine.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use lenet::data::{self, DatasetKind};
use lenet::internal::bench::{self, BenchConfig};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::optim::OptimizerKind;

use super::arch::ArchArgs;

use super::device::{self, on_engine, AnyEngine, DeviceArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub arch: ArchArgs,
    #[arg(long, default_value = "mnist")]
    pub dataset: DatasetKind,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// CPU threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Unmeasured repeats first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Measured repeats (the median and spread are over these).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Training steps per repeat (0: one epoch).
    #[arg(long, default_value_t = 0)]
    pub train_batches: usize,
    /// Evaluation batches per repeat (0: the whole test set).
    #[arg(long, default_value_t = 0)]
    pub eval_batches: usize,
    /// sgd, adam or adamw, with settings as for `lenet train`.
    #[arg(long, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Learning rate (default: 0.9 for sgd, 0.001 for adam and adamw).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Side of the square matrices of the sgemm peak measurement (0: skip it).
    #[arg(long, default_value_t = 1536)]
    pub sgemm_size: usize,
    /// A check that the benchmark works, not a measurement: no warm-up, 1 repeat of 5
    /// training and 5 evaluation batches, a small sgemm.
    #[arg(long)]
    pub quick: bool,
    /// Print the report as one JSON object (on the last line).
    #[arg(long)]
    pub json: bool,
    /// Also time the parts of a training step (one extra, unmeasured repeat) and
    /// print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// Instead: time each convolution kernel alone on one tile of examples with hot
    /// caches (best of the rounds), on this CPU's instruction set.
    #[arg(long, conflicts_with_all = ["profile", "train_batches", "eval_batches", "warmup", "sgemm_size"])]
    pub kernels: bool,
}

pub fn run(args: BenchArgs, data_dir: Option<&std::path::Path>) -> Result<()> {
    if args.kernels {
        return kernels(&args);
    }
    let entered = Instant::now();
    let age_at_entry = bench::process_age_secs();
    let spec = args.arch.spec("d2l")?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut config = BenchConfig::new(spec, args.batch);
    config.optimizer = args.optimizer;
    config.profile = args.profile;
    config.lr = args.lr.unwrap_or(if matches!(args.optimizer, OptimizerKind::Sgd { .. }) { 0.9 } else { 1e-3 });
    (config.warmup, config.repeats, config.train_batches, config.eval_batches) =
        (args.warmup, args.repeats, args.train_batches, args.eval_batches);
    let mut sgemm_size = args.sgemm_size;
    if args.quick {
        (config.warmup, config.repeats, config.train_batches, config.eval_batches) = (0, 1, 5, 5);
        sgemm_size = sgemm_size.min(256);
    }
    let threads = CpuEngine::resolve_threads(args.threads);
    let engine = device::open(args.device.device, threads)?;
    let describe = engine.describe();
    if !matches!(engine, AnyEngine::Cpu(_)) {
        // The CPU's matrix-multiply peak says nothing of a GPU's.
        sgemm_size = 0;
    }
    let ds = data::load(args.dataset, data_dir)?;
    let load_secs = entered.elapsed().as_secs_f64();
    if !args.json {
        println!(
            "lenet bench: {} on {}, batch {}, {}, {} warm-up + {} measured repeat(s)",
            config.spec.name, args.dataset, config.batch, describe, config.warmup, config.repeats
        );
    }
    let json = args.json;
    let before_run = entered.elapsed().as_secs_f64();
    let mut on_repeat = |phase: &str, repeat: usize, eps: f64| {
        if !json {
            let which = if repeat == 0 { "warm-up".to_string() } else { format!("repeat {repeat}") };
            println!("  {phase:<5} {which:<9} {eps:>9.0} examples/sec");
        }
    };
    let report = on_engine!(engine, e => bench::run(e, &config, &ds.train, &ds.test, &mut on_repeat))?;
    let peak_rss = bench::peak_rss_bytes();
    // From process start: the process's age when the command began (10 ms resolution)
    // plus what this command measured itself.
    let startup = age_at_entry.map(|age| age + before_run + report.first_batch_secs);
    let sgemm = if sgemm_size > 0 { Some(bench::sgemm_peak_gflops(threads, sgemm_size, 3)?) } else { None };
    let limit = sgemm.map(|g| g * 1e9 / report.flops.train as f64);

    if json {
        let value = serde_json::json!({
            "report": report,
            "dataset": args.dataset.name(),
            "threads": threads,
            "data_load_secs": load_secs,
            "process_start_to_first_batch_secs": startup,
            "peak_rss_mib": peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
            "sgemm_gflops": sgemm,
            "sgemm_size": sgemm_size,
            "physical_limit_train_examples_per_sec": limit,
        });
        println!("{value}");
        return Ok(());
    }
    let row = |name: &str, s: &bench::Summary, examples: usize| {
        println!(
            "  {name:<6} {:>10.0} {:>10.0} {:>10.0} {:>7.1}%   ({examples} examples per repeat)",
            s.median,
            s.min,
            s.max,
            100.0 * s.spread
        );
    };
    println!("\n  {:<6} {:>10} {:>10} {:>10} {:>8}", "ex/sec", "median", "min", "max", "spread");
    row("train", &report.train, report.train_examples_per_repeat);
    row("eval", &report.eval, report.eval_examples_per_repeat);
    println!("  loss of the first / last training step: {:.4} / {:.4}", report.first_loss, report.last_loss);
    match startup {
        Some(s) => println!(
            "  first trained batch {:.3} s after process start ({load_secs:.3} s of it loading {})",
            s, args.dataset
        ),
        None => println!(
            "  first trained batch {:.3} s after the command began ({load_secs:.3} s of it loading {})",
            before_run + report.first_batch_secs,
            args.dataset
        ),
    }
    if let Some(b) = peak_rss {
        println!("  peak RSS {:.0} MiB", b as f64 / (1024.0 * 1024.0));
    }
    println!(
        "  FLOPs per example: {:.2} M forward, {:.2} M forward + backward",
        report.flops.forward as f64 / 1e6,
        report.flops.train as f64 / 1e6
    );
    if let Some(p) = &report.profile {
        println!("\n  where a training step's time goes (thread-seconds, all threads):\n{p}");
    }
    if let (Some(g), Some(limit)) = (sgemm, limit) {
        println!(
            "  sgemm peak {g:.0} GFLOP/s ({sgemm_size}³, {threads} thread{}): physical limit {limit:.0} train \
             examples/sec; the median reaches {:.0}% of it",
            if threads == 1 { "" } else { "s" },
            100.0 * report.train.median / limit
        );
    }
    Ok(())
}

/// `lenet bench --kernels`: the table of [`lenet::internal::layers::conv_probe`].
fn kernels(args: &BenchArgs) -> Result<()> {
    let (reps, rounds) = if args.quick { (10, 1) } else { (2000, args.repeats.max(1)) };
    let timings = lenet::internal::layers::conv_probe::time_conv_kernels(reps, rounds);
    if args.json {
        let rows: Vec<_> = timings
            .iter()
            .map(|t| {
                serde_json::json!({"kernel": t.kernel, "us_per_tile": t.us_per_tile,
                    "us_per_example": t.us_per_example(), "gflops": t.gflops})
            })
            .collect();
        println!("{}", serde_json::json!({"isa": lenet::internal::layers::simd::isa().name(), "kernels": rows}));
        return Ok(());
    }
    println!(
        "convolution kernels on {}, one tile of {} examples, hot caches, best of {rounds} x {reps} calls",
        lenet::internal::layers::simd::isa().name(),
        lenet::internal::layers::L
    );
    println!("  {:<26} {:>10} {:>12} {:>8}", "kernel", "us/tile", "us/example", "GFLOP/s");
    for t in &timings {
        println!("  {:<26} {:>10.2} {:>12.3} {:>8.1}", t.kernel, t.us_per_tile, t.us_per_example(), t.gflops);
    }
    Ok(())
}
