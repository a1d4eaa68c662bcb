//! The engine boundary: where tensors live and where the kernels run. Layers
//! call the engine, so the same network runs on any engine. Buffers are owned
//! by the engine (`Buf`) and passed as views; no host slice crosses the boundary
//! inside a training step, apart from the batch's example indices. The CPU
//! engine is [`cpu::CpuEngine`]; the GPU engine (feature `gpu`) is
//! `gpu::engine::GpuEngine`.
//!
//! Two levels. The per-layer methods (`conv_forward`, `pool_backward`, …) work on
//! NCHW batches, one layer per call; [`Layerwise`] runs a whole network through
//! them, and is what any engine gets by default. An engine may instead compile the
//! layer chain into its own [`Program`] ([`Engine::program`]): the CPU engine's
//! ([`tiled::Tiled`]) fuses layers, keeps activations in its own layout and runs a
//! whole forward or backward pass in one parallel region. The network sees only
//! the [`Program`] interface; the tests check the two against each other.

pub mod choice;
mod chunks;
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod single;
pub mod tiled;

use std::ops::Range;

use crate::data::augment::DeviceDistortions;
use crate::data::Images;
use crate::layers::conv::ConvGeom;
use crate::layers::loss::LossStats;
use crate::layers::pool::PoolGeom;
use crate::layers::subsample::SubsampleGeom;
use crate::optim::{Optimizer, StateTensor};
use crate::spec::{Activation, Criterion, InputSpec};

/// What an engine runs for one layer, with its parameter ranges in the flat
/// parameter buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerOp {
    Conv {
        g: ConvGeom,
        w: Range<usize>,
        b: Range<usize>,
    },
    Pool {
        g: PoolGeom,
        channels: usize,
    },
    Act(Activation),
    Flatten,
    Linear {
        k: usize,
        n: usize,
        w: Range<usize>,
        b: Range<usize>,
    },
    /// Trainable subsampling: a coefficient (`w`) and a bias (`b`) per map.
    Subsample {
        g: SubsampleGeom,
        w: Range<usize>,
        b: Range<usize>,
    },
    /// RBF outputs −Σ_j (x_j − c_ij)² for fixed centres (N, K), row by row.
    Rbf {
        k: usize,
        n: usize,
        centres: Vec<f32>,
    },
}

/// A network's layer chain as an engine runs it: the ops, with per-example input
/// size and output sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    pub ops: Vec<LayerOp>,
    /// The input images' side (the input is (B, 1, S, S)).
    pub input_size: usize,
    /// Values per example of each layer's output.
    pub out_numel: Vec<usize>,
    /// The training criterion on the last layer's output.
    pub criterion: Criterion,
}

impl Chain {
    pub fn in_numel(&self, i: usize) -> usize {
        if i == 0 {
            self.input_size * self.input_size
        } else {
            self.out_numel[i - 1]
        }
    }
    pub fn classes(&self) -> usize {
        self.out_numel.last().copied().unwrap_or(0)
    }
}

/// The running loss statistics of an epoch's training passes, as the trainer prints
/// them. An engine sums them where the passes run (a GPU: on the device, so that no
/// training step waits for the host) in its [`Engine::Tally`]; the host reads them back
/// only when it prints (the ~5 curve points of an epoch and its last line).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainStats {
    /// Σ over batches of the batch's mean loss times its size (as d2l sums it).
    pub loss_sum: f64,
    /// Examples whose highest output was the label.
    pub correct: usize,
    pub examples: usize,
    pub batches: usize,
    /// The first batch (1-based, since the tally was reset) whose loss was not a
    /// number, and that loss.
    pub first_nonfinite: Option<(usize, f64)>,
}

impl TrainStats {
    /// Count one batch of `examples` with statistics `s`.
    pub fn add(&mut self, s: &LossStats, examples: usize) {
        let loss = s.mean();
        self.batches += 1;
        if !loss.is_finite() && self.first_nonfinite.is_none() {
            self.first_nonfinite = Some((self.batches, loss));
        }
        self.loss_sum += loss * examples as f64;
        self.correct += s.correct;
        self.examples += examples;
    }

    /// The running mean loss (of the batches' means, weighted by their sizes).
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.examples as f64
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples as f64
    }
}

/// A compiled network on an engine: the activations and scratch it needs, and the
/// passes over them. Parameters and gradients stay with the network.
pub trait Program<E: Engine>: Send {
    /// Load the examples at `indices` of a resident split as the current batch.
    fn load_batch(&mut self, engine: &E, examples: &E::Examples, indices: &[u32]);
    /// Load a batch given as host values: x (B, 1, S, S) already scaled, labels (B).
    fn load_values(&mut self, engine: &E, x: &[f32], labels: &[u8]);
    /// Run every layer on the loaded batch of `batch` examples.
    fn forward(&mut self, engine: &E, params: &E::Buf, batch: usize);
    /// [`Self::forward`] for inference: afterwards only the loss and the last layer's
    /// output may be asked for (no backward pass, no other layer's output), so a
    /// program may reuse the intermediate buffers.
    fn forward_inference(&mut self, engine: &E, params: &E::Buf, batch: usize) {
        self.forward(engine, params, batch);
    }
    /// Loss and accuracy of the last forward pass; with `grad`, also ∂L/∂logits.
    fn loss(&mut self, engine: &E, batch: usize, class_weights: Option<&E::Buf>, grad: bool) -> LossStats;
    /// Backpropagate from ∂L/∂logits, accumulating (`+=`) into `grads`.
    fn backward(&mut self, engine: &E, params: &E::Buf, grads: &mut E::Buf, batch: usize);
    /// A training pass over the loaded batch: forward, loss with ∂L/∂logits and,
    /// when the loss is finite, backward into `grads` (`+=`); the batch's loss
    /// statistics go into `tally`. Afterwards only the last layer's output may be asked
    /// for. Returns whether the update may go ahead (the loss was finite); an engine
    /// that could only tell by waiting for the device returns true and has its update
    /// skip a non-finite batch on the device. By default the three passes above; a
    /// program may interleave them (the CPU's runs each tile pair's forward and
    /// backward passes back to back, while its values are in the cache).
    fn train_pass(
        &mut self,
        engine: &E,
        params: &E::Buf,
        grads: &mut E::Buf,
        batch: usize,
        class_weights: Option<&E::Buf>,
        tally: &mut E::Tally,
    ) -> bool {
        self.forward(engine, params, batch);
        let stats = self.loss(engine, batch, class_weights, true);
        let finite = stats.mean().is_finite();
        if finite {
            self.backward(engine, params, grads, batch);
        }
        engine.tally_add(tally, &stats, batch);
        finite
    }
    /// Layer `i`'s output (B, ...) of the last forward pass, as host values.
    fn output(&self, engine: &E, params: &E::Buf, i: usize, batch: usize) -> Vec<f32>;
    /// Start (and reset) or stop timing the program's parts.
    fn set_profiling(&mut self, _on: bool) {}
    /// Where the time went since profiling started, as a table (None: not profiling,
    /// or not supported by this program).
    fn profile_report(&self) -> Option<String> {
        None
    }
}

pub trait Engine: Sync + Sized + 'static {
    /// An owned f32 buffer in the engine's memory.
    type Buf: Send;
    type View<'a>: Copy
    where
        Self: 'a;
    type ViewMut<'a>
    where
        Self: 'a;
    /// A dataset split resident in the engine's memory (fitted u8 pixels and labels).
    type Examples: Send + Sync;
    /// Running training statistics ([`TrainStats`]) where the passes run.
    type Tally: Send;

    /// An empty tally.
    fn tally(&self) -> Self::Tally;
    /// A tally holding `stats` (an interrupted epoch's, when it resumes).
    fn tally_from(&self, stats: &TrainStats) -> Self::Tally;
    /// Count one batch's statistics, computed by the host, in a tally.
    fn tally_add(&self, tally: &mut Self::Tally, stats: &LossStats, batch: usize);
    /// What a tally holds (on a GPU, a read-back: only when printing).
    fn tally_read(&self, tally: &Self::Tally) -> TrainStats;

    /// E.g. `cpu (2 threads)`.
    fn describe(&self) -> String;

    /// Whether the engine can hold `chain` at batches of `batch` and a resident split of
    /// `examples`: an error naming what does not fit (on a GPU, a buffer larger than the
    /// device allows), checked before anything is allocated.
    fn check_fits(&self, _chain: &Chain, _batch: usize, _examples: usize) -> anyhow::Result<()> {
        Ok(())
    }

    /// The thread pool this engine's passes run on, if it has one. A loop of passes
    /// run inside it ([`crate::network::Network::on_workers`]) has the calling thread
    /// work as one of the pool's threads, instead of handing every pass to the pool
    /// and sleeping until it is done (two wake-ups per pass).
    fn workers(&self) -> Option<std::sync::Arc<rayon::ThreadPool>> {
        None
    }

    /// The network program this engine runs `chain` with (by default the
    /// per-layer [`Layerwise`] one).
    fn program(&self, chain: &Chain) -> Box<dyn Program<Self>> {
        Box::new(Layerwise::new(self, chain.clone()))
    }

    fn alloc(&self, len: usize) -> Self::Buf;
    fn len(buf: &Self::Buf) -> usize;
    fn view(buf: &Self::Buf, range: Range<usize>) -> Self::View<'_>;
    fn view_mut(buf: &mut Self::Buf, range: Range<usize>) -> Self::ViewMut<'_>;
    /// Two disjoint mutable views: `range` split at `range.start + mid`.
    fn split_view_mut(buf: &mut Self::Buf, range: Range<usize>, mid: usize) -> (Self::ViewMut<'_>, Self::ViewMut<'_>);
    fn upload(&self, dst: &mut Self::Buf, src: &[f32]);
    fn download(&self, src: Self::View<'_>) -> Vec<f32>;
    fn fill(&self, dst: Self::ViewMut<'_>, value: f32);

    /// Move a split into the engine, fitted to the network's input size.
    fn upload_examples(&self, images: &Images, labels: &[u8], input: &InputSpec) -> Self::Examples;
    /// Replace a resident split's images with `images` (the same count; the labels stay),
    /// reusing its memory where the engine can: each epoch's distorted training split.
    fn replace_images(&self, examples: &mut Self::Examples, images: &Images, input: &InputSpec) {
        let labels = Self::labels(examples).to_vec();
        *examples = self.upload_examples(images, &labels, input);
    }
    /// Whether this engine distorts training images itself when it gathers a batch
    /// ([`Self::set_distortions`]), for images of `rows` × `cols` fitted to `input`;
    /// otherwise each epoch's distorted images come from the host
    /// ([`Self::replace_images`]).
    fn distorts_on_device(&self, _input: &InputSpec, _rows: usize, _cols: usize) -> bool {
        false
    }
    /// Have the gathers from `examples` distort each image by this epoch's draws (one
    /// affine map per example, and the elastic field where there is one; `source`: the
    /// split's original images, as uploaded), or (None) not. Only where
    /// [`Self::distorts_on_device`] says so.
    fn set_distortions(&self, _examples: &mut Self::Examples, _source: &Images, _draws: Option<&DeviceDistortions>) {
        unreachable!("{} distorts its training images on the host", self.describe())
    }
    fn example_count(examples: &Self::Examples) -> usize;
    /// The labels of a resident split (kept on the host too: they are tiny).
    fn labels(examples: &Self::Examples) -> &[u8];
    /// x (B, 1, S, S) = the scaled images at `indices`; y (B) = their labels.
    fn gather(&self, examples: &Self::Examples, indices: &[u32], x: Self::ViewMut<'_>, y: Self::ViewMut<'_>);

    /// out (B, O, OH, OW) = conv(inp (B, C, H, W)) with weight (O, C, K, K) and bias (O).
    fn conv_forward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: Self::View<'_>,
        w: Self::View<'_>,
        b: Self::View<'_>,
        out: Self::ViewMut<'_>,
    );
    /// dw += ∂L/∂w, db += ∂L/∂b and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: Self::View<'_>,
        w: Self::View<'_>,
        dout: Self::View<'_>,
        dw: Self::ViewMut<'_>,
        db: Self::ViewMut<'_>,
        dinp: Option<Self::ViewMut<'_>>,
    );
    /// Planes (B·C) of H×W pooled to OH×OW.
    fn pool_forward(&self, g: &PoolGeom, planes: usize, inp: Self::View<'_>, out: Self::ViewMut<'_>);
    fn pool_backward(
        &self,
        g: &PoolGeom,
        planes: usize,
        inp: Self::View<'_>,
        dout: Self::View<'_>,
        dinp: Self::ViewMut<'_>,
    );
    fn activation_forward(&self, a: Activation, inp: Self::View<'_>, out: Self::ViewMut<'_>);
    fn activation_backward(
        &self,
        a: Activation,
        inp: Self::View<'_>,
        out: Self::View<'_>,
        dout: Self::View<'_>,
        dinp: Self::ViewMut<'_>,
    );
    fn copy(&self, src: Self::View<'_>, dst: Self::ViewMut<'_>);
    /// out (B, N) = inp (B, K) · wᵀ + b.
    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Self::View<'_>,
        w: Self::View<'_>,
        b: Self::View<'_>,
        out: Self::ViewMut<'_>,
    );
    #[allow(clippy::too_many_arguments)]
    fn linear_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Self::View<'_>,
        w: Self::View<'_>,
        dout: Self::View<'_>,
        dw: Self::ViewMut<'_>,
        db: Self::ViewMut<'_>,
        dinp: Self::ViewMut<'_>,
    );
    /// The mean loss of outputs (B, C) against labels y (B) under `criterion`;
    /// writes its gradient into `dlogits` when given.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: Self::View<'_>,
        y: Self::View<'_>,
        class_weights: Option<Self::View<'_>>,
        dlogits: Option<Self::ViewMut<'_>>,
    ) -> LossStats;
    /// `out (B, C, H/s, W/s) = coef[c] · Σ_block inp (B, C, H, W) + bias[c]`.
    fn subsample_forward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: Self::View<'_>,
        coef: Self::View<'_>,
        bias: Self::View<'_>,
        out: Self::ViewMut<'_>,
    );
    /// dcoef += ∂L/∂coef, dbias += ∂L/∂bias and, when given, dinp = ∂L/∂inp.
    #[allow(clippy::too_many_arguments)]
    fn subsample_backward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: Self::View<'_>,
        coef: Self::View<'_>,
        dout: Self::View<'_>,
        dcoef: Self::ViewMut<'_>,
        dbias: Self::ViewMut<'_>,
        dinp: Option<Self::ViewMut<'_>>,
    );
    /// out (B, N) = −Σ_j (inp (B, K) − centres (N, K))².
    fn rbf_forward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Self::View<'_>,
        centres: Self::View<'_>,
        out: Self::ViewMut<'_>,
    );
    #[allow(clippy::too_many_arguments)]
    fn rbf_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Self::View<'_>,
        centres: Self::View<'_>,
        dout: Self::View<'_>,
        dinp: Self::ViewMut<'_>,
    );
    /// dst ·= mask, elementwise (a masked convolution's left-out weights).
    fn mask(&self, dst: Self::ViewMut<'_>, mask: Self::View<'_>);
    /// Rescale gradients to a total L2 norm of at most `max_norm`.
    fn clip_grad_norm(&self, grads: Self::ViewMut<'_>, max_norm: f32);
    /// One update by `opt` at `lr`. An engine may keep the optimizer's state on its
    /// device from the first update on; [`Self::optimizer_state`] reads it back.
    fn optimizer_step(&self, opt: &mut Optimizer, params: Self::ViewMut<'_>, grads: Self::View<'_>, lr: f64);
    /// The optimizer's state as a checkpoint stores it, wherever it is kept.
    fn optimizer_state(&self, opt: &Optimizer) -> Vec<StateTensor> {
        opt.state_tensors()
    }

    /// A training batch's loss: ∂L/∂logits into `dlogits` and the batch's statistics
    /// counted in `tally`. Returns whether the loss was finite, or true where only the
    /// device knows (its updates then skip the batch there). By default, [`Self::loss`]
    /// and [`Self::tally_add`].
    #[allow(clippy::too_many_arguments)]
    fn loss_into_tally(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: Self::View<'_>,
        y: Self::View<'_>,
        class_weights: Option<Self::View<'_>>,
        dlogits: Self::ViewMut<'_>,
        tally: &mut Self::Tally,
    ) -> bool {
        let stats = self.loss(criterion, batch, classes, logits, y, class_weights, Some(dlogits));
        self.tally_add(tally, &stats, batch);
        stats.mean().is_finite()
    }
}

/// The portable program: one engine call per layer, every layer's output kept in
/// its own NCHW buffer.
pub struct Layerwise<E: Engine> {
    chain: Chain,
    /// acts[0] is the input batch; acts[i + 1] is layer i's output.
    acts: Vec<E::Buf>,
    /// dacts[i] is ∂L/∂acts[i] (dacts[0] unused: no gradient for the data).
    dacts: Vec<E::Buf>,
    labels: E::Buf,
    capacity: usize,
    /// Per op, its constants in the engine's memory (an RBF layer's centres).
    consts: Vec<Option<E::Buf>>,
}

impl<E: Engine> Layerwise<E> {
    pub fn new(engine: &E, chain: Chain) -> Self {
        let n = chain.ops.len() + 1;
        let consts = chain
            .ops
            .iter()
            .map(|op| match op {
                LayerOp::Rbf { centres, .. } => {
                    let mut buf = engine.alloc(centres.len());
                    engine.upload(&mut buf, centres);
                    Some(buf)
                }
                _ => None,
            })
            .collect();
        Layerwise {
            acts: (0..n).map(|_| engine.alloc(0)).collect(),
            dacts: (0..n).map(|_| engine.alloc(0)).collect(),
            labels: engine.alloc(0),
            capacity: 0,
            consts,
            chain,
        }
    }

    /// What the loss of a batch of `batch` reads and writes: the last layer's output, the
    /// labels, the class weights, and ∂L/∂(last output).
    #[allow(clippy::type_complexity)]
    fn loss_views<'a>(
        &'a mut self,
        batch: usize,
        class_weights: Option<&'a E::Buf>,
    ) -> (E::View<'a>, E::View<'a>, Option<E::View<'a>>, E::ViewMut<'a>) {
        let (last, classes) = (self.chain.ops.len(), self.chain.classes());
        (
            E::view(&self.acts[last], 0..batch * classes),
            E::view(&self.labels, 0..batch),
            class_weights.map(|w| E::view(w, 0..classes)),
            E::view_mut(&mut self.dacts[last], 0..batch * classes),
        )
    }

    /// Make room for batches of up to `batch` examples.
    fn reserve(&mut self, engine: &E, batch: usize) {
        if batch <= self.capacity {
            return;
        }
        let sizes = std::iter::once(self.chain.in_numel(0)).chain(self.chain.out_numel.iter().copied());
        for (i, numel) in sizes.enumerate() {
            self.acts[i] = engine.alloc(batch * numel);
            self.dacts[i] = engine.alloc(if i == 0 { 0 } else { batch * numel });
        }
        self.labels = engine.alloc(batch);
        self.capacity = batch;
    }
}

impl<E: Engine> Program<E> for Layerwise<E> {
    fn load_batch(&mut self, engine: &E, examples: &E::Examples, indices: &[u32]) {
        self.reserve(engine, indices.len());
        let n = indices.len();
        let x_len = n * self.chain.in_numel(0);
        engine.gather(examples, indices, E::view_mut(&mut self.acts[0], 0..x_len), E::view_mut(&mut self.labels, 0..n));
    }

    fn load_values(&mut self, engine: &E, x: &[f32], labels: &[u8]) {
        self.reserve(engine, labels.len());
        let mut padded = x.to_vec();
        padded.resize(E::len(&self.acts[0]), 0.0);
        engine.upload(&mut self.acts[0], &padded);
        let mut y: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        y.resize(self.capacity, 0.0);
        engine.upload(&mut self.labels, &y);
    }

    fn forward(&mut self, e: &E, params: &E::Buf, batch: usize) {
        let p = |r: &Range<usize>| E::view(params, r.clone());
        for (i, op) in self.chain.ops.iter().enumerate() {
            let consts = self.consts[i].as_ref();
            let (before, after) = self.acts.split_at_mut(i + 1);
            let in_len = batch * self.chain.in_numel(i);
            let out_len = batch * self.chain.out_numel[i];
            let (inp, out) = (E::view(&before[i], 0..in_len), E::view_mut(&mut after[0], 0..out_len));
            match op {
                LayerOp::Conv { g, w, b } => e.conv_forward(g, batch, inp, p(w), p(b), out),
                LayerOp::Pool { g, channels } => e.pool_forward(g, batch * channels, inp, out),
                LayerOp::Act(a) => e.activation_forward(*a, inp, out),
                LayerOp::Flatten => e.copy(inp, out),
                LayerOp::Linear { k, n, w, b } => e.linear_forward(batch, *k, *n, inp, p(w), p(b), out),
                LayerOp::Subsample { g, w, b } => e.subsample_forward(g, batch, inp, p(w), p(b), out),
                LayerOp::Rbf { k, n, .. } => {
                    let centres = E::view(consts.expect("an RBF op has its centres uploaded"), 0..k * n);
                    e.rbf_forward(batch, *k, *n, inp, centres, out)
                }
            }
        }
    }

    fn train_pass(
        &mut self,
        e: &E,
        params: &E::Buf,
        grads: &mut E::Buf,
        batch: usize,
        class_weights: Option<&E::Buf>,
        tally: &mut E::Tally,
    ) -> bool {
        self.forward(e, params, batch);
        let (criterion, classes) = (self.chain.criterion, self.chain.classes());
        let (logits, y, class_weights, d) = self.loss_views(batch, class_weights);
        let finite = e.loss_into_tally(criterion, batch, classes, logits, y, class_weights, d, tally);
        if finite {
            self.backward(e, params, grads, batch);
        }
        finite
    }

    fn loss(&mut self, e: &E, batch: usize, class_weights: Option<&E::Buf>, grad: bool) -> LossStats {
        let (criterion, classes) = (self.chain.criterion, self.chain.classes());
        let (logits, y, class_weights, d) = self.loss_views(batch, class_weights);
        e.loss(criterion, batch, classes, logits, y, class_weights, grad.then_some(d))
    }

    fn backward(&mut self, e: &E, params: &E::Buf, grads: &mut E::Buf, batch: usize) {
        let p = |r: &Range<usize>| E::view(params, r.clone());
        for (i, op) in self.chain.ops.iter().enumerate().rev() {
            let in_len = batch * self.chain.in_numel(i);
            let out_len = batch * self.chain.out_numel[i];
            let inp = E::view(&self.acts[i], 0..in_len);
            let (d_before, d_after) = self.dacts.split_at_mut(i + 1);
            let dout = E::view(&d_after[0], 0..out_len);
            // The first layer's input is the data: no gradient needed.
            let dinp = (i > 0).then(|| E::view_mut(&mut d_before[i], 0..in_len));
            match op {
                LayerOp::Conv { g, w, b } => {
                    let (dw, db) = split_pair::<E>(grads, w, b);
                    e.conv_backward(g, batch, inp, p(w), dout, dw, db, dinp);
                }
                LayerOp::Linear { k, n, w, b } => {
                    let (dw, db) = split_pair::<E>(grads, w, b);
                    let dinp = dinp.expect("a linear layer is never first");
                    e.linear_backward(batch, *k, *n, inp, p(w), dout, dw, db, dinp);
                }
                LayerOp::Pool { g, channels } => {
                    if let Some(dinp) = dinp {
                        e.pool_backward(g, batch * channels, inp, dout, dinp);
                    }
                }
                LayerOp::Act(a) => {
                    if let Some(dinp) = dinp {
                        let out = E::view(&self.acts[i + 1], 0..out_len);
                        e.activation_backward(*a, inp, out, dout, dinp);
                    }
                }
                LayerOp::Flatten => {
                    if let Some(dinp) = dinp {
                        e.copy(dout, dinp);
                    }
                }
                LayerOp::Subsample { g, w, b } => {
                    let (dw, db) = split_pair::<E>(grads, w, b);
                    e.subsample_backward(g, batch, inp, p(w), dout, dw, db, dinp);
                }
                LayerOp::Rbf { k, n, .. } => {
                    if let Some(dinp) = dinp {
                        let centres = E::view(self.consts[i].as_ref().expect("RBF centres"), 0..k * n);
                        e.rbf_backward(batch, *k, *n, inp, centres, dout, dinp);
                    }
                }
            }
        }
    }

    fn output(&self, e: &E, _params: &E::Buf, i: usize, batch: usize) -> Vec<f32> {
        e.download(E::view(&self.acts[i + 1], 0..batch * self.chain.out_numel[i]))
    }
}

/// Mutable views of a weight range and the bias range right after it.
pub fn split_pair<'a, E: Engine>(
    buf: &'a mut E::Buf,
    w: &Range<usize>,
    b: &Range<usize>,
) -> (E::ViewMut<'a>, E::ViewMut<'a>) {
    assert_eq!(w.end, b.start, "a layer's bias follows its weight");
    E::split_view_mut(buf, w.start..b.end, w.end - w.start)
}
