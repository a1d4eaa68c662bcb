//! `lenet bench`: training and evaluation throughput of a network on a dataset held in
//! memory, with warm-up and repeats, plus the numbers that put it in context: the time
//! from process start to the first trained batch, peak RSS, the FLOPs an example costs
//! and the machine's measured sgemm peak (whose ratio is the "physical limit" in
//! examples/sec).
//!
//! A measurement repeat of training is `train_batches` steps of exactly what the trainer
//! does per batch (gather and scale the batch, zero the gradients, forward, loss,
//! backward, optimizer step), timed as a whole, over a shuffled order of the training
//! set. A repeat of evaluation is a forward pass and the loss (no gradients) over
//! `eval_batches` batches of the test set. Nothing here asserts a time: the numbers are
//! reported, never checked.

use std::time::Instant;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::Split;
use crate::engine::Engine;
use crate::init::{init_params, Init};
use crate::network::Network;
use crate::optim::{Optimizer, OptimizerKind};
use crate::spec::{LayerSpec, ResolvedLayer, Shape, Spec};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub spec: Spec,
    pub batch: usize,
    /// Unmeasured repeats before the measured ones (caches, page faults, thread start).
    pub warmup: usize,
    pub repeats: usize,
    /// Training steps per repeat (0: one epoch of the training set).
    pub train_batches: usize,
    /// Evaluation batches per repeat (0: the whole test set).
    pub eval_batches: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub seed: u64,
    /// Time the parts of the training steps (a separate, unmeasured pass after the
    /// measured repeats) and report them in [`BenchReport::profile`].
    pub profile: bool,
}

impl BenchConfig {
    /// The d2l preset, batch 256, SGD lr 0.9: 1 warm-up and 5 measured repeats of a whole epoch.
    pub fn new(spec: Spec, batch: usize) -> Self {
        BenchConfig {
            spec,
            batch,
            warmup: 1,
            repeats: 5,
            train_batches: 0,
            eval_batches: 0,
            optimizer: OptimizerKind::sgd(),
            lr: 0.9,
            seed: 0,
            profile: false,
        }
    }
}

/// Median and spread of a set of repeated measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// (max − min) / median.
    pub spread: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary { median: f64::NAN, min: f64::NAN, max: f64::NAN, spread: f64::NAN, samples: vec![] };
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        let (min, max) = (s[0], s[n - 1]);
        Summary { median, min, max, spread: (max - min) / median, samples: samples.to_vec() }
    }
}

/// Floating-point operations per example (multiply-adds count as 2), from the layer
/// shapes: convolutions and linear layers only (elementwise work is not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Flops {
    pub forward: u64,
    /// Forward plus backward: the weight gradient of every layer, and the input gradient
    /// of every layer but the first (the data needs none).
    pub train: u64,
}

pub fn flops_per_example(layers: &[ResolvedLayer]) -> Flops {
    let mut f = Flops::default();
    let mut first_with_params = true;
    for l in layers {
        let macs = match (&l.spec, l.input, l.output) {
            (LayerSpec::Conv { kernel, .. }, Shape::Image(c, _, _), Shape::Image(o, oh, ow)) => {
                (o * oh * ow * c * kernel * kernel) as u64
            }
            (LayerSpec::Linear { out_features }, Shape::Flat(k), _) => (k * out_features) as u64,
            _ => continue,
        };
        f.forward += 2 * macs;
        f.train += 2 * macs * if first_with_params { 2 } else { 3 };
        first_with_params = false;
    }
    f
}

/// What a benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub arch: String,
    pub engine: String,
    pub batch: usize,
    pub warmup: usize,
    pub repeats: usize,
    pub train_examples_per_repeat: usize,
    pub eval_examples_per_repeat: usize,
    /// Training examples/sec of each measured repeat.
    pub train: Summary,
    /// Evaluation (forward + loss, no gradients) examples/sec of each measured repeat.
    pub eval: Summary,
    /// Seconds from the start of the benchmark (data in memory) to the end of the first
    /// training step.
    pub first_batch_secs: f64,
    /// Mean loss of the first and of the last training step (a sanity check: it falls).
    pub first_loss: f64,
    pub last_loss: f64,
    pub flops: Flops,
    /// Where the training time goes, by step (with `profile`; engines that time themselves).
    pub profile: Option<String>,
}

/// Measure training and evaluation throughput of `config.spec` on the engine.
/// `on_repeat(phase, repeat, examples_per_sec)` is called after each repeat (warm-ups
/// have `repeat` 0).
pub fn run<E: Engine>(
    engine: E,
    config: &BenchConfig,
    train: &Split,
    test: &Split,
    on_repeat: &mut dyn FnMut(&str, usize, f64),
) -> Result<BenchReport>
where
    Network<E>: Send,
{
    let started = Instant::now();
    if config.batch == 0 || config.repeats == 0 {
        bail!("--batch and --repeats must be at least 1");
    }
    if train.is_empty() || test.is_empty() {
        bail!("the benchmark needs a non-empty training and test set");
    }
    config.optimizer.validate()?;
    let layers = config.spec.resolve()?;
    let mut net = Network::new(engine, &config.spec)?;
    net.check_fits(config.batch, train.len().max(test.len()))?;
    let mut params = vec![0.0; net.num_params()];
    init_params(&mut params, net.param_infos(), Init::Xavier, &mut ChaCha8Rng::seed_from_u64(config.seed));
    net.set_params(&params)?;
    let mut opt = Optimizer::new(config.optimizer, net.num_params())?;
    let train_ex = net.engine.upload_examples(&train.images, &train.labels, &config.spec.input);
    let test_ex = net.engine.upload_examples(&test.images, &test.labels, &config.spec.input);

    // The training order: epochs of shuffled indices, cycled as long as needed.
    let n = train.len();
    let per_epoch = n.div_ceil(config.batch);
    let train_batches = if config.train_batches == 0 { per_epoch } else { config.train_batches };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);

    let mut first_batch_secs = f64::NAN;
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let mut train_eps = Vec::new();
    let mut train_examples = 0;
    let mut epoch = Epoch { order, cursor: 0, rng };
    for repeat in 0..config.warmup + config.repeats {
        let since_start = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let (seen, first, last) = train_steps(&mut net, &mut opt, &train_ex, &mut epoch, config, train_batches);
        let eps = seen as f64 / t.elapsed().as_secs_f64();
        if first_batch_secs.is_nan() {
            first_batch_secs = since_start + first.1;
            first_loss = first.0;
        }
        last_loss = last;
        let measured = repeat >= config.warmup;
        on_repeat("train", if measured { repeat - config.warmup + 1 } else { 0 }, eps);
        if measured {
            train_eps.push(eps);
            train_examples = seen;
        }
    }
    let profile = if config.profile {
        net.set_profiling(true);
        train_steps(&mut net, &mut opt, &train_ex, &mut epoch, config, train_batches);
        let report = net.profile_report();
        net.set_profiling(false);
        report
    } else {
        None
    };
    if !last_loss.is_finite() {
        bail!("the training loss became {last_loss}: lower --lr");
    }

    let indices: Vec<u32> = (0..test.len() as u32).collect();
    let all_eval = indices.chunks(config.batch).count();
    let eval_batches = if config.eval_batches == 0 { all_eval } else { config.eval_batches.min(all_eval) };
    let mut eval_eps = Vec::new();
    let mut eval_examples = 0;
    for repeat in 0..config.warmup + config.repeats {
        let t = Instant::now();
        let seen = eval_steps(&mut net, &test_ex, &indices, config.batch, eval_batches);
        let eps = seen as f64 / t.elapsed().as_secs_f64();
        let measured = repeat >= config.warmup;
        on_repeat("eval", if measured { repeat - config.warmup + 1 } else { 0 }, eps);
        if measured {
            eval_eps.push(eps);
            eval_examples = seen;
        }
    }

    Ok(BenchReport {
        arch: config.spec.name.clone(),
        engine: net.engine.describe(),
        batch: config.batch,
        warmup: config.warmup,
        repeats: config.repeats,
        train_examples_per_repeat: train_examples,
        eval_examples_per_repeat: eval_examples,
        train: Summary::of(&train_eps),
        eval: Summary::of(&eval_eps),
        first_batch_secs,
        first_loss,
        last_loss,
        flops: flops_per_example(&layers),
        profile,
    })
}

/// Inference (forward pass, loss without gradients, logits) over `batches` batches of
/// `indices`, as `lenet eval` does it.
/// Returns the examples seen.
#[inline(never)]
fn eval_steps<E: Engine>(
    net: &mut Network<E>,
    examples: &E::Examples,
    indices: &[u32],
    batch: usize,
    batches: usize,
) -> usize
where
    Network<E>: Send,
{
    let (mut seen, mut correct) = (0, 0);
    for idx in indices.chunks(batch).take(batches) {
        correct += net.infer(examples, idx).0.correct;
        seen += idx.len();
    }
    std::hint::black_box(correct);
    seen
}

/// The training order: epochs of shuffled indices, one after another.
struct Epoch {
    order: Vec<u32>,
    cursor: usize,
    rng: ChaCha8Rng,
}

/// `batches` training steps, as the trainer does them. Returns the examples seen,
/// (loss, seconds) of the first step and the loss of the last. Not inlined, so that
/// instruction counters (callgrind `--toggle-collect=*train_steps*`) can isolate it.
#[inline(never)]
fn train_steps<E: Engine>(
    net: &mut Network<E>,
    opt: &mut Optimizer,
    examples: &E::Examples,
    epoch: &mut Epoch,
    config: &BenchConfig,
    batches: usize,
) -> (usize, (f64, f64), f64)
where
    Network<E>: Send,
{
    let started = Instant::now();
    let n = epoch.order.len();
    let (mut seen, mut first) = (0, (f64::NAN, f64::NAN));
    for step in 0..batches {
        if epoch.cursor >= n {
            epoch.order.shuffle(&mut epoch.rng);
            epoch.cursor = 0;
        }
        let idx = &epoch.order[epoch.cursor..(epoch.cursor + config.batch).min(n)];
        let b = idx.len();
        epoch.cursor += b;
        if step == 0 || step + 1 == batches {
            // The tally then holds the first step, and at the end the last.
            net.reset_train_stats();
        }
        net.train_step(examples, idx, opt, config.lr, None);
        if first.0.is_nan() {
            // Read back once, after the first step (on a GPU this waits for it).
            first = (net.train_stats().mean_loss(), started.elapsed().as_secs_f64());
        }
        seen += b;
    }
    // The last step's loss: the tally holds only that step.
    let last = net.train_stats().mean_loss();
    (seen, first, last)
}

/// The measured single-precision matrix-multiply rate of this machine in GFLOP/s: the
/// best of `reps` products of two `size`×`size` matrices through the `gemm` crate on
/// `threads` threads (its fastest kernels for this CPU, chosen at run time).
pub fn sgemm_peak_gflops(threads: usize, size: usize, reps: usize) -> Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build()?;
    let a: Vec<f32> = (0..size * size).map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5).collect();
    let b: Vec<f32> = (0..size * size).map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5).collect();
    let mut c = vec![0.0f32; size * size];
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let mut best = f64::INFINITY;
    pool.install(|| {
        for _ in 0..reps.max(1) + 1 {
            let t = Instant::now();
            // SAFETY: a, b and c are size×size, row-major (row stride size, column stride
            // 1), so every index the strides reach is in bounds; c is a unique borrow.
            unsafe {
                gemm::gemm(
                    size,
                    size,
                    size,
                    c.as_mut_ptr(),
                    1,
                    size as isize,
                    false,
                    a.as_ptr(),
                    1,
                    size as isize,
                    b.as_ptr(),
                    1,
                    size as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
    });
    std::hint::black_box(&c);
    Ok(2.0 * (size as f64).powi(3) / best / 1e9)
}

/// Seconds since this process started (Linux: from /proc, 10 ms resolution).
pub fn process_age_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // starttime is field 22 of the whole line, the 20th after the command name.
    let start_ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture that matters here.
    Some(uptime - start_ticks / 100.0)
}

/// This process's peak resident set size in bytes (Linux: VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_and_spread() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.spread, 1.0);
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn d2l_flops_by_hand() {
        let layers = Spec::preset("d2l").unwrap().resolve().unwrap();
        let f = flops_per_example(&layers);
        // conv1 6·28·28·25, conv2 16·10·10·150, fc 400·120 + 120·84 + 84·10 multiply-adds.
        let (c1, c2, fc) = (6 * 784 * 25u64, 16 * 100 * 150u64, 48000 + 10080 + 840u64);
        assert_eq!(f.forward, 2 * (c1 + c2 + fc));
        assert_eq!(f.train, 2 * (2 * c1 + 3 * c2 + 3 * fc));
    }
}
