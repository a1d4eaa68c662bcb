//! Training: epochs of shuffled mini-batches, per-epoch evaluation, metrics,
//! divergence detection, checkpoint state and the run folder's files.
//! Deterministic: the same config, seed and thread count give bit-identical
//! results, and resuming from a checkpoint continues exactly as an uninterrupted
//! run would.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, Meta};
use crate::data::augment::{distort_into, distort_split, draw_distortions, Augment};
use crate::data::{Dataset, DatasetKind, Images, Split};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Engine, TrainStats};
use crate::eval::{evaluate, EvalResult};
use crate::init::{init_params, Init};
use crate::network::Network;
use crate::optim::{Optimizer, OptimizerKind};
use crate::run::RunDir;
use crate::schedule::LrSchedule;
use crate::spec::Spec;

/// Batch size used for evaluation passes (no gradients, so larger is fine).
pub const EVAL_BATCH: usize = 1000;

/// Everything that determines a run's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network's architecture (`--arch`: a preset or a TOML file).
    pub arch: Spec,
    /// The dataset trained and tested on (`--dataset`).
    pub dataset: DatasetKind,
    /// Epochs to train in all, those already done included (`--epochs`).
    pub epochs: usize,
    /// Examples per training step (`--batch`); an epoch's last batch may hold fewer.
    pub batch: usize,
    /// Base learning rate (`--lr`), which `schedule` scales epoch by epoch.
    pub lr: f64,
    /// The optimizer and its hyperparameters (`--optimizer`, `--momentum`, `--nesterov`,
    /// `--weight-decay`).
    pub optimizer: OptimizerKind,
    /// How the learning rate changes from epoch to epoch (`--schedule`); constant when a
    /// saved config has none.
    #[serde(default)]
    pub schedule: LrSchedule,
    /// How fresh parameters are drawn (`--init`); unused when the run starts from given
    /// parameters (fine-tuning, resuming).
    pub init: Init,
    /// Seeds the initialisation, the validation split, each epoch's order and the
    /// distortions (`--seed`).
    pub seed: u64,
    /// CPU threads (results are bit-identical for the same count).
    pub threads: usize,
    /// Fraction of the training set held out for validation (0: none).
    #[serde(default)]
    pub val_split: f64,
    /// Before each update, scale the gradients down to a joint L2 norm of at most this
    /// (`--clip-grad-norm`); None: no clipping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f32>,
    /// Loss weight of each class, ten values > 0 indexed by label (`--class-weights`);
    /// None: all 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<Vec<f32>>,
    /// Distort the training images afresh every epoch (the test and validation images
    /// never): see [`crate::data::augment`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// Instead of fresh distortions every epoch, train on the originals and this many
    /// distorted copies of them, drawn once (the paper: 9 copies, 540,000 images beside
    /// the 60,000). Needs `augment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment_copies: Option<usize>,
}

/// The dataset a checkpoint was trained on, when its header says (a PyTorch state_dict
/// carries no training config).
pub fn trained_on(ck: &Checkpoint) -> Option<DatasetKind> {
    serde_json::from_value::<TrainConfig>(ck.meta.config.clone()).ok().map(|c| c.dataset)
}

impl TrainConfig {
    /// d2l's settings: the sigmoid LeNet on Fashion-MNIST, SGD lr 0.9, batch 256, 10 epochs, Xavier.
    pub fn d2l() -> Self {
        TrainConfig {
            arch: Spec::preset("d2l").expect("preset exists"),
            dataset: DatasetKind::FashionMnist,
            epochs: 10,
            batch: 256,
            lr: 0.9,
            optimizer: OptimizerKind::sgd(),
            schedule: LrSchedule::Constant,
            init: Init::Xavier,
            seed: 0,
            threads: 0,
            val_split: 0.0,
            clip_grad_norm: None,
            class_weights: None,
            augment: None,
            augment_copies: None,
        }
    }

    /// Checks what `lenet train` refuses: the architecture, optimizer and schedule, and the
    /// ranges of the numbers; an error names the option at fault (`--batch`, `--lr`, ...).
    pub fn validate(&self) -> Result<()> {
        self.arch.resolve()?;
        self.optimizer.validate()?;
        self.schedule.validate().map_err(|e| anyhow::anyhow!("{}", e.0))?;
        if self.batch == 0 || self.epochs == 0 {
            bail!("--batch and --epochs must be at least 1");
        }
        // Beyond these a config is a mistake or a damaged file, not a run.
        if self.epochs > 1_000_000 || self.batch > 1 << 24 || self.threads > 4096 {
            bail!(
                "--epochs ({}) at most 1000000, --batch ({}) at most 16777216, --threads ({}) at most 4096",
                self.epochs,
                self.batch,
                self.threads
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a number > 0 (the learning rate), got {}", self.lr);
        }
        match (self.augment_copies, self.augment) {
            (Some(n), Some(_)) if !(1..=100).contains(&n) => bail!("--augment-copies must be in 1..=100, got {n}"),
            (Some(_), None) => bail!("--augment-copies needs distortions to copy (--augment)"),
            _ => {}
        }
        if !(0.0..1.0).contains(&self.val_split) {
            bail!("--val-split must be in [0, 1), got {}", self.val_split);
        }
        if let Some(w) = &self.class_weights {
            if w.len() != 10 || w.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                bail!("--class-weights must be ten numbers > 0, one per class, got {} ({w:?})", w.len());
            }
        }
        Ok(())
    }

    /// The config as TOML, as a run folder's config.toml holds it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config always serialises")
    }
}

/// A running measurement inside an epoch, as d2l's Animator plots it: the
/// epoch's mean loss and accuracy over the batches so far, at a fractional epoch
/// (e.g. 1.2 after a fifth of the second epoch).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Training done so far, in epochs: 1.2 is a fifth of the way into the second.
    pub epoch: f64,
    /// The epoch's running mean training loss so far, per example (the network's criterion).
    pub train_loss: f64,
    /// The epoch's running training accuracy so far, a fraction in [0, 1].
    pub train_acc: f64,
}

/// How many running snapshots d2l takes per epoch.
pub const CURVE_POINTS_PER_EPOCH: usize = 5;

/// Is batch `batch` (1-based) of `batches` one where d2l's training loop adds a
/// point to its Animator? Every `batches / 5`-th batch and the last one.
pub fn is_curve_batch(batch: usize, batches: usize) -> bool {
    let every = (batches / CURVE_POINTS_PER_EPOCH).max(1);
    batch.is_multiple_of(every) || batch == batches
}

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch measured (1-based).
    pub epoch: usize,
    /// Mean training loss per example over the epoch's batches, taken as they trained
    /// (the batches' mean losses weighted by size, as d2l).
    pub train_loss: f64,
    /// Fraction of the epoch's training examples classified right as they trained, in [0, 1].
    pub train_acc: f64,
    /// Mean loss on the validation part after the epoch; None without `--val-split`.
    pub val_loss: Option<f64>,
    /// Accuracy on the validation part after the epoch, in [0, 1]; None without `--val-split`.
    pub val_acc: Option<f64>,
    /// Mean loss per example on the test set after the epoch.
    pub test_loss: f64,
    /// Accuracy on the test set after the epoch, a fraction in [0, 1].
    pub test_acc: f64,
    /// The learning rate the epoch trained at: `--lr` scaled by the schedule.
    pub lr: f64,
    /// Training examples per second, timing only the training steps (as d2l does).
    pub examples_per_sec: f64,
    /// Wall time of the whole epoch, evaluation included.
    pub seconds: f64,
    /// Running snapshots about 5 times per epoch (the last one at the epoch's end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<CurvePoint>,
}

impl EpochMetrics {
    /// The accuracy that picks the best checkpoint: validation, else test.
    pub fn selection_acc(&self) -> f64 {
        self.val_acc.unwrap_or(self.test_acc)
    }

    /// The first line of metrics.csv (no newline): the columns of [`Self::csv_row`].
    pub const CSV_HEADER: &'static str =
        "epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,examples_per_sec,seconds";

    /// This epoch as a line of metrics.csv (no newline); losses and accuracies to 6 decimals,
    /// empty fields where there is no validation part.
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        format!(
            "{},{:.6},{:.6},{},{},{:.6},{:.6},{},{:.1},{:.3}",
            self.epoch,
            self.train_loss,
            self.train_acc,
            opt(self.val_loss),
            opt(self.val_acc),
            self.test_loss,
            self.test_acc,
            self.lr,
            self.examples_per_sec,
            self.seconds
        )
    }
}

/// The epoch best.safetensors holds: the highest [`EpochMetrics::selection_acc`], the
/// earliest on a tie. `history` is not empty.
pub fn best_epoch(history: &[EpochMetrics]) -> &EpochMetrics {
    history.iter().fold(&history[0], |b, m| if m.selection_acc() > b.selection_acc() { m } else { b })
}

/// Training examples per second over a whole run: the harmonic mean of the epochs'
/// (each epoch trains the same examples), as `lenet train`'s last line prints it.
pub fn mean_examples_per_sec(history: &[EpochMetrics]) -> f64 {
    let secs: f64 = history.iter().map(|m| 1.0 / m.examples_per_sec).sum();
    history.len() as f64 / secs
}

/// Hooks for showing progress; every method has a silent default.
pub trait Observer {
    /// Before epoch `epoch` (1-based) of `epochs`, which has `batches` batches in all (also
    /// when it resumes partway; `batch_end` then counts on from there).
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// After each batch (1-based): how far the epoch has got.
    fn batch_end(&mut self, _batch: usize) {}
    /// About 5 times per epoch (see [`is_curve_batch`]), after `batch_end`, with the
    /// epoch's running mean loss and accuracy: the only times they are read back.
    fn curve_point(&mut self, _point: &CurvePoint) {}
    /// After the epoch's evaluation, with what it measured (already in the trainer's history).
    fn epoch_end(&mut self, _metrics: &EpochMetrics) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {}

/// Training stopped because the loss stopped being a number.
#[derive(Debug, thiserror::Error)]
#[error(
    "training diverged: the loss became {loss} at epoch {epoch}, batch {batch} (lr {lr}). \
     Try a smaller learning rate (e.g. --lr {suggested}); checkpoints of earlier epochs are intact"
)]
pub struct Diverged {
    /// The epoch that diverged (1-based).
    pub epoch: usize,
    /// The first batch of that epoch (1-based) whose mean loss was not finite.
    pub batch: usize,
    /// That batch's mean loss: NaN or infinite.
    pub loss: f64,
    /// The epoch's learning rate.
    pub lr: f64,
    /// A learning rate to try instead: half of `lr`.
    pub suggested: f64,
}

/// Training was asked to stop (Ctrl-C, SIGTERM: see [`Trainer::stop_when`]) and did,
/// after batch `batch` of `batches` in epoch `epoch` (all of them when it stopped between
/// epochs, once that epoch's files were written).
#[derive(Debug, thiserror::Error)]
#[error("training stopped at epoch {epoch}, after batch {batch} of {batches}")]
pub struct Interrupted {
    /// The epoch it stopped in (1-based).
    pub epoch: usize,
    /// The batches of that epoch trained before it stopped.
    pub batch: usize,
    /// The batches in that epoch.
    pub batches: usize,
}

/// Where an interrupted epoch stopped: enough to go on from the next batch exactly as
/// if it had not stopped (the order, the learning rate and the distortions are pure
/// functions of the seed and the epoch; SDLM's curvature is in the optimizer's state).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// The epoch in progress (1-based).
    pub epoch: usize,
    /// Its batches already trained.
    pub batches_done: usize,
    /// Their running statistics.
    pub stats: TrainStats,
    /// Their curve points.
    pub points: Vec<CurvePoint>,
    /// Seconds spent in their training steps.
    pub train_secs: f64,
}

/// Split a dataset's training set into train and (optional) validation parts; without
/// a validation part, the training set as it is (no copy of its 47 MB).
pub fn split_train(train: &Split, val_split: f64, seed: u64) -> (Cow<'_, Split>, Option<Split>) {
    if val_split <= 0.0 {
        return (Cow::Borrowed(train), None);
    }
    let (rest, val) = train.carve_validation(val_split, seed);
    (Cow::Owned(rest), Some(val))
}

/// A training run on engine `E` (the CPU by default): the network, its optimizer, the
/// splits uploaded to the engine and the metrics of the epochs so far.
pub struct Trainer<E: Engine = CpuEngine> {
    /// The run's settings (`epochs` as [`Trainer::resume`] may have extended it).
    pub config: TrainConfig,
    /// The network being trained, on engine `E`.
    pub net: Network<E>,
    /// The optimizer: its step count and state buffers (one value per parameter, in the flat
    /// parameter order; a GPU engine keeps them on its device while training).
    pub opt: Optimizer,
    train: E::Examples,
    /// The undistorted training images, kept when each epoch distorts them anew.
    train_source: Option<Split>,
    /// The buffer each epoch's distorted training images are written into.
    distorted: Option<Images>,
    val: Option<E::Examples>,
    test: E::Examples,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// The epoch in progress when training stopped mid-epoch: the next
    /// [`Self::train_epoch`] goes on from there.
    partial: Option<PartialEpoch>,
    /// Set from outside (a signal handler) to stop after the batch in progress.
    stop: Option<Arc<AtomicBool>>,
}

impl Trainer<CpuEngine> {
    /// A fresh run on the CPU (`config.threads` threads; 0: one per core) over a loaded
    /// dataset's training and test splits, parameters initialised from `config.seed`.
    /// An error when `data` is not the dataset `config.dataset` names (the checkpoints
    /// would say one and hold a network trained on the other).
    pub fn on_cpu(mut config: TrainConfig, data: &Dataset) -> Result<Self> {
        if data.kind != config.dataset {
            bail!("the config trains on {}, but the dataset given is {}", config.dataset.name(), data.kind.name());
        }
        config.validate()?;
        // The count, not 0, goes into the checkpoints: a resume must use as many threads.
        config.threads = CpuEngine::resolve_threads(config.threads);
        Self::new(CpuEngine::new(config.threads)?, config, &data.train, &data.test, None)
    }
}

impl<E: Engine> Trainer<E>
where
    Network<E>: Send,
{
    /// Where it trains, as `lenet train` prints it: `cpu (2 threads)`, or the GPU
    /// adapter and its backend.
    pub fn device(&self) -> String {
        self.net.device()
    }

    /// A fresh run: parameters initialised from the seed, or taken from `initial`
    /// (fine-tuning), with a fresh optimizer.
    pub fn new(engine: E, config: TrainConfig, train: &Split, test: &Split, initial: Option<&[f32]>) -> Result<Self> {
        config.validate()?;
        let mut net = Network::new(engine, &config.arch)?;
        let params = match initial {
            Some(p) => p.to_vec(),
            None => {
                let mut p = vec![0.0; net.num_params()];
                init_params(&mut p, net.param_infos(), config.init, &mut ChaCha8Rng::seed_from_u64(config.seed));
                p
            }
        };
        net.set_params(&params)?;
        let opt = Optimizer::new(config.optimizer, net.num_params())?;
        Self::assemble(net, opt, config, train, test, Vec::new(), None)
    }

    /// Continue a run from its checkpoint (config, parameters, optimizer state
    /// and history all come from the file); `epochs` may extend the run.
    pub fn resume(engine: E, ck: &Checkpoint, train: &Split, test: &Split, epochs: Option<usize>) -> Result<Self> {
        let mut config: TrainConfig = serde_json::from_value(ck.meta.config.clone())
            .context("the checkpoint has no training config to resume from")?;
        if let Some(e) = epochs {
            if e < ck.meta.epoch {
                bail!("--epochs {e} ends before the {} epochs the checkpoint has already trained", ck.meta.epoch);
            }
            if e == ck.meta.epoch && !ck.meta.partial.is_null() {
                bail!("--epochs {e} ends before epoch {}, which the checkpoint stopped inside", e + 1);
            }
            config.epochs = e;
        }
        config.validate().context("the checkpoint's training config")?;
        let history: Vec<EpochMetrics> =
            serde_json::from_value(ck.meta.history.clone()).context("the checkpoint's history is unreadable")?;
        if config.arch.layers != ck.spec.layers || config.arch.input != ck.spec.input {
            bail!(
                "the checkpoint is damaged: its training config describes another architecture than its \
                 weights ('{}', {} layers, input {}, against '{}', {} layers, input {})",
                config.arch.name,
                config.arch.layers.len(),
                config.arch.input.size,
                ck.spec.name,
                ck.spec.layers.len(),
                ck.spec.input.size
            );
        }
        if history.len() != ck.meta.epoch {
            bail!("the checkpoint says epoch {} but holds {} epochs of history", ck.meta.epoch, history.len());
        }
        let partial: Option<PartialEpoch> = if ck.meta.partial.is_null() {
            None
        } else {
            let p: PartialEpoch = serde_json::from_value(ck.meta.partial.clone())
                .context("the checkpoint's interrupted epoch is unreadable")?;
            if p.epoch != ck.meta.epoch + 1 || p.batches_done == 0 || p.stats.batches != p.batches_done {
                bail!(
                    "the checkpoint is damaged: it stopped in epoch {} after {} batches ({} counted), \
                     but holds {} finished epochs",
                    p.epoch,
                    p.batches_done,
                    p.stats.batches,
                    ck.meta.epoch
                );
            }
            Some(p)
        };
        let mut net = Network::new(engine, &config.arch)?;
        net.set_params(&ck.params)?;
        let mut opt = Optimizer::new(config.optimizer, net.num_params())?;
        opt.load_state(&ck.optim)?;
        Self::assemble(net, opt, config, train, test, history, partial)
    }

    fn assemble(
        mut net: Network<E>,
        opt: Optimizer,
        config: TrainConfig,
        train: &Split,
        test: &Split,
        history: Vec<EpochMetrics>,
        partial: Option<PartialEpoch>,
    ) -> Result<Self> {
        net.set_class_weights(config.class_weights.as_deref())?;
        let (mut train, val) = split_train(train, config.val_split, config.seed);
        if let (Some(copies), Some(aug)) = (config.augment_copies, &config.augment) {
            // Fixed copies, drawn once from (seed, copy, example): the same on resume.
            let distorted: Vec<Split> = (1..=copies).map(|k| distort_split(&train, aug, config.seed, k)).collect();
            train = Cow::Owned(Split::concat(std::iter::once(&*train).chain(&distorted)));
        }
        if val.as_ref().is_some_and(|v| v.is_empty()) {
            bail!("--val-split {} of {} training examples holds out none", config.val_split, train.len());
        }
        if config.batch > train.len() {
            let held_out =
                val.as_ref().map_or(String::new(), |v| format!(" (after the {} held out by --val-split)", v.len()));
            bail!("--batch {} is more than the {} training examples{held_out}", config.batch, train.len());
        }
        let largest = [Some(&*train), val.as_ref(), Some(test)].into_iter().flatten().map(|s| s.len()).max();
        net.check_fits(config.batch.max(EVAL_BATCH), largest.unwrap_or(0))?;
        let upload = |s: &Split| net.engine.upload_examples(&s.images, &s.labels, &config.arch.input);
        let (train_examples, val, test) = (upload(&train), val.as_ref().map(upload), upload(test));
        let train_source = (config.augment.is_some() && config.augment_copies.is_none()).then(|| train.into_owned());
        let trainer = Self {
            config,
            net,
            opt,
            train: train_examples,
            train_source,
            distorted: None,
            val,
            test,
            history,
            partial: None,
            stop: None,
        };
        if let Some(p) = &partial {
            let batches = trainer.train_examples().div_ceil(trainer.config.batch);
            if p.batches_done >= batches {
                bail!(
                    "the checkpoint stopped after batch {} of epoch {}, which has only {batches} batches",
                    p.batches_done,
                    p.epoch
                );
            }
        }
        Ok(Self { partial, ..trainer })
    }

    /// Stop at the next batch's end once `flag` is set (by a Ctrl-C handler, say):
    /// [`Self::train_epoch`] then returns [`Interrupted`], and [`Self::checkpoint`]
    /// holds where it stopped.
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The batches of the epoch in progress already trained (0 between epochs).
    pub fn batches_done(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.batches_done)
    }

    /// Examples in the training set each epoch runs over (with fixed distorted
    /// copies, the originals and their copies).
    pub fn train_examples(&self) -> usize {
        E::example_count(&self.train)
    }

    /// Epochs completed so far.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Whether all `config.epochs` epochs are done.
    pub fn is_finished(&self) -> bool {
        self.epochs_done() >= self.config.epochs
    }

    /// The order of the training examples in epoch `epoch` (1-based), a pure
    /// function of the seed and the epoch, so a resumed run sees the same order.
    fn epoch_order(&self, epoch: usize) -> Vec<u32> {
        let n = E::example_count(&self.train) as u32;
        let mut order: Vec<u32> = (0..n).collect();
        let stream = self.config.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream));
        order
    }

    /// Train one more epoch, then evaluate.
    pub fn train_epoch(&mut self, obs: &mut dyn Observer) -> Result<EpochMetrics> {
        let started = Instant::now();
        let mut train_secs_before = 0.0;
        let epoch = self.epochs_done() + 1;
        if let (Some(aug), Some(source), None) = (&self.config.augment, &self.train_source, self.config.augment_copies)
        {
            // A pure function of (seed, epoch, example), so a resumed run draws the same.
            let (input, images) = (&self.config.arch.input, &source.images);
            let on_device = self.net.engine.distorts_on_device(input, images.rows, images.cols);
            if on_device {
                // The engine distorts as it gathers: only the draws go to it.
                let draws = draw_distortions(images, aug, self.config.seed, epoch);
                self.net.engine.set_distortions(&mut self.train, images, Some(&draws));
            } else {
                // One buffer for every epoch's distortions: no fresh 47 MB to map each time.
                let distorted = self.distorted.get_or_insert_with(|| images.clone());
                distort_into(images, aug, self.config.seed, epoch, distorted);
                self.net.engine.replace_images(&mut self.train, distorted, input);
            }
        }
        let lr = self.config.schedule.resolved(self.config.epochs).lr_at(self.config.lr, epoch - 1);
        let order = self.epoch_order(epoch);
        let resumed = self.partial.take();
        if let (Some(samples), None) = (self.config.optimizer.curvature_samples(), &resumed) {
            // SDLM: the Hessian's diagonal re-estimated before each pass, on the pass's
            // first patterns (appendix C of the paper: 500 of them).
            let t = Instant::now();
            let h = self.net.estimate_curvature(&self.train, &order[..samples.min(order.len())], self.config.threads);
            self.opt.set_curvature(&h);
            train_secs_before = t.elapsed().as_secs_f64();
        }
        let batches = order.len().div_ceil(self.config.batch);
        obs.epoch_start(epoch, self.config.epochs, batches);
        // The running statistics stay where the steps run; they are read only at the
        // epoch's curve points (the last batch is one), which is also where a loss that
        // stopped being a number is noticed.
        let mut stats = TrainStats::default();
        let mut train_secs = train_secs_before;
        let mut points = Vec::with_capacity(CURVE_POINTS_PER_EPOCH + 1);
        let mut first = 0;
        match resumed {
            Some(p) => {
                self.net.restore_train_stats(&p.stats);
                (stats, train_secs, points, first) = (p.stats, p.train_secs, p.points, p.batches_done);
            }
            None => self.net.reset_train_stats(),
        }
        for (b, idx) in order.chunks(self.config.batch).enumerate().skip(first) {
            if b > first && self.stop_requested() {
                // Between batches: b of them are trained; the next run goes on from there.
                let stats = self.net.train_stats();
                if let Some((batch, loss)) = stats.first_nonfinite {
                    // What the next curve point would have said; a NaN is no state to save.
                    return Err(Diverged { epoch, batch, loss, lr, suggested: lr / 2.0 }.into());
                }
                self.partial = Some(PartialEpoch { epoch, batches_done: b, stats, points, train_secs });
                return Err(Interrupted { epoch, batch: b, batches }.into());
            }
            let t = Instant::now();
            self.net.train_step(&self.train, idx, &mut self.opt, lr, self.config.clip_grad_norm);
            let curve = is_curve_batch(b + 1, batches);
            if curve {
                // On a GPU this waits for the steps so far: the clock includes them.
                stats = self.net.train_stats();
            }
            train_secs += t.elapsed().as_secs_f64();
            obs.batch_end(b + 1);
            if curve {
                if let Some((batch, loss)) = stats.first_nonfinite {
                    return Err(Diverged { epoch, batch, loss, lr, suggested: lr / 2.0 }.into());
                }
                // As d2l: the running mean of the batches' mean losses, weighted by size.
                let point = CurvePoint {
                    epoch: (epoch - 1) as f64 + (b + 1) as f64 / batches as f64,
                    train_loss: stats.mean_loss(),
                    train_acc: stats.accuracy(),
                };
                obs.curve_point(&point);
                points.push(point);
            }
        }
        let test = self.evaluate_test();
        let val = self.val.as_ref().map(|v| evaluate(&mut self.net, v, EVAL_BATCH));
        let metrics = EpochMetrics {
            epoch,
            train_loss: stats.mean_loss(),
            train_acc: stats.accuracy(),
            val_loss: val.as_ref().map(|v| v.loss),
            val_acc: val.as_ref().map(|v| v.accuracy),
            test_loss: test.loss,
            test_acc: test.accuracy,
            lr,
            examples_per_sec: stats.examples as f64 / train_secs.max(1e-9),
            seconds: started.elapsed().as_secs_f64(),
            points,
        };
        self.history.push(metrics.clone());
        obs.epoch_end(&metrics);
        Ok(metrics)
    }

    /// Train the remaining epochs into a run folder. After each epoch, and only after
    /// an epoch that finished, its files are written: metrics.csv, the epoch's
    /// checkpoint, last (and best when it is), the curves. A failing epoch (divergence)
    /// returns its error having written nothing, so every earlier file stays as it was.
    ///
    /// Stopped (see [`Self::stop_when`]) inside an epoch, it writes last.safetensors with
    /// where it stopped and returns [`Interrupted`]; between epochs, the same after the
    /// epoch's files.
    pub fn train_into(&mut self, run: &RunDir, obs: &mut dyn Observer) -> Result<()> {
        while !self.is_finished() {
            match self.train_epoch(obs) {
                Ok(_) => {}
                Err(e) if e.is::<Interrupted>() => {
                    run.save_last(&self.checkpoint())?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
            run.write_metrics(&self.history)?;
            run.save_epoch(&self.checkpoint(), self.last_is_best())?;
            run.write_curves(&self.history, &self.config)?;
            if self.stop_requested() && !self.is_finished() {
                let batches = self.train_examples().div_ceil(self.config.batch);
                return Err(Interrupted { epoch: self.epochs_done(), batch: batches, batches }.into());
            }
        }
        Ok(())
    }

    /// Evaluate the network on the whole test set, [`EVAL_BATCH`] examples at a time.
    pub fn evaluate_test(&mut self) -> EvalResult {
        evaluate(&mut self.net, &self.test, EVAL_BATCH)
    }

    /// Is the last epoch the best so far (by validation, else test accuracy)?
    pub fn last_is_best(&self) -> bool {
        let Some(last) = self.history.last() else { return false };
        self.history.iter().all(|m| m.selection_acc() <= last.selection_acc())
    }

    /// The state to save: parameters, optimizer, config and history.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            spec: self.config.arch.clone(),
            params: self.net.params(),
            optim: self.net.optimizer_state(&self.opt),
            meta: Meta {
                epoch: self.epochs_done(),
                config: serde_json::to_value(&self.config).expect("config serialises"),
                history: serde_json::to_value(&self.history).expect("metrics serialise"),
                partial: self.partial.as_ref().map_or(serde_json::Value::Null, |p| {
                    serde_json::to_value(p).expect("an interrupted epoch serialises")
                }),
                lenet_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        }
    }
}
