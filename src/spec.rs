//! Architectures as data: an input description and a list of layers, in the
//! order of the equivalent PyTorch `nn.Sequential` (so layer `i`'s parameters
//! are the state_dict keys `i.weight` and `i.bias`). Shapes, and with them every
//! layer's input size, are derived, never typed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One layer. In TOML: `{ type = "conv", out_channels = 6, kernel = 5, padding = 2 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv {
        out_channels: usize,
        kernel: usize,
        #[serde(default)]
        padding: usize,
        #[serde(default = "one")]
        stride: usize,
    },
    AvgPool {
        size: usize,
        stride: usize,
    },
    MaxPool {
        size: usize,
        stride: usize,
    },
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu {
        #[serde(default = "default_slope")]
        slope: f32,
    },
    Flatten,
    Linear {
        out_features: usize,
    },
}

impl LayerSpec {
    /// The layer's sizes (channels, features, kernel, padding, stride, window).
    fn sizes(&self) -> [usize; 4] {
        match *self {
            LayerSpec::Conv { out_channels, kernel, padding, stride } => [out_channels, kernel, padding, stride],
            LayerSpec::AvgPool { size, stride } | LayerSpec::MaxPool { size, stride } => [size, stride, 0, 0],
            LayerSpec::Linear { out_features } => [out_features, 0, 0, 0],
            _ => [0; 4],
        }
    }
}

/// Limits past which an architecture is refused as a mistake (or a hostile file),
/// before anything is allocated: any one size, the layer count, and the weights or
/// outputs per example of one layer and of all layers together (2^28 f32 values are
/// 1 GiB).
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 256;
const MAX_ELEMENTS: usize = 1 << 28;

/// The product of `dims`, if it neither overflows nor passes [`MAX_ELEMENTS`].
fn checked_elements(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).filter(|&n| n <= MAX_ELEMENTS)
}

fn one() -> usize {
    1
}
fn default_slope() -> f32 {
    0.01
}

/// An elementwise activation function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Sigmoid,
    Tanh,
    Relu,
    LeakyRelu(f32),
}

impl Activation {
    pub fn layer(self) -> LayerSpec {
        match self {
            Activation::Sigmoid => LayerSpec::Sigmoid,
            Activation::Tanh => LayerSpec::Tanh,
            Activation::Relu => LayerSpec::Relu,
            Activation::LeakyRelu(slope) => LayerSpec::LeakyRelu { slope },
        }
    }
}

impl FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "sigmoid" => Ok(Activation::Sigmoid),
            "tanh" => Ok(Activation::Tanh),
            "relu" => Ok(Activation::Relu),
            "leaky-relu" | "leakyrelu" => Ok(Activation::LeakyRelu(0.01)),
            other => match other.strip_prefix("leaky-relu:") {
                Some(v) => v.parse().map(Activation::LeakyRelu).map_err(|_| format!("bad leaky-relu slope '{v}'")),
                None => Err(format!("unknown activation '{s}' (sigmoid, tanh, relu, leaky-relu[:slope])")),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    Avg,
    Max,
}

impl FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "avg" | "average" => Ok(Pooling::Avg),
            "max" => Ok(Pooling::Max),
            _ => Err(format!("unknown pooling '{s}' (avg, max)")),
        }
    }
}

/// How a 28×28 image becomes the network's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Zero-pad around the image (as LeNet-5 did: 28×28 digits centred in 32×32).
    Pad,
    /// Bilinear resize.
    Resize,
}

/// Pixel scaling: bytes to [0, 1] (like `ToTensor`), then optionally standardised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Normalize {
    Unit,
    Standardize { mean: f32, std: f32 },
}

impl FromStr for Normalize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "unit" | "none" => Ok(Normalize::Unit),
            "mnist" => Ok(Normalize::Standardize { mean: 0.1307, std: 0.3081 }),
            "fashion-mnist" => Ok(Normalize::Standardize { mean: 0.2860, std: 0.3530 }),
            other => {
                let bad = || format!("bad normalization '{s}' (unit, mnist, fashion-mnist, or MEAN,STD)");
                let (m, sd) = other.split_once(',').ok_or_else(bad)?;
                let (mean, std) = (m.trim().parse().map_err(|_| bad())?, sd.trim().parse().map_err(|_| bad())?);
                if std <= 0.0 {
                    return Err(format!("normalization std must be positive, got {std}"));
                }
                Ok(Normalize::Standardize { mean, std })
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Side of the square network input (28 or 32).
    pub size: usize,
    #[serde(default = "default_fit")]
    pub fit: Fit,
    #[serde(default = "default_normalize")]
    pub normalize: Normalize,
}

fn default_fit() -> Fit {
    Fit::Pad
}
fn default_normalize() -> Normalize {
    Normalize::Unit
}

/// A whole architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub input: InputSpec,
    pub layers: Vec<LayerSpec>,
}

/// The options of the LeNet family built by [`Spec::lenet`].
#[derive(Clone, Debug, PartialEq)]
pub struct LenetOptions {
    pub activation: Activation,
    pub pooling: Pooling,
    pub input_size: usize,
    pub fit: Fit,
    /// Pad the first convolution by 2 (d2l, for 28×28 input). Ignored (no
    /// padding) for 32×32 input, where the padding is in the data.
    pub pad_first_conv: bool,
    pub normalize: Normalize,
}

impl LenetOptions {
    pub fn d2l() -> Self {
        Self {
            activation: Activation::Sigmoid,
            pooling: Pooling::Avg,
            input_size: 28,
            fit: Fit::Pad,
            pad_first_conv: true,
            normalize: Normalize::Unit,
        }
    }
    pub fn relu() -> Self {
        Self { activation: Activation::Relu, pooling: Pooling::Max, ..Self::d2l() }
    }
}

/// A tensor shape without the batch dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Channels, height, width.
    Image(usize, usize, usize),
    Flat(usize),
}

impl Shape {
    pub fn numel(self) -> usize {
        match self {
            Shape::Image(c, h, w) => c * h * w,
            Shape::Flat(n) => n,
        }
    }
}

impl fmt::Display for Shape {
    /// PyTorch's order with a batch of 1: `(1, 6, 28, 28)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image(c, h, w) => write!(f, "(1, {c}, {h}, {w})"),
            Shape::Flat(n) => write!(f, "(1, {n})"),
        }
    }
}

/// A layer with its shapes resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedLayer {
    pub spec: LayerSpec,
    pub input: Shape,
    pub output: Shape,
    /// (weight shape, bias length) for layers with parameters.
    pub params: Option<(Vec<usize>, usize)>,
}

impl ResolvedLayer {
    pub fn param_count(&self) -> usize {
        self.params.as_ref().map_or(0, |(w, b)| w.iter().product::<usize>() + b)
    }

    /// The PyTorch module this layer corresponds to, as `print(net)` shows it.
    pub fn torch_name(&self) -> String {
        match (&self.spec, self.input) {
            (LayerSpec::Conv { out_channels, kernel, padding, stride }, Shape::Image(c, _, _)) => {
                let mut s = format!("Conv2d({c}, {out_channels}, kernel_size=({kernel}, {kernel})");
                if *stride != 1 {
                    s += &format!(", stride=({stride}, {stride})");
                }
                if *padding != 0 {
                    s += &format!(", padding=({padding}, {padding})");
                }
                s + ")"
            }
            (LayerSpec::AvgPool { size, stride }, _) => format!("AvgPool2d(kernel_size={size}, stride={stride})"),
            (LayerSpec::MaxPool { size, stride }, _) => format!("MaxPool2d(kernel_size={size}, stride={stride})"),
            (LayerSpec::Sigmoid, _) => "Sigmoid()".into(),
            (LayerSpec::Tanh, _) => "Tanh()".into(),
            (LayerSpec::Relu, _) => "ReLU()".into(),
            (LayerSpec::LeakyRelu { slope }, _) => format!("LeakyReLU(negative_slope={slope})"),
            (LayerSpec::Flatten, _) => "Flatten(start_dim=1, end_dim=-1)".into(),
            (LayerSpec::Linear { out_features }, inp) => {
                format!("Linear(in_features={}, out_features={out_features}, bias=True)", inp.numel())
            }
            (spec, _) => format!("{spec:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("architecture '{arch}', layer {index} ({layer}): {problem}")]
pub struct SpecError {
    pub arch: String,
    pub index: usize,
    pub layer: String,
    pub problem: String,
}

impl Spec {
    /// The LeNet family: conv(6, 5×5) act pool conv(16, 5×5) act pool flatten
    /// linear(120) act linear(84) act linear(10).
    pub fn lenet(name: &str, o: &LenetOptions) -> Spec {
        let act = o.activation.layer();
        let pool = match o.pooling {
            Pooling::Avg => LayerSpec::AvgPool { size: 2, stride: 2 },
            Pooling::Max => LayerSpec::MaxPool { size: 2, stride: 2 },
        };
        let first_pad = if o.pad_first_conv && o.input_size == 28 { 2 } else { 0 };
        Spec {
            name: name.to_string(),
            input: InputSpec { size: o.input_size, fit: o.fit, normalize: o.normalize },
            layers: vec![
                LayerSpec::Conv { out_channels: 6, kernel: 5, padding: first_pad, stride: 1 },
                act.clone(),
                pool.clone(),
                LayerSpec::Conv { out_channels: 16, kernel: 5, padding: 0, stride: 1 },
                act.clone(),
                pool,
                LayerSpec::Flatten,
                LayerSpec::Linear { out_features: 120 },
                act.clone(),
                LayerSpec::Linear { out_features: 84 },
                act,
                LayerSpec::Linear { out_features: 10 },
            ],
        }
    }

    /// A named preset: `d2l` or `relu`.
    pub fn preset(name: &str) -> Option<Spec> {
        match name {
            "d2l" => Some(Spec::lenet("d2l", &LenetOptions::d2l())),
            "relu" => Some(Spec::lenet("relu", &LenetOptions::relu())),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 2] = ["d2l", "relu"];

    pub fn from_toml(text: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(text).map_err(|e| e.to_string())?;
        spec.resolve().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec always serialises")
    }

    /// Resolve every layer's shapes, checking that they fit together.
    pub fn resolve(&self) -> Result<Vec<ResolvedLayer>, SpecError> {
        let fail = |index: usize, layer: &LayerSpec, problem: String| SpecError {
            arch: self.name.clone(),
            index,
            layer: format!("{layer:?}"),
            problem,
        };
        if !(4..=1024).contains(&self.input.size) {
            return Err(SpecError {
                arch: self.name.clone(),
                index: 0,
                layer: "input".into(),
                problem: format!("input size {} is not in 4..=1024", self.input.size),
            });
        }
        let mut shape = Shape::Image(1, self.input.size, self.input.size);
        if self.layers.len() > MAX_LAYERS {
            return Err(fail(MAX_LAYERS, &self.layers[MAX_LAYERS], format!("more than {MAX_LAYERS} layers")));
        }
        let mut out = Vec::with_capacity(self.layers.len());
        let mut total_outputs = 0usize;
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(big) = layer.sizes().into_iter().find(|&v| v > MAX_DIM) {
                return Err(fail(i, layer, format!("size {big} is over the limit of {MAX_DIM}")));
            }
            let (output, params) = match (layer, shape) {
                (LayerSpec::Conv { out_channels, kernel, padding, stride }, Shape::Image(c, h, w)) => {
                    if *kernel == 0 || *stride == 0 || *out_channels == 0 {
                        return Err(fail(i, layer, "kernel, stride and channels must be positive".into()));
                    }
                    if h + 2 * padding < *kernel || w + 2 * padding < *kernel {
                        return Err(fail(i, layer, format!("kernel {kernel} is larger than its {h}×{w} input")));
                    }
                    let oh = (h + 2 * padding - kernel) / stride + 1;
                    let ow = (w + 2 * padding - kernel) / stride + 1;
                    (
                        Shape::Image(*out_channels, oh, ow),
                        Some((vec![*out_channels, c, *kernel, *kernel], *out_channels)),
                    )
                }
                (LayerSpec::AvgPool { size, stride } | LayerSpec::MaxPool { size, stride }, Shape::Image(c, h, w)) => {
                    if *size == 0 || *stride == 0 || h < *size || w < *size {
                        return Err(fail(i, layer, format!("window {size} does not fit its {h}×{w} input")));
                    }
                    (Shape::Image(c, (h - size) / stride + 1, (w - size) / stride + 1), None)
                }
                (LayerSpec::Sigmoid | LayerSpec::Tanh | LayerSpec::Relu | LayerSpec::LeakyRelu { .. }, s) => (s, None),
                (LayerSpec::Flatten, s) => (Shape::Flat(s.numel()), None),
                (LayerSpec::Linear { out_features }, Shape::Flat(n)) => {
                    if *out_features == 0 {
                        return Err(fail(i, layer, "out_features must be positive".into()));
                    }
                    (Shape::Flat(*out_features), Some((vec![*out_features, n], *out_features)))
                }
                (LayerSpec::Linear { .. }, Shape::Image(..)) => {
                    return Err(fail(
                        i,
                        layer,
                        format!("a linear layer needs a flat input, got {shape}: add a flatten"),
                    ))
                }
                (_, Shape::Flat(_)) => {
                    return Err(fail(i, layer, format!("needs an image input (C, H, W), got {shape}")))
                }
            };
            // Checked products: a hostile or mistaken file may ask for any size, and
            // nothing may overflow or be allocated before it is refused.
            let outputs = match output {
                Shape::Image(c, h, w) => checked_elements(&[c, h, w]),
                Shape::Flat(n) => checked_elements(&[n]),
            };
            let weights = params.as_ref().map_or(Some(0), |(w, _)| checked_elements(w));
            total_outputs = total_outputs.saturating_add(outputs.unwrap_or(usize::MAX));
            if weights.is_none() || outputs.is_none() || total_outputs > MAX_ELEMENTS {
                return Err(fail(i, layer, format!("over {MAX_ELEMENTS} weights or outputs per example")));
            }
            out.push(ResolvedLayer { spec: layer.clone(), input: shape, output, params });
            shape = output;
        }
        match out.last().map(|l| l.output) {
            Some(Shape::Flat(10)) => Ok(out),
            other => Err(SpecError {
                arch: self.name.clone(),
                index: self.layers.len().saturating_sub(1),
                layer: "output".into(),
                problem: format!("the network must end in 10 class scores, got {other:?}"),
            }),
        }
    }

    /// A layer table like PyTorch's per-layer shape printout, with parameters.
    pub fn summary(&self) -> Result<String, SpecError> {
        let layers = self.resolve()?;
        let mut s = format!("{} (input (1, 1, {n}, {n}))\n", self.name, n = self.input.size);
        let width = layers.iter().map(|l| l.torch_name().len()).max().unwrap_or(10).max(5);
        s += &format!("{:<4}{:<width$}  {:<18}{:>10}\n", "#", "layer", "output shape", "params");
        for (i, l) in layers.iter().enumerate() {
            s += &format!("{:<4}{:<width$}  {:<18}{:>10}\n", i, l.torch_name(), l.output.to_string(), l.param_count());
        }
        let total: usize = layers.iter().map(ResolvedLayer::param_count).sum();
        s += &format!("total parameters: {total}");
        Ok(s)
    }
}
