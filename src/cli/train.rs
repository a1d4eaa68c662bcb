//! `lenet train`: the main job.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use lenet::checkpoint;
use lenet::data::{self, DatasetKind};
use lenet::init::Init;
use lenet::internal::augment::Augment;
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::Engine;
use lenet::internal::run::RunDir;
use lenet::internal::viz::curves::{Curves, EpochEval};
use lenet::internal::viz::live::{self, LiveTerminal};
use lenet::models::ModelSource;
use lenet::optim::OptimizerKind;
use lenet::schedule::LrSchedule;
use lenet::trainer::{CurvePoint, EpochMetrics, Interrupted, Observer, TrainConfig, Trainer};

use super::arch::ArchArgs;
use super::device::{self, on_engine, DeviceArgs};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub arch: ArchArgs,
    /// fashion-mnist (the default) or mnist; with --init MODEL, the model's dataset.
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Epochs to train (default 10, lenet5 20; with --resume, the checkpoint's, or this
    /// to extend it).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per update (default 256, lenet5 1: one pattern per update, as the paper).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate (default: 0.9 for sgd, as d2l; 0.001 for adam and adamw; 0.0005 for
    /// sdlm, the paper's η of the first passes).
    #[arg(long)]
    pub lr: Option<f64>,
    /// sgd, adam, adamw or sdlm, optionally with settings: sgd:momentum=0.9,nesterov,wd=5e-4,
    /// sdlm:mu=1,samples=500 (default sgd; lenet5: sdlm).
    #[arg(long)]
    pub optimizer: Option<OptimizerKind>,
    /// SGD momentum (shortcut for sgd:momentum=M).
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay (L2 for sgd and adam; decoupled for adamw).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule: constant, step:STEP_SIZE:GAMMA, cosine[:T_MAX[:ETA_MIN]], or
    /// lenet5 (the paper's η per pass; lenet5's default).
    #[arg(long)]
    pub schedule: Option<LrSchedule>,
    /// Clip the gradients' total L2 norm to this value.
    #[arg(long, value_name = "MAX_NORM")]
    pub clip_grad_norm: Option<f32>,
    /// Initialisation: xavier (d2l's, the default), pytorch, lecun (lenet5's); or a
    /// checkpoint / PyTorch safetensors file or a shipped model (`lenet models`) to start
    /// from (fine-tuning; its architecture unless --arch says otherwise).
    #[arg(long, value_name = "SCHEME|FILE|MODEL")]
    pub init: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (0: all cores). The same seed and thread count give identical results.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Fraction of the training set held out for validation (picks best.safetensors).
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Distort the training images afresh every epoch, as LeNet-5 was trained: paper
    /// (±2 px translation, ±10 % scale, ±10 % squeeze, ±0.15 shear), or settings on top
    /// of it, e.g. rotate=10,elastic (α 34, σ 4). `lenet data preview --augment` shows them.
    #[arg(long, value_name = "SETTINGS", num_args = 0..=1, default_missing_value = "paper")]
    pub augment: Option<Augment>,
    /// Train on the originals plus N distorted copies drawn once, as the paper did (9
    /// copies: 540,000 distorted images beside the 60,000), instead of fresh distortions
    /// every epoch. Implies --augment (paper) when that is not given.
    #[arg(long, value_name = "N")]
    pub augment_copies: Option<usize>,
    /// Per-class loss weights: ten positive numbers, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "W0,…,W9")]
    pub class_weights: Option<Vec<f32>>,
    /// The run folder (default: runs/<arch>-<dataset>-N).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run of this checkpoint (its config, optimizer state and history), or
    /// of this run folder from its newest checkpoint.
    #[arg(long, value_name = "CKPT|RUN")]
    pub resume: Option<PathBuf>,
    /// Draw the learning curves live in the terminal (plain lines ~5 times per epoch when
    /// the output is not a terminal).
    #[arg(long)]
    pub live: bool,
}

/// What `lenet train --arch X` runs when no option says otherwise: d2l's chapter for
/// the LeNet family, the paper's recipe for lenet5 (SDLM at one pattern per update,
/// its η schedule, 20 passes, LeCun's initialisation).
struct Recipe {
    optimizer: OptimizerKind,
    batch: usize,
    epochs: usize,
    schedule: LrSchedule,
    init: &'static str,
}

impl Recipe {
    fn of(spec: &lenet::spec::Spec) -> Recipe {
        if spec.name == "lenet5" {
            Recipe {
                optimizer: OptimizerKind::sdlm(),
                batch: 1,
                epochs: 20,
                schedule: LrSchedule::Lenet5,
                init: "lecun",
            }
        } else {
            Recipe {
                optimizer: OptimizerKind::sgd(),
                batch: 256,
                epochs: 10,
                schedule: LrSchedule::Constant,
                init: "xavier",
            }
        }
    }
}

impl TrainArgs {
    /// Whether the options give a config `lenet train` accepts, without loading any
    /// data or checkpoint (a sweep checks every trial's when it is planned).
    pub fn check(&self) -> Result<()> {
        let fine_tuning = self.init.as_deref().is_some_and(|i| i.parse::<Init>().is_err());
        if self.resume.is_some() || fine_tuning {
            self.arch.spec("d2l")?;
            return Ok(());
        }
        self.config(CpuEngine::resolve_threads(self.threads), None)?.validate()
    }

    /// The --init setting, or the architecture's default.
    fn init_setting(&self, spec: &lenet::spec::Spec) -> String {
        self.init.clone().unwrap_or_else(|| Recipe::of(spec).init.to_string())
    }

    /// The run's config; `init`: the --init model, whose architecture and dataset are
    /// the run's unless --arch and --dataset say otherwise.
    fn config(&self, threads: usize, init: Option<&checkpoint::Checkpoint>) -> Result<TrainConfig> {
        let arch = match init {
            Some(ck) if !self.arch.is_set() => ck.spec.clone(),
            _ => self.arch.spec("d2l")?,
        };
        let trained_on = init.and_then(|ck| serde_json::from_value::<TrainConfig>(ck.meta.config.clone()).ok());
        let dataset = self.dataset.or(trained_on.map(|c| c.dataset)).unwrap_or(DatasetKind::FashionMnist);
        let recipe = Recipe::of(&arch);
        let mut optimizer = self.optimizer.unwrap_or(recipe.optimizer);
        match &mut optimizer {
            OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                if let Some(m) = self.momentum {
                    *momentum = m;
                }
                *nesterov |= self.nesterov;
                if let Some(w) = self.weight_decay {
                    *weight_decay = w;
                }
            }
            OptimizerKind::Adam { weight_decay, .. } | OptimizerKind::AdamW { weight_decay, .. } => {
                if self.momentum.is_some() || self.nesterov {
                    bail!("--momentum and --nesterov apply to sgd");
                }
                if let Some(w) = self.weight_decay {
                    *weight_decay = w;
                }
            }
            OptimizerKind::Sdlm { .. } => {
                if self.momentum.is_some() || self.nesterov || self.weight_decay.is_some() {
                    bail!("--momentum, --nesterov and --weight-decay do not apply to sdlm");
                }
            }
        }
        let lr = self.lr.unwrap_or(match optimizer {
            OptimizerKind::Sgd { .. } => 0.9,
            OptimizerKind::Sdlm { .. } => 5e-4,
            _ => 1e-3,
        });
        let init = self.init_setting(&arch).parse::<Init>().unwrap_or(Init::Xavier);
        Ok(TrainConfig {
            arch,
            dataset,
            epochs: self.epochs.unwrap_or(recipe.epochs),
            batch: self.batch.unwrap_or(recipe.batch),
            lr,
            optimizer,
            schedule: self.schedule.unwrap_or(recipe.schedule),
            init,
            seed: self.seed,
            threads,
            val_split: self.val_split,
            clip_grad_norm: self.clip_grad_norm,
            class_weights: self.class_weights.clone(),
            augment: self.augment.or(self.augment_copies.map(|_| Augment::paper())),
            augment_copies: self.augment_copies,
        })
    }
}

/// Progress bar per epoch and the d2l-style lines; with --live, the curves
/// in the terminal or, when stdout is not one, a line per curve point.
struct Console {
    bar: Option<ProgressBar>,
    epochs: usize,
    live: Live,
    /// The epoch's running (loss, accuracy) at its last curve point.
    running: Option<(f64, f64)>,
}

enum Live {
    Off,
    /// A line per curve point.
    Lines,
    Chart(Box<LiveChart>),
}

struct LiveChart {
    term: LiveTerminal,
    curves: Curves,
    epoch: usize,
    batches: usize,
    status: String,
    drawn: Option<Instant>,
}

impl LiveChart {
    fn redraw(&mut self, force: bool) {
        if !force && self.drawn.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.drawn = Some(Instant::now());
        // A terminal that stops answering only loses the picture, never the run.
        let _ = self.term.draw(&self.curves, &self.status);
    }
}

impl Console {
    fn new(live: bool, curves: Curves) -> Self {
        let live = match (live, std::io::stdout().is_terminal()) {
            (false, _) => Live::Off,
            (true, false) => Live::Lines,
            (true, true) => match LiveTerminal::new() {
                Ok(term) => Live::Chart(Box::new(LiveChart {
                    term,
                    curves,
                    epoch: 0,
                    batches: 0,
                    status: String::new(),
                    drawn: None,
                })),
                Err(e) => {
                    eprintln!("warning: {e:#}; printing lines instead");
                    Live::Lines
                }
            },
        };
        Console { bar: None, epochs: 0, live, running: None }
    }

    fn finish(self) {
        if let Live::Chart(mut chart) = self.live {
            chart.status = "done".into();
            chart.redraw(true);
            let _ = chart.term.finish();
        }
    }
}

impl Observer for Console {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.epochs = epochs;
        self.running = None;
        if let Live::Chart(chart) = &mut self.live {
            (chart.epoch, chart.batches) = (epoch, batches);
            chart.curves.epochs = chart.curves.epochs.max(epochs);
            chart.status = format!("epoch {epoch}/{epochs} {}", live::bar(0, batches, 30));
            chart.redraw(true);
            return;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  ({elapsed}<{eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }
    fn batch_end(&mut self, batch: usize) {
        // The loss and accuracy are the last curve point's: read back only there.
        let running = self.running.map_or(String::new(), |(loss, acc)| format!("  loss {loss:.3}  train acc {acc:.3}"));
        if let Live::Chart(c) = &mut self.live {
            c.status = format!(
                "epoch {}/{} {} {batch}/{} batches{running}",
                c.epoch,
                self.epochs,
                live::bar(batch, c.batches, 30),
                c.batches
            );
            c.redraw(false);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            bar.set_message(running.trim_start().to_string());
        }
    }
    fn curve_point(&mut self, p: &CurvePoint) {
        self.running = Some((p.train_loss, p.train_acc));
        match &mut self.live {
            Live::Off => {}
            Live::Lines => {
                println!("epoch {:.2}  loss {:.3}  train acc {:.3}", p.epoch, p.train_loss, p.train_acc);
            }
            Live::Chart(c) => {
                c.curves.push_point(*p);
                c.redraw(true);
            }
        }
    }
    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let val = m.val_acc.map_or(String::new(), |v| format!("  val acc {v:.3}"));
        let line = format!(
            "epoch {}/{}  loss {:.3}  train acc {:.3}{val}  test acc {:.3}  {:.0} examples/sec",
            m.epoch, self.epochs, m.train_loss, m.train_acc, m.test_acc, m.examples_per_sec
        );
        match &mut self.live {
            Live::Chart(c) => {
                c.curves.push_eval(EpochEval { epoch: m.epoch, test_acc: m.test_acc, val_acc: m.val_acc });
                if c.term.print_line(&line).is_err() {
                    println!("{line}");
                }
                c.redraw(true);
            }
            _ => println!("{line}"),
        }
    }
}

/// Where a run starts: a checkpoint to resume, or a fresh config (with the weights to
/// fine-tune from, if any).
enum Start {
    Resume { ck: Box<checkpoint::Checkpoint>, path: PathBuf },
    Fresh { config: Box<TrainConfig>, initial: Option<Vec<f32>> },
}

pub fn run(args: TrainArgs, data_dir: Option<&std::path::Path>) -> Result<()> {
    let (start, threads) = if let Some(ckpt) = &args.resume {
        if args.arch.is_set() {
            bail!("--resume continues the checkpoint's own architecture: drop --arch and its options");
        }
        let ckpt = &if ckpt.is_dir() {
            let newest = RunDir { path: ckpt.clone() }.newest_checkpoint()?;
            for problem in &newest.unreadable {
                eprintln!("warning: skipping a checkpoint that does not load: {problem}");
            }
            newest.path
        } else {
            ckpt.clone()
        };
        let ck = checkpoint::load(ckpt, None)?;
        let config: TrainConfig = serde_json::from_value(ck.meta.config.clone())
            .with_context(|| format!("{} holds no training config to resume", ckpt.display()))?;
        config.validate().with_context(|| format!("cannot resume from {}", ckpt.display()))?;
        (Start::Resume { ck: Box::new(ck), path: ckpt.clone() }, config.threads)
    } else {
        // --init FILE or a shipped model's name: fine-tuning, from its weights.
        let init_model = match args.init.as_deref() {
            Some(init) if init.parse::<Init>().is_err() => {
                let source = ModelSource::parse(init)
                    .with_context(|| format!("--init {init}: not an init scheme (xavier, pytorch, lecun)"))?;
                // In --arch's architecture when it says one (a PyTorch state_dict has
                // none of its own; a lenet file's must agree), else in the file's.
                let want = if args.arch.is_set() { Some(args.arch.spec("d2l")?) } else { None };
                let ck = source.load(want.as_ref())?;
                Some((source, ck))
            }
            _ => None,
        };
        let config = args.config(CpuEngine::resolve_threads(args.threads), init_model.as_ref().map(|(_, ck)| ck))?;
        config.validate()?;
        if let Some((source, ck)) = &init_model {
            super::data::warn_if_trained_elsewhere(source, ck, config.dataset);
        }
        let initial = init_model.map(|(source, ck)| {
            println!("starting from the weights of {source}");
            ck.params
        });
        let threads = config.threads;
        (Start::Fresh { config: Box::new(config), initial }, threads)
    };
    let engine = device::open(args.device.device, threads)?;
    on_engine!(engine, e => train_on(e, start, &args, data_dir))
}

fn train_on<E: Engine>(engine: E, start: Start, args: &TrainArgs, data_dir: Option<&std::path::Path>) -> Result<()>
where
    lenet::network::Network<E>: Send,
{
    let (run_dir, mut trainer, test);
    match start {
        Start::Resume { ck, path } => {
            let config: TrainConfig = serde_json::from_value(ck.meta.config.clone())?;
            let ds = data::load(config.dataset, data_dir)?;
            trainer = Trainer::resume(engine, &ck, &ds.train, &ds.test, args.epochs)
                .with_context(|| format!("cannot resume from {}", path.display()))?;
            test = ds.test;
            run_dir = args.run_dir.clone().map(|path| RunDir { path }).unwrap_or_else(|| RunDir::of_checkpoint(&path));
            run_dir.remove_stale_temp_files();
            // The config the run now goes on with (e.g. more epochs): curves and reports read it.
            run_dir.write_config(&trainer.config)?;
            let within = match trainer.batches_done() {
                0 => String::new(),
                b => format!(", after its batch {b}"),
            };
            println!(
                "resuming {} at epoch {} of {}{within} (from {})",
                run_dir.path.display(),
                trainer.epochs_done() + 1,
                trainer.config.epochs,
                path.display()
            );
        }
        Start::Fresh { config, initial } => {
            let ds = data::load(config.dataset, data_dir)?;
            // Settings the data refuses (a batch larger than it) fail before a run folder exists.
            trainer = Trainer::new(engine, *config, &ds.train, &ds.test, initial.as_deref())?;
            let config = &trainer.config;
            run_dir = match &args.run_dir {
                Some(p) => RunDir::create(
                    p.parent().unwrap_or(std::path::Path::new(".")),
                    p.file_name().and_then(|n| n.to_str()),
                    config,
                )?,
                None => RunDir::create(std::path::Path::new("runs"), None, config)?,
            };
            run_dir.write_config(config)?;
            test = ds.test;
        }
    }
    // Before the first line saying it trains: from then on Ctrl-C saves.
    trainer.stop_when(stop_on_signals()?);
    println!("training on {}", trainer.net.engine.describe());
    let so_far = Curves::from_history(&run_dir.name(), &trainer.history, trainer.config.epochs);
    let mut console = Console::new(args.live, so_far);
    let trained = trainer.train_into(&run_dir, &mut console);
    console.finish();
    if let Err(e) = &trained {
        if e.is::<Interrupted>() {
            eprintln!("{e}");
            eprintln!("{} holds where it stopped", run_dir.last().display());
            eprintln!("to go on: lenet train --resume {}", run_dir.path.display());
        }
    }
    trained?;
    let h = &trainer.history;
    let last = h.last().context("no epoch was trained")?;
    println!("loss {:.3}, train acc {:.3}, test acc {:.3}", last.train_loss, last.train_acc, last.test_acc);
    println!("{:.1} examples/sec on {}", lenet::trainer::mean_examples_per_sec(h), trainer.net.engine.describe());
    let best = lenet::trainer::best_epoch(h);
    write_confusion(&run_dir, &trainer.config, &test)?;
    println!(
        "run saved in {} (best.safetensors: epoch {}, {} acc {:.3})",
        run_dir.path.display(),
        best.epoch,
        if best.val_acc.is_some() { "val" } else { "test" },
        best.selection_acc()
    );
    Ok(())
}

/// A flag that Ctrl-C (SIGINT) or SIGTERM (what Slurm and Kubernetes send first) sets,
/// for the trainer to stop at the next batch and save where it was. A second signal
/// ends the process at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so that it sees the flag the first signal set only at the second.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

/// The confusion matrix of best.safetensors on the test set, as confusion.png in the run folder.
fn write_confusion(run_dir: &RunDir, cfg: &TrainConfig, test: &lenet::data::Split) -> Result<()> {
    let ck = checkpoint::load(run_dir.best(), Some(&cfg.arch))?;
    let mut net = lenet::network::Network::new(CpuEngine::new(cfg.threads)?, &ck.spec)?;
    net.set_params(&ck.params)?;
    let result = net.evaluate(test);
    let title =
        format!("{} on {} test, epoch {}: accuracy {:.4}", ck.spec.name, cfg.dataset, ck.meta.epoch, result.accuracy);
    let plot =
        lenet::internal::viz::heatmap::ConfusionPlot::new(&result.confusion, &cfg.dataset.class_names(), &title)?;
    lenet::internal::viz::save(&plot, &run_dir.path.join("confusion.png"))
}
