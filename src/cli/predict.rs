//! `lenet predict`: classify your own pictures, or a dataset's images into the
//! tutorials' captioned grid.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use lenet::checkpoint::Checkpoint;
use lenet::data::{DatasetKind, Images};
use lenet::internal::engine::Engine;
use lenet::internal::viz::grid::{prediction_grid, Classified, GridOptions};
use lenet::internal::viz::save_rgb_png;
use lenet::models::ModelSource;
use lenet::network::Network;
use lenet::predict::{
    load_image, outputs, picture_json, prepare, probabilities, softmax, top_json, top_k, Prepared, Style, SIDE,
};
use lenet::trainer::{trained_on, EVAL_BATCH};

use super::arch::ArchArgs;
use super::data::{split_for_model, SplitName};
use super::device::{self, on_engine, DeviceArgs};
use super::models;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The checkpoint (.safetensors) or a shipped model's name (`lenet models`), unless
    /// --model says it; then the pictures to classify: PNG, JPEG or BMP, any size,
    /// colour or background.
    #[arg(value_name = "CKPT|MODEL] [PICTURES")]
    pub paths: Vec<PathBuf>,
    /// A shipped model, by name (`lenet models` lists them): every path is a picture.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// The pictures (set from `paths`).
    #[arg(skip)]
    pub images: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many classes to list for each picture.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// How pictures become 28×28 inputs: auto (the checkpoint's dataset style; 28×28
    /// pictures on a dark background as they are), mnist, fashion, or none.
    #[arg(long, default_value = "auto", value_name = "STYLE")]
    pub preprocess: Style,
    /// Save each picture as the network sees it (28×28 PNG) into this folder.
    #[arg(long, value_name = "DIR")]
    pub save_input: Option<PathBuf>,
    /// Classify this dataset's images instead of pictures (default with --grid: the checkpoint's).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Draw the dataset images with their predictions into this PNG; wrong ones are framed in red.
    #[arg(long, value_name = "PNG")]
    pub grid: Option<PathBuf>,
    /// Only the misclassified images.
    #[arg(long)]
    pub misclassified: bool,
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    pub split: SplitName,
    /// Number of dataset images.
    #[arg(long, short = 'n', default_value_t = 40)]
    pub count: usize,
    /// Index of the first dataset image.
    #[arg(long, default_value_t = 0)]
    pub start: usize,
    /// Grid images per row.
    #[arg(long, default_value_t = 10)]
    pub columns: usize,
    /// Grid pixel zoom factor.
    #[arg(long, default_value_t = 3)]
    pub zoom: u32,
    /// Architecture, for files that do not carry one (PyTorch state_dicts).
    #[command(flatten)]
    pub arch: ArchArgs,
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn class_names(kind: Option<DatasetKind>) -> [&'static str; 10] {
    kind.unwrap_or(DatasetKind::Mnist).class_names()
}

fn top_text(probs: &[f64], k: usize, names: &[&str]) -> String {
    let width = names.iter().map(|n| n.len()).max().unwrap_or(1);
    top_k(probs, k)
        .into_iter()
        .map(|(c, p)| format!("  {:<width$}  {:>6.2}%\n", names.get(c).copied().unwrap_or("?"), 100.0 * p))
        .collect()
}

pub fn run(mut args: PredictArgs, data_dir: Option<&Path>) -> Result<()> {
    let want = if args.arch.is_set() { Some(args.arch.spec("d2l")?) } else { None };
    let mut paths = std::mem::take(&mut args.paths).into_iter();
    let first = if args.model.is_some() { None } else { paths.next() };
    let source = models::source(first.as_ref().and_then(|p| p.to_str()), args.model.as_deref())?;
    args.images = paths.collect();
    let ck = source.load(want.as_ref())?;
    on_engine!(device::open(args.device.device, args.threads)?, e => predict_on(e, &args, &source, &ck, data_dir))
}

fn predict_on<E: Engine>(
    engine: E,
    args: &PredictArgs,
    source: &ModelSource,
    ck: &Checkpoint,
    data_dir: Option<&Path>,
) -> Result<()>
where
    Network<E>: Send,
{
    let mut net = Network::new(engine, &ck.spec)?;
    net.set_params(&ck.params)?;
    if net.num_classes() != 10 {
        bail!("{source}: the network has {} outputs; lenet predicts 10 classes", net.num_classes());
    }
    let dataset_mode = args.dataset.is_some() || args.grid.is_some() || args.misclassified;
    match (dataset_mode, args.images.is_empty()) {
        (true, false) => bail!("give pictures, or --dataset/--grid for dataset images, not both"),
        (false, true) => {
            bail!("nothing to predict: give pictures (PNG, JPEG, BMP), or --dataset mnist --grid grid.png")
        }
        (true, true) => predict_dataset(args, source, ck, &mut net, data_dir),
        (false, false) => predict_pictures(args, ck, &mut net),
    }
}

fn predict_pictures<E: Engine>(args: &PredictArgs, ck: &Checkpoint, net: &mut Network<E>) -> Result<()>
where
    Network<E>: Send,
{
    let kind = trained_on(ck);
    let names = class_names(kind);
    let mut prepared: Vec<(usize, Prepared)> = Vec::new();
    let mut failures: Vec<(usize, String)> = Vec::new();
    for (i, path) in args.images.iter().enumerate() {
        let result = load_image(path).map_err(|e| e.to_string()).and_then(|img| {
            prepare(&img, args.preprocess, kind).map_err(|problem| format!("{}: {problem}", path.display()))
        });
        match result {
            Ok(p) => prepared.push((i, p)),
            Err(e) => failures.push((i, e)),
        }
    }
    if let Some(dir) = &args.save_input {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (i, p) in &prepared {
            let stem = args.images[*i].file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let out = dir.join(format!("{stem}.{SIDE}x{SIDE}.png"));
            let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, p.pixels.clone()).expect("28×28");
            lenet::internal::preview::save_png(&img, &out)?;
        }
    }
    let images = Images {
        count: prepared.len(),
        rows: SIDE,
        cols: SIDE,
        pixels: prepared.iter().flat_map(|(_, p)| p.pixels.iter().copied()).collect(),
    };
    let raw = if prepared.is_empty() { Vec::new() } else { outputs(net, &images, EVAL_BATCH) };
    let probs: Vec<Vec<f64>> = raw.iter().map(|o| softmax(o)).collect();
    // Per input image: its preparation, probabilities and raw outputs (None: it failed).
    type Found<'a> = Option<(&'a Prepared, &'a Vec<f64>, &'a Vec<f32>)>;
    let mut by_input: Vec<Found> = vec![None; args.images.len()];
    for (((i, p), pr), o) in prepared.iter().zip(&probs).zip(&raw) {
        by_input[*i] = Some((p, pr, o));
    }
    // RBF outputs are −y_i: the scores are softmax(−y), and --json gives the distances y_i too.
    let rbf = matches!(net.spec().layers.last(), Some(lenet::spec::LayerSpec::Rbf { .. }));
    if args.json {
        let items: Vec<serde_json::Value> = args
            .images
            .iter()
            .enumerate()
            .map(|(i, path)| match by_input[i] {
                Some((p, pr, o)) => picture_json(&path.display().to_string(), p, pr, o, rbf, args.top, &names),
                None => json!({
                    "file": path.display().to_string(),
                    "error": failures.iter().find(|f| f.0 == i).map(|f| f.1.clone()).unwrap_or_default(),
                }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for (i, path) in args.images.iter().enumerate() {
            let Some((p, pr, _)) = by_input[i] else { continue };
            let how = match p.style {
                Style::AsIs => "taken as it is".to_string(),
                s => format!("{s} preprocessing, ink {}×{} px", p.ink_box.2, p.ink_box.3),
            };
            let inverted = if p.inverted { ", inverted (light background)" } else { "" };
            println!("{}  ({}×{}, {how}{inverted})", path.display(), p.source_size.0, p.source_size.1);
            print!("{}", top_text(pr, args.top, &names));
            for w in &p.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
        }
    }
    for (_, e) in &failures {
        eprintln!("error: {e}");
    }
    if !failures.is_empty() {
        bail!("{} of {} pictures could not be classified", failures.len(), args.images.len());
    }
    Ok(())
}

fn predict_dataset<E: Engine>(
    args: &PredictArgs,
    source: &ModelSource,
    ck: &Checkpoint,
    net: &mut Network<E>,
    data_dir: Option<&Path>,
) -> Result<()>
where
    Network<E>: Send,
{
    let (kind, split) = split_for_model(source, ck, args.dataset, args.split, data_dir)?;
    let split = &split;
    if args.start >= split.len() {
        bail!("--start {} is out of range: the split has {} images", args.start, split.len());
    }
    let names = kind.class_names();
    let split_name = format!("{:?}", args.split).to_lowercase();
    // With --misclassified the whole rest of the split is searched for errors.
    let end = if args.misclassified { split.len() } else { (args.start + args.count).min(split.len()) };
    let range: Vec<usize> = (args.start..end).collect();
    let subset = split.select(&range);
    let probs = probabilities(net, &subset.images, EVAL_BATCH);
    let mut items: Vec<(Classified, &Vec<f64>)> = range
        .iter()
        .zip(&probs)
        .enumerate()
        .map(|(k, (&i, p))| {
            let predicted = top_k(p, 1)[0].0 as u8;
            (Classified { index: k, label: split.labels[i], predicted, probability: p[predicted as usize] }, p)
        })
        .collect();
    if args.misclassified {
        items.retain(|(c, _)| c.is_wrong());
        items.truncate(args.count);
    }
    if args.json {
        let out: Vec<serde_json::Value> = items
            .iter()
            .map(|(c, p)| {
                json!({
                    "index": range[c.index],
                    "label": c.label,
                    "predicted": c.predicted,
                    "correct": !c.is_wrong(),
                    "predictions": top_json(p, args.top, &names),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if args.grid.is_none() {
        for (c, p) in &items {
            let mark = if c.is_wrong() { format!("  WRONG (true {})", names[c.label as usize]) } else { String::new() };
            println!("{kind} {split_name} #{}{mark}", range[c.index]);
            print!("{}", top_text(p, args.top, &names));
        }
    }
    let wrong = items.iter().filter(|(c, _)| c.is_wrong()).count();
    if let Some(path) = &args.grid {
        if items.is_empty() {
            bail!("no images to draw: none of images {}..{} is misclassified", args.start, end);
        }
        let shown: Vec<Classified> = items.iter().map(|(c, _)| *c).collect();
        let img =
            prediction_grid(&subset.images, &shown, &names, &GridOptions { columns: args.columns, zoom: args.zoom });
        save_rgb_png(&img, path)?;
        let what = if args.misclassified { "misclassified " } else { "" };
        let msg = format!(
            "wrote {} ({}×{}): {} {what}{kind} {split_name} images, {wrong} wrong",
            path.display(),
            img.width(),
            img.height(),
            shown.len(),
        );
        if args.json {
            eprintln!("{msg}");
        } else {
            println!("{msg}");
        }
    }
    Ok(())
}
