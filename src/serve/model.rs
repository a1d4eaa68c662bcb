//! One model ready to look through: a checkpoint, what the page says about it, and a
//! pool of single-threaded CPU networks that classify one picture at a time and hand
//! back every layer's output.
//!
//! One picture fills one lane of a batch tile, so more threads would not make it
//! faster; concurrent requests each take a network of their own instead (the server
//! bounds how many run at once).

use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::data::{DatasetKind, Images};
use crate::engine::cpu::CpuEngine;
use crate::engine::Engine;
use crate::input::fit_images;
use crate::models::ModelSource;
use crate::network::Network;
use crate::predict::{softmax, Prepared, SIDE};
use crate::spec::{LayerSpec, Shape, Spec};
use crate::trainer::{trained_on, EpochMetrics};

use super::gallery::Gallery;

/// A model the server shows, with its networks.
pub struct ServedModel {
    pub info: ModelInfo,
    pub spec: Spec,
    params: Vec<f32>,
    /// The dataset it was trained on, when the checkpoint says.
    pub dataset: Option<DatasetKind>,
    idle: Mutex<Vec<Network<CpuEngine>>>,
    /// The test set's errors, found on the first request for them (a failure is not kept:
    /// the data may be installed while the server runs).
    pub(super) gallery: tokio::sync::OnceCell<Gallery>,
}

/// What the page (and `GET /api/models`) says about a model.
#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    /// How requests name it: a shipped model's name, or the checkpoint's path as given.
    pub id: String,
    /// "shipped" or "file".
    pub source: String,
    /// The architecture's name (its preset's, or its TOML's).
    pub architecture: String,
    /// `mnist`, `fashion-mnist`, or null when the checkpoint does not say.
    pub dataset: Option<String>,
    pub classes: Vec<String>,
    /// On the dataset's 10,000 test images: the card's, or the checkpoint's last epoch's.
    pub test_accuracy: Option<f64>,
    pub parameters: usize,
    /// Side of the network's input (28 or 32).
    pub input_size: usize,
    pub layers: Vec<LayerInfo>,
    /// An RBF output's class bitmaps, for drawing beside the distances.
    pub bitmaps: Option<BitmapInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    /// The spec's kind: conv, avg-pool, sigmoid, linear, rbf, …
    pub kind: String,
    /// The equivalent PyTorch module.
    pub module: String,
    /// `[channels, height, width]` or `[features]`.
    pub shape: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BitmapInfo {
    pub width: usize,
    pub height: usize,
    /// One row-major picture per class, ±1.
    pub values: Vec<Vec<f32>>,
}

/// One picture through the network.
pub struct Activations {
    /// The network's outputs: logits, or −y_i for RBF outputs.
    pub outputs: Vec<f32>,
    pub probabilities: Vec<f64>,
    /// The input image as the network gets it (S×S bytes, after its input fit).
    pub input: Vec<u8>,
    /// Every layer's output, in layer order.
    pub layers: Vec<Vec<f32>>,
}

fn shape_dims(shape: Shape) -> Vec<usize> {
    match shape {
        Shape::Image(c, h, w) => vec![c, h, w],
        Shape::Flat(n) => vec![n],
    }
}

fn kind_name(layer: &LayerSpec) -> String {
    // The spec's own tag (serde's kebab-case), so the page and TOML files agree.
    let value = serde_json::to_value(layer).expect("a layer serialises");
    value.get("type").and_then(|t| t.as_str()).unwrap_or("layer").to_string()
}

/// Where a bitmap set's rows break: "/" or white space between rows of equal length.
fn bitmap_width(picture: &str) -> Option<usize> {
    let rows: Vec<&str> = picture.split(|c: char| c == '/' || c.is_whitespace()).filter(|r| !r.is_empty()).collect();
    let w = rows.first()?.chars().count();
    rows.iter().all(|r| r.chars().count() == w).then_some(w)
}

impl ServedModel {
    pub fn new(source: &ModelSource, ck: Checkpoint) -> Result<ServedModel> {
        let dataset = trained_on(&ck);
        let layers = ck.spec.resolve()?;
        let test_accuracy = match source {
            ModelSource::Shipped(m) => Some(m.card().test_accuracy),
            ModelSource::File(_) => serde_json::from_value::<Vec<EpochMetrics>>(ck.meta.history.clone())
                .ok()
                .and_then(|h| h.last().map(|m| m.test_acc)),
        };
        let bitmaps = match ck.spec.layers.last() {
            Some(LayerSpec::Rbf { bitmaps }) => {
                let values = bitmaps.centres().map_err(anyhow::Error::msg)?;
                let width = match bitmaps {
                    crate::spec::Bitmaps::Pictures(p) => p.first().and_then(|p| bitmap_width(p)),
                    crate::spec::Bitmaps::Named(_) => bitmap_width(crate::layers::rbf::DIGITS_7X12[0]),
                }
                .unwrap_or(values[0].len());
                Some(BitmapInfo { width, height: values[0].len() / width, values })
            }
            _ => None,
        };
        let info = ModelInfo {
            id: source.id(),
            source: match source {
                ModelSource::Shipped(_) => "shipped".into(),
                ModelSource::File(_) => "file".into(),
            },
            architecture: ck.spec.name.clone(),
            dataset: dataset.map(|d| d.name().to_string()),
            classes: dataset.unwrap_or(DatasetKind::Mnist).class_names().iter().map(|s| s.to_string()).collect(),
            test_accuracy,
            parameters: layers.iter().map(|l| l.trainable_count()).sum(),
            input_size: ck.spec.input.size,
            layers: layers
                .iter()
                .enumerate()
                .map(|(index, l)| LayerInfo {
                    index,
                    kind: kind_name(&l.spec),
                    module: l.torch_name(),
                    shape: shape_dims(l.output),
                })
                .collect(),
            bitmaps,
        };
        let model = ServedModel {
            info,
            spec: ck.spec,
            params: ck.params,
            dataset,
            idle: Mutex::new(Vec::new()),
            gallery: tokio::sync::OnceCell::new(),
        };
        // Build one network now: a checkpoint that cannot run fails at start, not on a request.
        let net = model.network(1).with_context(|| format!("{source}: cannot build its network"))?;
        if net.num_classes() != 10 {
            anyhow::bail!("{source}: the network has {} outputs; lenet serves 10 classes", net.num_classes());
        }
        model.idle.lock().expect("pool").push(net);
        Ok(model)
    }

    /// A network with this model's weights on `threads` CPU threads.
    pub fn network(&self, threads: usize) -> Result<Network<CpuEngine>> {
        let mut net = Network::new(CpuEngine::new(threads)?, &self.spec)?;
        net.set_params(&self.params)?;
        Ok(net)
    }

    /// Whether the outputs are RBF distances (−y_i) rather than logits.
    pub fn is_rbf(&self) -> bool {
        self.info.bitmaps.is_some()
    }

    pub fn class_names(&self) -> Vec<&str> {
        self.info.classes.iter().map(String::as_str).collect()
    }

    /// Classify one prepared 28×28 picture, keeping every layer's output.
    pub fn activations(&self, prepared: &Prepared) -> Result<Activations> {
        let mut net = match self.idle.lock().expect("pool").pop() {
            Some(net) => net,
            None => self.network(1)?,
        };
        let images = Images { count: 1, rows: SIDE, cols: SIDE, pixels: prepared.pixels.clone() };
        let input = fit_images(&images, &self.spec.input).pixels;
        let examples = net.engine.upload_examples(&images, &[0], &self.spec.input);
        let layers = net.trace(&examples, &[0]);
        self.idle.lock().expect("pool").push(net);
        let outputs = layers.last().expect("a network has layers").clone();
        Ok(Activations { probabilities: softmax(&outputs), outputs, input, layers })
    }
}
