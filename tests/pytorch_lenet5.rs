//! LeNet-5 against PyTorch: scripts/pytorch_lenet5.py ran the same network (the module
//! that loads lenet's checkpoints) on the first 8 MNIST test images with LeCun-initialised
//! weights and dumped its outputs (−y), both of the paper's losses and every gradient to
//! tests/fixtures/pytorch_lenet5.safetensors; lenet recomputes them here.

use lenet::internal::engine::cpu::CpuEngine;
use lenet::network::Network;
use lenet::spec::{Criterion, Spec};
use safetensors::{Dtype, SafeTensors};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pytorch_lenet5.safetensors");

fn f32s(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.dtype(), Dtype::F32, "{name}");
    (t.shape().to_vec(), t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
}

/// The largest difference over the reference's largest magnitude.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (*a as f64 - *b as f64).abs()).fold(0.0, f64::max);
    diff / want.iter().map(|v| v.abs() as f64).fold(0.0, f64::max)
}

fn network(st: &SafeTensors, spec: &Spec, threads: usize) -> (Network<CpuEngine>, usize) {
    let mut net = Network::new(CpuEngine::new(threads).unwrap(), spec).unwrap();
    let mut params = vec![0f32; net.num_params()];
    for info in net.param_infos() {
        let (shape, values) = f32s(st, &format!("params.{}", info.name));
        assert_eq!(shape, info.shape, "params.{}: PyTorch's shape is lenet's", info.name);
        params[info.range()].copy_from_slice(&values);
    }
    assert_eq!(net.params().len(), params.len());
    net.set_params(&params).unwrap();
    assert_eq!(net.params(), params, "PyTorch's left-out C3 kernels are zero, as lenet's");
    let (x_shape, x) = f32s(st, "x");
    assert_eq!(x_shape, [8, 1, 32, 32]);
    let labels = st.tensor("labels").unwrap().data().to_vec();
    net.load_batch_values(&x, &labels).unwrap();
    (net, labels.len())
}

#[test]
fn lenet5_outputs_losses_and_every_gradient_match_pytorch() {
    let bytes = std::fs::read(FIXTURE).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for threads in [1, 2] {
        let (mut net, b) = network(&st, &Spec::lenet5(), threads);
        net.zero_grad();
        net.forward(b);
        let loss = net.loss(b, true).mean();
        net.backward(b);
        let out_err = rel_err(&net.logits(b), &f32s(&st, "outputs").1);
        let want = f32s(&st, "loss").1[0] as f64;
        eprintln!("threads {threads}: loss {loss} (PyTorch {want}), outputs rel err {out_err:.1e}");
        assert!(out_err < 1e-5, "outputs: relative error {out_err:.2e}");
        assert!((loss - want).abs() < 1e-5 * want.abs(), "equation 9: {loss} vs PyTorch's {want}");
        let grads = net.grads();
        for info in net.param_infos() {
            let (shape, want) = f32s(&st, &format!("grad.{}", info.name));
            assert_eq!(shape, info.shape);
            let err = rel_err(&grads[info.range()], &want);
            eprintln!("  grad {:<9} rel err {err:.1e}", info.name);
            assert!(err < 1e-4, "grad {}: relative error {err:.2e}", info.name);
        }
    }
    // Equation 8 on the same outputs.
    let (mut net, b) = network(&st, &Spec { loss: Criterion::Mse, ..Spec::lenet5() }, 1);
    net.forward(b);
    let mse = net.loss(b, false).mean();
    let want = f32s(&st, "mse_loss").1[0] as f64;
    assert!((mse - want).abs() < 1e-5 * want.abs(), "equation 8: {mse} vs PyTorch's {want}");
}
