//! The CPU engine: the layers of [`crate::layers`] in f32 on a rayon pool, the
//! batch split into one chunk per thread. Networks run as the fused
//! [`super::tiled::Tiled`] program; [`CpuEngine::layerwise`] gives the per-layer
//! one instead (the tests compare the two).

use std::ops::Range;

use rayon::prelude::*;

use super::tiled::Tiled;
use super::{Chain, Engine, Program, TrainStats};
use crate::data::Images;
use crate::input::{fit_images, pixel_affine};
use crate::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use crate::layers::loss::{batch_loss, LossStats};
use crate::layers::pool::{pool_backward, pool_forward, PoolGeom};
use crate::layers::subsample::{subsample_backward, subsample_forward, SubsampleGeom};
use crate::layers::{activation, linear, rbf, Par};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::spec::{Activation, Criterion, InputSpec};

/// The CPU engine: a network's layers fused into one parallel pass over tiles of 16
/// examples, on its own pool of threads (rayon), with the kernels compiled for the CPU's
/// vector instructions (AVX-512, AVX2 or baseline, chosen at run time). The same thread
/// count gives the same bits, run after run.
pub struct CpuEngine {
    pub(crate) pool: std::sync::Arc<rayon::ThreadPool>,
    threads: usize,
    fused: bool,
}

/// A split in memory: fitted u8 pixels, labels, and the pixel scaling.
pub struct CpuExamples {
    pub(crate) images: Images,
    pub(crate) labels: Vec<u8>,
    pub(crate) scale: f32,
    pub(crate) shift: f32,
}

impl CpuEngine {
    /// An engine on `threads` threads (0: all cores).
    pub fn new(threads: usize) -> anyhow::Result<Self> {
        let threads = Self::resolve_threads(threads);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        Ok(Self { pool: std::sync::Arc::new(pool), threads, fused: true })
    }

    /// The threads `threads` asks for: itself, or (0) one per core.
    pub fn resolve_threads(threads: usize) -> usize {
        if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        }
    }

    /// This engine running networks layer by layer instead of fused: the reference the
    /// fused program is tested against (slower; the same results to rounding).
    pub fn layerwise(mut self) -> Self {
        self.fused = false;
        self
    }

    /// The threads it runs on.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn par(&self) -> Par {
        Par::new(self.threads)
    }
}

impl Engine for CpuEngine {
    fn workers(&self) -> Option<std::sync::Arc<rayon::ThreadPool>> {
        Some(self.pool.clone())
    }
    type Buf = Vec<f32>;
    type View<'a> = &'a [f32];
    type ViewMut<'a> = &'a mut [f32];
    type Examples = CpuExamples;
    type Tally = TrainStats;

    fn tally(&self) -> TrainStats {
        TrainStats::default()
    }
    fn tally_from(&self, stats: &TrainStats) -> TrainStats {
        *stats
    }
    fn tally_add(&self, tally: &mut TrainStats, stats: &LossStats, batch: usize) {
        tally.add(stats, batch);
    }
    fn tally_read(&self, tally: &TrainStats) -> TrainStats {
        *tally
    }

    fn describe(&self) -> String {
        format!("cpu ({} thread{})", self.threads, if self.threads == 1 { "" } else { "s" })
    }

    fn program(&self, chain: &Chain) -> Box<dyn Program<Self>> {
        // LeNet-5's own layers have no tile kernels: its networks run example by example.
        if self.fused && Tiled::supports(chain) {
            Box::new(Tiled::new(chain, self.threads))
        } else if self.fused {
            Box::new(super::single::Single::new(chain))
        } else {
            Box::new(super::Layerwise::new(self, chain.clone()))
        }
    }

    fn alloc(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn view(buf: &Vec<f32>, range: Range<usize>) -> &[f32] {
        &buf[range]
    }
    fn view_mut(buf: &mut Vec<f32>, range: Range<usize>) -> &mut [f32] {
        &mut buf[range]
    }
    fn split_view_mut(buf: &mut Vec<f32>, range: Range<usize>, mid: usize) -> (&mut [f32], &mut [f32]) {
        buf[range].split_at_mut(mid)
    }
    fn upload(&self, dst: &mut Vec<f32>, src: &[f32]) {
        dst.clear();
        dst.extend_from_slice(src);
    }
    fn download(&self, src: &[f32]) -> Vec<f32> {
        src.to_vec()
    }
    fn fill(&self, dst: &mut [f32], value: f32) {
        dst.fill(value);
    }

    fn upload_examples(&self, images: &Images, labels: &[u8], input: &InputSpec) -> CpuExamples {
        let (scale, shift) = pixel_affine(input.normalize);
        CpuExamples { images: fit_images(images, input), labels: labels.to_vec(), scale, shift }
    }
    fn replace_images(&self, examples: &mut CpuExamples, images: &Images, input: &InputSpec) {
        let resident = &mut examples.images;
        if (images.count, images.rows, images.cols) == (resident.count, resident.rows, resident.cols) {
            // Already the input's size: a copy into memory that is already mapped.
            resident.pixels.copy_from_slice(&images.pixels);
        } else {
            *resident = fit_images(images, input);
        }
    }
    fn example_count(examples: &CpuExamples) -> usize {
        examples.labels.len()
    }
    fn labels(examples: &CpuExamples) -> &[u8] {
        &examples.labels
    }
    fn gather(&self, ex: &CpuExamples, indices: &[u32], x: &mut [f32], y: &mut [f32]) {
        let n = ex.images.pixels_per_image();
        self.pool.install(|| {
            x[..indices.len() * n].par_chunks_mut(n).zip(indices.par_iter()).for_each(|(dst, &i)| {
                for (d, &p) in dst.iter_mut().zip(ex.images.image(i as usize)) {
                    *d = p as f32 * ex.scale + ex.shift;
                }
            });
        });
        for (d, &i) in y.iter_mut().zip(indices) {
            *d = ex.labels[i as usize] as f32;
        }
    }

    fn conv_forward(&self, g: &ConvGeom, batch: usize, inp: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
        self.pool.install(|| conv2d_forward(out, inp, w, b, g, batch, self.par()));
    }
    fn conv_backward(
        &self,
        g: &ConvGeom,
        batch: usize,
        inp: &[f32],
        w: &[f32],
        dout: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dinp: Option<&mut [f32]>,
    ) {
        self.pool.install(|| conv2d_backward(dinp, dw, db, dout, inp, w, g, batch, self.par()));
    }
    fn pool_forward(&self, g: &PoolGeom, planes: usize, inp: &[f32], out: &mut [f32]) {
        let (il, ol) = (planes * g.h * g.w, planes * g.oh() * g.ow());
        self.pool.install(|| pool_forward(&mut out[..ol], &inp[..il], g));
    }
    fn pool_backward(&self, g: &PoolGeom, planes: usize, inp: &[f32], dout: &[f32], dinp: &mut [f32]) {
        let (il, ol) = (planes * g.h * g.w, planes * g.oh() * g.ow());
        self.pool.install(|| pool_backward(&mut dinp[..il], &inp[..il], &dout[..ol], g));
    }
    fn activation_forward(&self, a: Activation, inp: &[f32], out: &mut [f32]) {
        self.pool.install(|| activation::activation_forward(out, inp, a));
    }
    fn activation_backward(&self, a: Activation, inp: &[f32], out: &[f32], dout: &[f32], dinp: &mut [f32]) {
        self.pool.install(|| activation::activation_backward(dinp, inp, out, dout, a));
    }
    fn copy(&self, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn linear_forward(&self, batch: usize, k: usize, n: usize, inp: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
        self.pool.install(|| linear::linear_forward(out, inp, w, b, batch, k, n, self.par()));
    }
    fn linear_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: &[f32],
        w: &[f32],
        dout: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dinp: &mut [f32],
    ) {
        self.pool.install(|| linear::linear_backward(dinp, dw, db, dout, inp, w, batch, k, n, self.par()));
    }
    fn loss(
        &self,
        criterion: Criterion,
        batch: usize,
        classes: usize,
        logits: &[f32],
        y: &[f32],
        class_weights: Option<&[f32]>,
        dlogits: Option<&mut [f32]>,
    ) -> LossStats {
        let labels: Vec<u8> = y[..batch].iter().map(|&v| v as u8).collect();
        let dlogits = dlogits.map(|d| &mut d[..batch * classes]);
        batch_loss(criterion, dlogits, &logits[..batch * classes], &labels, class_weights, classes)
    }
    fn subsample_forward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: &[f32],
        coef: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        subsample_forward(out, inp, coef, bias, g, batch);
    }
    fn subsample_backward(
        &self,
        g: &SubsampleGeom,
        batch: usize,
        inp: &[f32],
        coef: &[f32],
        dout: &[f32],
        dcoef: &mut [f32],
        dbias: &mut [f32],
        dinp: Option<&mut [f32]>,
    ) {
        subsample_backward(dinp, dcoef, dbias, dout, inp, coef, g, batch);
    }
    fn rbf_forward(&self, batch: usize, k: usize, n: usize, inp: &[f32], centres: &[f32], out: &mut [f32]) {
        rbf::rbf_forward(out, inp, centres, batch, k, n);
    }
    fn rbf_backward(
        &self,
        batch: usize,
        k: usize,
        n: usize,
        inp: &[f32],
        centres: &[f32],
        dout: &[f32],
        dinp: &mut [f32],
    ) {
        rbf::rbf_backward(dinp, inp, centres, dout, batch, k, n);
    }
    fn mask(&self, dst: &mut [f32], mask: &[f32]) {
        for (d, &m) in dst.iter_mut().zip(mask) {
            *d *= m;
        }
    }
    fn clip_grad_norm(&self, grads: &mut [f32], max_norm: f32) {
        clip_grad_norm(grads, max_norm);
    }
    fn optimizer_step(&self, opt: &mut Optimizer, params: &mut [f32], grads: &[f32], lr: f64) {
        opt.step(params, grads, lr);
    }
}
