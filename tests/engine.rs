//! The CPU engine's fused program (tiles of 16 examples, activations fused into
//! convolutions and linear layers, one parallel region per pass) against the
//! per-layer program on the same engine, and both against the f64 reference chain
//! (`lenet::internal::reference::chain`, plain loops that no instruction set changes) on every
//! instruction set this CPU has.

use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::layers::simd::isa;
use lenet::network::Network;
use lenet::spec::{Activation, LayerSpec, LenetOptions, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/reference.rs"]
mod reference;
use reference::{assert_close, assert_grads_close, reference};

/// Architectures that exercise every path: both presets, tanh on 32×32, a leaky
/// ReLU with a negative slope (not fused: its derivative needs the input), and odd
/// geometry (stride-2 convolution, padding in the middle, overlapping max pooling,
/// kernels other than 5, an activation first, flatten without a linear layer after).
fn specs() -> Vec<Spec> {
    let tanh32 =
        Spec::lenet("tanh32", &LenetOptions { activation: Activation::Tanh, input_size: 32, ..LenetOptions::d2l() });
    let negative =
        Spec::lenet("negative", &LenetOptions { activation: Activation::LeakyRelu(-0.3), ..LenetOptions::relu() });
    let odd = Spec::from_toml(
        r#"
name = "odd"
[input]
size = 28
[[layers]]
type = "sigmoid"
[[layers]]
type = "conv"
out_channels = 5
kernel = 3
stride = 2
padding = 1
[[layers]]
type = "leaky-relu"
slope = 0.2
[[layers]]
type = "max-pool"
size = 3
stride = 2
[[layers]]
type = "conv"
out_channels = 9
kernel = 2
padding = 1
[[layers]]
type = "tanh"
[[layers]]
type = "avg-pool"
size = 2
stride = 1
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out_features = 13
[[layers]]
type = "relu"
[[layers]]
type = "linear"
out_features = 10
"#,
    )
    .unwrap();
    // LeNet-5's own layers (run example by example) in odd geometry too: a strided,
    // padded convolution, subsampling, overlapping max pooling, a masked and padded
    // convolution, a leaky ReLU with a negative slope, RBF outputs on equation 8.
    let odd5 = Spec::from_toml(
        r###"
name = "odd5"
loss = { kind = "mse" }
[input]
size = 28
[[layers]]
type = "conv"
out_channels = 4
kernel = 3
stride = 2
padding = 1
[[layers]]
type = "scaled-tanh"
[[layers]]
type = "subsample"
[[layers]]
type = "max-pool"
size = 3
stride = 2
[[layers]]
type = "conv"
out_channels = 6
kernel = 2
padding = 1
table = [[0], [1, 2], [3], [0, 3], [1, 2, 3], [2]]
[[layers]]
type = "leaky-relu"
slope = -0.3
[[layers]]
type = "avg-pool"
size = 2
stride = 1
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out_features = 20
[[layers]]
type = "tanh"
[[layers]]
type = "rbf"
bitmaps = ["##..##..##...###.###", "#.#......#.###.#....", "...#.#.#.##..##..#.#", ".##...###...##.#####", "...##...#....#..#...", "..#..#.##......###..", "...#.#.....###.#.#.#", ".##..#.##.#..####.#.", ".#.#.........#.###..", "##...##.#####.##.##."]
"###,
    )
    .unwrap();
    vec![Spec::preset("d2l").unwrap(), Spec::preset("relu").unwrap(), tanh32, negative, odd, Spec::lenet5(), odd5]
}

fn setup(spec: &Spec, batch: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = spec.resolve().unwrap().iter().map(|l| l.param_count()).sum();
    let s = spec.input.size;
    let params = (0..n).map(|_| rng.gen_range(-0.3..0.3)).collect();
    let x = (0..batch * s * s).map(|_| rng.gen_range(-0.5..1.0)).collect();
    let labels = (0..batch).map(|_| rng.gen_range(0..10u8)).collect();
    (params, x, labels)
}

/// One training step's numbers: every layer's output, the loss, the gradients.
struct Step {
    outputs: Vec<Vec<f32>>,
    loss: f64,
    correct: usize,
    grads: Vec<f32>,
}

fn step(engine: CpuEngine, spec: &Spec, params: &[f32], x: &[f32], labels: &[u8]) -> Step {
    let batch = labels.len();
    let mut net = Network::new(engine, spec).unwrap();
    net.set_params(params).unwrap();
    net.load_batch_values(x, labels).unwrap();
    net.zero_grad();
    net.forward(batch);
    let stats = net.loss(batch, true);
    net.backward(batch);
    let outputs = (0..spec.layers.len()).map(|i| net.activation(i, batch)).collect();
    Step { outputs, loss: stats.mean(), correct: stats.correct, grads: net.grads() }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[test]
fn fused_program_matches_the_layerwise_program() {
    for spec in specs() {
        for (threads, batch) in [(1, 5), (2, 37), (3, 64), (2, 1)] {
            let (params, x, labels) = setup(&spec, batch, 7 + batch as u64);
            let fused = step(CpuEngine::new(threads).unwrap(), &spec, &params, &x, &labels);
            let reference = step(CpuEngine::new(threads).unwrap().layerwise(), &spec, &params, &x, &labels);
            let what = format!("{} threads {threads} batch {batch}", spec.name);
            for (i, (a, b)) in fused.outputs.iter().zip(&reference.outputs).enumerate() {
                assert_close(&format!("{what}: layer {i} output"), a, &f64s(b), 2e-5);
            }
            assert!((fused.loss - reference.loss).abs() < 1e-5 * reference.loss, "{what}: loss");
            assert_eq!(fused.correct, reference.correct, "{what}: correct");
            assert_grads_close(&what, &spec, &fused.grads, &f64s(&reference.grads), 1e-4);
        }
    }
}

#[test]
fn fused_program_is_bit_identical_run_to_run_and_survives_batch_size_changes() {
    let spec = Spec::preset("d2l").unwrap();
    let (params, x, labels) = setup(&spec, 100, 3);
    let run = || {
        let mut net = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
        net.set_params(&params).unwrap();
        let mut out = Vec::new();
        // A small batch, a large one (the buffers grow), the small one again.
        for n in [33, 100, 33] {
            net.load_batch_values(&x[..n * 784], &labels[..n]).unwrap();
            net.zero_grad();
            net.forward(n);
            out.push(net.loss(n, true).mean().to_bits() as u32);
            net.backward(n);
            out.extend(net.grads().iter().map(|g| g.to_bits()));
        }
        out
    };
    let (a, b) = (run(), run());
    assert!(a == b, "two runs differ");
    // The third step (33 examples after 100) equals the first.
    let n = (a.len() - 3) / 3;
    assert_eq!(a[..n + 1], a[2 * (n + 1)..], "a step after a larger batch differs");
}

/// The f32 sigmoid of the kernels on this process's instruction set against f64:
/// within 1.5 ulp of 1 everywhere, 1e-6 relative down to x = −80 (below, outputs are
/// those of −80: under 2e-35), NaN kept.
fn check_f32_sigmoid() {
    let mut x: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-4).collect();
    x.extend([-1e30, -200.0, -80.0, 0.0, -0.0, 87.0, 200.0, 1e30, f32::NEG_INFINITY, f32::INFINITY, f32::NAN]);
    let mut y = vec![0.0f32; x.len()];
    lenet::internal::layers::activation::activation_forward(&mut y, &x, Activation::Sigmoid);
    let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
    for (&x, &y) in x.iter().zip(&y) {
        if x.is_nan() {
            assert!(y.is_nan(), "sigmoid(NaN) = {y}");
            continue;
        }
        let want = 1.0 / (1.0 + (-(x as f64)).exp());
        let err = (y as f64 - want).abs();
        assert!(err <= 1.5 * f32::EPSILON as f64, "sigmoid({x}) = {y}, want {want}");
        worst_abs = worst_abs.max(err);
        if x >= -80.0 {
            assert!(err <= 1e-6 * want, "sigmoid({x}) = {y}, want {want}: relative error {}", err / want);
            worst_rel = worst_rel.max(err / want);
        }
    }
    let n = y.len();
    // (+inf: 1 on AVX-512, 1 − 2⁻²⁴ where the reciprocal of 1 comes from two Newton steps)
    assert!(
        (0.0..2e-35).contains(&y[n - 3]) && 1.0 - y[n - 2] <= f32::EPSILON / 2.0,
        "sigmoid(∓inf) = {}, {}",
        y[n - 3],
        y[n - 2]
    );
    eprintln!("f32 sigmoid on {}: worst absolute error {worst_abs:.3e}, relative {worst_rel:.3e}", isa().name());
}

#[test]
fn f32_sigmoid_is_accurate_and_keeps_its_limits() {
    check_f32_sigmoid();
}

/// Runs under `kernels_agree_on_every_instruction_set` in a child process with
/// LENET_ISA set (the choice is made once per process): checks the sigmoid and the
/// f64 layer functions on that instruction set, and writes both programs' f32 numbers
/// (loss, gradients, every layer's output) to LENET_PROBE_OUT for the parent to check.
#[test]
#[ignore = "run by kernels_agree_on_every_instruction_set"]
fn isa_probe() {
    let want = std::env::var("LENET_ISA").unwrap_or_default();
    eprintln!("isa_probe: LENET_ISA={want:?}, running {}", isa().name());
    if !want.is_empty() {
        assert_eq!(isa().env_name(), want, "LENET_ISA={want:?} ran another instruction set");
    }
    check_f32_sigmoid();
    let mut records: Vec<Vec<f32>> = Vec::new();
    for spec in specs() {
        let (params, x, labels) = setup(&spec, PROBE_BATCH, 11);
        for engine in [CpuEngine::new(2).unwrap(), CpuEngine::new(2).unwrap().layerwise()] {
            let got = step(engine, &spec, &params, &x, &labels);
            records.push(vec![got.loss as f32]);
            records.push(got.grads);
            records.extend(got.outputs);
        }
    }
    records.push(distorted_digits());
    if let Ok(path) = std::env::var("LENET_PROBE_OUT") {
        let bytes: Vec<u8> = records
            .iter()
            .flat_map(|r| (r.len() as u64).to_le_bytes().into_iter().chain(r.iter().flat_map(|v| v.to_le_bytes())))
            .collect();
        std::fs::write(path, bytes).unwrap();
    }
    // The f64 layer functions on this instruction set, one value from the definition.
    let g = lenet::internal::layers::conv::ConvGeom { c: 2, h: 6, w: 5, o: 3, k: 3, pad: 1, stride: 1 };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let xs: Vec<f64> = (0..2 * g.in_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let w: Vec<f64> = (0..g.weight_len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut out = vec![0.0; 2 * g.out_len()];
    lenet::internal::layers::conv::conv2d_forward(
        &mut out,
        &xs,
        &w,
        &[0.5, -0.5, 0.0],
        &g,
        2,
        lenet::internal::layers::Par::SERIAL,
    );
    // Output (example 1, channel 1, row 2, column 2) from the definition.
    let mut s = -0.5;
    for c in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                s += w[((2 + c) * 3 + i) * 3 + j] * xs[((2 + c) * 6 + 1 + i) * 5 + 1 + j];
            }
        }
    }
    let got = out[g.out_len() + (6 + 2) * 5 + 2];
    assert!((got - s).abs() < 1e-12, "{got} vs {s}");
}

const PROBE_BATCH: usize = 21;

/// Reads what `isa_probe` wrote: length-prefixed f32 records.
fn read_records(bytes: &[u8]) -> Vec<Vec<f32>> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let n = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 8;
        records
            .push(bytes[at..at + 4 * n].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
        at += 4 * n;
    }
    records
}

/// Each instruction set this CPU has runs both f32 programs in a child process; this
/// process checks their loss, every gradient (per tensor) and every layer output
/// against the f64 reference chain computed here, on this process's own (best)
/// instruction set. The chain's lane types are then never the ones under test, except
/// on a CPU with nothing but the baseline, where finite differences vouch for it.
/// Strong distortions (elastic field included) of a few stand-in digits, as floats.
fn distorted_digits() -> Vec<f32> {
    use lenet::internal::augment::{distort_split, Augment};
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pixels: Vec<u8> = (0..8 * 784).map(|i| if (i % 28) / 7 == (i / 784) % 4 { rng.gen() } else { 0 }).collect();
    let split =
        lenet::data::Split { images: lenet::data::Images { count: 8, rows: 28, cols: 28, pixels }, labels: vec![0; 8] };
    let aug: Augment = "translate=3,scale=0.2,shear=0.3,rotate=15,elastic".parse().unwrap();
    distort_split(&split, &aug, 9, 1).images.pixels.iter().map(|&p| p as f32).collect()
}

#[test]
fn kernels_agree_on_every_instruction_set() {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chains: Vec<_> = specs()
        .into_iter()
        .map(|spec| {
            let (params, x, labels) = setup(&spec, PROBE_BATCH, 11);
            let mut grads = vec![0.0; params.len()];
            let chain = reference(&spec, &f64s(&params), &f64s(&x), &labels, Some(&mut grads));
            (spec, chain, grads)
        })
        .collect();
    let sets = lenet::internal::layers::simd::available();
    let mut first_distorted: Option<Vec<f32>> = None;
    for set in &sets {
        let out_path = dir.path().join(set.env_name());
        let out = std::process::Command::new(&exe)
            .args(["isa_probe", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("LENET_ISA", set.env_name())
            .env("LENET_PROBE_OUT", &out_path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "LENET_ISA={}:\n{text}", set.env_name());
        let ran = format!("isa_probe: LENET_ISA={:?}, running {}", set.env_name(), set.name());
        assert!(text.contains(&ran), "the probe did not run on {}:\n{text}", set.name());
        let mut records = read_records(&std::fs::read(&out_path).unwrap()).into_iter();
        for (spec, chain, want_grads) in &chains {
            for program in ["fused", "layerwise"] {
                let what = format!("{} {program} on {}", spec.name, set.name());
                let loss = records.next().unwrap()[0] as f64;
                assert!((loss - chain.loss).abs() <= 1e-5 * chain.loss, "{what}: loss {loss} vs {}", chain.loss);
                assert_grads_close(&what, spec, &records.next().unwrap(), want_grads, 1e-4);
                for (i, want) in chain.outputs.iter().enumerate() {
                    assert_close(&format!("{what}: layer {i} output"), &records.next().unwrap(), want, 2e-5);
                }
            }
        }
        // Distortions promise the same bytes on every instruction set.
        let distorted = records.next().unwrap();
        let first = first_distorted.get_or_insert_with(|| distorted.clone());
        assert!(distorted == *first, "{}: the distorted digits differ from {}'s", set.name(), sets[0].name());
        assert!(records.next().is_none(), "{}: more records than expected", set.name());
    }
    eprintln!(
        "checked against the f64 reference chain (on {}): {:?}",
        isa().name(),
        sets.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
}

#[test]
fn pre_activation_outputs_are_recomputed_exactly() {
    // In the fused program a convolution's own output (before its activation) is not
    // kept; asking for it recomputes it. It must equal the layerwise program's.
    let spec = Spec::preset("d2l").unwrap();
    let (params, x, labels) = setup(&spec, 19, 5);
    let fused = step(CpuEngine::new(2).unwrap(), &spec, &params, &x, &labels);
    let reference = step(CpuEngine::new(2).unwrap().layerwise(), &spec, &params, &x, &labels);
    assert!(matches!(spec.layers[0], LayerSpec::Conv { .. }) && matches!(spec.layers[1], LayerSpec::Sigmoid));
    assert_close("conv 0 pre-activation", &fused.outputs[0], &f64s(&reference.outputs[0]), 1e-6);
    // And the sigmoid of it is the next layer's output.
    for (z, y) in fused.outputs[0].iter().zip(&fused.outputs[1]) {
        assert!((1.0 / (1.0 + (-z).exp()) - y).abs() < 1e-6);
    }
}
