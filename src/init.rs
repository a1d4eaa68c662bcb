//! Parameter layout and initialisation.
//!
//! All parameters of a network live in one flat `f32` buffer (as in llm.c); a parameter
//! tensor is a named range of it, described by a [`ParamInfo`]. The network module
//! produces the `Vec<ParamInfo>`; [`init_params`] fills the ranges it lists.
//!
//! Initialisations:
//! - [`Init::PyTorchDefault`]: what `nn.Linear` / `nn.Conv2d` do on construction. Weights
//!   `kaiming_uniform_(a=sqrt(5))`, which is `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, biases
//!   `U(-1/sqrt(fan_in), 1/sqrt(fan_in))` with the weight's `fan_in`.
//! - [`Init::Xavier`]: d2l's `init_cnn`, which applies `nn.init.xavier_uniform_` to the
//!   weights of every `nn.Linear` and `nn.Conv2d`: `U(-a, a)`, `a = sqrt(6 / (fan_in +
//!   fan_out))`. It leaves the biases alone, so they keep PyTorch's default above.
//! - [`Init::LeCun`]: LeCun et al. 1998 (appendix), weights and biases
//!   `U(-2.4/fan_in, 2.4/fan_in)`, for the faithful LeNet-5.
//!
//! Values are drawn from the given RNG in the order of the `ParamInfo` list, element by
//! element, so a seed gives the same parameters. They are not PyTorch's values (PyTorch's
//! generator differs); only the distributions match.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Whether a parameter tensor is a weight or a bias; the two are initialised differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamKind {
    /// A weight: a convolution's kernels, a linear layer's matrix or per-map coefficients.
    Weight,
    /// A bias: one value per output unit or map.
    Bias,
}

/// One parameter tensor: a named range of the flat parameter buffer (and, at the same
/// offset, of the gradient buffer and the optimizer's state buffers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// The PyTorch `state_dict` key of the equivalent `nn.Sequential`, e.g. `"0.weight"`.
    pub name: String,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Row-major shape: `[out, in, kh, kw]` for a conv weight, `[out, in]` for a linear
    /// weight, `[out]` for a bias.
    pub shape: Vec<usize>,
    /// Weight or bias, which selects the initialisation rule.
    pub kind: ParamKind,
    /// Inputs feeding each output unit, which sets the initialisation's scale. For a weight
    /// of shape `[out, in, k...]` PyTorch's `in * prod(k)`; for a bias, its weight's fan-in
    /// (a bias has no fan of its own, PyTorch uses the weight's). Layers with sparse
    /// connections (LeNet-5's C3 table) may set the true count.
    pub fan_in: usize,
    /// Outputs each input feeds: for a weight `out * prod(k)` (PyTorch), used by Xavier.
    /// Unused for biases (the constructor sets 1).
    pub fan_out: usize,
    /// Where output units differ in fan-in (a convolution with a connection table):
    /// the fan-in of each slice along the first dimension, overriding `fan_in` for
    /// LeCun's initialisation. Empty: every unit has `fan_in`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_fan_in: Vec<usize>,
}

impl ParamInfo {
    /// A weight tensor, its fans computed from `shape` as PyTorch's
    /// `_calculate_fan_in_and_fan_out` does (see [`fans`]).
    pub fn weight(name: impl Into<String>, offset: usize, shape: Vec<usize>) -> Self {
        let (fan_in, fan_out) = fans(&shape);
        Self { name: name.into(), offset, shape, kind: ParamKind::Weight, fan_in, fan_out, row_fan_in: vec![] }
    }

    /// A weight of one value per map (trainable subsampling's coefficients), each
    /// unit summing `fan_in` inputs.
    pub fn per_map(name: impl Into<String>, offset: usize, maps: usize, fan_in: usize) -> Self {
        Self {
            name: name.into(),
            offset,
            shape: vec![maps],
            kind: ParamKind::Weight,
            fan_in,
            fan_out: 1,
            row_fan_in: vec![],
        }
    }

    /// This tensor with output unit `i` (slice `i` of the first dimension) having
    /// fan-in `fan_ins[i]`.
    pub fn with_row_fan_in(mut self, fan_ins: Vec<usize>) -> Self {
        self.row_fan_in = fan_ins;
        self
    }

    /// A bias tensor of `len` elements whose weight has fan-in `fan_in`.
    pub fn bias(name: impl Into<String>, offset: usize, len: usize, fan_in: usize) -> Self {
        Self {
            name: name.into(),
            offset,
            shape: vec![len],
            kind: ParamKind::Bias,
            fan_in,
            fan_out: 1,
            row_fan_in: vec![],
        }
    }

    /// Number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The range of the flat buffer this tensor occupies.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// `(fan_in, fan_out)` of a weight of shape `[out, in, k...]`, as PyTorch's
/// `_calculate_fan_in_and_fan_out`: `fan_in = in * prod(k)`, `fan_out = out * prod(k)`.
///
/// Panics for fewer than 2 dimensions, as PyTorch raises there.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    assert!(shape.len() >= 2, "fan in and fan out need a weight of at least 2 dimensions, got shape {shape:?}");
    let receptive: usize = shape[2..].iter().product();
    (shape[1] * receptive, shape[0] * receptive)
}

/// How to initialise weights and biases; see the [module documentation](self).
///
/// Serialised and parsed as `"pytorch"`, `"xavier"`, `"lecun"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Init {
    /// d2l's `init_cnn`: Xavier-uniform weights, PyTorch-default biases.
    #[serde(rename = "xavier")]
    Xavier,
    /// PyTorch's construction-time init of `nn.Linear` / `nn.Conv2d`.
    #[default]
    #[serde(rename = "pytorch")]
    PyTorchDefault,
    /// LeCun 1998: weights and biases `U(-2.4/fan_in, 2.4/fan_in)`.
    #[serde(rename = "lecun")]
    LeCun,
}

impl Init {
    /// The half-width `b` of the uniform distribution `U(-b, b)` a tensor is drawn from.
    /// Computed as PyTorch computes it (in `f64`).
    pub fn bound(self, info: &ParamInfo) -> f64 {
        self.bound_with_fan_in(info, info.fan_in)
    }

    /// [`Self::bound`] for a unit of `info` whose fan-in is `fan_in`.
    fn bound_with_fan_in(self, info: &ParamInfo, fan_in_units: usize) -> f64 {
        let info = &ParamInfo { fan_in: fan_in_units, ..info.clone() };
        let fan_in = info.fan_in as f64;
        let default_bias = || if info.fan_in > 0 { 1.0 / fan_in.sqrt() } else { 0.0 };
        match (self, info.kind) {
            (Init::LeCun, _) => {
                if info.fan_in > 0 {
                    2.4 / fan_in
                } else {
                    0.0
                }
            }
            (Init::PyTorchDefault, ParamKind::Weight) => {
                // kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)), std = gain /
                // sqrt(fan_in), bound = sqrt(3) * std, i.e. 1 / sqrt(fan_in).
                let a = 5.0f64.sqrt();
                let gain = (2.0 / (1.0 + a * a)).sqrt();
                let std = gain / fan_in.sqrt();
                3.0f64.sqrt() * std
            }
            (Init::Xavier, ParamKind::Weight) => {
                // xavier_uniform_(gain=1): std = sqrt(2 / (fan_in + fan_out)), a = sqrt(3) * std.
                let std = (2.0 / (info.fan_in + info.fan_out) as f64).sqrt();
                3.0f64.sqrt() * std
            }
            (Init::PyTorchDefault | Init::Xavier, ParamKind::Bias) => default_bias(),
        }
    }
}

/// `pytorch` (or `default`), `xavier`, `lecun`.
impl FromStr for Init {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pytorch" | "default" | "pytorch-default" => Ok(Init::PyTorchDefault),
            "xavier" => Ok(Init::Xavier),
            "lecun" => Ok(Init::LeCun),
            other => Err(format!("unknown initialisation {other:?}: expected pytorch, xavier or lecun")),
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Init::Xavier => "xavier",
            Init::PyTorchDefault => "pytorch",
            Init::LeCun => "lecun",
        })
    }
}

/// Fills each tensor listed in `infos` with draws from `U(-b, b)`, `b = init.bound(info)`,
/// in list order, element by element (`x = u * (2b) - b`, `u` uniform in `[0, 1)` from
/// `rng`, the form of PyTorch's `uniform_`). Elements of `params` outside the listed ranges
/// are left as they are.
///
/// Panics if a range lies outside `params`.
pub fn init_params(params: &mut [f32], infos: &[ParamInfo], init: Init, rng: &mut impl Rng) {
    for info in infos {
        let range = info.range();
        assert!(
            range.end <= params.len(),
            "parameter {} occupies {range:?}, beyond the buffer of {} values",
            info.name,
            params.len()
        );
        let rows = info.shape.first().copied().unwrap_or(1).max(1);
        let per_row = info.numel() / rows;
        for (r, row) in params[range].chunks_mut(per_row.max(1)).enumerate() {
            // LeCun's bound follows each unit's own fan-in (C3's maps read 3, 4 or 6 maps).
            let fan_in = match (init, info.row_fan_in.get(r)) {
                (Init::LeCun, Some(&f)) => f,
                _ => info.fan_in,
            };
            let bound = init.bound_with_fan_in(info, fan_in) as f32;
            let (from, width) = (-bound, 2.0 * bound);
            for x in row {
                let u: f32 = rng.gen();
                *x = u * width + from;
            }
        }
    }
}
