//! Models and outputs leaving lenet, for other runtimes (`lenet export`):
//!
//! - [`onnx`]: the network as an ONNX model;
//! - [`state_dict`]: a checkpoint without its optimizer state, so that the file
//!   holds exactly the `state_dict` of the PyTorch `nn.Sequential` (a lenet
//!   checkpoint loads into PyTorch with `load_state_dict(strict=True)` once its
//!   `optim.*` tensors are left out; this does that in the file);
//! - [`logits`] / [`logits_bytes`]: the network's logits over a whole split, to
//!   compare another runtime's outputs with lenet's, example by example.

pub mod onnx;

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};

use crate::checkpoint::Checkpoint;
use crate::engine::Engine;
use crate::layers::loss::argmax;
use crate::network::Network;

/// The checkpoint with the model only: no `optim.*` tensors. Its architecture
/// and metadata stay in the header (PyTorch ignores them).
pub fn state_dict(ck: &Checkpoint) -> Checkpoint {
    Checkpoint { optim: Vec::new(), ..ck.clone() }
}

/// The logits (N, classes) of every example of `examples`, `batch` at a time.
pub fn logits<E: Engine>(net: &mut Network<E>, examples: &E::Examples, batch: usize) -> Vec<f32>
where
    Network<E>: Send,
{
    let n = E::example_count(examples);
    let mut out = Vec::with_capacity(n * net.num_classes());
    let indices: Vec<u32> = (0..n as u32).collect();
    for chunk in indices.chunks(batch.max(1)) {
        out.extend(net.infer(examples, chunk).1);
    }
    out
}

/// A safetensors file of a split's outputs: `logits` (N, classes) f32, `labels`
/// (N) u8 and `predictions` (N) u8 (the first highest logit, as `argmax`).
/// `metadata` goes into the header.
pub fn logits_bytes(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, String> {
    let n = labels.len();
    if logits.len() != n * classes {
        return Err(format!("{} logits for {n} examples of {classes} classes", logits.len()));
    }
    let predictions: Vec<u8> = logits.chunks(classes.max(1)).map(|row| argmax(row) as u8).collect();
    let logit_bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        ("logits".to_string(), view(Dtype::F32, vec![n, classes], &logit_bytes)?),
        ("labels".to_string(), view(Dtype::U8, vec![n], labels)?),
        ("predictions".to_string(), view(Dtype::U8, vec![n], &predictions)?),
    ];
    safetensors::serialize(tensors, &Some(metadata)).map_err(|e| format!("{e:?}"))
}

fn view(dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Result<TensorView<'_>, String> {
    TensorView::new(dtype, shape, data).map_err(|e| format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    #[test]
    fn logits_file_holds_logits_labels_and_first_argmax() {
        let logits = [0.0, 2.0, 2.0, -1.0, 5.0, 1.0];
        let bytes = logits_bytes(&logits, &[1, 0], 3, HashMap::new()).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("predictions").unwrap().data(), &[1, 1], "ties go to the first maximum");
        assert_eq!(st.tensor("labels").unwrap().data(), &[1, 0]);
        let l = st.tensor("logits").unwrap();
        assert_eq!(l.shape(), &[2, 3]);
        assert_eq!(&l.data()[4..8], &2f32.to_le_bytes());
        assert!(logits_bytes(&logits, &[1], 3, HashMap::new()).is_err());
    }
}
