//! `lenet eval`: loss, accuracy, per-class accuracy and the confusion matrix of
//! any checkpoint (lenet's own, or a PyTorch state_dict saved as safetensors).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use lenet::data::DatasetKind;
use lenet::network::Network;
use lenet::trainer::EVAL_BATCH;

use super::arch::ArchArgs;
use super::data::{split_for_model, SplitName};
use super::device::{self, on_engine, DeviceArgs};
use super::models::ModelArg;

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Dataset (default: the one the checkpoint was trained on).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    /// Architecture, for files that do not carry one (PyTorch state_dicts).
    #[command(flatten)]
    pub arch: ArchArgs,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Also draw the confusion matrix as a heat map with class names (.png or .svg).
    #[arg(long, value_name = "PICTURE")]
    pub confusion: Option<PathBuf>,
}

pub fn run(args: EvalArgs, data_dir: Option<&std::path::Path>) -> Result<()> {
    let want = if args.arch.is_set() { Some(args.arch.spec("d2l")?) } else { None };
    let source = args.model.source()?;
    let ck = source.load(want.as_ref())?;
    let (kind, split) = split_for_model(&source, &ck, args.dataset, args.split, data_dir)?;
    let split = &split;
    let result = on_engine!(device::open(args.device.device, args.threads)?, e => {
        let mut net = Network::new(e, &ck.spec)?;
        net.check_fits(EVAL_BATCH, split.len())?;
        net.set_params(&ck.params)?;
        net.evaluate(split)
    });
    let epoch = if ck.meta.epoch > 0 { format!(", epoch {}", ck.meta.epoch) } else { String::new() };
    println!("{source} (architecture {}{epoch}) on {kind} {:?}", ck.spec.name, args.split);
    print!("{}", result.report(&kind.class_names()));
    if let Some(path) = &args.confusion {
        let split = format!("{:?}", args.split).to_lowercase();
        let title = format!("{} on {kind} {split}: accuracy {:.4}", ck.spec.name, result.accuracy);
        let plot = lenet::internal::viz::heatmap::ConfusionPlot::new(&result.confusion, &kind.class_names(), &title)?;
        lenet::internal::viz::save(&plot, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
