//! The GPU engine: the [`Engine`] boundary over [`Kernels`]. Networks run as the
//! per-layer [`crate::engine::Layerwise`] program, every layer one or a few dispatches;
//! the training statistics, the finite-loss check, clipping and the optimizer's update
//! and state all stay on the device, and the dispatches of many steps go to the GPU in
//! one submission. The host waits only where it reads: a curve point's statistics, an
//! evaluation's logits, a checkpoint's parameters.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::device::Gpu;
use super::kernels::{GpuBuf, GpuExamples, Kernels, Slice, CLIP_CHUNK};
use crate::data::augment::DeviceDistortions;
use crate::data::Images;
use crate::engine::{Chain, Engine, TrainStats};
use crate::layers::conv::ConvGeom;
use crate::layers::loss::LossStats;
use crate::layers::pool::PoolGeom;
use crate::layers::subsample::SubsampleGeom;
use crate::optim::{Optimizer, StateTensor};
use crate::spec::{Activation, Criterion, InputSpec};

/// Engine ids, so that an optimizer knows whose device holds its state.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct GpuEngine {
    kernels: Arc<Kernels>,
    id: u64,
    /// The last loss's [Σ w_y, Σ w_y·E, correct, finite] (loss.wgsl); the updates read
    /// `finite`. Starts as a finite empty batch, so that an update without a loss runs.
    stats: GpuBuf,
    /// Two values per example for the loss kernels; grown as batches need.
    per_example: Mutex<GpuBuf>,
    /// The partial sums of gradient clipping; grown as needed.
    partial: Mutex<GpuBuf>,
    /// The optimizer's state on the device (`buf1`, `buf2` of [`Optimizer::buffers`]).
    optim: Mutex<Option<(GpuBuf, GpuBuf)>>,
}

/// Running training statistics on the device (loss.wgsl's `running`), and the examples
/// counted, which the host knows without asking.
pub struct GpuTally {
    running: wgpu::Buffer,
    examples: usize,
}

impl GpuEngine {
    /// An engine on `gpu`, its shaders compiled.
    pub fn new(gpu: Gpu) -> anyhow::Result<GpuEngine> {
        Ok(GpuEngine::on(Arc::new(Kernels::new(gpu)?)))
    }

    /// Another engine on the same compiled kernels (and device).
    pub fn on(kernels: Arc<Kernels>) -> GpuEngine {
        let stats = kernels.upload(&[1.0, 0.0, 0.0, 1.0]);
        GpuEngine {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            per_example: Mutex::new(kernels.zeros(0)),
            partial: Mutex::new(kernels.zeros(0)),
            optim: Mutex::new(None),
            stats,
            kernels,
        }
    }

    pub fn kernels(&self) -> &Arc<Kernels> {
        &self.kernels
    }

    /// A scratch buffer of at least `len` values, grown when it is smaller (the old one
    /// lives on while recorded dispatches use it).
    fn scratch<'a>(&self, cell: &'a Mutex<GpuBuf>, len: usize) -> std::sync::MutexGuard<'a, GpuBuf> {
        let mut buf = cell.lock().expect("the scratch lock");
        if buf.len < len {
            *buf = self.kernels.zeros(len.next_power_of_two());
        }
        buf
    }

    /// The loss kernels into `self.stats` (and ∂L/∂logits into `dz`), with the scratch
    /// they need.
    #[allow(clippy::too_many_arguments)]
    fn loss_on_device(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: Slice,
        y: Slice,
        class_weights: Option<Slice>,
        dz: Slice,
    ) {
        let scratch = self.scratch(&self.per_example, 2 * batch);
        self.kernels.loss(criterion, batch, classes, logits, y, class_weights, dz, &scratch, &self.stats);
    }

    fn zeros_words(&self, words: usize) -> wgpu::Buffer {
        self.kernels.zeros(words).buffer
    }
}

impl Engine for GpuEngine {
    type Buf = GpuBuf;
    type View<'a> = Slice<'a>;
    type ViewMut<'a> = Slice<'a>;
    type Examples = GpuExamples;
    type Tally = GpuTally;

    fn tally(&self) -> GpuTally {
        GpuTally { running: self.zeros_words(6), examples: 0 }
    }
    fn tally_from(&self, stats: &TrainStats) -> GpuTally {
        // loss.wgsl's layout: Kahan sum and its compensation (restarted at 0, so a
        // resumed epoch's mean loss may differ from an uninterrupted one's in its last
        // f32 bits; the weights do not), correct, batches, first non-finite batch, its loss.
        let (bad_batch, bad_loss) = stats.first_nonfinite.unwrap_or((0, 0.0));
        let words = [
            (stats.loss_sum as f32).to_bits(),
            0,
            stats.correct as u32,
            stats.batches as u32,
            bad_batch as u32,
            (bad_loss as f32).to_bits(),
        ];
        let values: Vec<f32> = words.iter().map(|w| f32::from_bits(*w)).collect();
        GpuTally { running: self.kernels.upload(&values).buffer, examples: stats.examples }
    }
    fn tally_add(&self, tally: &mut GpuTally, stats: &LossStats, batch: usize) {
        let finite = if stats.mean().is_finite() { 1.0 } else { 0.0 };
        let s = [stats.weight_sum as f32, stats.weighted_loss_sum as f32, stats.correct as f32, finite];
        self.kernels.tally(batch, &self.kernels.upload(&s), &tally.running);
        tally.examples += batch;
    }
    fn tally_read(&self, tally: &GpuTally) -> TrainStats {
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&self.kernels.read_words(&tally.running, 0, 6));
        let f = |w: u32| f32::from_bits(w) as f64;
        TrainStats {
            // The Kahan sum less its compensation.
            loss_sum: f(words[0]) - f(words[1]),
            correct: words[2] as usize,
            examples: tally.examples,
            batches: words[3] as usize,
            first_nonfinite: (words[4] != 0).then(|| (words[4] as usize, f(words[5]))),
        }
    }

    fn describe(&self) -> String {
        self.kernels.gpu().adapter.describe()
    }
    fn check_fits(&self, chain: &Chain, batch: usize, examples: usize) -> anyhow::Result<()> {
        let limits = self.kernels.gpu().device.limits();
        let most = limits.max_buffer_size.min(limits.max_storage_buffer_binding_size);
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let adapter = self.describe();
        // The resident split is kept as bytes; each layer's batch of outputs as f32s.
        let split = (examples * chain.in_numel(0)).next_multiple_of(4) as u64;
        if split > most {
            anyhow::bail!(
                "a split of {examples} examples needs a buffer of {:.0} MiB on the GPU; {adapter} allows at most \
                 {:.0} MiB per buffer: use fewer examples (--augment-copies) or --device cpu",
                mib(split),
                mib(most)
            );
        }
        for i in 0..=chain.ops.len() {
            let bytes = (batch * chain.in_numel(i) * 4) as u64;
            if bytes > most {
                anyhow::bail!(
                    "a batch of {batch} needs a buffer of {:.0} MiB on the GPU (layer {i}'s input); {adapter} allows \
                     at most {:.0} MiB per buffer: use a smaller --batch or --device cpu",
                    mib(bytes),
                    mib(most)
                );
            }
        }
        Ok(())
    }

    fn alloc(&self, len: usize) -> GpuBuf {
        self.kernels.zeros(len)
    }
    fn len(buf: &GpuBuf) -> usize {
        buf.len
    }
    fn view(buf: &GpuBuf, range: Range<usize>) -> Slice<'_> {
        assert!(range.end <= buf.len, "view {range:?} of a buffer of {}", buf.len);
        Slice { buf, at: range.start, len: range.len() }
    }
    fn view_mut(buf: &mut GpuBuf, range: Range<usize>) -> Slice<'_> {
        Self::view(buf, range)
    }
    fn split_view_mut(buf: &mut GpuBuf, range: Range<usize>, mid: usize) -> (Slice<'_>, Slice<'_>) {
        assert!(mid <= range.len(), "split at {mid} of {range:?}");
        let buf = &*buf;
        (Self::view(buf, range.start..range.start + mid), Self::view(buf, range.start + mid..range.end))
    }
    fn upload(&self, dst: &mut GpuBuf, src: &[f32]) {
        if src.len() * 4 <= dst.buffer.size() as usize {
            self.kernels.write(dst, 0, src);
            dst.len = src.len();
        } else {
            *dst = self.kernels.upload(src);
        }
    }
    fn download(&self, src: Slice<'_>) -> Vec<f32> {
        self.kernels.read(src)
    }
    fn fill(&self, dst: Slice<'_>, value: f32) {
        self.kernels.fill(dst, value);
    }

    fn upload_examples(&self, images: &Images, labels: &[u8], input: &InputSpec) -> GpuExamples {
        self.kernels.upload_examples(images, labels, input)
    }
    fn replace_images(&self, examples: &mut GpuExamples, images: &Images, input: &InputSpec) {
        self.kernels.replace_images(examples, images, input);
    }
    fn distorts_on_device(&self, input: &InputSpec, rows: usize, cols: usize) -> bool {
        (rows, cols) == (input.size, input.size) || input.fit == crate::spec::Fit::Pad
    }
    fn set_distortions(&self, examples: &mut GpuExamples, source: &Images, draws: Option<&DeviceDistortions>) {
        self.kernels.set_distortions(examples, source, draws);
    }
    fn example_count(examples: &GpuExamples) -> usize {
        examples.host_labels.len()
    }
    fn labels(examples: &GpuExamples) -> &[u8] {
        &examples.host_labels
    }
    fn gather(&self, examples: &GpuExamples, indices: &[u32], x: Slice<'_>, y: Slice<'_>) {
        self.kernels.gather_indices(examples, indices, x, y);
    }

    fn conv_forward(&self, g: &ConvGeom, batch: usize, inp: Slice, w: Slice, b: Slice, out: Slice) {
        self.kernels.conv_forward(g, batch, inp, w, b, out);
    }
    fn conv_backward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: Slice,
        w: Slice,
        dout: Slice,
        dw: Slice,
        db: Slice,
        dinp: Option<Slice>,
    ) {
        self.kernels.conv_backward(g, batch, inp, w, dout, dw, db, dinp);
    }
    fn pool_forward(&self, g: &PoolGeom, planes: usize, inp: Slice, out: Slice) {
        self.kernels.pool_forward(g, planes, inp, out);
    }
    fn pool_backward(&self, g: &PoolGeom, planes: usize, inp: Slice, dout: Slice, dinp: Slice) {
        self.kernels.pool_backward(g, planes, inp, dout, dinp);
    }
    fn activation_forward(&self, a: Activation, inp: Slice, out: Slice) {
        self.kernels.activation_forward(a, inp.len, inp, out);
    }
    fn activation_backward(&self, a: Activation, inp: Slice, _out: Slice, dout: Slice, dinp: Slice) {
        self.kernels.activation_backward(a, inp.len, inp, dout, dinp);
    }
    fn copy(&self, src: Slice, dst: Slice) {
        self.kernels.copy(src, dst);
    }
    fn linear_forward(&self, batch: usize, k: usize, n: usize, inp: Slice, w: Slice, b: Slice, out: Slice) {
        self.kernels.linear_forward(batch, k, n, inp, w, b, out);
    }
    fn linear_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: Slice,
        w: Slice,
        dout: Slice,
        dw: Slice,
        db: Slice,
        dinp: Slice,
    ) {
        self.kernels.linear_backward(batch, k, n, inp, w, dout, dw, db, dinp);
    }

    /// Read back: for evaluation and the tests, not for training steps.
    fn loss(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: Slice,
        y: Slice,
        class_weights: Option<Slice>,
        dlogits: Option<Slice>,
    ) -> LossStats {
        let unused;
        let dz = match dlogits {
            Some(d) => d,
            None => {
                unused = self.kernels.zeros(batch * classes);
                unused.all()
            }
        };
        self.loss_on_device(criterion, batch, classes, logits, y, class_weights, dz);
        let s = self.kernels.download(&self.stats);
        LossStats { weight_sum: s[0] as f64, weighted_loss_sum: s[1] as f64, correct: s[2] as usize }
    }

    /// On the device: nothing is read back, and the update reads whether the loss was
    /// finite there.
    fn loss_into_tally(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: Slice,
        y: Slice,
        class_weights: Option<Slice>,
        dlogits: Slice,
        tally: &mut GpuTally,
    ) -> bool {
        self.loss_on_device(criterion, batch, classes, logits, y, class_weights, dlogits);
        self.kernels.tally(batch, &self.stats, &tally.running);
        tally.examples += batch;
        true
    }

    fn subsample_forward(&self, g: &SubsampleGeom, batch: usize, inp: Slice, coef: Slice, bias: Slice, out: Slice) {
        self.kernels.subsample_forward(g, batch, inp, coef, bias, out);
    }
    fn subsample_backward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: Slice,
        coef: Slice,
        dout: Slice,
        dcoef: Slice,
        dbias: Slice,
        dinp: Option<Slice>,
    ) {
        self.kernels.subsample_backward(g, batch, inp, coef, dout, dcoef, dbias, dinp);
    }
    fn rbf_forward(&self, batch: usize, k: usize, n: usize, inp: Slice, centres: Slice, out: Slice) {
        self.kernels.rbf_forward(batch, k, n, inp, centres, out);
    }
    fn rbf_backward(&self, batch: usize, k: usize, n: usize, inp: Slice, centres: Slice, dout: Slice, dinp: Slice) {
        self.kernels.rbf_backward(batch, k, n, inp, centres, dout, dinp);
    }
    fn mask(&self, dst: Slice, mask: Slice) {
        self.kernels.mask(dst, Slice { len: dst.len, ..mask });
    }
    fn clip_grad_norm(&self, grads: Slice, max_norm: f32) {
        let partial = self.scratch(&self.partial, grads.len.div_ceil(CLIP_CHUNK) + 1);
        self.kernels.clip_grad_norm(grads, max_norm, &partial);
    }

    fn optimizer_step(&self, opt: &mut Optimizer, params: Slice, grads: Slice, lr: f64) {
        let mut state = self.optim.lock().expect("the optimizer state lock");
        if opt.held_by != Some(self.id) || state.is_none() {
            // The host's state is the current one (fresh, loaded from a checkpoint, or
            // SDLM's new curvature): move it here.
            let (buf1, buf2) = opt.buffers();
            *state = Some((self.kernels.upload(buf1), self.kernels.upload(buf2)));
            opt.held_by = Some(self.id);
        }
        let (m, v) = state.as_ref().expect("the state was just uploaded");
        let u = opt.advance(lr);
        self.kernels.update(u.entry, u.flags, u.scalars, params, grads, m, v, &self.stats);
    }

    fn optimizer_state(&self, opt: &Optimizer) -> Vec<StateTensor> {
        let state = self.optim.lock().expect("the optimizer state lock");
        match (opt.held_by == Some(self.id), state.as_ref()) {
            (true, Some((m, v))) => {
                let (buf1, buf2) = opt.buffers();
                let m = if buf1.is_empty() { Vec::new() } else { self.kernels.download(m) };
                let v = if buf2.is_empty() { Vec::new() } else { self.kernels.download(v) };
                opt.state_tensors_with(&m, &v)
            }
            _ => opt.state_tensors(),
        }
    }
}
