//! `lenet data fetch|import|verify|preview`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};

use lenet::checkpoint::Checkpoint;
use lenet::data::{self, locate, DatasetKind, Part, Split};
use lenet::internal::augment::Augment;
use lenet::internal::fetch::{self, FetchOptions};
use lenet::internal::preview::{augment_grid, preview_grid, save_png, single_image, GridOptions};
use lenet::internal::{import, verify};
use lenet::models::ModelSource;
use lenet::trainer::trained_on;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Download a dataset from its mirrors and check every file's published MD5.
    Fetch {
        dataset: DatasetKind,
        /// Where to put the files (default: ~/.cache/lenet/<dataset>, or --data-dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Mirror base URL to use instead of the built-in list (repeatable, tried in order).
        #[arg(long = "mirror", value_name = "URL")]
        mirrors: Vec<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Import MNIST from the classic deeplearning.net mnist.pkl.gz into IDX files.
    Import {
        /// The mnist.pkl.gz file (gzip'd or raw pickle).
        pickle: PathBuf,
        /// Where to write the IDX files (default: ~/.cache/lenet/mnist, or --data-dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check counts, checksums and the class histogram.
    Verify { dataset: DatasetKind },
    /// Save a grid of labelled images, or one image with --index.
    Preview {
        dataset: DatasetKind,
        #[arg(long, default_value = "preview.png")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitName::Train)]
        split: SplitName,
        /// Number of images in the grid.
        #[arg(long, short = 'n', default_value_t = 50)]
        count: usize,
        /// Index of the first image.
        #[arg(long, default_value_t = 0)]
        start: usize,
        /// Images per row.
        #[arg(long, default_value_t = 10)]
        columns: usize,
        /// Pixel zoom factor.
        #[arg(long, default_value_t = 3)]
        zoom: u32,
        /// Export just this image (28×28, as stored).
        #[arg(long)]
        index: Option<usize>,
        /// Instead: image --start (or --index) and its distortions as training draws
        /// them, one per epoch. Magnitudes as for `lenet train --augment`: paper (±2 px
        /// translation, ±10 % scale, ±10 % squeeze, ±0.15 shear), or settings on top of
        /// it, e.g. rotate=10,elastic (α 34, σ 4) or translate=3,shear=0.
        #[arg(long, value_name = "SETTINGS", num_args = 0..=1, default_missing_value = "paper")]
        augment: Option<Augment>,
        /// The seed of the distortions.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SplitName {
    Train,
    Test,
}

impl From<SplitName> for Part {
    fn from(s: SplitName) -> Part {
        match s {
            SplitName::Train => Part::Train,
            SplitName::Test => Part::Test,
        }
    }
}

/// The split a model runs on (eval, export --logits, predict --grid): of `dataset`, else
/// of the dataset the checkpoint was trained on, with a warning when the two differ.
/// Only that split is read.
pub fn split_for_model(
    source: &ModelSource,
    ck: &Checkpoint,
    dataset: Option<DatasetKind>,
    split: SplitName,
    data_dir: Option<&Path>,
) -> anyhow::Result<(DatasetKind, Split)> {
    let kind = dataset
        .or(trained_on(ck))
        .with_context(|| format!("{source} does not say which dataset it was trained on: pass --dataset"))?;
    warn_if_trained_elsewhere(source, ck, kind);
    Ok((kind, data::load_part(kind, data_dir, split.into())?))
}

/// A model trained on one dataset meeting another says so: its outputs are the other
/// dataset's classes (an MNIST model scores ~5 % on Fashion-MNIST).
pub fn warn_if_trained_elsewhere(source: &ModelSource, ck: &Checkpoint, kind: DatasetKind) {
    if let Some(own) = trained_on(ck).filter(|own| *own != kind) {
        eprintln!(
            "warning: {source} was trained on {own}, not {kind}: its ten outputs are {own}'s classes, \
             so on {kind} it scores near chance until trained there"
        );
    }
}

/// The folder a command writes a dataset into.
fn target_dir(kind: DatasetKind, dir: Option<PathBuf>, data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d);
    }
    if let Some(d) = data_dir {
        return Ok(d.join(kind.name()));
    }
    locate::cache_dir(kind).context("no cache folder: neither $XDG_CACHE_HOME nor $HOME is set; pass --dir")
}

pub fn run(cmd: DataCommand, data_dir: Option<&Path>) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Fetch { dataset, dir, mirrors, quiet } => {
            let dir = target_dir(dataset, dir, data_dir)?;
            let opts = FetchOptions { progress: !quiet, ..FetchOptions::default() };
            let mirrors = (!mirrors.is_empty()).then_some(mirrors.as_slice());
            let report = fetch::fetch_dataset(dataset, &dir, mirrors, &opts)?;
            println!("{report}");
            Ok(())
        }
        DataCommand::Import { pickle, dir } => {
            let dir = target_dir(DatasetKind::Mnist, dir, data_dir)?;
            let report = import::import_mnist_pickle(&pickle, &dir)?;
            print!("{report}");
            println!("checksums match the canonical MNIST files");
            Ok(())
        }
        DataCommand::Verify { dataset } => {
            let dir = locate(dataset, data_dir)?;
            let report = verify::verify(dataset, &dir)?;
            println!("{report}");
            if !report.ok() {
                bail!("{dataset} in {} does not match the published data", dir.display());
            }
            Ok(())
        }
        DataCommand::Preview { dataset, out, split, count, start, columns, zoom, index, augment, seed } => {
            let ds = data::load(dataset, data_dir)?;
            let split = match split {
                SplitName::Train => &ds.train,
                SplitName::Test => &ds.test,
            };
            if let Some(i) = index.or((start >= split.len()).then_some(start)) {
                if i >= split.len() {
                    bail!("index {i} is out of range: the split has {} images", split.len());
                }
            }
            let opts = GridOptions { columns, zoom };
            let img = match (index, augment) {
                (i, Some(aug)) => augment_grid(split, i.unwrap_or(start), &aug, seed, count, &opts),
                (Some(i), None) => single_image(split, i),
                (None, None) => preview_grid(split, &dataset.class_names(), start, count, &opts),
            };
            save_png(&img, &out)?;
            println!("wrote {} ({}×{})", out.display(), img.width(), img.height());
            Ok(())
        }
    }
}
