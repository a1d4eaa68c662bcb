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
    /// A 2-D convolution, `type = "conv"`: weight (O, C, K, K) and bias (O); a
    /// (C, H, W) input gives (O, (H + 2P − K)/S + 1, (W + 2P − K)/S + 1).
    Conv {
        /// Number of output maps, O.
        out_channels: usize,
        /// Side of the square kernel, K, in pixels.
        kernel: usize,
        /// Zeros added on every side of the input, P, in pixels (absent: 0).
        #[serde(default)]
        padding: usize,
        /// Step between kernel positions, S, in pixels, both ways (absent: 1).
        #[serde(default = "one")]
        stride: usize,
        /// Which input maps each output map reads (LeNet-5's C3, Table I of the paper);
        /// absent: every one. The weight keeps PyTorch's (O, C, K, K) shape, with the
        /// kernels of left-out pairs held at zero (a masked convolution).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<Vec<Vec<usize>>>,
    },
    /// Average pooling, `type = "avg-pool"`: the mean of each size×size window of
    /// each map, no padding, no parameters.
    AvgPool {
        /// Side of the square pooling window, in pixels.
        size: usize,
        /// Step between windows, in pixels, both ways (required).
        stride: usize,
    },
    /// Max pooling, `type = "max-pool"`: the largest value of each size×size window
    /// of each map, no padding, no parameters.
    MaxPool {
        /// Side of the square pooling window, in pixels.
        size: usize,
        /// Step between windows, in pixels, both ways (required).
        stride: usize,
    },
    /// LeNet-5's trainable subsampling: each output is the sum of a size×size block of
    /// its map, times one trainable coefficient per map, plus one trainable bias per
    /// map (weight and bias of shape (C)). Blocks do not overlap.
    Subsample {
        /// Side of the square block, in pixels (absent: 2); a (C, H, W) input gives
        /// (C, H/size, W/size), rounded down.
        #[serde(default = "two")]
        size: usize,
    },
    /// The logistic function 1/(1 + e^(−a)), elementwise, `type = "sigmoid"`.
    Sigmoid,
    /// tanh(a), elementwise, `type = "tanh"`.
    Tanh,
    /// LeNet-5's squashing function 1.7159·tanh(2a/3) (appendix A of the paper).
    ScaledTanh,
    /// max(0, a), elementwise, `type = "relu"`.
    Relu,
    /// a where a > 0, slope·a elsewhere, elementwise, `type = "leaky-relu"`.
    LeakyRelu {
        /// Slope of the negative part (absent: 0.01).
        #[serde(default = "default_slope")]
        slope: f32,
    },
    /// (C, H, W) to C·H·W features in PyTorch's order (map, row, column),
    /// `type = "flatten"`.
    Flatten,
    /// A fully connected layer, `type = "linear"`: N input features to
    /// `out_features`, with weight (out_features, N) and bias (out_features).
    Linear {
        /// Number of output features.
        out_features: usize,
    },
    /// Euclidean radial basis function units: y_i = Σ_j (x_j − c_ij)² with fixed
    /// centres c_i, one ±1 bitmap per class. The layer outputs −y_i, so that, as with
    /// every other network, the highest output is the predicted class.
    Rbf {
        /// The centres, one per class (absent: the built-in `"digits-7x12"`).
        #[serde(default)]
        bitmaps: Bitmaps,
    },
}

/// The fixed centres of an RBF layer: a built-in set by name, or one picture per
/// class, `#` for +1 and `.` for −1, rows separated by `/` or white space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Bitmaps {
    /// A built-in set, by name: `bitmaps = "digits-7x12"` (ten digits of 7×12, so 84
    /// values each) is the only one.
    Named(String),
    /// One picture per class, in class order, each with as many `#` and `.` as the
    /// layer has input features: `bitmaps = ["..##../...", ...]`.
    Pictures(Vec<String>),
}

impl Default for Bitmaps {
    fn default() -> Self {
        Bitmaps::Named(crate::layers::rbf::DIGITS_7X12_NAME.into())
    }
}

impl Bitmaps {
    /// The centres, class by class, as ±1 values.
    pub fn centres(&self) -> Result<Vec<Vec<f32>>, String> {
        match self {
            Bitmaps::Named(name) if name == crate::layers::rbf::DIGITS_7X12_NAME => Ok(crate::layers::rbf::DIGITS_7X12
                .iter()
                .map(|p| crate::layers::rbf::parse_picture(p))
                .collect::<Result<_, _>>()?),
            Bitmaps::Named(name) => {
                Err(format!("unknown bitmaps {name:?} (built in: {})", crate::layers::rbf::DIGITS_7X12_NAME))
            }
            Bitmaps::Pictures(p) => p.iter().map(|p| crate::layers::rbf::parse_picture(p)).collect(),
        }
    }
}

/// The training criterion. The two of the paper apply to RBF outputs (−y_i).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Criterion {
    /// Softmax cross-entropy over the outputs (PyTorch's `CrossEntropyLoss`).
    #[default]
    CrossEntropy,
    /// Equation 9 of the paper: E = y_correct + log(e^(−j) + Σ_i e^(−y_i)), the
    /// cross-entropy of the outputs −y_i with one more, constant output −j (a
    /// "rubbish" class that stops classes already far away being pushed further).
    Map {
        /// The distance j of the constant rubbish output (`j = 10.0` in TOML, `map:J`
        /// on the command line; `map` alone: [`LENET5_J`]).
        j: f32,
    },
    /// Equation 8: E = y_correct, the distance to the correct class's bitmap.
    Mse,
}

impl Criterion {
    fn is_default(&self) -> bool {
        *self == Criterion::CrossEntropy
    }
}

impl FromStr for Criterion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "xent" | "cross-entropy" => Ok(Criterion::CrossEntropy),
            "mse" => Ok(Criterion::Mse),
            "map" => Ok(Criterion::Map { j: LENET5_J }),
            other => match other.strip_prefix("map:") {
                Some(v) => v.parse().map(|j| Criterion::Map { j }).map_err(|_| format!("bad j '{v}' in '{s}'")),
                None => Err(format!("unknown criterion '{s}' (xent, map[:J], mse)")),
            },
        }
    }
}

/// The paper leaves equation 9's j open. Output distances live on the scale of the
/// bitmaps: a wrong bitmap differs from the right one in ~30 of 84 places, each
/// worth 4, so wrong classes sit 100 or more away once trained. With j = 10, e^(−j)
/// outweighs e^(−y_i) of every class further than ~10 from the output, so classes
/// already that far away are left alone, while a competitor closer than ~10 is
/// still pushed away: j sits on the scale where a class is clearly rejected.
pub const LENET5_J: f32 = 10.0;

impl LayerSpec {
    /// The layer's sizes (channels, features, kernel, padding, stride, window).
    fn sizes(&self) -> [usize; 4] {
        match *self {
            LayerSpec::Conv { out_channels, kernel, padding, stride, .. } => [out_channels, kernel, padding, stride],
            LayerSpec::AvgPool { size, stride } | LayerSpec::MaxPool { size, stride } => [size, stride, 0, 0],
            LayerSpec::Subsample { size } => [size, 0, 0, 0],
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
fn two() -> usize {
    2
}
fn default_slope() -> f32 {
    0.01
}

/// An elementwise activation function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// The logistic function 1/(1 + e^(−a)) (`sigmoid`).
    Sigmoid,
    /// tanh(a) (`tanh`).
    Tanh,
    /// 1.7159·tanh(2a/3).
    ScaledTanh,
    /// max(0, a) (`relu`).
    Relu,
    /// a where a > 0, slope·a elsewhere; the value is the slope of the negative part
    /// (`leaky-relu[:slope]`, default slope 0.01).
    LeakyRelu(f32),
}

impl Activation {
    /// The [`LayerSpec`] that applies this activation.
    pub fn layer(self) -> LayerSpec {
        match self {
            Activation::Sigmoid => LayerSpec::Sigmoid,
            Activation::Tanh => LayerSpec::Tanh,
            Activation::ScaledTanh => LayerSpec::ScaledTanh,
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
            "scaled-tanh" => Ok(Activation::ScaledTanh),
            "relu" => Ok(Activation::Relu),
            "leaky-relu" | "leakyrelu" => Ok(Activation::LeakyRelu(0.01)),
            other => match other.strip_prefix("leaky-relu:") {
                Some(v) => v.parse().map(Activation::LeakyRelu).map_err(|_| format!("bad leaky-relu slope '{v}'")),
                None => Err(format!("unknown activation '{s}' (sigmoid, tanh, scaled-tanh, relu, leaky-relu[:slope])")),
            },
        }
    }
}

/// The pooling of the LeNet family built by [`Spec::lenet`]: 2×2 windows, stride 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The mean of each window ([`LayerSpec::AvgPool`]; `avg` or `average`).
    Avg,
    /// The largest value of each window ([`LayerSpec::MaxPool`]; `max`).
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
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Normalize {
    /// byte/255, in [0, 1] (`kind = "unit"`; on the command line `unit` or `none`).
    Unit,
    /// (byte/255 − mean)/std (`kind = "standardize"`; on the command line `mnist`,
    /// `fashion-mnist` or `MEAN,STD`).
    Standardize {
        /// Mean subtracted, on the [0, 1] scale (MNIST: 0.1307).
        mean: f32,
        /// Standard deviation divided by, on the [0, 1] scale, positive (MNIST: 0.3081).
        std: f32,
    },
    /// Background (0) to `low`, full ink (255) to `high`, linearly: LeNet-5's −0.1 and
    /// 1.175, which make the inputs' mean about 0 and their variance about 1.
    Range {
        /// Input value of a background pixel (byte 0).
        low: f32,
        /// Input value of a full-ink pixel (byte 255).
        high: f32,
    },
}

impl Normalize {
    /// LeNet-5's input scaling (section II-A of the paper).
    pub const LENET5: Normalize = Normalize::Range { low: -0.1, high: 1.175 };
}

impl Normalize {
    /// What makes this scaling unusable (a NaN or infinite value, a standard deviation
    /// not above 0, an empty range): every input would be infinite or NaN.
    fn problem(&self) -> Option<String> {
        match *self {
            Normalize::Unit => None,
            Normalize::Standardize { mean, std } if !(mean.is_finite() && std.is_finite() && std > 0.0) => {
                Some(format!("normalization needs a finite mean and a finite std > 0, got mean {mean}, std {std}"))
            }
            Normalize::Range { low, high } if !(low.is_finite() && high.is_finite() && low != high) => {
                Some(format!("the input range needs two different finite ends, got {low} and {high}"))
            }
            _ => None,
        }
    }
}

impl FromStr for Normalize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "unit" | "none" => Ok(Normalize::Unit),
            "mnist" => Ok(Normalize::Standardize { mean: 0.1307, std: 0.3081 }),
            "fashion-mnist" => Ok(Normalize::Standardize { mean: 0.2860, std: 0.3530 }),
            "lenet5" => Ok(Normalize::LENET5),
            other => {
                let bad = || format!("bad normalization '{s}' (unit, mnist, fashion-mnist, lenet5, or MEAN,STD)");
                let (m, sd) = other.split_once(',').ok_or_else(bad)?;
                let (mean, std) = (m.trim().parse().map_err(|_| bad())?, sd.trim().parse().map_err(|_| bad())?);
                let n = Normalize::Standardize { mean, std };
                n.problem().map_or(Ok(n), Err)
            }
        }
    }
}

/// The network's input, a single-channel square image, and how stored 28×28 images
/// are brought to it (the `[input]` table in TOML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Side of the square network input (28 or 32).
    pub size: usize,
    /// How a 28×28 image reaches `size` (`fit = "pad"` or `"resize"`; absent: pad).
    #[serde(default = "default_fit")]
    pub fit: Fit,
    /// Pixel scaling (`normalize = { kind = "unit" }` and so on; absent: unit).
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
    /// The architecture's name, as summaries, errors and exported models show it.
    pub name: String,
    /// The input: side, fit and pixel scaling (`[input]`).
    pub input: InputSpec,
    /// The layers in `nn.Sequential` order (`[[layers]]`); layer `i`'s parameters are
    /// `i.weight` and `i.bias`.
    pub layers: Vec<LayerSpec>,
    /// The training criterion (absent: softmax cross-entropy).
    #[serde(default, skip_serializing_if = "Criterion::is_default")]
    pub loss: Criterion,
}

/// The options of the LeNet family built by [`Spec::lenet`].
#[derive(Clone, Debug, PartialEq)]
pub struct LenetOptions {
    /// The activation after both convolutions and both hidden linear layers.
    pub activation: Activation,
    /// The pooling after each convolution's activation (2×2 windows, stride 2).
    pub pooling: Pooling,
    /// Side of the square input, in pixels: 28 or 32.
    pub input_size: usize,
    /// How 28×28 images reach a 32×32 input.
    pub fit: Fit,
    /// Pad the first convolution by 2 (d2l, for 28×28 input). Ignored (no
    /// padding) for 32×32 input, where the padding is in the data.
    pub pad_first_conv: bool,
    /// Pixel scaling of the input.
    pub normalize: Normalize,
}

impl LenetOptions {
    /// The network of d2l.ai: sigmoid, average pooling, 28×28 input with the first
    /// convolution padded by 2, pixels in [0, 1].
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
    /// [`Self::d2l`] with ReLU and max pooling.
    pub fn relu() -> Self {
        Self { activation: Activation::Relu, pooling: Pooling::Max, ..Self::d2l() }
    }
}

/// A tensor shape without the batch dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Channels, height, width.
    Image(usize, usize, usize),
    /// A vector of this many features.
    Flat(usize),
}

impl Shape {
    /// Values per example: C·H·W, or the number of features.
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
    /// The layer as written.
    pub spec: LayerSpec,
    /// The shape it reads, per example.
    pub input: Shape,
    /// The shape it writes, per example.
    pub output: Shape,
    /// (weight shape, bias length) for layers with parameters.
    pub params: Option<(Vec<usize>, usize)>,
}

impl ResolvedLayer {
    /// Values this layer holds in the parameter buffer (a masked convolution's
    /// left-out kernels included).
    pub fn param_count(&self) -> usize {
        self.params.as_ref().map_or(0, |(w, b)| w.iter().product::<usize>() + b)
    }

    /// Trainable parameters: [`Self::param_count`] less a masked convolution's
    /// left-out kernels (the paper's count).
    pub fn trainable_count(&self) -> usize {
        match (&self.spec, self.input) {
            (LayerSpec::Conv { out_channels, kernel, table: Some(t), .. }, _) => {
                t.iter().map(Vec::len).sum::<usize>() * kernel * kernel + out_channels
            }
            _ => self.param_count(),
        }
    }

    /// Connections (multiply-adds, a bias counting as one per output), as the paper
    /// counts them.
    pub fn connections(&self) -> usize {
        let positions = match self.output {
            Shape::Image(_, h, w) => h * w,
            Shape::Flat(_) => 1,
        };
        match &self.spec {
            LayerSpec::Conv { .. } | LayerSpec::Linear { .. } => positions * self.trainable_count(),
            LayerSpec::Subsample { size } => self.output.numel() * (size * size + 1),
            _ => 0,
        }
    }

    /// The PyTorch module this layer corresponds to, as `print(net)` shows it.
    pub fn torch_name(&self) -> String {
        match (&self.spec, self.input) {
            (LayerSpec::Conv { out_channels, kernel, padding, stride, table }, Shape::Image(c, _, _)) => {
                let mut s = format!("Conv2d({c}, {out_channels}, kernel_size=({kernel}, {kernel})");
                if table.is_some() {
                    s = format!("Masked{s}");
                }
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
            (LayerSpec::ScaledTanh, _) => "ScaledTanh()".into(),
            (LayerSpec::Subsample { size }, Shape::Image(c, _, _)) => format!("Subsample({c}, kernel_size={size})"),
            (LayerSpec::Rbf { .. }, inp) => {
                format!("RBF(in_features={}, out_features={})", inp.numel(), self.output.numel())
            }
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

/// Why an architecture does not resolve, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("architecture '{arch}', layer {index} ({layer}): {problem}")]
pub struct SpecError {
    /// The architecture's name ([`Spec::name`]).
    pub arch: String,
    /// Index of the offending layer in [`Spec::layers`]: 0 for the input, the last
    /// layer for the loss and the output.
    pub index: usize,
    /// The offending layer as `Debug` prints it, or `input`, `loss` or `output`.
    pub layer: String,
    /// What is wrong, in words.
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
                LayerSpec::Conv { out_channels: 6, kernel: 5, padding: first_pad, stride: 1, table: None },
                act.clone(),
                pool.clone(),
                LayerSpec::Conv { out_channels: 16, kernel: 5, padding: 0, stride: 1, table: None },
                act.clone(),
                pool,
                LayerSpec::Flatten,
                LayerSpec::Linear { out_features: 120 },
                act.clone(),
                LayerSpec::Linear { out_features: 84 },
                act,
                LayerSpec::Linear { out_features: 10 },
            ],
            loss: Criterion::CrossEntropy,
        }
    }

    /// LeNet-5 as LeCun, Bottou, Bengio and Haffner (1998) built it: 32×32 input
    /// scaled to [−0.1, 1.175], the scaled tanh after every layer up to F6, trainable
    /// subsampling, C3 connected by Table I, and RBF outputs with 7×12 digit bitmaps,
    /// trained on equation 9.
    pub fn lenet5() -> Spec {
        let conv = |out_channels, table| LayerSpec::Conv { out_channels, kernel: 5, padding: 0, stride: 1, table };
        Spec {
            name: "lenet5".into(),
            input: InputSpec { size: 32, fit: Fit::Pad, normalize: Normalize::LENET5 },
            layers: vec![
                conv(6, None),
                LayerSpec::ScaledTanh,
                LayerSpec::Subsample { size: 2 },
                LayerSpec::ScaledTanh,
                conv(16, Some(c3_table())),
                LayerSpec::ScaledTanh,
                LayerSpec::Subsample { size: 2 },
                LayerSpec::ScaledTanh,
                conv(120, None),
                LayerSpec::ScaledTanh,
                LayerSpec::Flatten,
                LayerSpec::Linear { out_features: 84 },
                LayerSpec::ScaledTanh,
                LayerSpec::Rbf { bitmaps: Bitmaps::default() },
            ],
            loss: Criterion::Map { j: LENET5_J },
        }
    }

    /// A named preset: `d2l`, `relu` or `lenet5`.
    pub fn preset(name: &str) -> Option<Spec> {
        match name {
            "d2l" => Some(Spec::lenet("d2l", &LenetOptions::d2l())),
            "relu" => Some(Spec::lenet("relu", &LenetOptions::relu())),
            "lenet5" => Some(Spec::lenet5()),
            _ => None,
        }
    }

    /// The names [`Spec::preset`] knows.
    pub const PRESETS: [&'static str; 3] = ["d2l", "relu", "lenet5"];

    /// Read an architecture from TOML and check that it resolves ([`Spec::resolve`]);
    /// errors come back as text.
    pub fn from_toml(text: &str) -> Result<Spec, String> {
        let spec: Spec = toml::from_str(text).map_err(|e| e.to_string())?;
        spec.resolve().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The architecture as TOML, which [`Spec::from_toml`] reads back.
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
        if let Some(problem) = self.input.normalize.problem() {
            return Err(SpecError { arch: self.name.clone(), index: 0, layer: "input".into(), problem });
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
                (LayerSpec::Conv { out_channels, kernel, padding, stride, table }, Shape::Image(c, h, w)) => {
                    if *kernel == 0 || *stride == 0 || *out_channels == 0 {
                        return Err(fail(i, layer, "kernel, stride and channels must be positive".into()));
                    }
                    if let Some(table) = table {
                        check_table(table, *out_channels, c).map_err(|p| fail(i, layer, p))?;
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
                (LayerSpec::Subsample { size }, Shape::Image(c, h, w)) => {
                    if *size == 0 || h < *size || w < *size {
                        return Err(fail(i, layer, format!("block {size} does not fit its {h}×{w} input")));
                    }
                    (Shape::Image(c, h / size, w / size), Some((vec![c], c)))
                }
                (LayerSpec::Rbf { bitmaps }, Shape::Flat(n)) => {
                    let centres = bitmaps.centres().map_err(|p| fail(i, layer, p))?;
                    if let Some((class, bad)) = centres.iter().enumerate().find(|(_, b)| b.len() != n) {
                        return Err(fail(
                            i,
                            layer,
                            format!("bitmap {class} has {} values, the layer's input has {n} features", bad.len()),
                        ));
                    }
                    (Shape::Flat(centres.len()), None)
                }
                (LayerSpec::Rbf { .. }, Shape::Image(..)) => {
                    return Err(fail(i, layer, format!("an RBF layer needs a flat input, got {shape}: add a flatten")))
                }
                (LayerSpec::LeakyRelu { slope }, _) if !slope.is_finite() => {
                    return Err(fail(i, layer, format!("the slope must be a finite number, got {slope}")))
                }
                (
                    LayerSpec::Sigmoid
                    | LayerSpec::Tanh
                    | LayerSpec::ScaledTanh
                    | LayerSpec::Relu
                    | LayerSpec::LeakyRelu { .. },
                    s,
                ) => (s, None),
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
        let rbf_out = matches!(out.last().map(|l| &l.spec), Some(LayerSpec::Rbf { .. }));
        if self.loss != Criterion::CrossEntropy && !rbf_out {
            return Err(SpecError {
                arch: self.name.clone(),
                index: self.layers.len().saturating_sub(1),
                layer: "loss".into(),
                problem: format!("the {:?} criterion needs an RBF output layer", self.loss),
            });
        }
        if let Criterion::Map { j } = self.loss {
            if !j.is_finite() {
                return Err(SpecError {
                    arch: self.name.clone(),
                    index: self.layers.len().saturating_sub(1),
                    layer: "loss".into(),
                    problem: format!("equation 9's j must be finite, got {j}"),
                });
            }
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

    /// A layer table like PyTorch's per-layer shape printout, with the trainable
    /// parameters and connections of each layer (as the LeNet-5 paper counts them).
    pub fn summary(&self) -> Result<String, SpecError> {
        let layers = self.resolve()?;
        let mut s = format!("{} (input (1, 1, {n}, {n}))\n", self.name, n = self.input.size);
        let width = layers.iter().map(|l| l.torch_name().len()).max().unwrap_or(10).max(5);
        s += &format!("{:<4}{:<width$}  {:<18}{:>10}{:>13}\n", "#", "layer", "output shape", "params", "connections");
        for (i, l) in layers.iter().enumerate() {
            s += &format!(
                "{:<4}{:<width$}  {:<18}{:>10}{:>13}\n",
                i,
                l.torch_name(),
                l.output.to_string(),
                l.trainable_count(),
                l.connections()
            );
        }
        let total: usize = layers.iter().map(ResolvedLayer::trainable_count).sum();
        let connections: usize = layers.iter().map(ResolvedLayer::connections).sum();
        s += &format!("total parameters: {total}\ntotal connections: {connections}");
        if self.loss != Criterion::CrossEntropy {
            s += &format!("\nloss: {:?}", self.loss);
        }
        Ok(s)
    }
}

/// LeNet-5's C3 connections, Table I of the paper: which S2 maps each C3 map reads.
/// Maps 0–5 take three neighbouring maps, 6–11 four neighbouring, 12–14 four
/// non-neighbouring, 15 all six.
pub fn c3_table() -> Vec<Vec<usize>> {
    vec![
        vec![0, 1, 2],
        vec![1, 2, 3],
        vec![2, 3, 4],
        vec![3, 4, 5],
        vec![0, 4, 5],
        vec![0, 1, 5],
        vec![0, 1, 2, 3],
        vec![1, 2, 3, 4],
        vec![2, 3, 4, 5],
        vec![0, 3, 4, 5],
        vec![0, 1, 4, 5],
        vec![0, 1, 2, 5],
        vec![0, 1, 3, 4],
        vec![1, 2, 4, 5],
        vec![0, 2, 3, 5],
        vec![0, 1, 2, 3, 4, 5],
    ]
}

/// A connection table fits a convolution of `out` maps over `inputs` maps: one
/// list per output map, each naming existing input maps, none twice, none empty.
fn check_table(table: &[Vec<usize>], out: usize, inputs: usize) -> Result<(), String> {
    if table.len() != out {
        return Err(format!("the connection table has {} rows for {out} output maps", table.len()));
    }
    for (o, row) in table.iter().enumerate() {
        if row.is_empty() {
            return Err(format!("output map {o} reads no input map"));
        }
        if let Some(&bad) = row.iter().find(|&&c| c >= inputs) {
            return Err(format!("output map {o} reads input map {bad}, but the input has maps 0..{inputs}"));
        }
        let mut seen = row.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != row.len() {
            return Err(format!("output map {o} names an input map twice: {row:?}"));
        }
    }
    Ok(())
}
