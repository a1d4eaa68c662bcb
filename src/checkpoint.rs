//! Checkpoints as safetensors: model tensors under their PyTorch `state_dict`
//! keys (`0.weight`, `0.bias`, …), optimizer state under `optim.*`, and in the
//! header the architecture, the training config, the epoch and the metrics, so
//! that a checkpoint describes itself. Written to a temp file and renamed.
//!
//! To load a lenet checkpoint into PyTorch, drop the `optim.*` entries:
//! `net.load_state_dict({k: v for k, v in load_file(p).items() if not k.startswith("optim.")})`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::network::param_layout;
use crate::optim::StateTensor;
use crate::spec::Spec;

const SPEC_KEY: &str = "lenet.spec";
const META_KEY: &str = "lenet.meta";
const OPTIM_PREFIX: &str = "optim.";

/// Everything in the header besides the architecture; free-form JSON parts are
/// owned by the trainer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Epochs completed.
    pub epoch: usize,
    /// The training configuration (the trainer's `TrainConfig`).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Per-epoch metrics so far.
    #[serde(default)]
    pub history: serde_json::Value,
    /// Where an interrupted epoch (`epoch + 1`) stopped, when training was stopped
    /// mid-epoch (the trainer's `PartialEpoch`); null at an epoch's end.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub partial: serde_json::Value,
    /// The lenet version (Cargo package version) that wrote the file; empty when
    /// it does not say (PyTorch files, shipped models).
    #[serde(default)]
    pub lenet_version: String,
}

/// What a checkpoint file holds: the architecture, the flat parameters, the
/// optimizer state and the training metadata.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The architecture, which fixes the parameter tensors' names and shapes.
    pub spec: Spec,
    /// All parameters, flat, in the network's order.
    pub params: Vec<f32>,
    /// Optimizer state (`optim.*` tensors); empty when none was saved.
    pub optim: Vec<StateTensor>,
    /// The header's epoch, training config, history and version.
    pub meta: Meta,
}

/// Every way reading or writing a checkpoint can fail, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Not a safetensors file, or its header's `lenet.spec` or `lenet.meta` is not
    /// valid JSON of its kind.
    #[error("{}: not a valid safetensors file ({problem})", path.display())]
    Format {
        /// The checkpoint file.
        path: PathBuf,
        /// What the parser found wrong.
        problem: String,
    },
    /// The tensors do not fit the architecture (missing, extra, of another shape or dtype,
    /// or not finite), or the architecture is missing, invalid or not the one asked for.
    #[error("{}: {problem}", path.display())]
    Mismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not fit.
        problem: String,
    },
    /// Writing the file failed (an earlier file at the path is left as it was).
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serialise a checkpoint to safetensors bytes.
pub fn to_bytes(ck: &Checkpoint) -> Result<Vec<u8>, String> {
    let layers = ck.spec.resolve().map_err(|e| e.to_string())?;
    let infos = param_layout(&layers);
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for p in &infos {
        let values = ck.params.get(p.range()).ok_or("parameter buffer shorter than the architecture")?;
        owned.push((p.name.clone(), p.shape.clone(), f32_bytes(values)));
    }
    for (name, shape, values) in &ck.optim {
        owned.push((name.clone(), shape.clone(), f32_bytes(values)));
    }
    let views = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e:?}"))?;
    let header = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (SPEC_KEY.to_string(), serde_json::to_string(&ck.spec).map_err(|e| e.to_string())?),
        (META_KEY.to_string(), serde_json::to_string(&ck.meta).map_err(|e| e.to_string())?),
    ]);
    let bytes = safetensors::serialize(views, &Some(header)).map_err(|e| format!("{e:?}"))?;
    sorted_header(bytes)
}

/// safetensors writes the header's metadata in a `HashMap`'s order, which changes from
/// process to process; with its keys sorted, the same checkpoint is always the same
/// bytes (a shipped model retrained is its file, bit for bit). The tensors' offsets are
/// relative to the data, which stays as it is.
fn sorted_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes")) as usize;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + len]).map_err(|e| e.to_string())?;
    let mut json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // The data starts 8-byte aligned, as safetensors pads it: with spaces.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
}

/// Write a checkpoint atomically: an earlier file at `path` survives any failure.
pub fn save(path: impl AsRef<Path>, ck: &Checkpoint) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let bytes = to_bytes(ck).map_err(|problem| CheckpointError::Mismatch { path: path.to_path_buf(), problem })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Read a checkpoint. The architecture comes from the header; a file without
/// one (a PyTorch `state_dict` saved with safetensors) needs `spec`. When both
/// are present they must agree.
pub fn load(path: impl AsRef<Path>, spec: Option<&Spec>) -> Result<Checkpoint, CheckpointError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.to_path_buf(), source })?;
    from_bytes(&bytes, path, spec)
}

/// Read a checkpoint from the bytes of a safetensors file, as [`load`] does;
/// `path` only names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path, spec: Option<&Spec>) -> Result<Checkpoint, CheckpointError> {
    let format = |problem: String| CheckpointError::Format { path: path.to_path_buf(), problem };
    let mismatch = |problem: String| CheckpointError::Mismatch { path: path.to_path_buf(), problem };
    let st = SafeTensors::deserialize(bytes).map_err(|e| format(format!("{e:?}")))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| format(format!("{e:?}")))?;
    let header = metadata.metadata().clone().unwrap_or_default();
    let own_spec = match header.get(SPEC_KEY) {
        Some(s) => Some(serde_json::from_str::<Spec>(s).map_err(|e| format(format!("bad {SPEC_KEY} in header: {e}")))?),
        None => None,
    };
    let spec = match (own_spec, spec) {
        (Some(own), Some(want)) if own.layers != want.layers || own.input.size != want.input.size => {
            return Err(mismatch(format!(
                "holds architecture '{}' ({} layers, input {}×{}), not the expected '{}' ({} layers, input {}×{})",
                own.name,
                own.layers.len(),
                own.input.size,
                own.input.size,
                want.name,
                want.layers.len(),
                want.input.size,
                want.input.size
            )));
        }
        (Some(own), _) => own,
        (None, Some(want)) => want.clone(),
        (None, None) => {
            return Err(mismatch("has no lenet architecture in its header: say which one with --arch".into()));
        }
    };
    let meta = match header.get(META_KEY) {
        Some(m) => serde_json::from_str(m).map_err(|e| format(format!("bad {META_KEY} in header: {e}")))?,
        None => Meta::default(),
    };
    let layers = spec.resolve().map_err(|e| mismatch(e.to_string()))?;
    let infos = param_layout(&layers);
    let read_f32 = |name: &str, view: &TensorView| -> Result<Vec<f32>, CheckpointError> {
        if view.dtype() != Dtype::F32 {
            return Err(mismatch(format!("tensor {name} is {:?}; lenet reads F32 tensors", view.dtype())));
        }
        Ok(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    };
    // Every tensor the architecture needs is found, with its shape and dtype, before
    // the parameters are allocated: the file's own bytes then bound the allocation,
    // whatever size the header's architecture claims.
    let mut found = Vec::with_capacity(infos.len());
    for p in &infos {
        let view = st.tensor(&p.name).map_err(|_| {
            mismatch(format!("has no tensor {} (shape {:?}) that architecture '{}' needs", p.name, p.shape, spec.name))
        })?;
        if view.shape() != p.shape.as_slice() {
            return Err(mismatch(format!(
                "tensor {} has shape {:?}, architecture '{}' needs {:?}",
                p.name,
                view.shape(),
                spec.name,
                p.shape
            )));
        }
        if view.dtype() != Dtype::F32 {
            return Err(mismatch(format!("tensor {} is {:?}; lenet reads F32 tensors", p.name, view.dtype())));
        }
        found.push(view);
    }
    let mut params = vec![0f32; infos.last().map_or(0, |p| p.range().end)];
    for (p, view) in infos.iter().zip(&found) {
        for (v, c) in params[p.range()].iter_mut().zip(view.data().chunks_exact(4)) {
            *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    let mut optim = Vec::new();
    for (name, view) in st.tensors() {
        if name.starts_with(OPTIM_PREFIX) {
            optim.push((name.clone(), view.shape().to_vec(), read_f32(&name, &view)?));
        } else if !infos.iter().any(|p| p.name == name) {
            return Err(mismatch(format!("has tensor {name}, which architecture '{}' does not have", spec.name)));
        }
    }
    optim.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(bad) = params.iter().position(|v| !v.is_finite()) {
        return Err(mismatch(format!("parameter {bad} is {} (a diverged run?)", params[bad])));
    }
    Ok(Checkpoint { spec, params, optim, meta })
}
