//! The test images a model gets wrong, as ConvNetJS's demos showed them: each with
//! its true class, the prediction and its probability. Found once per model, on the
//! first request, over the whole test split of the dataset it was trained on.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use serde::Serialize;

use crate::predict::{probabilities, top_k};
use crate::trainer::EVAL_BATCH;

use super::model::ServedModel;

/// A model's errors on its test split.
#[derive(Clone, Debug, Serialize)]
pub struct Gallery {
    pub dataset: String,
    /// Test images classified.
    pub total: usize,
    /// How many of them are wrong.
    pub errors: usize,
    /// Accuracy measured here (it equals `lenet eval`'s).
    pub accuracy: f64,
    /// The wrong ones, in the split's order.
    pub items: Vec<GalleryItem>,
}

impl Gallery {
    /// The counts without the items.
    pub fn summary(&self) -> Gallery {
        Gallery { items: Vec::new(), dataset: self.dataset.clone(), ..*self }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct GalleryItem {
    /// Index in the test split (`lenet data preview --split test --index I` shows it).
    pub index: usize,
    pub label: u8,
    pub predicted: u8,
    /// The predicted class's probability.
    pub probability: f64,
    /// The 28×28 image, row-major bytes, base64.
    pub pixels: String,
}

/// Classify the whole test split of `model`'s dataset (on every core) and keep the errors.
pub fn find_errors(model: &ServedModel, data_dir: Option<&Path>) -> Result<Gallery> {
    let kind = model.dataset.with_context(|| {
        format!("{} does not say which dataset it was trained on, so there is no test set to search", model.info.id)
    })?;
    let test = crate::data::load_part(kind, data_dir, crate::data::Part::Test)?;
    let mut net = model.network(0)?;
    let probs = probabilities(&mut net, &test.images, EVAL_BATCH);
    let b64 = base64::engine::general_purpose::STANDARD;
    let items: Vec<GalleryItem> = probs
        .iter()
        .enumerate()
        .filter_map(|(index, p)| {
            let (predicted, probability) = top_k(p, 1)[0];
            let label = test.labels[index];
            (predicted != label as usize).then(|| GalleryItem {
                index,
                label,
                predicted: predicted as u8,
                probability,
                pixels: b64.encode(test.images.image(index)),
            })
        })
        .collect();
    let total = test.len();
    Ok(Gallery {
        dataset: kind.name().to_string(),
        total,
        errors: items.len(),
        accuracy: (total - items.len()) as f64 / total as f64,
        items,
    })
}
