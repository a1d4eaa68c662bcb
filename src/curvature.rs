//! The Gauss–Newton estimate of the Hessian's diagonal that stochastic diagonal
//! Levenberg–Marquardt steps by (LeCun et al. 1998, appendix C), backpropagated
//! through the layers as the paper derives it.
//!
//! Going down, each unit's second derivative is its successors' times the squared
//! weights between them, times the squared slope of its activation:
//! ∂²E/∂a_i² ≈ f'(a_i)² Σ_k w_ki² ∂²E/∂a_k² (the Gauss–Newton step drops f'' and the
//! diagonal approximation drops the cross terms between successors). A weight's entry
//! is the sum over every connection sharing it of x² · ∂²E/∂a², so a layer's
//! second-derivative pass is its backward pass with squared weights and inputs.
//! The start is the criterion's exact second derivative with respect to the RBF
//! layer's inputs ([`crate::layers::rbf::criterion_curvature`]), or, for softmax
//! outputs, the Gauss–Newton diagonal p(1 − p) at the logits.
//!
//! Computed on the host over a few hundred patterns (500 before each pass in the
//! paper), in any float type: f32 in training, f64 in the tests, which check it against
//! the Gauss–Newton diagonal computed directly. Class weights do not enter: with one
//! pattern per update, PyTorch's weighted mean loss is the pattern's own loss.

use crate::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use crate::layers::linear::{linear_backward, linear_forward};
use crate::layers::pool::{pool_backward, pool_forward, PoolGeom, PoolKind};
use crate::layers::rbf::{criterion_curvature, rbf_forward};
use crate::layers::subsample::{subsample_curvature, subsample_forward, SubsampleGeom};
use crate::layers::{activation, Par, Real};
use crate::network::{apply_masks, param_layout, weight_masks};
use crate::spec::{Activation, Criterion, LayerSpec, ResolvedLayer, Shape};

/// The mean over the `labels.len()` patterns `x` (B, 1, S, S) of each parameter's
/// backpropagated Gauss–Newton second derivative, in the network's flat order.
/// Masked convolutions' left-out weights get 0.
pub fn gauss_newton_diagonal<T: Real>(
    layers: &[ResolvedLayer],
    criterion: Criterion,
    params: &[T],
    x: &[T],
    batch: usize,
    par: Par,
) -> Vec<T> {
    let infos = param_layout(layers);
    let masks = weight_masks(layers, &infos);
    // Left-out weights are not part of the network, whatever the buffer holds there.
    let mut masked = params.to_vec();
    apply_masks(&mut masked, &masks);
    let params = &masked[..];
    let mut offsets = Vec::with_capacity(layers.len());
    let mut off = 0;
    for l in layers {
        offsets.push(off);
        off += l.param_count();
    }
    let mut h = vec![T::zero(); off];
    // Forward, keeping every layer's input.
    let mut acts = vec![x.to_vec()];
    for (i, l) in layers.iter().enumerate() {
        let inp = &acts[i];
        let mut out = vec![T::zero(); batch * l.output.numel()];
        let p = &params[offsets[i]..offsets[i] + l.param_count()];
        match (&l.spec, l.input) {
            (LayerSpec::Conv { .. }, _) => {
                let g = conv_geom(l);
                let (w, b) = p.split_at(g.weight_len());
                conv2d_forward(&mut out, inp, w, b, &g, batch, par);
            }
            (LayerSpec::AvgPool { .. } | LayerSpec::MaxPool { .. }, _) => pool_forward(&mut out, inp, &pool_geom(l)),
            (LayerSpec::Subsample { .. }, _) => {
                let g = subsample_geom(l);
                subsample_forward(&mut out, inp, &p[..g.c], &p[g.c..], &g, batch);
            }
            (LayerSpec::Flatten, _) => out.copy_from_slice(inp),
            (LayerSpec::Linear { out_features }, Shape::Flat(k)) => {
                let (w, b) = p.split_at(k * out_features);
                linear_forward(&mut out, inp, w, b, batch, k, *out_features, par);
            }
            (LayerSpec::Rbf { .. }, Shape::Flat(k)) => {
                rbf_forward(&mut out, inp, &centres(l), batch, k, l.output.numel())
            }
            (spec, _) => activation::activation_forward(&mut out, inp, activation_of(spec)),
        }
        acts.push(out);
    }

    // The criterion's curvature at the last layer's output, or at the RBF layer's input.
    let last = layers.len() - 1;
    let rbf_last = matches!(layers[last].spec, LayerSpec::Rbf { .. }) && criterion != Criterion::CrossEntropy;
    let mut d2 = if rbf_last {
        let k = layers[last].input.numel();
        let c = centres(&layers[last]);
        let j = match criterion {
            Criterion::Map { j } => Some(T::from(j).expect("j is finite")),
            _ => None,
        };
        let mut d2 = vec![T::zero(); batch * k];
        for (hx, xb) in d2.chunks_mut(k).zip(acts[last].chunks(k)) {
            criterion_curvature(hx, xb, &c, j);
        }
        d2
    } else {
        let n = layers[last].output.numel();
        let mut d2 = vec![T::zero(); batch * n];
        for (hz, z) in d2.chunks_mut(n).zip(acts[last + 1].chunks(n)) {
            let top = z.iter().copied().fold(T::neg_infinity(), T::max);
            let total: T = z.iter().map(|&v| (v - top).exp()).sum();
            for (hi, &zi) in hz.iter_mut().zip(z) {
                let p = (zi - top).exp() / total;
                *hi = p * (T::one() - p);
            }
        }
        d2
    };

    let from = if rbf_last { last } else { last + 1 };
    for (i, l) in layers.iter().enumerate().take(from).rev() {
        let inp = &acts[i];
        let mut d2inp = vec![T::zero(); inp.len()];
        let p = &params[offsets[i]..offsets[i] + l.param_count()];
        let hp = &mut h[offsets[i]..offsets[i] + l.param_count()];
        let squared = |v: &[T]| v.iter().map(|&a| a * a).collect::<Vec<T>>();
        match (&l.spec, l.input) {
            (LayerSpec::Conv { .. }, _) => {
                let g = conv_geom(l);
                let (hw, hb) = hp.split_at_mut(g.weight_len());
                let dinp = (i > 0).then_some(&mut d2inp[..]);
                conv2d_backward(dinp, hw, hb, &d2, &squared(inp), &squared(&p[..g.weight_len()]), &g, batch, par);
            }
            (LayerSpec::Linear { out_features }, Shape::Flat(k)) => {
                let (hw, hb) = hp.split_at_mut(k * out_features);
                let (x2, w2) = (squared(inp), squared(&p[..k * out_features]));
                linear_backward(&mut d2inp, hw, hb, &d2, &x2, &w2, batch, k, *out_features, par);
            }
            (LayerSpec::AvgPool { size, .. }, _) => {
                // The backward pass spreads d/size² to each input; the curvature wants d/size⁴.
                let scale = T::from(1.0 / (size * size) as f64).expect("a window size");
                let d2s: Vec<T> = d2.iter().map(|&v| v * scale).collect();
                pool_backward(&mut d2inp, inp, &d2s, &pool_geom(l));
            }
            (LayerSpec::MaxPool { .. }, _) => pool_backward(&mut d2inp, inp, &d2, &pool_geom(l)),
            (LayerSpec::Subsample { .. }, _) => {
                let g = subsample_geom(l);
                let (hc, hb) = hp.split_at_mut(g.c);
                let dinp = (i > 0).then_some(&mut d2inp[..]);
                subsample_curvature(dinp, hc, hb, &d2, inp, &p[..g.c], &g, batch);
            }
            (LayerSpec::Flatten, _) => d2inp.copy_from_slice(&d2),
            (LayerSpec::Rbf { .. }, Shape::Flat(k)) => {
                // Gauss–Newton through RBF units: Σ_i (∂z_i/∂x_j)² d2z_i, ∂z_i/∂x_j = −2(x_j − c_ij).
                let c = centres(l);
                let n = l.output.numel();
                let four = T::from(4.0).expect("4");
                for b in 0..batch {
                    for jx in 0..k {
                        let xj = inp[b * k + jx];
                        d2inp[b * k + jx] = (0..n)
                            .map(|ci| four * (xj - c[ci * k + jx]) * (xj - c[ci * k + jx]) * d2[b * n + ci])
                            .sum();
                    }
                }
            }
            (spec, _) => {
                // f'(x)² · d2: the backward pass (dy · f'(x)) applied twice.
                let a = activation_of(spec);
                let mut once = vec![T::zero(); inp.len()];
                activation::activation_backward(&mut once, inp, &acts[i + 1], &d2, a);
                activation::activation_backward(&mut d2inp, inp, &acts[i + 1], &once, a);
            }
        }
        d2 = d2inp;
    }
    apply_masks(&mut h, &masks);
    let n = T::from(batch.max(1) as f64).expect("a count");
    h.iter_mut().for_each(|v| *v = *v / n);
    h
}

fn conv_geom(l: &ResolvedLayer) -> ConvGeom {
    match (&l.spec, l.input) {
        (LayerSpec::Conv { out_channels, kernel, padding, stride, .. }, Shape::Image(c, h, w)) => {
            ConvGeom { c, h, w, o: *out_channels, k: *kernel, pad: *padding, stride: *stride }
        }
        _ => unreachable!("a resolved convolution has an image input"),
    }
}

fn pool_geom(l: &ResolvedLayer) -> PoolGeom {
    match (&l.spec, l.input) {
        (LayerSpec::AvgPool { size, stride }, Shape::Image(_, h, w)) => {
            PoolGeom { kind: PoolKind::Avg, h, w, size: *size, stride: *stride }
        }
        (LayerSpec::MaxPool { size, stride }, Shape::Image(_, h, w)) => {
            PoolGeom { kind: PoolKind::Max, h, w, size: *size, stride: *stride }
        }
        _ => unreachable!("a resolved pooling has an image input"),
    }
}

fn subsample_geom(l: &ResolvedLayer) -> SubsampleGeom {
    match (&l.spec, l.input) {
        (LayerSpec::Subsample { size }, Shape::Image(c, h, w)) => SubsampleGeom { c, h, w, size: *size },
        _ => unreachable!("a resolved subsampling has an image input"),
    }
}

fn centres<T: Real>(l: &ResolvedLayer) -> Vec<T> {
    match &l.spec {
        LayerSpec::Rbf { bitmaps } => bitmaps
            .centres()
            .expect("a resolved RBF layer's bitmaps parse")
            .concat()
            .into_iter()
            .map(|v| T::from(v).expect("±1"))
            .collect(),
        _ => unreachable!("an RBF layer"),
    }
}

fn activation_of(spec: &LayerSpec) -> Activation {
    match spec {
        LayerSpec::Sigmoid => Activation::Sigmoid,
        LayerSpec::Tanh => Activation::Tanh,
        LayerSpec::ScaledTanh => Activation::ScaledTanh,
        LayerSpec::Relu => Activation::Relu,
        LayerSpec::LeakyRelu { slope } => Activation::LeakyRelu(*slope),
        other => unreachable!("{other:?} is not an activation"),
    }
}
