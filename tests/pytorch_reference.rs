//! lenet against PyTorch, in the style of llm.c's test_gpt2: scripts/pytorch_reference.py ran
//! the d2l and relu LeNets in PyTorch 2.15 (float32) on fixed weights and a fixed batch of real
//! test images, and dumped what it computed to tests/fixtures/pytorch_reference.safetensors.
//! Here lenet recomputes all of it from the same weights and batch and compares:
//!
//! - logits and loss: relative error at most 1e-5;
//! - every parameter's gradient: at most 1e-4;
//! - the weights after one SGD step (momentum, weight decay) and one Adam step: the update
//!   within 1e-4 of its size, plus one float32 rounding of the weight;
//! - the losses of 10 SGD steps and of 10 Adam steps on that batch: at most 1e-5.
//!
//! The relative error of a tensor is its largest elementwise difference divided by the
//! reference's largest magnitude (per tensor, so that entries near zero do not divide by
//! zero). The optimizer settings, batch and step count come from the fixture's header, so
//! the script is the only place they are written down.
//!
//! The second part checks `lenet export` against the same reference: its logits on the
//! fixture's images, its state_dict, and its ONNX graph run by a small evaluator written
//! here from the ONNX operator definitions (onnxruntime runs the exported models on the
//! whole test set in scripts/interop).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use lenet::checkpoint::{self, Checkpoint, Meta};
use lenet::data::{self, DatasetKind, Images};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::Engine;
use lenet::internal::export::onnx::ModelProto;
use lenet::internal::idx;
use lenet::network::Network;
use lenet::optim::{Optimizer, OptimizerKind};
use lenet::spec::{Normalize, Spec};
use prost::Message;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::Deserialize;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pytorch_reference.safetensors");
const LOGITS_TOL: f64 = 1e-5;
const LOSS_TOL: f64 = 1e-5;
const GRAD_TOL: f64 = 1e-4;
const UPDATE_TOL: f64 = 1e-4;
const STEP_LOSSES_TOL: f64 = 1e-5;
const THREADS: usize = 2;

// ---- the fixture

#[derive(Deserialize)]
struct Header {
    made_by: String,
    torch: String,
    batch: usize,
    steps: usize,
    presets: HashMap<String, PresetInfo>,
    step_presets: Vec<String>,
    sgd: SgdSettings,
    adam: AdamSettings,
}

#[derive(Deserialize)]
struct PresetInfo {
    dataset: String,
    split: String,
    first: usize,
}

#[derive(Deserialize)]
struct SgdSettings {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
}

#[derive(Deserialize)]
struct AdamSettings {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

struct Fixture {
    bytes: Vec<u8>,
    header: Header,
}

impl Fixture {
    fn get() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let bytes = std::fs::read(FIXTURE)
                .unwrap_or_else(|e| panic!("{FIXTURE}: {e} (made by scripts/pytorch_reference.py)"));
            let (_, meta) = SafeTensors::read_metadata(&bytes).expect("the fixture is a safetensors file");
            let json = meta.metadata().as_ref().and_then(|m| m.get("lenet.reference")).expect("lenet.reference header");
            let header = serde_json::from_str(json).expect("lenet.reference header parses");
            Fixture { bytes, header }
        })
    }

    fn tensor(&self, name: &str, dtype: Dtype) -> (Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("{FIXTURE} has no tensor {name}"));
        assert_eq!(t.dtype(), dtype, "{name}");
        (t.shape().to_vec(), t.data().to_vec())
    }

    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, data) = self.tensor(name, Dtype::F32);
        (shape, data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    fn values(&self, name: &str) -> Vec<f32> {
        self.f32s(name).1
    }

    fn u8s(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        self.tensor(name, Dtype::U8)
    }

    fn sgd(&self) -> (OptimizerKind, f64) {
        let s = &self.header.sgd;
        (OptimizerKind::Sgd { momentum: s.momentum, nesterov: s.nesterov, weight_decay: s.weight_decay }, s.lr)
    }

    fn adam(&self) -> (OptimizerKind, f64) {
        let a = &self.header.adam;
        (OptimizerKind::Adam { beta1: a.beta1, beta2: a.beta2, eps: a.eps, weight_decay: a.weight_decay }, a.lr)
    }

    fn optimizer(&self, which: &str) -> (OptimizerKind, f64) {
        match which {
            "sgd" => self.sgd(),
            "adam" => self.adam(),
            _ => unreachable!(),
        }
    }
}

/// One preset's starting point: architecture, weights (flat, lenet's order), batch.
struct Case {
    spec: Spec,
    params: Vec<f32>,
    x: Vec<f32>,
    labels: Vec<u8>,
}

impl Case {
    fn new(preset: &'static str) -> Case {
        let f = Fixture::get();
        let spec = Spec::preset(preset).unwrap();
        let net = Network::new(CpuEngine::new(1).unwrap(), &spec).unwrap();
        let mut params = vec![0f32; net.num_params()];
        for info in net.param_infos() {
            let (shape, values) = f.f32s(&format!("params.{}", info.name));
            assert_eq!(shape, info.shape, "params.{}: PyTorch's shape is lenet's", info.name);
            params[info.range()].copy_from_slice(&values);
        }
        let b = f.header.batch;
        let (x_shape, x) = f.f32s(&format!("{preset}.x"));
        assert_eq!(x_shape, [b, 1, 28, 28]);
        let labels = f.u8s(&format!("{preset}.labels")).1;
        Case { spec, params, x, labels }
    }

    fn batch(&self) -> usize {
        self.labels.len()
    }

    fn network(&self) -> Network<CpuEngine> {
        let mut net = Network::new(CpuEngine::new(THREADS).unwrap(), &self.spec).unwrap();
        net.set_params(&self.params).unwrap();
        net.load_batch_values(&self.x, &self.labels).unwrap();
        net
    }
}

/// Forward, loss and backward on the loaded batch; returns the mean loss.
fn forward_backward(net: &mut Network<CpuEngine>, batch: usize) -> f64 {
    net.zero_grad();
    net.forward(batch);
    let loss = net.loss(batch, true).mean();
    net.backward(batch);
    loss
}

// ---- the comparisons

fn max_abs(v: &[f32]) -> f64 {
    v.iter().map(|x| x.abs() as f64).fold(0.0, f64::max)
}

/// The largest elementwise difference over the reference's largest magnitude.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
    let scale = max_abs(want);
    if scale > 0.0 {
        diff / scale
    } else {
        diff
    }
}

fn scalar_rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// The distance from |x| to the next float32 up: one rounding of a weight.
fn ulp(x: f32) -> f64 {
    let a = x.abs();
    (f32::from_bits(a.to_bits() + 1) - a) as f64
}

/// How far an updated weight tensor is from PyTorch's, relative to the size of PyTorch's
/// update: max_i (|got_i − want_i| − ulp(want_i))⁺ / max_i |want_i − start_i|.
fn update_err(got: &[f32], want: &[f32], start: &[f32]) -> f64 {
    let step = want.iter().zip(start).map(|(w, s)| (*w as f64 - *s as f64).abs()).fold(0.0, f64::max);
    assert!(step > 0.0, "the reference update is zero");
    let excess =
        got.iter().zip(want).map(|(g, w)| ((*g as f64 - *w as f64).abs() - ulp(*w)).max(0.0)).fold(0.0, f64::max);
    excess / step
}

fn check_forward_backward(preset: &'static str) {
    let f = Fixture::get();
    let case = Case::new(preset);
    let b = case.batch();
    let mut net = case.network();
    let loss = forward_backward(&mut net, b);

    let want_logits = f.f32s(&format!("{preset}.logits"));
    assert_eq!(want_logits.0, [b, 10]);
    let logits_err = rel_err(&net.logits(b), &want_logits.1);
    let want_loss = f.values(&format!("{preset}.loss"))[0] as f64;
    let loss_err = scalar_rel_err(loss, want_loss);
    eprintln!(
        "{preset} on {}: loss {loss:.7} (PyTorch {want_loss:.7}), rel err {loss_err:.1e}; logits rel err {logits_err:.1e}",
        lenet::internal::layers::simd::isa().name()
    );
    assert!(logits_err <= LOGITS_TOL, "{preset}: logits relative error {logits_err:.2e} > {LOGITS_TOL:e}");
    assert!(loss_err <= LOSS_TOL, "{preset}: loss relative error {loss_err:.2e} > {LOSS_TOL:e}");

    let grads = net.grads();
    let mut failures = Vec::new();
    for info in net.param_infos() {
        let (shape, want) = f.f32s(&format!("{preset}.grad.{}", info.name));
        assert_eq!(shape, info.shape);
        let err = rel_err(&grads[info.range()], &want);
        eprintln!("  grad {:<10} max |g| {:.3e}  rel err {err:.1e}", info.name, max_abs(&want));
        if err > GRAD_TOL {
            failures.push(format!("{}: {err:.2e}", info.name));
        }
    }
    assert!(failures.is_empty(), "{preset}: gradients off by more than {GRAD_TOL:e}: {failures:?}");
}

/// Where the gradients of a one-step check come from.
#[derive(Clone, Copy, PartialEq)]
enum Grads {
    /// lenet's backward pass: the whole chain, forward to update.
    Lenet,
    /// PyTorch's gradients from the fixture: the update rule alone.
    PyTorch,
}

/// One optimizer step from the starting weights, against the weights PyTorch had after
/// the same step.
fn check_one_step(preset: &'static str, which: &str, grads: Grads) {
    let f = Fixture::get();
    let case = Case::new(preset);
    let (kind, lr) = f.optimizer(which);
    let mut net = case.network();
    let mut opt = Optimizer::new(kind, net.num_params()).unwrap();
    let after = match grads {
        Grads::Lenet => {
            forward_backward(&mut net, case.batch());
            net.step(&mut opt, lr);
            net.params()
        }
        Grads::PyTorch => {
            let mut g = vec![0f32; net.num_params()];
            for info in net.param_infos() {
                g[info.range()].copy_from_slice(&f.values(&format!("{preset}.grad.{}", info.name)));
            }
            let mut p = case.params.clone();
            opt.step(&mut p, &g, lr);
            p
        }
    };
    let source = if grads == Grads::Lenet { "lenet's" } else { "PyTorch's" };
    let mut failures = Vec::new();
    for info in net.param_infos() {
        let want = f.values(&format!("{preset}.{which}_step.{}", info.name));
        let err = update_err(&after[info.range()], &want, &case.params[info.range()]);
        eprintln!("  {preset} {which} step from {source} gradients, {:<10} err {err:.1e} of the update", info.name);
        if err > UPDATE_TOL {
            failures.push(format!("{}: {err:.2e}", info.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{preset}: {which} step from {source} gradients off by more than {UPDATE_TOL:e} of the update: {failures:?}"
    );
}

/// `steps` optimizer steps on the fixture's batch, against PyTorch's loss before each step.
fn check_losses(preset: &'static str, which: &str) {
    let f = Fixture::get();
    let case = Case::new(preset);
    let b = case.batch();
    let mut net = case.network();
    let (kind, lr) = f.optimizer(which);
    let mut opt = Optimizer::new(kind, net.num_params()).unwrap();
    let want = f.f32s(&format!("{preset}.{which}_losses"));
    assert_eq!(want.0, [f.header.steps]);
    let mut worst = 0f64;
    for (step, &w) in want.1.iter().enumerate() {
        let loss = forward_backward(&mut net, b);
        net.step(&mut opt, lr);
        let err = scalar_rel_err(loss, w as f64);
        worst = worst.max(err);
        assert!(err <= STEP_LOSSES_TOL, "{preset} {which} step {}: loss {loss} vs PyTorch {w}: {err:.2e}", step + 1);
    }
    eprintln!(
        "{preset} {which}: {} losses {:.4} .. {:.4}, worst rel err {worst:.1e}",
        want.1.len(),
        want.1[0],
        want.1[want.1.len() - 1]
    );
}

// ---- the numbers

#[test]
fn fixture_is_small_complete_and_says_how_it_was_made() {
    let f = Fixture::get();
    let h = &f.header;
    assert!(f.bytes.len() < 1_500_000, "the fixture grew to {} bytes", f.bytes.len());
    assert_eq!(h.made_by, "scripts/pytorch_reference.py");
    assert!(h.torch.starts_with("2.15.0"), "made with torch {}", h.torch);
    assert!(h.sgd.momentum > 0.0 && h.sgd.weight_decay > 0.0, "SGD with momentum and weight decay");
    assert!(h.steps >= 10);
    let st = SafeTensors::deserialize(&f.bytes).unwrap();
    for preset in ["d2l", "relu"] {
        let info = &h.presets[preset];
        assert_eq!((info.split.as_str(), info.first), ("test", h.batch));
        assert_eq!(f.f32s(&format!("{preset}.loss")).0, Vec::<usize>::new());
        for which in ["sgd", "adam"] {
            assert_eq!(f.values(&format!("{preset}.{which}_losses")).len(), h.steps);
        }
        let grads = st.names().into_iter().filter(|n| n.starts_with(&format!("{preset}.grad."))).count();
        assert_eq!(grads, 10, "{preset}: a gradient for each of the 10 parameter tensors");
    }
    assert_eq!(h.step_presets, ["d2l"]);
}

/// The comparisons above (forward, backward, optimizer steps) once more in a child
/// process per instruction set this CPU has (`LENET_ISA`; the choice is made once per
/// process), so that no lane type escapes the PyTorch fixture.
#[test]
fn pytorch_fixture_matches_on_every_instruction_set() {
    let sets = lenet::internal::layers::simd::available();
    let exe = std::env::current_exe().unwrap();
    for set in &sets {
        let want = set.env_name();
        let out = Command::new(&exe)
            .args(["logits_loss_and_every_gradient", "step", "--skip", "on_every_instruction_set"])
            .args(["--nocapture", "--test-threads=1"])
            .env("LENET_ISA", want)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "LENET_ISA={want}:\n{text}");
        for preset in ["d2l", "relu"] {
            assert!(text.contains(&format!("{preset} on {}:", set.name())), "{preset} did not run on {want}:\n{text}");
        }
        assert!(text.contains("test result: ok. 6 passed"), "LENET_ISA={want}: not the six comparisons:\n{text}");
    }
}

#[test]
fn d2l_logits_loss_and_every_gradient_match_pytorch() {
    check_forward_backward("d2l");
}

#[test]
fn relu_logits_loss_and_every_gradient_match_pytorch() {
    check_forward_backward("relu");
}

#[test]
fn d2l_sgd_step_with_momentum_and_weight_decay_matches_pytorch() {
    check_one_step("d2l", "sgd", Grads::PyTorch);
    check_one_step("d2l", "sgd", Grads::Lenet);
}

/// From PyTorch's gradients: Adam's first step moves a weight by lr·g/(|g| + eps), which
/// for the few entries whose gradient (weight decay included) lies within a few hundred eps
/// of zero turns a last-bit difference in g into a large change of the update (lenet's own
/// gradients, 4e-7 from PyTorch's, give 5e-3 of the update on one entry of 7.weight). The
/// chain from lenet's gradients through Adam is checked by the 10-step losses.
#[test]
fn d2l_adam_step_matches_pytorch() {
    check_one_step("d2l", "adam", Grads::PyTorch);
}

#[test]
fn ten_sgd_steps_with_momentum_and_weight_decay_give_pytorchs_losses() {
    check_losses("d2l", "sgd");
    check_losses("relu", "sgd");
}

#[test]
fn ten_adam_steps_give_pytorchs_losses() {
    check_losses("d2l", "adam");
    check_losses("relu", "adam");
}

#[test]
fn lenet_scales_bytes_as_totensor_does() {
    let f = Fixture::get();
    for preset in ["d2l", "relu"] {
        let case = Case::new(preset);
        assert_eq!(case.spec.input.normalize, Normalize::Unit);
        let (shape, pixels) = f.u8s(&format!("{preset}.images"));
        assert_eq!(shape, [case.batch(), 28, 28]);
        // lenet's map byte·scale + shift against ToTensor's byte / 255: one rounding apart at most.
        let (scale, shift) = lenet::internal::input::pixel_affine(case.spec.input.normalize);
        for (&p, &x) in pixels.iter().zip(&case.x) {
            let ours = p as f32 * scale + shift;
            assert!((ours - x).abs() as f64 <= ulp(x), "pixel {p}: lenet {ours}, ToTensor {x}");
        }
        // The whole path from bytes, through the engine, gives PyTorch's logits.
        let images = Images { count: case.batch(), rows: 28, cols: 28, pixels };
        let mut net = Network::new(CpuEngine::new(THREADS).unwrap(), &case.spec).unwrap();
        net.set_params(&case.params).unwrap();
        let examples = net.engine.upload_examples(&images, &case.labels, &case.spec.input);
        let all: Vec<u32> = (0..case.batch() as u32).collect();
        net.load_batch(&examples, &all);
        net.forward(case.batch());
        let err = rel_err(&net.logits(case.batch()), &f.values(&format!("{preset}.logits")));
        assert!(err <= LOGITS_TOL, "{preset}: logits from bytes off by {err:.2e}");
    }
}

#[test]
fn fixture_batches_are_the_first_real_test_images() {
    let f = Fixture::get();
    for (preset, info) in &f.header.presets {
        let kind: DatasetKind = info.dataset.parse().unwrap();
        let ds = match data::load(kind, None) {
            Ok(ds) => ds,
            Err(e) if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") => {
                eprintln!("skipping: {e}");
                return;
            }
            Err(e) => panic!("{e}\n(run scripts/setup-data, or set LENET_SKIP_REAL_DATA=1 to skip)"),
        };
        let n = info.first;
        assert_eq!(f.u8s(&format!("{preset}.images")).1, ds.test.images.pixels[..n * 784], "{preset}");
        assert_eq!(f.u8s(&format!("{preset}.labels")).1, ds.test.labels[..n], "{preset}");
    }
}

#[test]
fn the_comparisons_catch_small_errors() {
    let f = Fixture::get();
    // A gradient with one entry off by 0.1% of the tensor's largest: caught.
    let want = f.values("d2l.grad.7.weight");
    let mut got = want.clone();
    got[1234] += 1e-3 * max_abs(&want) as f32;
    assert!(rel_err(&got, &want) > GRAD_TOL);
    assert_eq!(rel_err(&want, &want), 0.0);
    // An SGD update 0.1% too large: caught, though the weights move by far less than that.
    let start = f.values("params.0.weight");
    let after = f.values("d2l.sgd_step.0.weight");
    let wrong: Vec<f32> = start.iter().zip(&after).map(|(s, a)| s + (a - s) * 1.001).collect();
    assert!(update_err(&wrong, &after, &start) > UPDATE_TOL, "{}", update_err(&wrong, &after, &start));
    assert!(rel_err(&wrong, &after) < 1e-5, "the weights themselves barely change");
    // A step with PyTorch's weight decay left out: caught.
    let grad = f.values("d2l.grad.0.weight");
    let no_wd: Vec<f32> = start.iter().zip(&grad).map(|(p, g)| p - f.header.sgd.lr as f32 * g).collect();
    assert!(update_err(&no_wd, &after, &start) > UPDATE_TOL);
}

// ---- `lenet export` against the same reference

fn lenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(args)
        .env_remove("LENET_DATA")
        .env("HOME", "/nonexistent-home")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = lenet(args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "lenet {args:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn fails(args: &[&str]) -> String {
    let out = lenet(args);
    assert!(!out.status.success(), "lenet {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A lenet checkpoint of the fixture's d2l weights, with SGD momentum state (optim.*), and a
/// data folder whose "Fashion-MNIST" is the fixture's batch (train and test alike).
fn export_setup(dir: &Path) -> (PathBuf, PathBuf) {
    let f = Fixture::get();
    let case = Case::new("d2l");
    let mut opt = Optimizer::new(f.sgd().0, case.params.len()).unwrap();
    let grads = vec![0.5f32; case.params.len()];
    let mut stepped = case.params.clone();
    opt.step(&mut stepped, &grads, 0.0);
    let ck = Checkpoint {
        spec: case.spec.clone(),
        params: case.params.clone(),
        optim: opt.state_tensors(),
        meta: Meta::default(),
    };
    assert!(ck.optim.iter().any(|(n, _, _)| n == "optim.momentum_buffer"));
    let ck_path = dir.join("d2l.safetensors");
    checkpoint::save(&ck_path, &ck).unwrap();

    let data = dir.join("data");
    let images = Images { count: case.batch(), rows: 28, cols: 28, pixels: f.u8s("d2l.images").1 };
    for stem in ["train", "t10k"] {
        idx::write_images(&data.join(format!("{stem}-images-idx3-ubyte")), &images).unwrap();
        idx::write_labels(&data.join(format!("{stem}-labels-idx1-ubyte")), &case.labels).unwrap();
    }
    (ck_path, data)
}

#[test]
fn export_logits_are_pytorchs() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, data) = export_setup(dir.path());
    let out = dir.path().join("logits.safetensors");
    let text = ok(&["export", s(&ck), "--logits", s(&out), "--dataset", "fashion-mnist", "--data-dir", s(&data)]);
    assert!(text.contains("logits of 16"), "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logits: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let want = Fixture::get().values("d2l.logits");
    let err = rel_err(&logits, &want);
    assert!(err <= LOGITS_TOL, "exported logits off by {err:.2e}");
    let want_pred: Vec<u8> = want.chunks(10).map(|r| lenet::internal::layers::loss::argmax(r) as u8).collect();
    assert_eq!(st.tensor("predictions").unwrap().data(), want_pred.as_slice());
    assert_eq!(st.tensor("labels").unwrap().data(), Case::new("d2l").labels.as_slice());
    // Without --dataset, a checkpoint that does not say what it was trained on is refused.
    let err = fails(&["export", s(&ck), "--logits", s(&out), "--data-dir", s(&data)]);
    assert!(err.contains("d2l.safetensors") && err.contains("--dataset"), "{err}");
}

#[test]
fn export_state_dict_is_the_model_without_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let (ck, _) = export_setup(dir.path());
    let out = dir.path().join("model.safetensors");
    ok(&["export", s(&ck), "--state-dict", s(&out)]);
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    let f = Fixture::get();
    let mut want: Vec<String> = SafeTensors::deserialize(&f.bytes)
        .unwrap()
        .names()
        .into_iter()
        .filter_map(|n| n.strip_prefix("params.").map(str::to_string))
        .collect();
    want.sort();
    assert_eq!(names.into_iter().cloned().collect::<Vec<_>>(), want, "exactly the state_dict keys");
    for name in &want {
        let t = st.tensor(name).unwrap();
        let (shape, values) = f.tensor(&format!("params.{name}"), Dtype::F32);
        assert_eq!((t.shape(), t.data()), (shape.as_slice(), values.as_slice()), "{name}");
    }
    // lenet still reads it without --arch (the architecture stays in the header).
    let back = checkpoint::load(&out, None).unwrap();
    assert!(back.optim.is_empty());
    assert_eq!(back.params, Case::new("d2l").params);
}

/// A PyTorch-style file: the state_dict keys and nothing else, no lenet header.
fn write_pytorch_file(path: &Path, case: &Case) {
    let net = Network::new(CpuEngine::new(1).unwrap(), &case.spec).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = net
        .param_infos()
        .iter()
        .map(|p| {
            (p.name.clone(), p.shape.clone(), case.params[p.range()].iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn export_onnx_graph_computes_pytorchs_logits() {
    let f = Fixture::get();
    let dir = tempfile::tempdir().unwrap();
    for preset in ["d2l", "relu"] {
        let case = Case::new(preset);
        let torch_file = dir.path().join(format!("{preset}-torch.safetensors"));
        write_pytorch_file(&torch_file, &case);
        let onnx = dir.path().join(format!("{preset}.onnx"));
        let err = fails(&["export", s(&torch_file), "--onnx", s(&onnx)]);
        assert!(err.contains(&format!("{preset}-torch.safetensors")) && err.contains("--arch"), "{err}");
        assert!(!onnx.exists());
        let text = ok(&["export", s(&torch_file), "--arch", preset, "--onnx", s(&onnx)]);
        assert!(text.contains("ONNX opset 13"), "{text}");

        let model = ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
        let logits = run_onnx(&model, &case.x, case.batch());
        let got: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
        let err = rel_err(&got, &f.values(&format!("{preset}.logits")));
        eprintln!("{preset}: ONNX graph (f64 evaluator) vs PyTorch logits: rel err {err:.1e}");
        assert!(err <= LOGITS_TOL, "{preset}: the ONNX graph's logits are off by {err:.2e}");
    }
}

/// The other layer kinds (tanh, leaky-relu, 32×32 input without padding): the ONNX graph,
/// run by the evaluator below, against lenet's own forward pass on random weights.
#[test]
fn export_onnx_covers_every_layer_kind() {
    use lenet::spec::{Activation, LenetOptions, Pooling};
    use rand::{Rng, SeedableRng};
    let variants = [
        LenetOptions { activation: Activation::Tanh, pooling: Pooling::Max, ..LenetOptions::d2l() },
        LenetOptions { activation: Activation::LeakyRelu(0.1), input_size: 32, ..LenetOptions::relu() },
        LenetOptions { pad_first_conv: false, ..LenetOptions::d2l() },
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for o in &variants {
        let spec = Spec::lenet("variant", o);
        let mut net = Network::new(CpuEngine::new(THREADS).unwrap(), &spec).unwrap();
        let params: Vec<f32> = (0..net.num_params()).map(|_| rng.gen_range(-0.3..0.3)).collect();
        net.set_params(&params).unwrap();
        let batch = 3;
        let x: Vec<f32> = (0..batch * o.input_size * o.input_size).map(|_| rng.gen_range(-1.0..1.0)).collect();
        net.load_batch_values(&x, &[0, 1, 2]).unwrap();
        net.forward(batch);
        let bytes = lenet::internal::export::onnx::to_bytes(&spec, &params).unwrap();
        let logits = run_onnx(&ModelProto::decode(bytes.as_slice()).unwrap(), &x, batch);
        let got: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
        let err = rel_err(&got, &net.logits(batch));
        assert!(err <= LOGITS_TOL, "{o:?}: ONNX graph vs lenet: {err:.2e}");
    }
}

#[test]
fn export_needs_an_output_and_names_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&["export", "x.safetensors"]);
    assert!(err.contains("--onnx") || err.contains("required"), "{err}");
    let missing = dir.path().join("missing.safetensors");
    let err = fails(&["export", s(&missing), "--onnx", s(&dir.path().join("m.onnx"))]);
    assert!(err.contains("missing.safetensors"), "{err}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").unwrap();
    let err = fails(&["export", s(&junk), "--arch", "d2l", "--state-dict", s(&dir.path().join("o.safetensors"))]);
    assert!(err.contains("junk.safetensors") && err.contains("not a valid safetensors"), "{err}");
}

// ---- a small ONNX evaluator (f64), from the operator definitions of opset 13

type Value = (Vec<usize>, Vec<f64>);

fn run_onnx(model: &ModelProto, x: &[f32], batch: usize) -> Vec<f64> {
    let g = model.graph.as_ref().expect("a graph");
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &g.initializer {
        assert_eq!(t.data_type, 1, "float initializers");
        let data = t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
        values.insert(t.name.clone(), (t.dims.iter().map(|&d| d as usize).collect(), data));
    }
    let side = ((x.len() / batch) as f64).sqrt() as usize;
    values.insert(g.input[0].name.clone(), (vec![batch, 1, side, side], x.iter().map(|&v| v as f64).collect()));
    for node in &g.node {
        let ints = |name: &str, default: &[i64]| -> Vec<usize> {
            let a = node.attribute.iter().find(|a| a.name == name);
            a.map_or(default.to_vec(), |a| a.ints.clone()).into_iter().map(|v| v as usize).collect()
        };
        let int = |name: &str, default: i64| node.attribute.iter().find(|a| a.name == name).map_or(default, |a| a.i);
        let float = |name: &str, default: f32| node.attribute.iter().find(|a| a.name == name).map_or(default, |a| a.f);
        let (shape, inp) = values[&node.input[0]].clone();
        let elementwise = |op: &dyn Fn(f64) -> f64| (shape.clone(), inp.iter().map(|&v| op(v)).collect::<Vec<_>>());
        let out = match node.op_type.as_str() {
            "Conv" => {
                let (ws, w) = &values[&node.input[1]];
                let b = &values[&node.input[2]].1;
                conv(&shape, &inp, ws, w, b, &ints("pads", &[0, 0, 0, 0]), &ints("strides", &[1, 1]))
            }
            "AveragePool" | "MaxPool" => {
                let avg = node.op_type == "AveragePool";
                pool(&shape, &inp, &ints("kernel_shape", &[]), &ints("strides", &[1, 1]), avg)
            }
            "Sigmoid" => elementwise(&|v| 1.0 / (1.0 + (-v).exp())),
            "Tanh" => elementwise(&|v| v.tanh()),
            "Relu" => elementwise(&|v| v.max(0.0)),
            "LeakyRelu" => {
                let alpha = float("alpha", 0.01) as f64;
                elementwise(&|v| if v < 0.0 { alpha * v } else { v })
            }
            "Flatten" => {
                let axis = int("axis", 1) as usize;
                (vec![shape[..axis].iter().product(), shape[axis..].iter().product()], inp)
            }
            "Gemm" => {
                assert_eq!((int("transA", 0), int("transB", 0)), (0, 1));
                let (ws, w) = &values[&node.input[1]];
                let b = &values[&node.input[2]].1;
                let (m, k, n) = (shape[0], shape[1], ws[0]);
                assert_eq!(ws[1], k);
                let mut y = vec![0.0; m * n];
                for i in 0..m {
                    for j in 0..n {
                        y[i * n + j] = b[j] + (0..k).map(|t| inp[i * k + t] * w[j * k + t]).sum::<f64>();
                    }
                }
                (vec![m, n], y)
            }
            other => panic!("op {other} is not one lenet exports"),
        };
        values.insert(node.output[0].clone(), out);
    }
    values.remove(&g.output[0].name).expect("the graph output").1
}

/// Conv: x (N, C, H, W), w (O, C, K, K), pads [top, left, bottom, right], strides [sh, sw].
fn conv(xs: &[usize], x: &[f64], ws: &[usize], w: &[f64], b: &[f64], pads: &[usize], strides: &[usize]) -> Value {
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, k) = (ws[0], ws[2]);
    assert_eq!(ws[1], c);
    let oh = (h + pads[0] + pads[2] - k) / strides[0] + 1;
    let ow = (wd + pads[1] + pads[3] - k) / strides[1] + 1;
    let mut y = vec![0.0; n * o * oh * ow];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = b[oi];
                    for ci in 0..c {
                        for di in 0..k {
                            for dj in 0..k {
                                let (r, q) = (
                                    (i * strides[0] + di) as isize - pads[0] as isize,
                                    (j * strides[1] + dj) as isize - pads[1] as isize,
                                );
                                if r >= 0 && q >= 0 && (r as usize) < h && (q as usize) < wd {
                                    acc += x[((ni * c + ci) * h + r as usize) * wd + q as usize]
                                        * w[((oi * c + ci) * k + di) * k + dj];
                                }
                            }
                        }
                    }
                    y[((ni * o + oi) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    (vec![n, o, oh, ow], y)
}

/// AveragePool / MaxPool without padding: x (N, C, H, W).
fn pool(xs: &[usize], x: &[f64], kernel: &[usize], strides: &[usize], avg: bool) -> Value {
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let oh = (h - kernel[0]) / strides[0] + 1;
    let ow = (w - kernel[1]) / strides[1] + 1;
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks(h * w) {
        for i in 0..oh {
            for j in 0..ow {
                let window = (0..kernel[0])
                    .flat_map(|di| (0..kernel[1]).map(move |dj| (i * strides[0] + di) * w + j * strides[1] + dj))
                    .map(|p| plane[p]);
                y.push(if avg {
                    window.sum::<f64>() / (kernel[0] * kernel[1]) as f64
                } else {
                    window.fold(f64::NEG_INFINITY, f64::max)
                });
            }
        }
    }
    (vec![n, c, oh, ow], y)
}
