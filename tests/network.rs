//! The whole network: the f64 reference chain (`lenet::internal::reference::chain`, built from
//! the spec and the reference layers' plain loops) is checked against finite
//! differences, and the f32 `Network` on the CPU engine is checked against it.

use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::TrainStats;
use lenet::network::Network;
use lenet::spec::{Activation, Criterion, LenetOptions, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/reference.rs"]
mod reference;
use reference::{assert_close, assert_grads_close, random_case, reference};

fn specs() -> Vec<Spec> {
    let small_leaky =
        Spec::lenet("leaky", &LenetOptions { activation: Activation::LeakyRelu(0.1), ..LenetOptions::relu() });
    let tanh32 =
        Spec::lenet("tanh32", &LenetOptions { activation: Activation::Tanh, input_size: 32, ..LenetOptions::d2l() });
    vec![Spec::preset("d2l").unwrap(), Spec::preset("relu").unwrap(), small_leaky, tanh32, Spec::lenet5()]
}

#[test]
fn reference_chain_matches_finite_differences() {
    for spec in [Spec::preset("d2l").unwrap(), Spec::lenet5(), lenet5_with(Criterion::Mse)] {
        reference_matches_finite_differences(&spec);
    }
}

fn lenet5_with(loss: Criterion) -> Spec {
    Spec { loss, ..Spec::lenet5() }
}

fn reference_matches_finite_differences(spec: &Spec) {
    let spec = spec.clone();
    let (mut params, x, labels) = random_case(&spec, 3, 11);
    let mut grads = vec![0.0; params.len()];
    reference(&spec, &params, &x, &labels, Some(&mut grads));
    // A spread of parameters across every layer (all 61706 would take minutes).
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for _ in 0..300 {
        let i = rng.gen_range(0..params.len());
        let orig = params[i];
        params[i] = orig + 1e-6;
        let up = reference(&spec, &params, &x, &labels, None).loss;
        params[i] = orig - 1e-6;
        let down = reference(&spec, &params, &x, &labels, None).loss;
        params[i] = orig;
        let numeric = (up - down) / 2e-6;
        let name = &spec.name;
        assert!(
            (numeric - grads[i]).abs() < 1e-7 + 1e-5 * numeric.abs(),
            "{name} param {i}: {} vs {numeric}",
            grads[i]
        );
    }
}

#[test]
fn network_matches_f64_reference() {
    for spec in specs() {
        for threads in [1, 2, 3] {
            let batch = 5;
            let (params, x, labels) = random_case(&spec, batch, 21);
            let mut want = vec![0.0; params.len()];
            let chain = reference(&spec, &params, &x, &labels, Some(&mut want));
            let want_loss = chain.loss;

            let mut net = Network::new(CpuEngine::new(threads).unwrap(), &spec).unwrap();
            assert_eq!(net.num_params(), params.len());
            net.set_params(&params.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap();
            net.load_batch_values(&x.iter().map(|&v| v as f32).collect::<Vec<_>>(), &labels).unwrap();
            net.zero_grad();
            net.forward(batch);
            let loss = net.loss(batch, true).mean();
            net.backward(batch);
            let what = format!("{} threads {threads}", spec.name);
            assert!((loss - want_loss).abs() < 1e-5 * want_loss, "{what}: loss {loss} vs {want_loss}");
            assert_grads_close(&what, &spec, &net.grads(), &want, 1e-4);
            for (i, want) in chain.outputs.iter().enumerate() {
                assert_close(&format!("{what}: layer {i} output"), &net.activation(i, batch), want, 1e-5);
            }
        }
    }
}

#[test]
fn param_names_are_pytorch_state_dict_keys() {
    let net = Network::new(CpuEngine::new(1).unwrap(), &Spec::preset("d2l").unwrap()).unwrap();
    let names: Vec<&str> = net.param_infos().iter().map(|p| p.name.as_str()).collect();
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
    assert_eq!(net.num_params(), 61706);
    let shapes: Vec<Vec<usize>> = net.param_infos().iter().map(|p| p.shape.clone()).collect();
    assert_eq!(shapes[0], vec![6, 1, 5, 5]);
    assert_eq!(shapes[4], vec![120, 400]);
}

#[test]
fn same_thread_count_is_bit_identical() {
    let spec = Spec::preset("relu").unwrap();
    let (params, x, labels) = random_case(&spec, 64, 31);
    let run = || {
        let mut net = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
        net.set_params(&params.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap();
        net.load_batch_values(&x.iter().map(|&v| v as f32).collect::<Vec<_>>(), &labels).unwrap();
        net.zero_grad();
        net.forward(64);
        net.loss(64, true);
        net.backward(64);
        net.grads()
    };
    let (a, b) = (run(), run());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// `train_step` and `infer` (one job on the engine's workers each) do exactly what
/// the separate passes do, bit for bit; a step whose loss is not finite leaves the
/// parameters alone.
#[test]
fn train_step_and_infer_are_the_passes_in_one_job() {
    use lenet::internal::engine::Engine;
    use lenet::internal::idx::Images;
    use lenet::optim::{Optimizer, OptimizerKind};

    let spec = Spec::preset("d2l").unwrap();
    let (params, _, _) = random_case(&spec, 1, 5);
    let params: Vec<f32> = params.iter().map(|&v| v as f32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let count = 100;
    let images = Images { count, rows: 28, cols: 28, pixels: (0..count * 784).map(|_| rng.gen()).collect() };
    let labels: Vec<u8> = (0..count).map(|_| rng.gen_range(0..10)).collect();
    let indices: Vec<u32> = (0..count as u32).rev().step_by(3).collect();
    let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 1e-3 };
    let relu = Spec::preset("relu").unwrap();
    let new_net_of = |spec: &Spec, threads: usize, class_weights: Option<&[f32]>| {
        let mut net = Network::new(CpuEngine::new(threads).unwrap(), spec).unwrap();
        net.set_params(&params).unwrap();
        net.set_class_weights(class_weights).unwrap();
        let examples = net.engine.upload_examples(&images, &labels, &spec.input);
        (net, examples, Optimizer::new(kind, params.len()).unwrap())
    };
    let new_net = |threads: usize, class_weights: Option<&[f32]>| new_net_of(&spec, threads, class_weights);
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();

    // The CPU program runs a training step pair of tiles by pair of tiles (forward,
    // loss, backward): batches of 3 tiles (a pair and a single tile on 2 threads)
    // and of 7 (on 1 thread three pairs and a single; on 3 threads 3 + 3 + 1 tiles),
    // with and without class weights; sigmoid and average pooling (whose backward pass
    // works in place in a training step), then ReLU and max pooling (the relu preset,
    // the same parameter shapes).
    let all: Vec<u32> = (0..count as u32).collect();
    let weights: Vec<f32> = (0..10).map(|c| 0.5 + c as f32 / 7.0).collect();
    for (spec, threads, idx, class_weights) in [
        (&spec, 2, &indices[..], None),
        (&spec, 1, &all[..], Some(&weights[..])),
        (&spec, 3, &all[..], None),
        (&spec, 2, &all[..], Some(&weights[..])),
        (&relu, 2, &all[..], None),
    ] {
        let (mut a, ex_a, mut opt_a) = new_net_of(spec, threads, class_weights);
        let (mut b, ex_b, mut opt_b) = new_net_of(spec, threads, class_weights);
        let n = idx.len();
        for _ in 0..3 {
            a.reset_train_stats();
            a.train_step(&ex_a, idx, &mut opt_a, 0.1, Some(1.0));
            let stats = a.train_stats();
            b.load_batch(&ex_b, idx);
            b.zero_grad();
            b.forward(n);
            let expected = b.loss(n, true);
            b.backward(n);
            b.clip_grad_norm(1.0);
            b.step(&mut opt_b, 0.1);
            let mut want = TrainStats::default();
            want.add(&expected, n);
            assert_eq!(stats, want, "{threads} threads, batch of {n}");
            assert_eq!(bits(a.grads()), bits(b.grads()), "{threads} threads, batch of {n}");
        }
        assert_eq!(bits(a.params()), bits(b.params()), "{threads} threads, batch of {n}");
        assert_ne!(bits(a.params()), bits(params.clone()), "the steps changed nothing");
        assert_eq!(bits(a.logits(n)), bits(b.logits(n)), "{threads} threads, batch of {n}");
    }
    let (mut a, ex_a, mut opt_a) = new_net(2, None);
    let (mut b, ex_b, _) = new_net(2, None);
    a.train_step(&ex_a, &indices, &mut opt_a, 0.1, None);
    b.set_params(&a.params()).unwrap();

    // Inference reuses the intermediate buffers of each chunk's tile pairs: batches of
    // 1, 3 and 7 tiles (up to 4 tiles, two pairs, a chunk on 2 threads), odd lanes.
    for idx in [&indices[..], &all[..], &all[..5]] {
        let n = idx.len();
        let (stats, logits) = a.infer(&ex_a, idx);
        b.load_batch(&ex_b, idx);
        b.forward(n);
        assert_eq!(stats.mean().to_bits(), b.loss(n, false).mean().to_bits(), "batch of {n}");
        assert_eq!(bits(logits), bits(b.logits(n)), "batch of {n}");
    }

    // A diverged step: the loss is reported (as the tally's first non-finite batch,
    // after a finite one), the parameters stay.
    a.reset_train_stats();
    a.train_step(&ex_a, &indices, &mut opt_a, 0.1, None);
    let mut broken = a.params();
    broken[0] = f32::NAN;
    a.set_params(&broken).unwrap();
    a.train_step(&ex_a, &indices, &mut opt_a, 0.1, None);
    let stats = a.train_stats();
    assert!(matches!(stats.first_nonfinite, Some((2, loss)) if !loss.is_finite()), "{stats:?}");
    assert_eq!((stats.batches, stats.examples), (2, 2 * indices.len()));
    assert_eq!(bits(a.params()), bits(broken));
}

/// After `infer` only the logits are kept: asking for another layer's output is a
/// programming error, refused rather than answered with another batch's values.
#[test]
#[should_panic(expected = "inference-only")]
fn layer_outputs_after_inference_are_refused() {
    use lenet::internal::engine::Engine;
    use lenet::internal::idx::Images;

    let spec = Spec::preset("d2l").unwrap();
    let mut net = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
    let images = Images { count: 40, rows: 28, cols: 28, pixels: vec![7; 40 * 784] };
    let examples = net.engine.upload_examples(&images, &[1; 40], &spec.input);
    let indices: Vec<u32> = (0..40).collect();
    net.infer(&examples, &indices);
    net.activation(0, 40);
}

/// A training step keeps only the logits too (its pairs of tiles reuse two slots).
#[test]
#[should_panic(expected = "inference-only")]
fn layer_outputs_after_a_training_step_are_refused() {
    use lenet::internal::engine::Engine;
    use lenet::internal::idx::Images;
    use lenet::optim::{Optimizer, OptimizerKind};

    let spec = Spec::preset("d2l").unwrap();
    let mut net = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
    let images = Images { count: 40, rows: 28, cols: 28, pixels: vec![7; 40 * 784] };
    let examples = net.engine.upload_examples(&images, &[1; 40], &spec.input);
    let indices: Vec<u32> = (0..40).collect();
    let kind = OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    let mut opt = Optimizer::new(kind, net.num_params()).unwrap();
    net.train_step(&examples, &indices, &mut opt, 0.1, None);
    net.activation(0, 40);
}

/// Settings that would turn every input or activation into NaN or ∞ are refused before
/// any work, naming the layer, whether they come from TOML or the command line.
#[test]
fn scalings_and_slopes_that_give_nan_are_refused() {
    use lenet::spec::{LayerSpec, Normalize};
    let d2l = Spec::preset("d2l").unwrap();
    let toml = |normalize: &str| {
        let unit = "[input.normalize]\nkind = \"unit\"\n";
        assert!(d2l.to_toml().contains(unit));
        let text = d2l.to_toml().replace(unit, &format!("[input.normalize]\n{}\n", normalize.replace(", ", "\n")));
        Spec::from_toml(&text).and_then(|s| s.resolve().map(|_| ()).map_err(|e| e.to_string()))
    };
    assert!(toml(r#"kind = "standardize", mean = 0.1, std = 0.3"#).is_ok());
    for (bad, says) in [
        (r#"kind = "standardize", mean = 0.1, std = 0.0"#, "std > 0"),
        (r#"kind = "standardize", mean = nan, std = 0.3"#, "finite mean"),
        (r#"kind = "standardize", mean = 0.1, std = inf"#, "finite std"),
        (r#"kind = "range", low = 0.5, high = 0.5"#, "two different finite ends"),
        (r#"kind = "standardize", mean = 0.1, std = 0.3, low = 0.0"#, "unknown field `low`"),
    ] {
        let e = toml(bad).expect_err(bad);
        assert!(e.contains(says) && (e.contains("input") || e.contains("unknown field")), "{bad}: {e}");
    }
    for bad in ["0,0", "nan,1", "0.1,inf"] {
        let e = bad.parse::<Normalize>().unwrap_err();
        assert!(e.contains("finite") || e.contains("std > 0"), "{bad}: {e}");
    }
    let mut spec = d2l.clone();
    spec.layers[1] = LayerSpec::LeakyRelu { slope: f32::NAN };
    let e = spec.resolve().unwrap_err().to_string();
    assert!(e.contains("layer 1") && e.contains("slope must be a finite number"), "{e}");
}
