//! `lenet export`: a checkpoint in other runtimes' formats: ONNX, the pure
//! PyTorch `state_dict`, or its logits on a whole split.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{ArgGroup, Args};

use lenet::checkpoint;
use lenet::data::DatasetKind;
use lenet::internal::atomic::write_atomic;
use lenet::internal::engine::Engine;
use lenet::internal::export;
use lenet::network::Network;
use lenet::trainer::EVAL_BATCH;

use super::arch::ArchArgs;
use super::data::{split_for_model, SplitName};
use super::device::{self, on_engine, DeviceArgs};
use super::models::ModelArg;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("output").required(true).multiple(true).args(["onnx", "state_dict", "logits"])))]
// clap's own usage line (every output in one) is 94 columns: one line per output instead.
#[command(override_usage = "lenet export [OPTIONS] [CKPT|MODEL] --onnx <FILE>
       lenet export [OPTIONS] [CKPT|MODEL] --state-dict <FILE>
       lenet export [OPTIONS] [CKPT|MODEL] --logits <FILE>")]
pub struct ExportArgs {
    /// The checkpoint (.safetensors: lenet's, or a PyTorch state_dict, then say --arch),
    /// or a shipped model's name.
    #[command(flatten)]
    pub model: ModelArg,
    /// Write an ONNX model (opset 13): input `input` (N, 1, S, S) float32, the image as
    /// lenet feeds it (pixels / 255 by default); output `logits` (N, 10).
    #[arg(long, value_name = "FILE")]
    pub onnx: Option<PathBuf>,
    /// Write the model alone, without the optimizer state: PyTorch loads it with
    /// `net.load_state_dict(safetensors.torch.load_file(FILE), strict=True)`.
    #[arg(long, value_name = "FILE")]
    pub state_dict: Option<PathBuf>,
    /// Write the logits of every example of --split (safetensors: logits (N, 10) f32,
    /// labels and predictions (N) u8), to compare with another runtime.
    #[arg(long, value_name = "FILE")]
    pub logits: Option<PathBuf>,
    /// Dataset for --logits (default: the one the checkpoint was trained on).
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
}

pub fn run(args: ExportArgs, data_dir: Option<&std::path::Path>) -> Result<()> {
    let want = if args.arch.is_set() { Some(args.arch.spec("d2l")?) } else { None };
    let source = args.model.source()?;
    let ck = source.load(want.as_ref())?;
    let n_params = ck.params.len();

    if let Some(path) = &args.onnx {
        let bytes =
            export::onnx::to_bytes(&ck.spec, &ck.params).with_context(|| format!("cannot export {source} to ONNX"))?;
        write_atomic(path, &bytes)?;
        println!(
            "wrote {} (ONNX opset {}, architecture {}, {n_params} parameters)",
            path.display(),
            export::onnx::OPSET,
            ck.spec.name
        );
    }

    if let Some(path) = &args.state_dict {
        checkpoint::save(path, &export::state_dict(&ck))?;
        println!(
            "wrote {} (state_dict of {}, {n_params} parameters, no optimizer state)",
            path.display(),
            ck.spec.name
        );
    }

    if let Some(path) = &args.logits {
        let (kind, split) = split_for_model(&source, &ck, args.dataset, args.split, data_dir)?;
        let split = &split;
        let (logits, classes) = on_engine!(device::open(args.device.device, args.threads)?, e => {
            let mut net = Network::new(e, &ck.spec)?;
            net.check_fits(EVAL_BATCH, split.len())?;
            net.set_params(&ck.params)?;
            let examples = net.engine.upload_examples(&split.images, &split.labels, &ck.spec.input);
            (export::logits(&mut net, &examples, EVAL_BATCH), net.num_classes())
        });
        let metadata = HashMap::from([
            ("checkpoint".to_string(), source.to_string()),
            ("dataset".to_string(), kind.to_string()),
            ("split".to_string(), format!("{:?}", args.split).to_lowercase()),
            ("architecture".to_string(), ck.spec.name.clone()),
        ]);
        let bytes = export::logits_bytes(&logits, &split.labels, classes, metadata)
            .map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))?;
        write_atomic(path, &bytes)?;
        println!("wrote {} (logits of {} {kind} {:?} examples)", path.display(), split.labels.len(), args.split);
    }
    Ok(())
}
