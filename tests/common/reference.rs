//! The f64 reference chain: a network computed layer by layer in f64 from its spec,
//! with the library's layer functions, forward and backward, serially. It is checked
//! against finite differences (tests/network.rs), and is the oracle the f32 network is
//! checked against on every instruction set (tests/network.rs, tests/engine.rs).
//! Included (`#[path]`) by those test binaries.

use lenet::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use lenet::layers::linear::{linear_backward, linear_forward};
use lenet::layers::loss::batch_loss;
use lenet::layers::pool::{pool_backward, pool_forward, PoolGeom, PoolKind};
use lenet::layers::rbf::{rbf_backward, rbf_forward};
use lenet::layers::subsample::{subsample_backward, subsample_forward, SubsampleGeom};
use lenet::layers::{activation, Par};
use lenet::network::{apply_masks, param_layout, weight_masks};
use lenet::spec::{Activation, LayerSpec, Shape, Spec};

/// What the chain computed: the mean loss and every layer's output.
pub struct Chain {
    pub loss: f64,
    /// outputs[i]: layer i's output for the whole batch, as the network lays it out.
    pub outputs: Vec<Vec<f64>>,
}

/// The chain in f64: the loss, every layer's output and, with `grads`, every
/// parameter's gradient (in the network's flat order). A masked convolution's
/// left-out weights are taken as zero and get no gradient, as in the network.
pub fn reference(spec: &Spec, params: &[f64], x: &[f64], labels: &[u8], grads: Option<&mut [f64]>) -> Chain {
    let layers = spec.resolve().unwrap();
    let masks = weight_masks(&layers, &param_layout(&layers));
    let mut masked = params.to_vec();
    apply_masks(&mut masked, &masks);
    let params = &masked[..];
    let batch = labels.len();
    let par = Par::SERIAL;
    let mut acts = vec![x.to_vec()];
    let mut offsets = vec![];
    let mut off = 0;
    for l in &layers {
        offsets.push(off);
        off += l.param_count();
    }
    let conv_geom = |l: &lenet::spec::ResolvedLayer| match (&l.spec, l.input) {
        (LayerSpec::Conv { out_channels, kernel, padding, stride, .. }, Shape::Image(c, h, w)) => {
            ConvGeom { c, h, w, o: *out_channels, k: *kernel, pad: *padding, stride: *stride }
        }
        _ => unreachable!(),
    };
    let pool_geom = |l: &lenet::spec::ResolvedLayer| match (&l.spec, l.input) {
        (LayerSpec::AvgPool { size, stride }, Shape::Image(_, h, w)) => {
            PoolGeom { kind: PoolKind::Avg, h, w, size: *size, stride: *stride }
        }
        (LayerSpec::MaxPool { size, stride }, Shape::Image(_, h, w)) => {
            PoolGeom { kind: PoolKind::Max, h, w, size: *size, stride: *stride }
        }
        _ => unreachable!(),
    };
    let subsample_geom = |l: &lenet::spec::ResolvedLayer| match (&l.spec, l.input) {
        (LayerSpec::Subsample { size }, Shape::Image(c, h, w)) => SubsampleGeom { c, h, w, size: *size },
        _ => unreachable!(),
    };
    let centres = |s: &LayerSpec| match s {
        LayerSpec::Rbf { bitmaps } => bitmaps.centres().unwrap().concat().iter().map(|&v| v as f64).collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    let act = |s: &LayerSpec| match s {
        LayerSpec::Sigmoid => Activation::Sigmoid,
        LayerSpec::Tanh => Activation::Tanh,
        LayerSpec::ScaledTanh => Activation::ScaledTanh,
        LayerSpec::Relu => Activation::Relu,
        LayerSpec::LeakyRelu { slope } => Activation::LeakyRelu(*slope),
        _ => unreachable!(),
    };
    for (i, l) in layers.iter().enumerate() {
        let inp = &acts[i];
        let mut out = vec![0.0; batch * l.output.numel()];
        let p = &params[offsets[i]..offsets[i] + l.param_count()];
        match &l.spec {
            LayerSpec::Conv { .. } => {
                let g = conv_geom(l);
                let (w, b) = p.split_at(g.weight_len());
                conv2d_forward(&mut out, inp, w, b, &g, batch, par);
            }
            LayerSpec::AvgPool { .. } | LayerSpec::MaxPool { .. } => pool_forward(&mut out, inp, &pool_geom(l)),
            LayerSpec::Flatten => out.copy_from_slice(inp),
            LayerSpec::Linear { out_features } => {
                let k = l.input.numel();
                let (w, b) = p.split_at(k * out_features);
                linear_forward(&mut out, inp, w, b, batch, k, *out_features, par);
            }
            LayerSpec::Subsample { .. } => {
                let g = subsample_geom(l);
                subsample_forward(&mut out, inp, &p[..g.c], &p[g.c..], &g, batch);
            }
            LayerSpec::Rbf { .. } => {
                let (k, n) = (l.input.numel(), l.output.numel());
                rbf_forward(&mut out, inp, &centres(&l.spec), batch, k, n);
            }
            s => activation::activation_forward(&mut out, inp, act(s)),
        }
        acts.push(out);
    }
    let mut dout = vec![0.0; batch * 10];
    let loss = batch_loss(spec.loss, Some(&mut dout), acts.last().unwrap(), labels, None, 10).mean();
    let Some(grads) = grads else { return Chain { loss, outputs: acts.split_off(1) } };
    for (i, l) in layers.iter().enumerate().rev() {
        let inp = &acts[i];
        let mut dinp = vec![0.0; inp.len()];
        let p = &params[offsets[i]..offsets[i] + l.param_count()];
        let dp = &mut grads[offsets[i]..offsets[i] + l.param_count()];
        match &l.spec {
            LayerSpec::Conv { .. } => {
                let g = conv_geom(l);
                let (dw, db) = dp.split_at_mut(g.weight_len());
                conv2d_backward(Some(&mut dinp), dw, db, &dout, inp, &p[..g.weight_len()], &g, batch, par);
            }
            LayerSpec::AvgPool { .. } | LayerSpec::MaxPool { .. } => {
                pool_backward(&mut dinp, inp, &dout, &pool_geom(l))
            }
            LayerSpec::Flatten => dinp.copy_from_slice(&dout),
            LayerSpec::Linear { out_features } => {
                let k = l.input.numel();
                let (dw, db) = dp.split_at_mut(k * out_features);
                linear_backward(&mut dinp, dw, db, &dout, inp, &p[..k * out_features], batch, k, *out_features, par);
            }
            LayerSpec::Subsample { .. } => {
                let g = subsample_geom(l);
                let (dw, db) = dp.split_at_mut(g.c);
                subsample_backward(Some(&mut dinp), dw, db, &dout, inp, &p[..g.c], &g, batch);
            }
            LayerSpec::Rbf { .. } => {
                let (k, n) = (l.input.numel(), l.output.numel());
                rbf_backward(&mut dinp, inp, &centres(&l.spec), &dout, batch, k, n);
            }
            s => activation::activation_backward(&mut dinp, inp, &acts[i + 1], &dout, act(s)),
        }
        dout = dinp;
    }
    apply_masks(grads, &masks);
    Chain { loss, outputs: acts.split_off(1) }
}

/// Asserts that every parameter tensor of `got` is within `rel` of `want`, each tensor
/// against its own largest magnitude: conv1's gradients are hundreds of times smaller
/// than the last bias's, and a scale shared by the whole network would hide their errors.
pub fn assert_grads_close(what: &str, spec: &Spec, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: gradient lengths");
    for info in param_layout(&spec.resolve().unwrap()) {
        assert_close(&format!("{what}: grad {}", info.name), &got[info.range()], &want[info.range()], rel);
    }
}

/// Asserts |got − want| ≤ rel · (max |want| + |want|) elementwise.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros, nothing to compare");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= rel * (scale + w.abs()),
            "{what}[{i}]: {g} vs {w} (tensor's largest magnitude {scale:.3e})"
        );
    }
}
