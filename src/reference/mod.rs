//! The reference: each layer kind's forward and backward pass as plain loops in f64,
//! the formula beside it, one file per kind, in the style of llm.c's `train_gpt2.c`
//! (`x_forward(out, inp, …)`, `x_backward(dinp, dweight, …, dout, inp, …)`, gradients
//! accumulated with `+=`). Nothing here is fast; everything here is meant to be read.
//!
//! It is the oracle: tests/gradcheck.rs checks each backward pass against finite
//! differences of its forward pass, and the engines (the CPU's tiles, the GPU's
//! shaders) against these loops. [`chain`] runs a whole network of a spec with them.

pub mod activation;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod rbf;
pub mod subsample;

use crate::layers::conv::ConvGeom;
use crate::layers::pool::{PoolGeom, PoolKind};
use crate::layers::subsample::SubsampleGeom;
use crate::network::{apply_masks, param_layout, weight_masks};
use crate::spec::{Activation, LayerSpec, ResolvedLayer, Shape, Spec};

/// What the chain computed: the mean loss and every layer's output.
pub struct Chain {
    pub loss: f64,
    /// `outputs[i]`: layer i's output for the whole batch (B, the layer's shape).
    pub outputs: Vec<Vec<f64>>,
}

/// A layer of the chain with its geometry worked out.
enum Op {
    Conv(ConvGeom),
    Pool(PoolGeom, usize),
    Flatten,
    Linear { k: usize, n: usize },
    Subsample(SubsampleGeom),
    Rbf { k: usize, n: usize, centres: Vec<f64> },
    Activation(Activation),
}

fn op(l: &ResolvedLayer) -> Op {
    let image = |s: Shape| match s {
        Shape::Image(c, h, w) => (c, h, w),
        Shape::Flat(_) => panic!("{:?} needs an image input", l.spec),
    };
    match &l.spec {
        LayerSpec::Conv { out_channels, kernel, padding, stride, .. } => {
            let (c, h, w) = image(l.input);
            Op::Conv(ConvGeom { c, h, w, o: *out_channels, k: *kernel, pad: *padding, stride: *stride })
        }
        LayerSpec::AvgPool { size, stride } | LayerSpec::MaxPool { size, stride } => {
            let kind = if matches!(l.spec, LayerSpec::AvgPool { .. }) { PoolKind::Avg } else { PoolKind::Max };
            let (c, h, w) = image(l.input);
            Op::Pool(PoolGeom { kind, h, w, size: *size, stride: *stride }, c)
        }
        LayerSpec::Flatten => Op::Flatten,
        LayerSpec::Linear { out_features } => Op::Linear { k: l.input.numel(), n: *out_features },
        LayerSpec::Subsample { size } => {
            let (c, h, w) = image(l.input);
            Op::Subsample(SubsampleGeom { c, h, w, size: *size })
        }
        LayerSpec::Rbf { bitmaps } => Op::Rbf {
            k: l.input.numel(),
            n: l.output.numel(),
            centres: bitmaps.centres().expect("a resolved spec's bitmaps").concat().iter().map(|&v| v as f64).collect(),
        },
        LayerSpec::Sigmoid => Op::Activation(Activation::Sigmoid),
        LayerSpec::Tanh => Op::Activation(Activation::Tanh),
        LayerSpec::ScaledTanh => Op::Activation(Activation::ScaledTanh),
        LayerSpec::Relu => Op::Activation(Activation::Relu),
        LayerSpec::LeakyRelu { slope } => Op::Activation(Activation::LeakyRelu(*slope)),
    }
}

/// The network of `spec` on a batch x (B, input) with `labels`, in f64, with the layers
/// above: the loss (the spec's criterion), every layer's output and, with `grads`,
/// every parameter's gradient in the network's flat order (written, not accumulated).
/// A partially connected convolution's left-out weights are taken as zero and get no
/// gradient, as in the network.
pub fn chain(spec: &Spec, params: &[f64], x: &[f64], labels: &[u8], grads: Option<&mut [f64]>) -> Chain {
    let layers = spec.resolve().expect("a valid spec");
    let layout = param_layout(&layers);
    let masks = weight_masks(&layers, &layout);
    let mut params = params.to_vec();
    apply_masks(&mut params, &masks);
    let batch = labels.len();
    let ops: Vec<Op> = layers.iter().map(op).collect();
    let mut offsets = Vec::with_capacity(layers.len());
    let mut off = 0;
    for l in &layers {
        offsets.push(off);
        off += l.param_count();
    }
    let p_of = |i: usize| &params[offsets[i]..offsets[i] + layers[i].param_count()];

    let mut acts = vec![x.to_vec()];
    for (i, (l, op)) in layers.iter().zip(&ops).enumerate() {
        let (inp, p) = (&acts[i], p_of(i));
        let mut out = vec![0.0; batch * l.output.numel()];
        match op {
            Op::Conv(g) => conv::conv_forward(&mut out, inp, &p[..g.weight_len()], &p[g.weight_len()..], g, batch),
            Op::Pool(g, c) => pool::pool_forward(&mut out, inp, g, batch * c),
            Op::Flatten => out.copy_from_slice(inp),
            Op::Linear { k, n } => linear::linear_forward(&mut out, inp, &p[..k * n], &p[k * n..], batch, *k, *n),
            Op::Subsample(g) => subsample::subsample_forward(&mut out, inp, &p[..g.c], &p[g.c..], g, batch),
            Op::Rbf { k, n, centres } => rbf::rbf_forward(&mut out, inp, centres, batch, *k, *n),
            Op::Activation(a) => activation::activation_forward(&mut out, inp, *a),
        }
        acts.push(out);
    }
    let classes = layers.last().map_or(0, |l| l.output.numel());
    let mut dout = vec![0.0; batch * classes];
    let loss = loss::loss(spec.loss, Some(&mut dout), acts.last().expect("an output"), labels, None, classes).mean();
    let Some(grads) = grads else { return Chain { loss, outputs: acts.split_off(1) } };

    grads.fill(0.0);
    for (i, op) in ops.iter().enumerate().rev() {
        let (inp, p) = (&acts[i], p_of(i));
        let dp = &mut grads[offsets[i]..offsets[i] + layers[i].param_count()];
        let mut dinp = vec![0.0; inp.len()];
        match op {
            Op::Conv(g) => {
                let (dw, db) = dp.split_at_mut(g.weight_len());
                conv::conv_backward(&mut dinp, dw, db, &dout, inp, &p[..g.weight_len()], g, batch);
            }
            Op::Pool(g, c) => pool::pool_backward(&mut dinp, inp, &dout, g, batch * c),
            Op::Flatten => dinp.copy_from_slice(&dout),
            Op::Linear { k, n } => {
                let (dw, db) = dp.split_at_mut(k * n);
                linear::linear_backward(&mut dinp, dw, db, &dout, inp, &p[..k * n], batch, *k, *n);
            }
            Op::Subsample(g) => {
                let (dcoef, dbias) = dp.split_at_mut(g.c);
                subsample::subsample_backward(&mut dinp, dcoef, dbias, &dout, inp, &p[..g.c], g, batch);
            }
            Op::Rbf { k, n, centres } => rbf::rbf_backward(&mut dinp, &dout, inp, centres, batch, *k, *n),
            Op::Activation(a) => activation::activation_backward(&mut dinp, inp, &dout, *a),
        }
        dout = dinp;
    }
    apply_masks(grads, &masks);
    Chain { loss, outputs: acts.split_off(1) }
}
