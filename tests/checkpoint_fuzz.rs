//! The checkpoint reader against damaged and hostile files: mutations of a valid
//! checkpoint (its bytes; the safetensors header's dtypes, shapes, offsets and names;
//! the architecture and metadata JSON inside it; the header's length) must give a clean
//! error naming the file, or a valid load from which a resume either starts or refuses
//! with an error; never a panic, and never an allocation larger than the file could
//! justify (measured).
//! Cases per property: `PROPTEST_CASES` (default 512).

use std::path::Path;
use std::sync::OnceLock;

use lenet::checkpoint::{self, Checkpoint};
use lenet::data::{Images, Split};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::optim::OptimizerKind;
use lenet::spec::Spec;
use lenet::trainer::{Silent, TrainConfig, Trainer};
use proptest::prelude::*;
use serde_json::Value;

#[path = "common/byte_edits.rs"]
mod byte_edits;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/fuzz_cases.rs"]
mod fuzz_cases;
use byte_edits::{byte_edit, ByteEdit};
use counting_alloc::peak_during;

const NAME: &str = "fuzzed.safetensors";

/// A small network (782 parameters), so that the header is a good part of the file.
fn tiny_spec() -> Spec {
    Spec::from_toml(
        r#"
name = "tiny"
[input]
size = 28
[[layers]]
type = "conv"
out_channels = 2
kernel = 5
stride = 4
[[layers]]
type = "relu"
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out_features = 10
"#,
    )
    .unwrap()
}

fn split(n: usize, seed: u8) -> Split {
    let pixels = (0..n * 784).map(|i| ((i * 31 + seed as usize * 7) % 251) as u8).collect();
    let labels = (0..n).map(|i| ((i + seed as usize) % 10) as u8).collect();
    Split { images: Images { count: n, rows: 28, cols: 28, pixels }, labels }
}

fn config() -> TrainConfig {
    TrainConfig {
        arch: tiny_spec(),
        epochs: 2,
        batch: 16,
        lr: 1e-3,
        optimizer: OptimizerKind::adam(),
        threads: 1,
        ..TrainConfig::d2l()
    }
}

/// The bytes of a real checkpoint after one epoch of Adam: parameters, optimizer
/// state, architecture, config and history.
fn valid() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut t = Trainer::new(CpuEngine::new(1).unwrap(), config(), &split(48, 1), &split(16, 2), None).unwrap();
        t.train_epoch(&mut Silent).unwrap();
        checkpoint::to_bytes(&t.checkpoint()).unwrap()
    })
}

/// The length of the valid checkpoint's tensor data.
fn data_len() -> usize {
    parts(valid()).1.len()
}

/// Splits a safetensors file into its header JSON and its data.
fn parts(bytes: &[u8]) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

fn join(header: &serde_json::Map<String, Value>, data: &[u8], length_error: i64) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let n = (text.len() as i64 + length_error).max(0) as u64;
    [&n.to_le_bytes()[..], &text, data].concat()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Raw bytes anywhere in the file (header length, JSON text, tensor data).
    Bytes(ByteEdit),
    /// The i-th tensor's entry in the header (modulo the count).
    Dtype(usize, &'static str),
    Shape(usize, Vec<u64>),
    Offsets(usize, u64, u64),
    ShiftOffsets(usize, i64),
    Remove(usize),
    Rename(usize, &'static str),
    /// A number inside the architecture or metadata JSON replaced (the k-th digit run).
    Number(&'static str, usize, &'static str),
    /// A value inside the architecture or metadata JSON set (or added) at a path.
    Json(&'static str, &'static str, &'static str),
    /// The architecture replaced by another one (JSON).
    Spec(Value),
    /// A metadata entry replaced by other text, or removed.
    Text(&'static str, &'static str),
    RemoveKey(&'static str),
    /// The header's length field off by this much.
    Length(i64),
}

const META_KEYS: [&str; 3] = ["lenet.spec", "lenet.meta", "format"];

fn tensor_names(header: &serde_json::Map<String, Value>) -> Vec<String> {
    header.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        match m {
            Mutation::Bytes(edit) => byte_edits::apply(&mut bytes, edit),
            structural => {
                // Header-level mutations need a header that still parses; after a byte
                // mutation broke it they are skipped (the byte mutation is the test then).
                let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize) else {
                    continue;
                };
                let Some(Ok(Value::Object(mut header))) =
                    bytes.get(8..8usize.saturating_add(n)).map(serde_json::from_slice::<Value>)
                else {
                    continue;
                };
                let data = bytes[8 + n..].to_vec();
                let names = tensor_names(&header);
                let tensor = |i: &usize| names.get(i % names.len().max(1)).cloned();
                let mut length_error = 0;
                match structural {
                    Mutation::Dtype(i, d) => {
                        if let Some(t) = tensor(i) {
                            header[&t]["dtype"] = Value::from(*d);
                        }
                    }
                    Mutation::Shape(i, s) => {
                        if let Some(t) = tensor(i) {
                            header[&t]["shape"] = Value::from(s.clone());
                        }
                    }
                    Mutation::Offsets(i, a, b) => {
                        if let Some(t) = tensor(i) {
                            header[&t]["data_offsets"] = Value::from(vec![*a, *b]);
                        }
                    }
                    Mutation::ShiftOffsets(i, by) => {
                        if let Some(t) = tensor(i) {
                            let shifted: Vec<Value> = header[&t]["data_offsets"]
                                .as_array()
                                .map(|o| o.iter().map(|v| Value::from(v.as_i64().unwrap_or(0) + by)).collect())
                                .unwrap_or_default();
                            header[&t]["data_offsets"] = Value::from(shifted);
                        }
                    }
                    Mutation::Remove(i) => {
                        if let Some(t) = tensor(i) {
                            header.remove(&t);
                        }
                    }
                    Mutation::Rename(i, to) => {
                        if let Some(t) = tensor(i) {
                            let v = header.remove(&t).unwrap();
                            header.insert(to.to_string(), v);
                        }
                    }
                    Mutation::Number(key, k, with) => {
                        if let Some(Value::String(s)) = header.get_mut("__metadata__").and_then(|m| m.get_mut(*key)) {
                            *s = replace_number(s, *k, with);
                        }
                    }
                    Mutation::Json(key, path, value) => {
                        if let Some(Value::String(s)) = header.get_mut("__metadata__").and_then(|m| m.get_mut(*key)) {
                            if let Ok(mut v) = serde_json::from_str::<Value>(s) {
                                set_at(&mut v, path, serde_json::from_str(value).unwrap());
                                *s = v.to_string();
                            }
                        }
                    }
                    Mutation::Spec(spec) => {
                        if let Some(m) = header.get_mut("__metadata__").and_then(Value::as_object_mut) {
                            m.insert("lenet.spec".into(), Value::from(spec.to_string()));
                        }
                    }
                    Mutation::Text(key, text) => {
                        if let Some(m) = header.get_mut("__metadata__").and_then(Value::as_object_mut) {
                            m.insert(key.to_string(), Value::from(*text));
                        }
                    }
                    Mutation::RemoveKey(key) => {
                        if let Some(m) = header.get_mut("__metadata__").and_then(Value::as_object_mut) {
                            m.remove(*key);
                        }
                    }
                    Mutation::Length(by) => length_error = *by,
                    _ => unreachable!(),
                }
                bytes = join(&header, &data, length_error);
            }
        }
    }
    bytes
}

/// Sets the value at a JSON pointer (`/config/batch`), adding the last key to an
/// object that lacks it; a path that leads nowhere changes nothing.
fn set_at(root: &mut Value, path: &str, value: Value) {
    let (parent, last) = path.rsplit_once('/').unwrap();
    match root.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(last.to_string(), value);
        }
        Some(Value::Array(a)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

/// Paths into the architecture (`lenet.spec`) and the metadata (`lenet.meta`: epoch,
/// training config, history) whose values decide what a load or a resume does.
const SPEC_PATHS: [&str; 9] = [
    "/input/size",
    "/input/fit",
    "/layers",
    "/layers/0/out_channels",
    "/layers/0/kernel",
    "/layers/0/padding",
    "/layers/0/stride",
    "/layers/0/type",
    "/layers/3/out_features",
];
const META_PATHS: [&str; 16] = [
    "/epoch",
    "/history",
    "/history/0/lr",
    "/config/batch",
    "/config/epochs",
    "/config/lr",
    "/config/val_split",
    "/config/threads",
    "/config/seed",
    "/config/clip_grad_norm",
    "/config/class_weights",
    "/config/optimizer/type",
    "/config/optimizer/beta1",
    "/config/schedule",
    "/config/arch/layers/0/out_channels",
    "/config/arch/input/size",
];
const JSON_VALUES: [&str; 15] = [
    "0",
    "1",
    "-1",
    "4",
    "65536",
    "65537",
    "4294967296",
    "18446744073709551615",
    "1e300",
    "0.5",
    "null",
    "[]",
    "\"x\"",
    "{}",
    "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]",
];

fn json_mutation() -> impl Strategy<Value = Mutation> {
    let value = prop::sample::select(JSON_VALUES.to_vec());
    prop_oneof![
        1 => (prop::sample::select(SPEC_PATHS.to_vec()), value.clone()).prop_map(|(p, v)| Mutation::Json("lenet.spec", p, v)),
        3 => (prop::sample::select(META_PATHS.to_vec()), value).prop_map(|(p, v)| Mutation::Json("lenet.meta", p, v)),
    ]
}

/// An architecture of up to 6 layers of any kind with sizes from zero to absurd.
fn spec_json() -> impl Strategy<Value = Value> {
    let size = prop::sample::select(vec![0u64, 1, 2, 3, 5, 28, 65536, 65537, 1 << 32, u64::MAX]);
    let layer = prop_oneof![
        (size.clone(), size.clone(), size.clone(), size.clone()).prop_map(|(o, k, p, s)| {
            serde_json::json!({"type": "conv", "out_channels": o, "kernel": k, "padding": p, "stride": s})
        }),
        (prop::sample::select(vec!["max-pool", "avg-pool"]), size.clone(), size.clone())
            .prop_map(|(t, z, s)| serde_json::json!({"type": t, "size": z, "stride": s})),
        size.clone().prop_map(|n| serde_json::json!({"type": "linear", "out_features": n})),
        prop::sample::select(vec!["relu", "sigmoid", "tanh", "flatten"]).prop_map(|t| serde_json::json!({"type": t})),
        Just(serde_json::json!({"type": "leaky-relu", "slope": -1e30})),
    ];
    (prop::sample::select(vec![0u64, 1, 3, 4, 28, 32, 1024, 1025, u64::MAX]), prop::collection::vec(layer, 0..7))
        .prop_map(|(size, layers)| serde_json::json!({"name": "fuzz", "input": {"size": size}, "layers": layers}))
}

/// `s` with its k-th run of digits (modulo their count) replaced.
fn replace_number(s: &str, k: usize, with: &str) -> String {
    let mut runs = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    match runs.get(k % runs.len().max(1)) {
        Some(r) => format!("{}{with}{}", &s[..r.start], &s[r.end..]),
        None => s.to_string(),
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let dtype = prop::sample::select(vec!["F16", "BF16", "F64", "I8", "U8", "I32", "I64", "BOOL", "F8_E4M3", "Q4"]);
    let dim = prop::sample::select(vec![0u64, 1, 2, 3, 5, 10, 72, 720, 1 << 31, 1 << 40, u64::MAX]);
    let offset = prop::sample::select(vec![0u64, 4, 8, 3128, 3129, 6256, 1 << 32, u64::MAX - 1, u64::MAX]);
    let name = prop::sample::select(vec!["0.weight", "3.bias", "optim.step", "optim.exp_avg", "9.weight", "", "x"]);
    let number = prop::sample::select(vec![
        "0",
        "1",
        "4",
        "65536",
        "1000000000",
        "4294967296",
        "18446744073709551615",
        "99999999999999999999999",
        "-1",
        "1e400",
        "0.5",
        "\"7\"",
        "null",
        "[]",
    ]);
    let text =
        prop::sample::select(vec!["", "{}", "[]", "null", "not json", "{\"name\":\"x\",\"input\":{\"size\":28}}"]);
    let key = prop::sample::select(META_KEYS.to_vec());
    prop_oneof![
        5 => byte_edit().prop_map(Mutation::Bytes),
        1 => (any::<usize>(), dtype).prop_map(|(i, d)| Mutation::Dtype(i, d)),
        1 => (any::<usize>(), prop::collection::vec(dim, 0..4)).prop_map(|(i, s)| Mutation::Shape(i, s)),
        1 => (any::<usize>(), offset.clone(), offset).prop_map(|(i, a, b)| Mutation::Offsets(i, a, b)),
        1 => (any::<usize>(), prop::sample::select(vec![-8i64, -4, -1, 1, 4, 8, 1 << 20]))
            .prop_map(|(i, by)| Mutation::ShiftOffsets(i, by)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), name).prop_map(|(i, n)| Mutation::Rename(i, n)),
        3 => (key.clone(), any::<usize>(), number).prop_map(|(k, i, n)| Mutation::Number(k, i, n)),
        1 => (key.clone(), text).prop_map(|(k, t)| Mutation::Text(k, t)),
        1 => key.prop_map(Mutation::RemoveKey),
        1 => prop::sample::select(vec![-100i64, -1, 1, 7, 1 << 20, 1 << 40]).prop_map(Mutation::Length),
    ]
}

/// What reading a checkpoint may allocate at once: a few copies of the file (header
/// JSON, tensors, parameters), never what a header claims.
fn allocation_bound(file_len: usize) -> usize {
    (1 << 20) + 16 * file_len
}

/// Reads `bytes` as the checkpoint file `fuzzed.safetensors`: an error must name the
/// file; a load must be whole and consistent, and a run must resume from it or refuse
/// with an error. Returns whether it loaded.
fn check(bytes: &[u8]) -> bool {
    let (loaded, peak) = peak_during(|| checkpoint::from_bytes(bytes, Path::new(NAME), None));
    assert!(peak <= allocation_bound(bytes.len()), "reading {} bytes allocated {peak} at once", bytes.len());
    let ck: Checkpoint = match loaded {
        Err(e) => {
            assert!(e.to_string().contains(NAME), "the error does not name the file: {e}");
            return false;
        }
        Ok(ck) => ck,
    };
    let layers = ck.spec.resolve().expect("a loaded checkpoint's architecture resolves");
    assert_eq!(ck.params.len(), layers.iter().map(|l| l.param_count()).sum::<usize>());
    assert!(ck.params.iter().all(|v| v.is_finite()));
    // Resuming reads the config, history and optimizer state: Ok or a clean error.
    if let Ok(mut t) = Trainer::resume(CpuEngine::new(1).unwrap(), &ck, &split(48, 1), &split(16, 2), None) {
        if !t.is_finished() && ck.params.len() < 100_000 {
            let _ = t.train_epoch(&mut Silent);
        }
    }
    true
}

proptest! {
    #![proptest_config(fuzz_cases::config())]

    #[test]
    fn mutated_checkpoints_load_or_fail_cleanly(mutations in prop::collection::vec(mutation(), 1..5)) {
        check(&apply(valid().to_vec(), &mutations));
    }

    #[test]
    fn mutated_metadata_loads_or_fails_cleanly(mutations in prop::collection::vec(json_mutation(), 1..4)) {
        check(&apply(valid().to_vec(), &mutations));
    }

    #[test]
    fn any_architecture_in_the_header_loads_or_fails_cleanly(spec in spec_json()) {
        check(&apply(valid().to_vec(), &[Mutation::Spec(spec)]));
    }

    #[test]
    fn random_bytes_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes);
    }

    /// The valid header over other tensor data of its length (give or take a byte):
    /// mostly ordinary numbers, now and then any bit pattern (NaN, infinities).
    #[test]
    fn a_valid_header_over_other_data_loads_or_fails_cleanly(
        values in prop::collection::vec(prop_oneof![9 => -10.0f32..10.0, 1 => any::<f32>()], data_len() / 4),
        length_error in prop::sample::select(vec![0i64, 0, 0, -1, 1]),
        extra in prop::sample::select(vec![0usize, 0, 0, 1, 3]),
    ) {
        let (header, _) = parts(valid());
        let mut data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.truncate(data.len() - extra);
        check(&join(&header, &data, length_error));
    }
}

#[test]
fn the_unmutated_checkpoint_loads_and_resumes() {
    let (header, data) = parts(valid());
    let rebuilt = join(&header, &data, 0);
    assert!(check(valid()) && check(&rebuilt), "a valid checkpoint did not load");
    let ck = checkpoint::from_bytes(&rebuilt, Path::new(NAME), None).unwrap();
    assert_eq!(ck.meta.epoch, 1);
    assert_eq!(ck.params.len(), 782);
    assert!(ck.optim.iter().any(|(n, _, _)| n == "optim.exp_avg_sq"));
}

/// Hand-made cases that each reach one check, with the error they must give.
#[test]
fn each_damage_has_its_own_error() {
    let cases: Vec<(Vec<Mutation>, &str)> = vec![
        (vec![Mutation::Dtype(0, "I32")], "lenet reads F32 tensors"),
        (vec![Mutation::Shape(0, vec![1 << 40, 1 << 40])], NAME),
        (vec![Mutation::Rename(0, "optim.renamed")], "has no tensor 0.bias"),
        (vec![Mutation::Rename(4, "x")], "does not have"),
        (vec![Mutation::Offsets(0, 0, u64::MAX)], "not a valid safetensors file"),
        (vec![Mutation::Text("lenet.spec", "not json")], "bad lenet.spec"),
        (vec![Mutation::Text("lenet.meta", "[]")], "bad lenet.meta"),
        (vec![Mutation::RemoveKey("lenet.spec")], "--arch"),
        (vec![Mutation::Length(1 << 40)], "not a valid safetensors file"),
        (vec![Mutation::Bytes(ByteEdit::Truncate(valid().len() - 1))], "not a valid safetensors file"),
    ];
    for (mutations, want) in cases {
        let bytes = apply(valid().to_vec(), &mutations);
        let e = checkpoint::from_bytes(&bytes, Path::new(NAME), None).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains(NAME), "{mutations:?}: {e}");
    }
}

/// An architecture that claims far more weights than the file holds is refused before
/// its parameters are allocated: the tensors are looked up first.
#[test]
fn a_huge_claimed_architecture_allocates_nothing() {
    for (path, value) in
        [("/layers/0/out_channels", "60000"), ("/layers/0/out_channels", "65536"), ("/layers/0/padding", "1000")]
    {
        let bytes = apply(valid().to_vec(), &[Mutation::Json("lenet.spec", path, value)]);
        let (r, peak) = peak_during(|| checkpoint::from_bytes(&bytes, Path::new(NAME), None));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("has no tensor") || e.contains("has shape"), "{path} = {value}: {e}");
        assert!(peak <= allocation_bound(bytes.len()), "{path} = {value}: {peak} bytes at once");
    }
}

/// An architecture with no layers and a bad input size: an error (it once panicked
/// while naming the first layer).
#[test]
fn an_empty_architecture_with_a_bad_input_size_is_an_error() {
    let spec = serde_json::json!({"name": "empty", "input": {"size": 0}, "layers": []});
    let bytes = apply(valid().to_vec(), &[Mutation::Spec(spec)]);
    let e = checkpoint::from_bytes(&bytes, Path::new(NAME), None).unwrap_err().to_string();
    assert!(e.contains("input size 0") && e.contains(NAME), "{e}");
}

/// Resuming checks the config it finds in the metadata (a batch of 0 once panicked in
/// the first epoch) and that its architecture is the weights'.
#[test]
fn resume_refuses_a_config_it_cannot_run() {
    for (path, value, want) in [
        ("/config/batch", "0", "--batch"),
        ("/config/val_split", "4", "--val-split"),
        ("/config/class_weights", "[1, 2]", "--class-weights"),
        ("/config/arch/layers/0/out_channels", "3", "architecture"),
    ] {
        let bytes = apply(valid().to_vec(), &[Mutation::Json("lenet.meta", path, value)]);
        let ck = checkpoint::from_bytes(&bytes, Path::new(NAME), None).unwrap();
        let e = Trainer::resume(CpuEngine::new(1).unwrap(), &ck, &split(48, 1), &split(16, 2), None)
            .err()
            .unwrap_or_else(|| panic!("{path} = {value} resumed"));
        assert!(format!("{e:#}").contains(want), "{path} = {value}: {e:#}");
    }
}
