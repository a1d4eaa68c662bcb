//! The CPU engine's program for networks the tiled one does not run (LeNet-5's
//! trainable subsampling and RBF outputs), built for LeNet-5's one pattern per
//! update: a batch runs example by example, each layer's kernels vectorised within
//! the example ([`crate::layers::direct`] for convolutions and linear layers), so that
//! a batch of one keeps every vector lane busy and touches no buffer it does not need.
//! Each example's forward and backward passes are one call compiled for the CPU's
//! vector instructions (`crate::layers::dispatch`).
//!
//! Every layer's output is kept for the whole batch (NCHW, as [`super::Layerwise`]
//! keeps them); parameter gradients are accumulated example by example, in order, so
//! results repeat bit for bit. Examples run one after another on the calling thread.

use super::cpu::{CpuEngine, CpuExamples};
use super::{Chain, LayerOp, Program};
use crate::layers::loss::{batch_loss, LossStats};
use crate::layers::pool::{pool_backward, pool_forward};
use crate::layers::subsample::{subsample_backward, subsample_forward};
use crate::layers::{activation, direct, dispatch, rbf, Kernel, Lanes};

pub struct Single {
    chain: Chain,
    /// acts[0]: the loaded batch's inputs (B, S·S); acts[i + 1]: layer i's output (B, numel).
    acts: Vec<Vec<f32>>,
    labels: Vec<u8>,
    /// ∂L/∂(last layer's output) of the last loss, (B, classes).
    dlogits: Vec<f32>,
    /// One example's gradient with respect to a layer's output and input (ping-pong).
    d: [Vec<f32>; 2],
    /// Padded input and its gradient (convolutions with padding).
    pad: Vec<f32>,
    dpad: Vec<f32>,
    capacity: usize,
}

impl Single {
    pub fn new(chain: &Chain) -> Single {
        let biggest = chain.out_numel.iter().copied().max().unwrap_or(0).max(chain.in_numel(0));
        Single {
            acts: vec![Vec::new(); chain.ops.len() + 1],
            labels: Vec::new(),
            dlogits: Vec::new(),
            d: [vec![0.0; biggest], vec![0.0; biggest]],
            pad: Vec::new(),
            dpad: Vec::new(),
            capacity: 0,
            chain: chain.clone(),
        }
    }

    fn reserve(&mut self, batch: usize) {
        if batch <= self.capacity {
            return;
        }
        self.acts[0] = vec![0.0; batch * self.chain.in_numel(0)];
        for (i, &n) in self.chain.out_numel.iter().enumerate() {
            self.acts[i + 1] = vec![0.0; batch * n];
        }
        self.labels = vec![0; batch];
        self.dlogits = vec![0.0; batch * self.chain.classes()];
        self.capacity = batch;
    }

    /// Example `e` through every layer.
    #[inline(always)]
    fn forward_example<V: Lanes<T = f32>>(&mut self, params: &[f32], e: usize) {
        for (i, op) in self.chain.ops.iter().enumerate() {
            let (nin, nout) = (self.chain.in_numel(i), self.chain.out_numel[i]);
            let (before, after) = self.acts.split_at_mut(i + 1);
            let inp = &before[i][e * nin..(e + 1) * nin];
            let out = &mut after[0][e * nout..(e + 1) * nout];
            match op {
                LayerOp::Conv { g, w, b } => {
                    direct::conv_forward(out, inp, &params[w.clone()], &params[b.clone()], g, &mut self.pad)
                }
                LayerOp::Linear { k, n, w, b } => {
                    direct::linear_forward(out, inp, &params[w.clone()], &params[b.clone()], *k, *n)
                }
                LayerOp::Subsample { g, w, b } => {
                    subsample_forward(out, inp, &params[w.clone()], &params[b.clone()], g, 1)
                }
                LayerOp::Rbf { k, n, centres } => rbf::rbf_forward(out, inp, centres, 1, *k, *n),
                LayerOp::Act(a) => {
                    out.copy_from_slice(inp);
                    activation::apply::<V>(*a, out);
                }
                LayerOp::Flatten => out.copy_from_slice(inp),
                LayerOp::Pool { g, .. } => pool_forward(out, inp, g),
            }
        }
    }

    /// Example `e` backward from its row of `dlogits`, accumulating into `grads`.
    #[inline(always)]
    fn backward_example<V: Lanes<T = f32>>(&mut self, params: &[f32], grads: &mut [f32], e: usize) {
        let classes = self.chain.classes();
        let [dout, dinp] = &mut self.d;
        dout[..classes].copy_from_slice(&self.dlogits[e * classes..(e + 1) * classes]);
        for (i, op) in self.chain.ops.iter().enumerate().rev() {
            let (nin, nout) = (self.chain.in_numel(i), self.chain.out_numel[i]);
            let inp = &self.acts[i][e * nin..(e + 1) * nin];
            let first = i == 0;
            let (d, dx) = (&dout[..nout], &mut dinp[..nin]);
            match op {
                LayerOp::Conv { g, w, b } => {
                    let (dw, db) = split(grads, w, b);
                    let dx = (!first).then_some(dx);
                    direct::conv_backward(dx, dw, db, d, inp, &params[w.clone()], g, &mut self.pad, &mut self.dpad);
                }
                LayerOp::Linear { k, n, w, b } => {
                    let (dw, db) = split(grads, w, b);
                    direct::linear_backward(dx, dw, db, d, inp, &params[w.clone()], *k, *n);
                }
                LayerOp::Subsample { g, w, b } => {
                    let (dw, db) = split(grads, w, b);
                    let dx = (!first).then_some(dx);
                    subsample_backward(dx, dw, db, d, inp, &params[w.clone()], g, 1);
                }
                LayerOp::Rbf { k, n, centres } => rbf::rbf_backward(dx, inp, centres, d, 1, *k, *n),
                LayerOp::Act(a) => {
                    let out = &self.acts[i + 1][e * nout..(e + 1) * nout];
                    activation::backward_from_input::<V>(*a, dx, inp, out, d);
                }
                LayerOp::Flatten => dx.copy_from_slice(d),
                LayerOp::Pool { g, .. } => pool_backward(dx, inp, d, g),
            }
            std::mem::swap(dout, dinp);
        }
    }
}

/// A layer's weight and bias gradients (the bias right after the weight).
fn split<'a>(
    grads: &'a mut [f32],
    w: &std::ops::Range<usize>,
    b: &std::ops::Range<usize>,
) -> (&'a mut [f32], &'a mut [f32]) {
    debug_assert_eq!(w.end, b.start, "a layer's bias follows its weight");
    grads[w.start..b.end].split_at_mut(w.len())
}

struct Forward<'a> {
    prog: &'a mut Single,
    params: &'a [f32],
    batch: usize,
}

impl Kernel<f32> for Forward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        for e in 0..self.batch {
            self.prog.forward_example::<V>(self.params, e);
        }
    }
}

struct Backward<'a> {
    prog: &'a mut Single,
    params: &'a [f32],
    grads: &'a mut [f32],
    batch: usize,
}

impl Kernel<f32> for Backward<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        for e in 0..self.batch {
            self.prog.backward_example::<V>(self.params, self.grads, e);
        }
    }
}

impl Program<CpuEngine> for Single {
    fn load_batch(&mut self, engine: &CpuEngine, examples: &CpuExamples, indices: &[u32]) {
        use crate::engine::Engine;
        let n = indices.len();
        self.reserve(n);
        let x_len = n * self.chain.in_numel(0);
        let mut y = vec![0.0; n];
        engine.gather(examples, indices, &mut self.acts[0][..x_len], &mut y);
        for (l, v) in self.labels.iter_mut().zip(y) {
            *l = v as u8;
        }
    }

    fn load_values(&mut self, _engine: &CpuEngine, x: &[f32], labels: &[u8]) {
        self.reserve(labels.len());
        self.acts[0][..x.len()].copy_from_slice(x);
        self.labels[..labels.len()].copy_from_slice(labels);
    }

    fn forward(&mut self, _engine: &CpuEngine, params: &Vec<f32>, batch: usize) {
        dispatch(Forward { prog: self, params, batch });
    }

    fn loss(&mut self, _engine: &CpuEngine, batch: usize, class_weights: Option<&Vec<f32>>, grad: bool) -> LossStats {
        let classes = self.chain.classes();
        let logits = &self.acts[self.chain.ops.len()][..batch * classes];
        let d = grad.then_some(&mut self.dlogits[..batch * classes]);
        let weights = class_weights.map(|w| &w[..classes]);
        batch_loss(self.chain.criterion, d, logits, &self.labels[..batch], weights, classes)
    }

    fn backward(&mut self, _engine: &CpuEngine, params: &Vec<f32>, grads: &mut Vec<f32>, batch: usize) {
        dispatch(Backward { prog: self, params, grads, batch });
    }

    fn output(&self, _engine: &CpuEngine, _params: &Vec<f32>, i: usize, batch: usize) -> Vec<f32> {
        self.acts[i + 1][..batch * self.chain.out_numel[i]].to_vec()
    }
}
