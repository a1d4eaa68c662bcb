//! Trained models shipped inside the binary, so that `lenet predict` works before any
//! training, from any folder, with no data and no network: `lenet models` lists them,
//! and a model's name goes wherever a checkpoint file does (`predict --model
//! mnist-lenet5`, `eval mnist-relu`, `train --init mnist-relu`).
//!
//! Each is a `lenet train` run of `scripts/train-models` (models/README.md), reduced to
//! what a model is ([`model_of`]: architecture, weights and training config; no
//! optimizer state, no timings, so that retraining it gives the same bytes) in
//! `models/<name>.safetensors`, with its model card ([`ModelCard`]) in
//! `models/<name>.toml`.

use std::fmt;
use std::path::{Path, PathBuf};

mod card;

pub use card::{today, ModelCard};

use crate::checkpoint::{self, Checkpoint, CheckpointError, Meta};
use crate::spec::Spec;

/// One shipped model: its name (`<dataset>-<preset>`), its file and its card.
#[derive(Debug)]
pub struct ShippedModel {
    /// The name `lenet models` lists and `--model` takes, e.g. `mnist-relu`.
    pub name: &'static str,
    bytes: &'static [u8],
    card: &'static str,
}

macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        &[$(ShippedModel {
            name: $name,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/", $name, ".safetensors")),
            card: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/models/", $name, ".toml")),
        }),*]
    };
}

// A static, not a const: a const's bytes are emitted wherever it is used (the binary
// carried the models twice).

/// Every shipped model, MNIST's first.
pub static SHIPPED: &[ShippedModel] = shipped!(
    "mnist-d2l",
    "mnist-relu",
    "mnist-lenet5",
    "fashion-mnist-d2l",
    "fashion-mnist-relu",
    "fashion-mnist-lenet5",
);

impl ShippedModel {
    /// The model file's bytes, as `lenet models export` writes them.
    pub fn bytes(&self) -> &'static [u8] {
        self.bytes
    }

    /// The model card as shipped (TOML).
    pub fn card_text(&self) -> &'static str {
        self.card
    }

    /// The model card, parsed (a shipped card that does not parse is a panic).
    pub fn card(&self) -> ModelCard {
        toml::from_str(self.card).unwrap_or_else(|e| panic!("the shipped card of {} does not parse: {e}", self.name))
    }

    /// The model as a checkpoint (architecture, weights, training config).
    pub fn checkpoint(&self) -> Checkpoint {
        checkpoint::from_bytes(self.bytes, Path::new(self.name), None)
            .unwrap_or_else(|e| panic!("the shipped model {} does not load: {e}", self.name))
    }
}

/// The shipped model called `name`.
pub fn find(name: &str) -> Result<&'static ShippedModel, UnknownModel> {
    SHIPPED.iter().find(|m| m.name == name).ok_or_else(|| UnknownModel(name.to_string()))
}

/// A name that is no shipped model: the message lists the ones there are.
#[derive(Debug, thiserror::Error)]
#[error("no shipped model is called {name:?}; the shipped ones are {known} (`lenet models` lists them)", name = .0, known = names())]
pub struct UnknownModel(pub String);

fn names() -> String {
    SHIPPED.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Where a model comes from: a checkpoint file, or a shipped model by name.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A checkpoint file, by its path as given.
    File(PathBuf),
    /// A model shipped inside the binary.
    Shipped(&'static ShippedModel),
}

impl ModelSource {
    /// How the model is named where one name must tell it apart: a shipped model's name,
    /// or the file's path as given.
    pub fn id(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Shipped(m) => m.name.to_string(),
        }
    }

    /// A checkpoint file where `arg` names one that exists, else the shipped model of
    /// that name; neither is an error that says both.
    pub fn parse(arg: &str) -> Result<ModelSource, anyhow::Error> {
        let path = Path::new(arg);
        if path.exists() {
            return Ok(ModelSource::File(path.to_path_buf()));
        }
        match find(arg) {
            Ok(m) => Ok(ModelSource::Shipped(m)),
            Err(unknown) => anyhow::bail!("{arg}: no such checkpoint file, and {unknown}"),
        }
    }

    /// Read the model (for a file without an architecture of its own, `spec` says it).
    pub fn load(&self, spec: Option<&Spec>) -> Result<Checkpoint, CheckpointError> {
        match self {
            ModelSource::File(path) => checkpoint::load(path, spec),
            ModelSource::Shipped(m) => checkpoint::from_bytes(m.bytes, Path::new(m.name), spec),
        }
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::File(path) => write!(f, "{}", path.display()),
            ModelSource::Shipped(m) => write!(f, "{} (shipped model)", m.name),
        }
    }
}

/// A trained checkpoint reduced to a model: the architecture, the weights and the
/// training config (which says the dataset and the input's scaling) and epoch; no
/// optimizer state and no history (whose timings differ from run to run).
pub fn model_of(ck: &Checkpoint) -> Checkpoint {
    Checkpoint {
        spec: ck.spec.clone(),
        params: ck.params.clone(),
        optim: Vec::new(),
        meta: Meta { epoch: ck.meta.epoch, config: ck.meta.config.clone(), ..Meta::default() },
    }
}
