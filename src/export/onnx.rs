//! ONNX export: a network becomes an ONNX `ModelProto` (opset 13) with one node
//! per layer, in the order of the equivalent PyTorch `nn.Sequential`, and its
//! parameters as initializers under their `state_dict` keys.
//!
//! | lenet layer        | ONNX node                                              |
//! |--------------------|--------------------------------------------------------|
//! | conv               | `Conv` (kernel_shape, pads, strides), inputs x, W, B   |
//! | sigmoid/tanh/relu  | `Sigmoid` / `Tanh` / `Relu`                            |
//! | leaky-relu         | `LeakyRelu` (alpha = slope)                            |
//! | avg-pool, max-pool | `AveragePool` / `MaxPool` (kernel_shape, strides)      |
//! | flatten            | `Flatten` (axis 1)                                     |
//! | linear             | `Gemm` (transB = 1), inputs x, W, B                    |
//!
//! The graph's input `input` is float32 `(batch, 1, S, S)`: the image as lenet
//! feeds it to its network, fitted to the input size and scaled (bytes / 255
//! for the default `unit` scaling, like torchvision's `ToTensor`; standardised
//! after that when the architecture says so). The output `logits` is float32
//! `(batch, 10)`. The scaling and the whole spec are written into the model's
//! `doc_string` and `metadata_props` (`lenet.spec`, JSON).
//!
//! The protobuf messages are declared here for just the fields the export uses,
//! with the field numbers of `onnx.proto`, and encoded by `prost`. Repeated
//! numbers are written unpacked, as `onnx.proto` (proto2) declares them.

use prost::Message;

use crate::layers::activation::{SCALED_TANH_A, SCALED_TANH_S};
use crate::network::param_layout;
use crate::spec::{LayerSpec, ResolvedLayer, Shape, Spec};

/// The ONNX IR version written (IR 8: ONNX 1.10 and later read it).
pub const IR_VERSION: i64 = 8;
/// The operator set the nodes are written against.
pub const OPSET: i64 = 13;
/// The names of the graph's input and output.
pub const INPUT_NAME: &str = "input";
pub const OUTPUT_NAME: &str = "logits";

/// `onnx.ModelProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.OperatorSetIdProto` (the empty domain is the default `ai.onnx`).
#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `onnx.GraphProto`.
#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `onnx.AttributeProto`, for float, int and ints attributes.
#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    /// `AttributeProto.AttributeType`: see the `ATTR_*` constants.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

/// `AttributeProto.AttributeType` values used here.
pub const ATTR_FLOAT: i32 = 1;
pub const ATTR_INT: i32 = 2;
pub const ATTR_INTS: i32 = 7;

/// `onnx.TensorProto`, data as little-endian `raw_data`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// `TensorProto.DataType`: [`DATA_FLOAT`].
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

/// `TensorProto.DataType.FLOAT`.
pub const DATA_FLOAT: i32 = 1;
pub const DATA_INT64: i32 = 7;

/// `onnx.ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `onnx.TypeProto`, tensor types only.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

/// `onnx.TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `onnx.TensorShapeProto.Dimension`: a fixed size or a named (free) one.
#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    pub value: Option<DimensionValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum DimensionValue {
    #[prost(int64, tag = "1")]
    DimValue(i64),
    #[prost(string, tag = "2")]
    DimParam(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{0}")]
    Spec(#[from] crate::spec::SpecError),
    #[error("{given} parameter values given, architecture '{arch}' has {needed}")]
    ParamCount { arch: String, given: usize, needed: usize },
}

fn attr_ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.iter().map(|&v| v as i64).collect(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: ATTR_INT, ..Default::default() }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: ATTR_FLOAT, ..Default::default() }
}

fn tensor_value(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: DATA_FLOAT,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            }),
        }),
    }
}

fn dim(n: usize) -> Dimension {
    Dimension { value: Some(DimensionValue::DimValue(n as i64)) }
}

fn batch_dim() -> Dimension {
    Dimension { value: Some(DimensionValue::DimParam("batch".into())) }
}

/// The node of a layer that is one ONNX operator: its op type and attributes.
fn layer_node(layer: &ResolvedLayer) -> Option<(&'static str, Vec<AttributeProto>)> {
    Some(match &layer.spec {
        LayerSpec::Conv { kernel, padding, stride, .. } => (
            "Conv",
            vec![
                attr_ints("kernel_shape", &[*kernel, *kernel]),
                attr_ints("pads", &[*padding; 4]),
                attr_ints("strides", &[*stride, *stride]),
            ],
        ),
        LayerSpec::AvgPool { size, stride } => {
            ("AveragePool", vec![attr_ints("kernel_shape", &[*size, *size]), attr_ints("strides", &[*stride, *stride])])
        }
        LayerSpec::MaxPool { size, stride } => {
            ("MaxPool", vec![attr_ints("kernel_shape", &[*size, *size]), attr_ints("strides", &[*stride, *stride])])
        }
        LayerSpec::Sigmoid => ("Sigmoid", vec![]),
        LayerSpec::Tanh => ("Tanh", vec![]),
        LayerSpec::Relu => ("Relu", vec![]),
        LayerSpec::LeakyRelu { slope } => ("LeakyRelu", vec![attr_float("alpha", *slope)]),
        LayerSpec::Flatten => ("Flatten", vec![attr_int("axis", 1)]),
        LayerSpec::Linear { .. } => ("Gemm", vec![attr_int("transB", 1)]),
        // Several operators each (see `model`).
        LayerSpec::ScaledTanh | LayerSpec::Subsample { .. } | LayerSpec::Rbf { .. } => return None,
    })
}

/// Nodes and initializers as they are added, each node's output named after its
/// layer and position.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    /// A node of layer `layer`; returns the name of its output.
    fn node(&mut self, layer: usize, op: &str, input: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let name = format!("{layer}.{op}.{}", self.nodes.len());
        let out = format!("{name}.out");
        self.nodes.push(NodeProto { input, output: vec![out.clone()], name, op_type: op.into(), attribute });
        out
    }

    fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DATA_FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }

    fn ints(&mut self, name: &str, dims: &[usize], values: &[i64]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DATA_INT64,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name.into()
    }
}

/// The ONNX model of architecture `spec` with parameters `params` (flat, in the
/// network's order, as in a [`crate::checkpoint::Checkpoint`]).
pub fn model(spec: &Spec, params: &[f32]) -> Result<ModelProto, OnnxError> {
    let layers = spec.resolve()?;
    let infos = param_layout(&layers);
    let needed = infos.last().map_or(0, |p| p.range().end);
    if params.len() != needed {
        return Err(OnnxError::ParamCount { arch: spec.name.clone(), given: params.len(), needed });
    }
    let mut g = Graph::default();
    for p in &infos {
        // Trainable subsampling's per-map tensors broadcast over (batch, map, row, column).
        let per_map = p.shape.len() == 1
            && layers
                .iter()
                .enumerate()
                .any(|(i, l)| matches!(l.spec, LayerSpec::Subsample { .. }) && p.name.starts_with(&format!("{i}.")));
        let dims = if per_map { vec![1, p.shape[0], 1, 1] } else { p.shape.clone() };
        g.floats(&p.name, &dims, &params[p.range()]);
    }
    let mut x = INPUT_NAME.to_string();
    for (i, layer) in layers.iter().enumerate() {
        x = match (&layer.spec, layer.input) {
            (LayerSpec::ScaledTanh, _) => {
                // 1.7159·tanh(2a/3): Mul, Tanh, Mul.
                let slope = g.floats(&format!("{i}.slope"), &[], &[(SCALED_TANH_S) as f32]);
                let gain = g.floats(&format!("{i}.gain"), &[], &[SCALED_TANH_A as f32]);
                let a = g.node(i, "Mul", vec![x, slope], vec![]);
                let t = g.node(i, "Tanh", vec![a], vec![]);
                g.node(i, "Mul", vec![t, gain], vec![])
            }
            (LayerSpec::Subsample { size }, _) => {
                // The block's sum (its mean times size²), times the map's coefficient, plus its bias.
                let k = attr_ints("kernel_shape", &[*size, *size]);
                let mean = g.node(i, "AveragePool", vec![x], vec![k, attr_ints("strides", &[*size, *size])]);
                let area = g.floats(&format!("{i}.area"), &[], &[(size * size) as f32]);
                let sum = g.node(i, "Mul", vec![mean, area], vec![]);
                let scaled = g.node(i, "Mul", vec![sum, format!("{i}.weight")], vec![]);
                g.node(i, "Add", vec![scaled, format!("{i}.bias")], vec![])
            }
            (LayerSpec::Rbf { bitmaps }, Shape::Flat(k)) => {
                // −Σ_j (x_j − c_ij)²: (B, 1, K) − (1, N, K), squared, summed over K, negated.
                let centres = bitmaps.centres().map_err(|problem| crate::spec::SpecError {
                    arch: spec.name.clone(),
                    index: i,
                    layer: "rbf".into(),
                    problem,
                })?;
                let n = centres.len();
                let c = g.floats(&format!("{i}.centres"), &[1, n, k], &centres.concat());
                let shape = g.ints(&format!("{i}.shape"), &[3], &[-1, 1, k as i64]);
                let axes = g.ints(&format!("{i}.axes"), &[1], &[2]);
                let x3 = g.node(i, "Reshape", vec![x, shape], vec![]);
                let d = g.node(i, "Sub", vec![x3, c], vec![]);
                let d2 = g.node(i, "Mul", vec![d.clone(), d], vec![]);
                let y = g.node(i, "ReduceSum", vec![d2, axes], vec![attr_int("keepdims", 0)]);
                g.node(i, "Neg", vec![y], vec![])
            }
            _ => {
                let (op_type, attribute) = layer_node(layer).expect("every other layer is one operator");
                let mut input = vec![x];
                if layer.params.is_some() {
                    input.extend([format!("{i}.weight"), format!("{i}.bias")]);
                }
                g.node(i, op_type, input, attribute)
            }
        };
    }
    // The last node's output is the graph's.
    if let Some(last) = g.nodes.last_mut() {
        last.output = vec![OUTPUT_NAME.to_string()];
    }
    let Graph { nodes: node, initializers: initializer } = g;
    let s = spec.input.size;
    let classes = layers.last().map_or(0, |l| l.output.numel());
    let scaling = match spec.input.normalize {
        crate::spec::Normalize::Unit => "pixel / 255".to_string(),
        crate::spec::Normalize::Standardize { mean, std } => format!("(pixel / 255 - {mean}) / {std}"),
        crate::spec::Normalize::Range { low, high } => format!("{low} + pixel / 255 * ({high} - {low})"),
    };
    let doc = format!(
        "lenet architecture '{}': input (batch, 1, {s}, {s}) float32 = {scaling}, the image fitted to {s}x{s}; \
         output (batch, {classes}) logits",
        spec.name
    );
    let graph = GraphProto {
        node,
        name: spec.name.clone(),
        initializer,
        doc_string: doc.clone(),
        input: vec![tensor_value(INPUT_NAME, &[batch_dim(), dim(1), dim(s), dim(s)])],
        output: vec![tensor_value(OUTPUT_NAME, &[batch_dim(), dim(classes)])],
    };
    let spec_json = serde_json::to_string(spec).expect("a spec always serialises");
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "lenet".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: doc,
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        metadata_props: vec![StringStringEntryProto { key: "lenet.spec".into(), value: spec_json }],
    })
}

/// The ONNX file's bytes for architecture `spec` with parameters `params`.
pub fn to_bytes(spec: &Spec, params: &[f32]) -> Result<Vec<u8>, OnnxError> {
    Ok(model(spec, params)?.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_encode_as_protobuf_says() {
        // Field 1 (string, wire type 2) "" is left out; field 2 (varint) 13: key 0x10, value 0x0d.
        let opset = OperatorSetIdProto { domain: String::new(), version: 13 };
        assert_eq!(opset.encode_to_vec(), [0x10, 0x0d]);
        // Unpacked repeated int64: one key (field 8, varint: 0x40) per element.
        let a = attr_ints("pads", &[2, 0]);
        assert_eq!(a.encode_to_vec(), [0x0a, 4, b'p', b'a', b'd', b's', 0x40, 2, 0x40, 0, 0xa0, 0x01, 7]);
        // float 0.5 as fixed32 little-endian under field 2 (key 0x15).
        let f = attr_float("alpha", 0.5);
        assert_eq!(&f.encode_to_vec()[7..12], &[0x15, 0, 0, 0, 0x3f]);
    }

    #[test]
    fn d2l_becomes_one_node_per_layer_with_its_weights() {
        let spec = Spec::preset("d2l").unwrap();
        let n: usize = spec.resolve().unwrap().iter().map(|l| l.param_count()).sum();
        let params: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let bytes = to_bytes(&spec, &params).unwrap();
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!((m.ir_version, m.opset_import[0].version), (IR_VERSION, OPSET));
        let g = m.graph.unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "Conv",
                "Sigmoid",
                "AveragePool",
                "Conv",
                "Sigmoid",
                "AveragePool",
                "Flatten",
                "Gemm",
                "Sigmoid",
                "Gemm",
                "Sigmoid",
                "Gemm"
            ]
        );
        assert_eq!(g.node[0].input, ["input", "0.weight", "0.bias"]);
        assert_eq!(g.node[0].attribute[1].ints, [2, 2, 2, 2], "the first conv's padding");
        assert_eq!(g.node[3].attribute[1].ints, [0, 0, 0, 0]);
        assert_eq!(g.node.last().unwrap().output, [OUTPUT_NAME]);
        // Chained: each node reads the previous node's output.
        for w in g.node.windows(2) {
            assert_eq!(w[1].input[0], w[0].output[0]);
        }
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "0.weight",
                "0.bias",
                "3.weight",
                "3.bias",
                "7.weight",
                "7.bias",
                "9.weight",
                "9.bias",
                "11.weight",
                "11.bias"
            ]
        );
        assert_eq!(g.initializer[4].dims, [120, 400]);
        let flat: Vec<f32> = g
            .initializer
            .iter()
            .flat_map(|t| t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        assert_eq!(flat, params);
    }

    #[test]
    fn wrong_parameter_count_is_refused() {
        let spec = Spec::preset("relu").unwrap();
        let err = to_bytes(&spec, &[0.0; 10]).unwrap_err().to_string();
        assert!(err.contains("10 parameter values given") && err.contains("61706"), "{err}");
    }
}
