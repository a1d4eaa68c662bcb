//! A network built from a [`Spec`]: all parameters in one flat buffer (named
//! ranges with PyTorch `state_dict` keys), one activation buffer per layer
//! boundary, and forward / backward passes that walk the layers and call the
//! engine.

use std::ops::Range;

use anyhow::{bail, Result};

use crate::engine::Engine;
use crate::init::ParamInfo;
use crate::layers::conv::ConvGeom;
use crate::layers::loss::LossStats;
use crate::layers::pool::{PoolGeom, PoolKind};
use crate::optim::Optimizer;
use crate::spec::{Activation, LayerSpec, ResolvedLayer, Shape, Spec};

/// What the engine runs for one layer, with its parameter ranges.
#[derive(Clone, Debug)]
enum Op {
    Conv { g: ConvGeom, w: Range<usize>, b: Range<usize> },
    Pool { g: PoolGeom, channels: usize },
    Act(Activation),
    Flatten,
    Linear { k: usize, n: usize, w: Range<usize>, b: Range<usize> },
}

pub struct Network<E: Engine> {
    pub engine: E,
    spec: Spec,
    layers: Vec<ResolvedLayer>,
    ops: Vec<Op>,
    infos: Vec<ParamInfo>,
    params: E::Buf,
    grads: E::Buf,
    /// acts[0] is the input batch; acts[i + 1] is layer i's output.
    acts: Vec<E::Buf>,
    /// dacts[i] is ∂L/∂acts[i] (dacts[0] unused: no gradient for the data).
    dacts: Vec<E::Buf>,
    labels: E::Buf,
    class_weights: Option<E::Buf>,
    capacity: usize,
}

/// The parameter tensors of resolved layers, in order: for each layer with
/// parameters, its weight then its bias, named by the layer's index as in the
/// PyTorch `state_dict` of the equivalent `nn.Sequential`.
pub fn param_layout(layers: &[ResolvedLayer]) -> Vec<ParamInfo> {
    let mut infos = Vec::new();
    let mut offset = 0;
    for (i, l) in layers.iter().enumerate() {
        if let Some((w_shape, b_len)) = &l.params {
            let weight = ParamInfo::weight(format!("{i}.weight"), offset, w_shape.clone());
            offset += weight.numel();
            infos.push(ParamInfo::bias(format!("{i}.bias"), offset, *b_len, weight.fan_in));
            infos.insert(infos.len() - 1, weight);
            offset += b_len;
        }
    }
    infos
}

impl<E: Engine> Network<E> {
    /// A network with all parameters zero (see [`crate::init`] to initialise).
    pub fn new(engine: E, spec: &Spec) -> Result<Self> {
        let layers = spec.resolve()?;
        let infos = param_layout(&layers);
        let mut ops = Vec::with_capacity(layers.len());
        let mut tensors = infos.chunks(2);
        for (i, l) in layers.iter().enumerate() {
            let mut next_params = || {
                let pair = tensors.next().expect("param_layout lists a weight and a bias per layer with parameters");
                (pair[0].range(), pair[1].range())
            };
            let op = match (&l.spec, l.input, l.output) {
                (LayerSpec::Conv { out_channels, kernel, padding, stride }, Shape::Image(c, h, w), _) => {
                    let (wr, br) = next_params();
                    let g = ConvGeom { c, h, w, o: *out_channels, k: *kernel, pad: *padding, stride: *stride };
                    Op::Conv { g, w: wr, b: br }
                }
                (LayerSpec::AvgPool { size, stride }, Shape::Image(c, h, w), _) => {
                    Op::Pool { g: PoolGeom { kind: PoolKind::Avg, h, w, size: *size, stride: *stride }, channels: c }
                }
                (LayerSpec::MaxPool { size, stride }, Shape::Image(c, h, w), _) => {
                    Op::Pool { g: PoolGeom { kind: PoolKind::Max, h, w, size: *size, stride: *stride }, channels: c }
                }
                (LayerSpec::Sigmoid, ..) => Op::Act(Activation::Sigmoid),
                (LayerSpec::Tanh, ..) => Op::Act(Activation::Tanh),
                (LayerSpec::Relu, ..) => Op::Act(Activation::Relu),
                (LayerSpec::LeakyRelu { slope }, ..) => Op::Act(Activation::LeakyRelu(*slope)),
                (LayerSpec::Flatten, ..) => Op::Flatten,
                (LayerSpec::Linear { out_features }, Shape::Flat(k), _) => {
                    let (wr, br) = next_params();
                    Op::Linear { k, n: *out_features, w: wr, b: br }
                }
                (spec, input, _) => bail!("layer {i} ({spec:?}) cannot take input {input}"),
            };
            ops.push(op);
        }
        let n_bufs = layers.len() + 1;
        let n_params = infos.last().map_or(0, |p| p.range().end);
        Ok(Self {
            params: engine.alloc(n_params),
            grads: engine.alloc(n_params),
            acts: (0..n_bufs).map(|_| engine.alloc(0)).collect(),
            dacts: (0..n_bufs).map(|_| engine.alloc(0)).collect(),
            labels: engine.alloc(0),
            class_weights: None,
            capacity: 0,
            engine,
            spec: spec.clone(),
            layers,
            ops,
            infos,
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }
    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }
    pub fn num_params(&self) -> usize {
        E::len(&self.params)
    }
    pub fn num_classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output.numel())
    }

    /// All parameters, flat, in [`Self::param_infos`] order.
    pub fn params(&self) -> Vec<f32> {
        self.engine.download(E::view(&self.params, 0..self.num_params()))
    }
    pub fn grads(&self) -> Vec<f32> {
        self.engine.download(E::view(&self.grads, 0..self.num_params()))
    }
    pub fn set_params(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.num_params() {
            bail!("{} parameter values given, the network has {}", values.len(), self.num_params());
        }
        self.engine.upload(&mut self.params, values);
        Ok(())
    }

    /// Class weights for the loss (None: all 1).
    pub fn set_class_weights(&mut self, weights: Option<&[f32]>) -> Result<()> {
        self.class_weights = match weights {
            Some(w) if w.len() != self.num_classes() => {
                bail!("{} class weights given for {} classes", w.len(), self.num_classes())
            }
            Some(w) => {
                let mut buf = self.engine.alloc(w.len());
                self.engine.upload(&mut buf, w);
                Some(buf)
            }
            None => None,
        };
        Ok(())
    }

    /// Make room for batches of up to `batch` examples.
    fn reserve(&mut self, batch: usize) {
        if batch <= self.capacity {
            return;
        }
        let sizes = std::iter::once(self.spec.input.size * self.spec.input.size)
            .chain(self.layers.iter().map(|l| l.output.numel()));
        for (i, numel) in sizes.enumerate() {
            self.acts[i] = self.engine.alloc(batch * numel);
            self.dacts[i] = self.engine.alloc(if i == 0 { 0 } else { batch * numel });
        }
        self.labels = self.engine.alloc(batch);
        self.capacity = batch;
    }

    /// Load the examples at `indices` as the current batch.
    pub fn load_batch(&mut self, examples: &E::Examples, indices: &[u32]) {
        self.reserve(indices.len());
        let n = indices.len();
        let x_len = n * self.spec.input.size * self.spec.input.size;
        self.engine.gather(
            examples,
            indices,
            E::view_mut(&mut self.acts[0], 0..x_len),
            E::view_mut(&mut self.labels, 0..n),
        );
    }

    /// Load a batch given as host values: x (B, 1, S, S) already scaled, labels (B).
    pub fn load_batch_values(&mut self, x: &[f32], labels: &[u8]) -> Result<()> {
        let s = self.spec.input.size;
        if x.len() != labels.len() * s * s {
            bail!("batch of {} values for {} examples of {s}×{s}", x.len(), labels.len());
        }
        self.reserve(labels.len());
        let mut padded = x.to_vec();
        padded.resize(E::len(&self.acts[0]), 0.0);
        self.engine.upload(&mut self.acts[0], &padded);
        let mut y: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        y.resize(self.capacity, 0.0);
        self.engine.upload(&mut self.labels, &y);
        Ok(())
    }

    /// Run every layer on the loaded batch of `batch` examples.
    pub fn forward(&mut self, batch: usize) {
        let e = &self.engine;
        for (i, op) in self.ops.iter().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let in_len = batch * self.layers[i].input.numel();
            let out_len = batch * self.layers[i].output.numel();
            let (inp, out) = (E::view(&before[i], 0..in_len), E::view_mut(&mut after[0], 0..out_len));
            let p = |r: &Range<usize>| E::view(&self.params, r.clone());
            match op {
                Op::Conv { g, w, b } => e.conv_forward(g, batch, inp, p(w), p(b), out),
                Op::Pool { g, channels } => e.pool_forward(g, batch * channels, inp, out),
                Op::Act(a) => e.activation_forward(*a, inp, out),
                Op::Flatten => e.copy(inp, out),
                Op::Linear { k, n, w, b } => e.linear_forward(batch, *k, *n, inp, p(w), p(b), out),
            }
        }
    }

    /// Loss and accuracy of the last forward pass; with `grad`, also seeds the
    /// backward pass with ∂L/∂logits.
    pub fn loss(&mut self, batch: usize, grad: bool) -> LossStats {
        let last = self.ops.len();
        let classes = self.num_classes();
        let logits = E::view(&self.acts[last], 0..batch * classes);
        let y = E::view(&self.labels, 0..batch);
        let w = self.class_weights.as_ref().map(|w| E::view(w, 0..classes));
        let d = grad.then(|| E::view_mut(&mut self.dacts[last], 0..batch * classes));
        self.engine.softmax_xent(batch, classes, logits, y, w, d)
    }

    pub fn zero_grad(&mut self) {
        let n = self.num_params();
        self.engine.fill(E::view_mut(&mut self.grads, 0..n), 0.0);
    }

    /// Backpropagate from ∂L/∂logits (set by [`Self::loss`]) through every layer,
    /// accumulating into the parameter gradients.
    pub fn backward(&mut self, batch: usize) {
        let e = &self.engine;
        for (i, op) in self.ops.iter().enumerate().rev() {
            let in_len = batch * self.layers[i].input.numel();
            let out_len = batch * self.layers[i].output.numel();
            let inp = E::view(&self.acts[i], 0..in_len);
            let (d_before, d_after) = self.dacts.split_at_mut(i + 1);
            let dout = E::view(&d_after[0], 0..out_len);
            // The first layer's input is the data: no gradient needed.
            let dinp = (i > 0).then(|| E::view_mut(&mut d_before[i], 0..in_len));
            let p = |r: &Range<usize>| E::view(&self.params, r.clone());
            match op {
                Op::Conv { g, w, b } => {
                    let (dw, db) = split_pair::<E>(&mut self.grads, w, b);
                    e.conv_backward(g, batch, inp, p(w), dout, dw, db, dinp);
                }
                Op::Linear { k, n, w, b } => {
                    let (dw, db) = split_pair::<E>(&mut self.grads, w, b);
                    let dinp = dinp.expect("a linear layer is never first");
                    e.linear_backward(batch, *k, *n, inp, p(w), dout, dw, db, dinp);
                }
                Op::Pool { g, channels } => {
                    if let Some(dinp) = dinp {
                        e.pool_backward(g, batch * channels, inp, dout, dinp);
                    }
                }
                Op::Act(a) => {
                    if let Some(dinp) = dinp {
                        let out = E::view(&self.acts[i + 1], 0..out_len);
                        e.activation_backward(*a, inp, out, dout, dinp);
                    }
                }
                Op::Flatten => {
                    if let Some(dinp) = dinp {
                        e.copy(dout, dinp);
                    }
                }
            }
        }
    }

    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
        let n = self.num_params();
        self.engine.clip_grad_norm(E::view_mut(&mut self.grads, 0..n), max_norm)
    }

    pub fn step(&mut self, opt: &mut Optimizer, lr: f64) {
        let n = self.num_params();
        self.engine.optimizer_step(opt, E::view_mut(&mut self.params, 0..n), E::view(&self.grads, 0..n), lr);
    }

    /// The logits (B, classes) of the last forward pass.
    pub fn logits(&self, batch: usize) -> Vec<f32> {
        let last = self.ops.len();
        self.engine.download(E::view(&self.acts[last], 0..batch * self.num_classes()))
    }

    /// The output of layer `i` (B, ...) of the last forward pass.
    pub fn activation(&self, i: usize, batch: usize) -> Vec<f32> {
        self.engine.download(E::view(&self.acts[i + 1], 0..batch * self.layers[i].output.numel()))
    }
}

/// Mutable views of a weight range and the bias range right after it.
fn split_pair<'a, E: Engine>(
    buf: &'a mut E::Buf,
    w: &Range<usize>,
    b: &Range<usize>,
) -> (E::ViewMut<'a>, E::ViewMut<'a>) {
    assert_eq!(w.end, b.start, "a layer's bias follows its weight");
    // Two disjoint views of one buffer: go through a raw split of the range.
    E::split_view_mut(buf, w.start..b.end, w.end - w.start)
}
