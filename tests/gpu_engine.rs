//! The GPU engine as a whole, on whatever adapter this machine has (in CI: lavapipe,
//! with LENET_REQUIRE_GPU=1, so a missing adapter fails instead of skipping): the
//! network's loss, gradients and layer outputs against the f64 reference chain; training
//! steps (every optimizer, clipping, class weights, masked convolutions) against the CPU
//! engine's; a non-finite loss skipped on the device; an epoch on a subset of MNIST with
//! the CPU's accuracy; bit-identical reruns; checkpoints that resume on the other engine.
#![cfg(feature = "gpu")]

use std::sync::{Arc, OnceLock};

use lenet::checkpoint;
use lenet::data::{Images, Split};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::gpu::device::Gpu;
use lenet::internal::engine::gpu::engine::GpuEngine;
use lenet::internal::engine::gpu::kernels::Kernels;
use lenet::internal::engine::Engine;
use lenet::network::Network;
use lenet::optim::{Optimizer, OptimizerKind};
use lenet::spec::{Activation, LenetOptions, Spec};
use lenet::trainer::{EpochMetrics, Silent, TrainConfig, Trainer};

#[path = "common/reference.rs"]
mod reference;
use reference::{assert_close, assert_grads_close, random_case, reference};

#[path = "common/stop_at.rs"]
mod stop_at;
#[path = "common/toy.rs"]
mod toy;
use toy::toy_split;

/// One compiled set of kernels for the whole test binary (compiling them takes a while
/// on a software device), or None (with a note) where there is no adapter and none is
/// required.
fn gpu() -> Option<GpuEngine> {
    static KERNELS: OnceLock<Option<Arc<Kernels>>> = OnceLock::new();
    let kernels = KERNELS.get_or_init(|| match Gpu::open(true) {
        Ok(gpu) => Some(Arc::new(Kernels::new(gpu).expect("the shaders compile"))),
        Err(e) if std::env::var_os("LENET_REQUIRE_GPU").is_some() => {
            panic!("LENET_REQUIRE_GPU is set but no GPU adapter opened: {e}")
        }
        Err(e) => {
            eprintln!("no GPU adapter, GPU engine tests not run: {e}");
            None
        }
    });
    kernels.as_ref().map(|k| GpuEngine::on(k.clone()))
}

fn specs() -> Vec<Spec> {
    let leaky = Spec::lenet("leaky", &LenetOptions { activation: Activation::LeakyRelu(0.1), ..LenetOptions::relu() });
    vec![Spec::preset("d2l").unwrap(), Spec::preset("relu").unwrap(), leaky, Spec::lenet5()]
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The whole network on the GPU, layer by layer, against the f64 reference chain: every
/// layer's output, the loss, and every parameter's gradient.
#[test]
fn network_matches_the_f64_reference_chain() {
    for spec in specs() {
        let Some(engine) = gpu() else { return };
        let batch = 5;
        let (params, x, labels) = random_case(&spec, batch, 21);
        let mut want = vec![0.0; params.len()];
        let chain = reference(&spec, &params, &x, &labels, Some(&mut want));

        let mut net = Network::new(engine, &spec).unwrap();
        net.set_params(&f32s(&params)).unwrap();
        net.load_batch_values(&f32s(&x), &labels).unwrap();
        net.zero_grad();
        net.forward(batch);
        let loss = net.loss(batch, true).mean();
        net.backward(batch);
        let what = format!("{} on the GPU", spec.name);
        assert!((loss - chain.loss).abs() < 1e-5 * chain.loss, "{what}: loss {loss} vs {}", chain.loss);
        assert_grads_close(&what, &spec, &net.grads(), &want, 1e-4);
        for (i, want) in chain.outputs.iter().enumerate() {
            assert_close(&format!("{what}: layer {i} output"), &net.activation(i, batch), want, 1e-5);
        }
    }
}

/// Training steps on both engines from the same weights and batches: the parameters,
/// the optimizer's state and the running statistics stay together, for every optimizer
/// (SGD plain, with momentum, Nesterov and weight decay; Adam with L2; AdamW; SDLM with
/// its curvature), with clipping and class weights, and for lenet5's masked C3.
#[test]
fn training_steps_match_the_cpu_engine() {
    let sgd = |momentum, nesterov, weight_decay| OptimizerKind::Sgd { momentum, nesterov, weight_decay };
    let cases: Vec<(&str, OptimizerKind, f64, Option<f32>, bool)> = vec![
        ("d2l", sgd(0.0, false, 0.0), 0.9, None, false),
        ("relu", sgd(0.9, true, 1e-3), 0.05, Some(1.0), true),
        ("relu", sgd(0.9, false, 0.0), 0.05, None, false),
        ("relu", OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-3 }, 1e-3, None, true),
        (
            "d2l",
            OptimizerKind::AdamW { beta1: 0.5, beta2: 0.99, eps: 1e-8, weight_decay: 1e-2 },
            1e-2,
            Some(0.5),
            false,
        ),
        ("lenet5", OptimizerKind::Sdlm { mu: 1.0, samples: 8 }, 5e-4, None, false),
    ];
    let data = toy_split(64, 3);
    for (arch, kind, lr, clip, weighted) in cases {
        let Some(gpu_engine) = gpu() else { return };
        let spec = Spec::preset(arch).unwrap();
        let what = format!("{arch} {kind}, clip {clip:?}, class weights {weighted}");
        let (params, _, _) = random_case(&spec, 1, 5);
        let params: Vec<f32> = f32s(&params).iter().map(|p| p * 0.5).collect();
        let weights: Vec<f32> = (0..10).map(|c| 0.5 + 0.1 * c as f32).collect();
        let mut cpu = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
        let mut gpu = Network::new(gpu_engine, &spec).unwrap();
        cpu.set_params(&params).unwrap();
        gpu.set_params(&params).unwrap();
        cpu.set_class_weights(weighted.then_some(&weights[..])).unwrap();
        gpu.set_class_weights(weighted.then_some(&weights[..])).unwrap();
        let (mut cpu_opt, mut gpu_opt) =
            (Optimizer::new(kind, params.len()).unwrap(), Optimizer::new(kind, params.len()).unwrap());
        let cpu_ex = cpu.engine.upload_examples(&data.images, &data.labels, &spec.input);
        let gpu_ex = gpu.engine.upload_examples(&data.images, &data.labels, &spec.input);
        if matches!(kind, OptimizerKind::Sdlm { .. }) {
            let idx: Vec<u32> = (0..8).collect();
            let h = cpu.estimate_curvature(&cpu_ex, &idx, 2);
            cpu_opt.set_curvature(&h);
            gpu_opt.set_curvature(&gpu.estimate_curvature(&gpu_ex, &idx, 2));
        }
        // lenet5 trains one pattern per update; the others in batches.
        let batch = if arch == "lenet5" { 1 } else { 16 };
        for step in 0..4u32 {
            let idx: Vec<u32> = (step * batch..(step + 1) * batch).collect();
            cpu.train_step(&cpu_ex, &idx, &mut cpu_opt, lr, clip);
            gpu.train_step(&gpu_ex, &idx, &mut gpu_opt, lr, clip);
        }
        let (c, g) = (cpu.train_stats(), gpu.train_stats());
        assert_eq!(
            (g.correct, g.examples, g.batches, g.first_nonfinite),
            (c.correct, c.examples, c.batches, None),
            "{what}"
        );
        assert!(
            (g.loss_sum - c.loss_sum).abs() <= 1e-5 * c.loss_sum,
            "{what}: loss sum {} vs {}",
            g.loss_sum,
            c.loss_sum
        );
        let want: Vec<f64> = cpu.params().iter().map(|&v| v as f64).collect();
        assert_grads_close(&format!("{what}: parameters"), &spec, &gpu.params(), &want, 1e-5);
        let (cs, gs) = (cpu.optimizer_state(&cpu_opt), gpu.optimizer_state(&gpu_opt));
        assert_eq!(cs.len(), gs.len(), "{what}: state tensors");
        for ((cn, cshape, cv), (gn, gshape, gv)) in cs.iter().zip(&gs) {
            assert_eq!((cn, cshape), (gn, gshape), "{what}");
            if cv.iter().any(|&v| v != 0.0) {
                let want: Vec<f64> = cv.iter().map(|&v| v as f64).collect();
                assert_close(&format!("{what}: {cn}"), gv, &want, 1e-4);
            }
        }
    }
}

/// A loss that is not a number moves no parameter, with the check on the device, and
/// the tally names the batch.
#[test]
fn a_non_finite_loss_skips_the_update_on_the_device() {
    let Some(engine) = gpu() else { return };
    let spec = Spec::preset("relu").unwrap();
    let data = toy_split(32, 4);
    let mut net = Network::new(engine, &spec).unwrap();
    let (params, _, _) = random_case(&spec, 1, 6);
    let mut params = f32s(&params);
    let last = params.len() - 1;
    params[last] = f32::NAN; // the last bias: every logit of class 9 is NaN
    net.set_params(&params).unwrap();
    let ex = net.engine.upload_examples(&data.images, &data.labels, &spec.input);
    let mut opt = Optimizer::new(OptimizerKind::adam(), params.len()).unwrap();
    net.train_step(&ex, &(0..16).collect::<Vec<_>>(), &mut opt, 1e-2, Some(1.0));
    let after = net.params();
    assert!(after[..last].iter().zip(&params).all(|(a, b)| a.to_bits() == b.to_bits()), "a parameter moved");
    let stats = net.train_stats();
    assert_eq!(stats.first_nonfinite.map(|(b, l)| (b, l.is_nan())), Some((1, true)));
}

fn dataset() -> Option<lenet::data::Dataset> {
    match lenet::data::load(lenet::data::DatasetKind::Mnist, None) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}\n(run scripts/setup-data, or set LENET_SKIP_REAL_DATA=1 to skip)"),
    }
}

fn first(split: &Split, n: usize) -> Split {
    let (rows, cols) = (split.images.rows, split.images.cols);
    let pixels = split.images.pixels[..n * rows * cols].to_vec();
    Split { images: Images { count: n, rows, cols, pixels }, labels: split.labels[..n].to_vec() }
}

fn subset_config() -> TrainConfig {
    TrainConfig {
        arch: Spec::preset("relu").unwrap(),
        epochs: 1,
        batch: 25,
        lr: 2e-3,
        optimizer: OptimizerKind::adam(),
        threads: 2,
        seed: 3,
        ..TrainConfig::d2l()
    }
}

/// The metrics that do not depend on the clock.
fn untimed(m: &EpochMetrics) -> String {
    let m = EpochMetrics { seconds: 0.0, examples_per_sec: 0.0, ..m.clone() };
    format!("{m:?}")
}

/// One epoch on 1,500 MNIST digits (batches of 25, Adam) on each engine: the same test
/// accuracy on 1,000 test digits within half a point; and two runs on the GPU are the
/// same to the bit (parameters and every metric).
#[test]
fn an_epoch_on_a_subset_has_the_cpu_accuracy_and_reruns_bit_identically() {
    let Some(ds) = dataset() else { return };
    if gpu().is_none() {
        return;
    }
    let (train, test) = (first(&ds.train, 1500), first(&ds.test, 1000));
    let run_gpu = || {
        let mut t = Trainer::new(gpu().unwrap(), subset_config(), &train, &test, None).unwrap();
        let m = t.train_epoch(&mut Silent).unwrap();
        (m, t.net.params())
    };
    let mut cpu = Trainer::new(CpuEngine::new(2).unwrap(), subset_config(), &train, &test, None).unwrap();
    let on_cpu = cpu.train_epoch(&mut Silent).unwrap();
    let (on_gpu, gpu_params) = run_gpu();
    eprintln!("test accuracy after one epoch: {} on the GPU, {} on the CPU", on_gpu.test_acc, on_cpu.test_acc);
    assert!(on_cpu.test_acc > 0.7, "the subset is learnt (chance: 0.1): {}", on_cpu.test_acc);
    assert!(
        (on_gpu.test_acc - on_cpu.test_acc).abs() <= 0.005,
        "test accuracy {} on the GPU, {} on the CPU",
        on_gpu.test_acc,
        on_cpu.test_acc
    );
    assert!((on_gpu.train_loss - on_cpu.train_loss).abs() <= 0.01 * on_cpu.train_loss);
    let (again, again_params) = run_gpu();
    assert_eq!(untimed(&again), untimed(&on_gpu), "the rerun's metrics");
    let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&again_params) == bits(&gpu_params), "the rerun's parameters differ");
}

/// A checkpoint is the same file whichever engine wrote it: trained for an epoch on the
/// GPU it resumes on the CPU, and the other way round, with the optimizer's state as
/// the first engine left it; the second epoch ends where the first engine's own second
/// epoch does, to f32 rounding.
#[test]
fn checkpoints_resume_on_the_other_engine() {
    if gpu().is_none() {
        return;
    }
    let (train, test) = (toy_split(320, 1), toy_split(100, 2));
    let config = TrainConfig { epochs: 2, batch: 32, ..subset_config() };
    let cpu = || CpuEngine::new(2).unwrap();
    let gpu = || gpu().unwrap();
    // (first engine, the other): run 1 epoch on the first, resume on the other.
    let after_one_gpu = {
        let mut t = Trainer::new(gpu(), config.clone(), &train, &test, None).unwrap();
        t.train_epoch(&mut Silent).unwrap();
        checkpoint::to_bytes(&t.checkpoint()).unwrap()
    };
    let after_one_cpu = {
        let mut t = Trainer::new(cpu(), config.clone(), &train, &test, None).unwrap();
        t.train_epoch(&mut Silent).unwrap();
        checkpoint::to_bytes(&t.checkpoint()).unwrap()
    };
    let read = |bytes: &[u8], name: &str| checkpoint::from_bytes(bytes, std::path::Path::new(name), None).unwrap();
    let (from_gpu, from_cpu) =
        (read(&after_one_gpu, "from-gpu.safetensors"), read(&after_one_cpu, "from-cpu.safetensors"));
    // The same tensors, names and shapes; values to f32 rounding.
    let names =
        |ck: &checkpoint::Checkpoint| ck.optim.iter().map(|(n, s, _)| (n.clone(), s.clone())).collect::<Vec<_>>();
    assert_eq!(names(&from_gpu), names(&from_cpu));
    assert_eq!(from_gpu.params.len(), from_cpu.params.len());

    let mut on_cpu = Trainer::resume(cpu(), &from_gpu, &train, &test, None).unwrap();
    let sorted = |mut v: Vec<lenet::optim::StateTensor>| {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert!(
        sorted(on_cpu.net.optimizer_state(&on_cpu.opt)) == sorted(from_gpu.optim.clone()),
        "the GPU's optimizer state, loaded on the CPU, is not what the GPU saved"
    );
    let cpu_second = on_cpu.train_epoch(&mut Silent).unwrap();
    let mut on_gpu = Trainer::resume(gpu(), &from_cpu, &train, &test, None).unwrap();
    let gpu_second = on_gpu.train_epoch(&mut Silent).unwrap();
    assert_eq!(on_gpu.net.params().len(), on_cpu.net.params().len());
    for (a, b) in [(cpu_second.test_acc, gpu_second.test_acc), (cpu_second.train_acc, gpu_second.train_acc)] {
        assert!((a - b).abs() <= 0.02, "second epochs: {a} and {b}");
    }
    assert!(cpu_second.test_acc > 0.9, "the toy problem is learnt: {}", cpu_second.test_acc);
    // And the GPU's checkpoint after its second epoch holds its state from the device.
    let ck = on_gpu.checkpoint();
    assert_eq!(ck.meta.epoch, 2);
    assert!(ck.optim.iter().any(|(n, _, v)| n == "optim.exp_avg" && v.iter().any(|&x| x != 0.0)));
}

/// `--augment` on the GPU: each epoch's affine maps drawn on the host, the elastic field
/// drawn on the device, the digits resampled as the batches are gathered. Two epochs on
/// the toy problem end where the CPU's end (which distorts the same draws on the host),
/// to f32 rounding: the paper's distortions, and with rotation and a (mild: the toy's
/// class is its bar's place) elastic field.
#[test]
fn augmented_epochs_match_the_cpu_engine() {
    if gpu().is_none() {
        return;
    }
    let (train, test) = (toy_split(320, 5), toy_split(100, 6));
    for aug in ["paper", "rotate=5,elastic=12:4"] {
        let augment = Some(aug.parse().unwrap());
        let config = TrainConfig { epochs: 2, batch: 32, augment, ..subset_config() };
        let mut on_cpu = Trainer::new(CpuEngine::new(2).unwrap(), config.clone(), &train, &test, None).unwrap();
        let mut on_gpu = Trainer::new(gpu().unwrap(), config, &train, &test, None).unwrap();
        for epoch in 1..=2 {
            let (c, g) = (on_cpu.train_epoch(&mut Silent).unwrap(), on_gpu.train_epoch(&mut Silent).unwrap());
            assert!((c.train_loss - g.train_loss).abs() <= 0.02 * c.train_loss, "{aug}, epoch {epoch}: {c:?}\n{g:?}");
            let (a, b) = (c.test_acc, g.test_acc);
            assert!((a - b).abs() <= 0.03, "{aug}, epoch {epoch}: test accuracy {a} vs {b}");
        }
        let learnt = on_cpu.history[1].test_acc;
        assert!(learnt > 0.9, "{aug}: learnt through the distortions: {learnt}");
    }
}

/// On the GPU too, a run stopped inside an epoch (its statistics on the device) and
/// resumed from the checkpoint's bytes ends with the uninterrupted run's bits.
#[test]
fn stopped_mid_epoch_resumes_exactly_on_the_gpu() {
    if gpu().is_none() {
        return;
    }
    let (train, test) = (toy_split(320, 1), toy_split(100, 2));
    let config = TrainConfig { epochs: 2, ..subset_config() };
    let mut full = Trainer::new(gpu().unwrap(), config.clone(), &train, &test, None).unwrap();
    while !full.is_finished() {
        full.train_epoch(&mut Silent).unwrap();
    }
    let mut first = Trainer::new(gpu().unwrap(), config, &train, &test, None).unwrap();
    let mut obs = stop_at::StopAt::new(2, 5);
    first.stop_when(obs.flag.clone());
    first.train_epoch(&mut obs).unwrap();
    assert!(first.train_epoch(&mut obs).unwrap_err().is::<lenet::trainer::Interrupted>());
    let bytes = checkpoint::to_bytes(&first.checkpoint()).unwrap();
    let ck = checkpoint::from_bytes(&bytes, std::path::Path::new("stopped.safetensors"), None).unwrap();
    let mut resumed = Trainer::resume(gpu().unwrap(), &ck, &train, &test, None).unwrap();
    assert_eq!(resumed.batches_done(), 5);
    let second = resumed.train_epoch(&mut Silent).unwrap();
    let bits = |p: &[f32]| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(bits(&resumed.net.params()) == bits(&full.net.params()), "the resumed run differs");
    let uninterrupted = &full.history[1];
    assert_eq!((second.train_acc, second.test_acc), (uninterrupted.train_acc, uninterrupted.test_acc));
    // The Kahan sum restarts its compensation: the loss agrees to f32 rounding.
    assert!((second.train_loss - uninterrupted.train_loss).abs() < 1e-5 * uninterrupted.train_loss.abs());
}
