//! A network built from a [`Spec`]: all parameters in one flat buffer (named
//! ranges with PyTorch `state_dict` keys), and forward / backward passes run by
//! the engine's [`Program`] for the layer chain (the activations and scratch live
//! there: per-layer NCHW buffers in the portable [`crate::engine::Layerwise`]
//! program, fused tiles in the CPU engine's).

use anyhow::{bail, Result};

use crate::engine::{Chain, Engine, LayerOp as Op, Program, TrainStats};
use crate::init::ParamInfo;
use crate::layers::conv::ConvGeom;
use crate::layers::loss::LossStats;
use crate::layers::pool::{PoolGeom, PoolKind};
use crate::layers::subsample::SubsampleGeom;
use crate::optim::Optimizer;
use crate::spec::{Activation, LayerSpec, ResolvedLayer, Shape, Spec};

/// A network of the layers of a [`Spec`] on engine `E` (the CPU engine by default):
/// its flat parameters and gradients, and the program that runs its passes.
pub struct Network<E: Engine = crate::engine::cpu::CpuEngine> {
    /// The engine that holds the buffers and runs the passes.
    pub engine: E,
    spec: Spec,
    layers: Vec<ResolvedLayer>,
    chain: Chain,
    program: Box<dyn Program<E>>,
    infos: Vec<ParamInfo>,
    params: E::Buf,
    grads: E::Buf,
    class_weights: Option<E::Buf>,
    /// Masked convolutions' weight ranges and masks: their left-out weights are held
    /// at zero, in the parameters and the gradients.
    masks: Vec<(std::ops::Range<usize>, Vec<f32>)>,
    /// The masks in the engine's memory, in the same order.
    mask_bufs: Vec<E::Buf>,
    /// The training passes' running statistics since the last reset, where they ran.
    tally: E::Tally,
}

/// The parameter tensors of resolved layers, in order: for each layer with
/// parameters, its weight then its bias, named by the layer's index as in the
/// PyTorch `state_dict` of the equivalent `nn.Sequential`.
pub fn param_layout(layers: &[ResolvedLayer]) -> Vec<ParamInfo> {
    let mut infos = Vec::new();
    let mut offset = 0;
    for (i, l) in layers.iter().enumerate() {
        if let Some((w_shape, b_len)) = &l.params {
            let (name, bias_name) = (format!("{i}.weight"), format!("{i}.bias"));
            let (weight, bias) = match &l.spec {
                LayerSpec::Subsample { size } => {
                    let weight = ParamInfo::per_map(name, offset, w_shape[0], size * size);
                    let bias = ParamInfo::bias(bias_name, offset + w_shape[0], *b_len, size * size);
                    (weight, bias)
                }
                LayerSpec::Conv { kernel, table: Some(table), .. } => {
                    // Each output map's units read only the maps of its table row.
                    let fan_ins: Vec<usize> = table.iter().map(|row| row.len() * kernel * kernel).collect();
                    let weight = ParamInfo::weight(name, offset, w_shape.clone()).with_row_fan_in(fan_ins.clone());
                    let bias = ParamInfo::bias(bias_name, offset + weight.numel(), *b_len, weight.fan_in)
                        .with_row_fan_in(fan_ins);
                    (weight, bias)
                }
                _ => {
                    let weight = ParamInfo::weight(name, offset, w_shape.clone());
                    let bias = ParamInfo::bias(bias_name, offset + weight.numel(), *b_len, weight.fan_in);
                    (weight, bias)
                }
            };
            offset += weight.numel() + b_len;
            infos.extend([weight, bias]);
        }
    }
    infos
}

/// `values` (parameters or gradients, in the network's flat order) with a masked
/// convolution's left-out weights set to zero.
pub fn apply_masks<T: num_traits::Float>(values: &mut [T], masks: &[(std::ops::Range<usize>, Vec<f32>)]) {
    for (range, mask) in masks {
        for (v, &m) in values[range.clone()].iter_mut().zip(mask) {
            if m == 0.0 {
                *v = T::zero();
            }
        }
    }
}

/// The 0/1 masks of the masked convolutions (those with a connection table): the
/// weight range and, per weight, 1 where its (output, input) pair is connected.
pub fn weight_masks(layers: &[ResolvedLayer], infos: &[ParamInfo]) -> Vec<(std::ops::Range<usize>, Vec<f32>)> {
    let mut weights = infos.iter().filter(|p| p.kind == crate::init::ParamKind::Weight);
    let mut masks = Vec::new();
    for l in layers {
        if l.params.is_none() {
            continue;
        }
        let info = weights.next().expect("param_layout lists a weight per layer with parameters");
        if let (LayerSpec::Conv { kernel, table: Some(table), .. }, Shape::Image(c, _, _)) = (&l.spec, l.input) {
            let kk = kernel * kernel;
            let mut mask = vec![0.0; info.numel()];
            for (o, row) in table.iter().enumerate() {
                for &ci in row {
                    mask[(o * c + ci) * kk..(o * c + ci + 1) * kk].fill(1.0);
                }
            }
            masks.push((info.range(), mask));
        }
    }
    masks
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
                (LayerSpec::Conv { out_channels, kernel, padding, stride, .. }, Shape::Image(c, h, w), _) => {
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
                (LayerSpec::ScaledTanh, ..) => Op::Act(Activation::ScaledTanh),
                (LayerSpec::Subsample { size }, Shape::Image(c, h, w), _) => {
                    let (wr, br) = next_params();
                    Op::Subsample { g: SubsampleGeom { c, h, w, size: *size }, w: wr, b: br }
                }
                (LayerSpec::Rbf { bitmaps }, Shape::Flat(k), Shape::Flat(n)) => {
                    let centres = bitmaps.centres().map_err(anyhow::Error::msg)?.concat();
                    Op::Rbf { k, n, centres }
                }
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
        let n_params = infos.last().map_or(0, |p| p.range().end);
        let chain = Chain {
            ops,
            input_size: spec.input.size,
            out_numel: layers.iter().map(|l| l.output.numel()).collect(),
            criterion: spec.loss,
        };
        let masks = weight_masks(&layers, &infos);
        let mask_bufs = masks
            .iter()
            .map(|(_, mask)| {
                let mut buf = engine.alloc(mask.len());
                engine.upload(&mut buf, mask);
                buf
            })
            .collect();
        Ok(Self {
            masks,
            mask_bufs,
            tally: engine.tally(),
            params: engine.alloc(n_params),
            grads: engine.alloc(n_params),
            program: engine.program(&chain),
            chain,
            class_weights: None,
            engine,
            spec: spec.clone(),
            layers,
            infos,
        })
    }

    /// Loss, accuracy, confusion matrix and every prediction on a split (a dataset's test
    /// split, say), [`crate::trainer::EVAL_BATCH`] examples at a time, as `lenet eval`
    /// measures them.
    pub fn evaluate(&mut self, split: &crate::data::Split) -> crate::eval::EvalResult
    where
        Self: Send,
    {
        let examples = self.engine.upload_examples(&split.images, &split.labels, &self.spec.input);
        crate::eval::evaluate(self, &examples, crate::trainer::EVAL_BATCH)
    }

    /// Where it runs, as `lenet train` prints it: `cpu (2 threads)`, or the GPU adapter
    /// and its backend.
    pub fn device(&self) -> String {
        self.engine.describe()
    }

    /// The architecture it was built from.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }
    /// The parameter tensors in flat order: `state_dict` names, shapes and offsets.
    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }
    /// Length of the flat parameter buffer (masked-out weights included).
    pub fn num_params(&self) -> usize {
        E::len(&self.params)
    }
    /// Outputs of the last layer: logits per example.
    pub fn num_classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output.numel())
    }

    /// All parameters, flat, in [`Self::param_infos`] order.
    pub fn params(&self) -> Vec<f32> {
        self.engine.download(E::view(&self.params, 0..self.num_params()))
    }
    /// All gradients, flat, in [`Self::param_infos`] order: what the backward passes
    /// since the last [`Self::zero_grad`] accumulated.
    pub fn grads(&self) -> Vec<f32> {
        self.engine.download(E::view(&self.grads, 0..self.num_params()))
    }
    /// Set every parameter. A masked convolution's left-out weights are not part of
    /// the architecture: they are set to zero whatever `values` holds there.
    pub fn set_params(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.num_params() {
            bail!("{} parameter values given, the network has {}", values.len(), self.num_params());
        }
        if self.masks.is_empty() {
            self.engine.upload(&mut self.params, values);
        } else {
            let mut values = values.to_vec();
            apply_masks(&mut values, &self.masks);
            self.engine.upload(&mut self.params, &values);
        }
        Ok(())
    }

    /// Zero the gradients of masked convolutions' left-out weights, so that no
    /// optimizer moves them.
    fn mask_grads(&mut self) {
        for ((range, _), mask) in self.masks.iter().zip(&self.mask_bufs) {
            let len = range.len();
            self.engine.mask(E::view_mut(&mut self.grads, range.clone()), E::view(mask, 0..len));
        }
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

    /// The layer chain the engine runs.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Whether the engine can run this network at batches of `batch` with a resident split
    /// of `examples` (a GPU's buffers have a largest size): a clear error when not.
    pub fn check_fits(&self, batch: usize, examples: usize) -> Result<()> {
        self.engine.check_fits(&self.chain, batch, examples)
    }

    /// Load the examples at `indices` as the current batch.
    pub fn load_batch(&mut self, examples: &E::Examples, indices: &[u32]) {
        self.program.load_batch(&self.engine, examples, indices);
    }

    /// Load a batch given as host values: x (B, 1, S, S) already scaled, labels (B).
    pub fn load_batch_values(&mut self, x: &[f32], labels: &[u8]) -> Result<()> {
        let s = self.spec.input.size;
        if x.len() != labels.len() * s * s {
            bail!("batch of {} values for {} examples of {s}×{s}", x.len(), labels.len());
        }
        self.program.load_values(&self.engine, x, labels);
        Ok(())
    }

    /// `f(self)` on the engine's worker threads (see [`Engine::workers`]): for loops
    /// of passes, which then start without a hand-off between threads.
    pub fn on_workers<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R
    where
        Self: Send,
    {
        match self.engine.workers() {
            Some(pool) => pool.install(|| f(self)),
            None => f(self),
        }
    }

    /// One training step on the examples at `indices` of a resident split: forward,
    /// loss, backward, gradient clipping to norm `clip` (if given) and the optimizer's
    /// update at `lr`, as one job on the engine's workers ([`Program::train_pass`]). A
    /// non-finite loss adds no gradient and skips the update (the parameters are
    /// left as they were). The batch's loss statistics are counted where the step ran,
    /// not returned: read them with [`Self::train_stats`] when they are to be shown.
    pub fn train_step(
        &mut self,
        examples: &E::Examples,
        indices: &[u32],
        opt: &mut Optimizer,
        lr: f64,
        clip: Option<f32>,
    ) where
        Self: Send,
    {
        self.on_workers(|net| {
            let n = indices.len();
            net.load_batch(examples, indices);
            net.zero_grad();
            let cw = net.class_weights.as_ref();
            let update = net.program.train_pass(&net.engine, &net.params, &mut net.grads, n, cw, &mut net.tally);
            net.mask_grads();
            if update {
                if let Some(max) = clip {
                    net.clip_grad_norm(max);
                }
                net.step(opt, lr);
            }
        })
    }

    /// The running statistics of the training steps since the last
    /// [`Self::reset_train_stats`] (on a GPU, a read-back: call it only to show them).
    pub fn train_stats(&self) -> TrainStats {
        self.engine.tally_read(&self.tally)
    }

    /// Start counting training statistics afresh (at the start of an epoch).
    pub fn reset_train_stats(&mut self) {
        self.tally = self.engine.tally();
    }

    /// Go on counting from `stats` (an interrupted epoch's, when it resumes).
    pub fn restore_train_stats(&mut self, stats: &TrainStats) {
        self.tally = self.engine.tally_from(stats);
    }

    /// The examples at `indices` of a resident split through the network, without
    /// gradients, as one job on the engine's workers: the loss statistics against
    /// their labels and the logits (B, classes).
    pub fn infer(&mut self, examples: &E::Examples, indices: &[u32]) -> (LossStats, Vec<f32>)
    where
        Self: Send,
    {
        self.on_workers(|net| {
            let n = indices.len();
            net.load_batch(examples, indices);
            net.program.forward_inference(&net.engine, &net.params, n);
            let stats = net.loss(n, false);
            (stats, net.logits(n))
        })
    }

    /// Every layer's output (each (B, ...), in layer order) for the examples at `indices`
    /// of a resident split: what the network computed on its way to the logits, as
    /// `lenet serve` shows it. One job on the engine's workers.
    pub fn trace(&mut self, examples: &E::Examples, indices: &[u32]) -> Vec<Vec<f32>>
    where
        Self: Send,
    {
        self.on_workers(|net| {
            let n = indices.len();
            net.load_batch(examples, indices);
            // The training forward pass: it keeps every layer's output (inference may not).
            net.forward(n);
            (0..net.chain.ops.len()).map(|i| net.activation(i, n)).collect()
        })
    }

    /// Run every layer on the loaded batch of `batch` examples.
    pub fn forward(&mut self, batch: usize) {
        self.program.forward(&self.engine, &self.params, batch);
    }

    /// Loss and accuracy of the last forward pass; with `grad`, also seeds the
    /// backward pass with ∂L/∂logits.
    pub fn loss(&mut self, batch: usize, grad: bool) -> LossStats {
        self.program.loss(&self.engine, batch, self.class_weights.as_ref(), grad)
    }

    /// Set every gradient to zero (backward passes accumulate).
    pub fn zero_grad(&mut self) {
        let n = self.num_params();
        self.engine.fill(E::view_mut(&mut self.grads, 0..n), 0.0);
    }

    /// Backpropagate from ∂L/∂logits (set by [`Self::loss`]) through every layer,
    /// accumulating into the parameter gradients.
    pub fn backward(&mut self, batch: usize) {
        self.program.backward(&self.engine, &self.params, &mut self.grads, batch);
        self.mask_grads();
    }

    /// Scale the gradients down to a total L2 norm of at most `max_norm`.
    pub fn clip_grad_norm(&mut self, max_norm: f32) {
        let n = self.num_params();
        self.engine.clip_grad_norm(E::view_mut(&mut self.grads, 0..n), max_norm)
    }

    /// `opt`'s state as a checkpoint stores it (read back from the engine's device
    /// when the updates keep it there).
    pub fn optimizer_state(&self, opt: &crate::optim::Optimizer) -> Vec<crate::optim::StateTensor> {
        self.engine.optimizer_state(opt)
    }

    /// One update of the parameters by `opt` from the current gradients, at learning
    /// rate `lr`.
    pub fn step(&mut self, opt: &mut Optimizer, lr: f64) {
        let n = self.num_params();
        self.engine.optimizer_step(opt, E::view_mut(&mut self.params, 0..n), E::view(&self.grads, 0..n), lr);
    }

    /// The examples at `indices` of a resident split as host values: x (B, 1, S, S),
    /// scaled as the network sees them, and their labels.
    pub fn gather_values(&self, examples: &E::Examples, indices: &[u32]) -> (Vec<f32>, Vec<u8>) {
        let n = indices.len();
        let s = self.spec.input.size;
        let (mut x, mut y) = (self.engine.alloc(n * s * s), self.engine.alloc(n));
        self.engine.gather(examples, indices, E::view_mut(&mut x, 0..n * s * s), E::view_mut(&mut y, 0..n));
        let labels = self.engine.download(E::view(&y, 0..n)).into_iter().map(|v| v as u8).collect();
        (self.engine.download(E::view(&x, 0..n * s * s)), labels)
    }

    /// SDLM's estimate of the Hessian's diagonal at the current parameters: the mean
    /// over the examples at `indices` of the backpropagated Gauss–Newton second
    /// derivatives ([`crate::curvature`]), on the host.
    pub fn estimate_curvature(&self, examples: &E::Examples, indices: &[u32], threads: usize) -> Vec<f32> {
        let (x, _) = self.gather_values(examples, indices);
        let par = crate::layers::Par::new(threads);
        let params = self.params();
        let (layers, criterion) = (&self.layers, self.spec.loss);
        let run = || crate::curvature::gauss_newton_diagonal(layers, criterion, &params, &x, indices.len(), par);
        match self.engine.workers() {
            Some(pool) => pool.install(run),
            None => run(),
        }
    }

    /// Start (and reset) or stop timing the parts of the forward and backward passes.
    pub fn set_profiling(&mut self, on: bool) {
        self.program.set_profiling(on);
    }

    /// Where the time went since profiling started (None if the engine's program
    /// does not time itself).
    pub fn profile_report(&self) -> Option<String> {
        self.program.profile_report()
    }

    /// The logits (B, classes) of the last forward pass.
    pub fn logits(&self, batch: usize) -> Vec<f32> {
        let last = self.chain.ops.len() - 1;
        self.program.output(&self.engine, &self.params, last, batch)
    }

    /// The output of layer `i` (B, ...) of the last forward pass.
    pub fn activation(&self, i: usize, batch: usize) -> Vec<f32> {
        self.program.output(&self.engine, &self.params, i, batch)
    }
}
