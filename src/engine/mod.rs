//! The engine boundary: where tensors live and where the kernels run. Layers
//! call the engine, so the same network runs on any engine. Buffers are owned
//! by the engine (`Buf`) and passed as views; no host slice crosses the boundary
//! inside a training step, apart from the batch's example indices. The CPU
//! engine is [`cpu::CpuEngine`]; a GPU engine implements the same trait.

pub mod cpu;

use std::ops::Range;

use crate::data::Images;
use crate::layers::conv::ConvGeom;
use crate::layers::loss::LossStats;
use crate::layers::pool::PoolGeom;
use crate::optim::Optimizer;
use crate::spec::{Activation, InputSpec};

pub trait Engine: Sync {
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

    /// E.g. `cpu (2 threads)`.
    fn describe(&self) -> String;

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
    /// Mean softmax cross-entropy of logits (B, C) against labels y (B); writes
    /// its gradient into `dlogits` when given.
    fn softmax_xent(
        &self,
        batch: usize,
        classes: usize,
        logits: Self::View<'_>,
        y: Self::View<'_>,
        class_weights: Option<Self::View<'_>>,
        dlogits: Option<Self::ViewMut<'_>>,
    ) -> LossStats;
    /// Rescale gradients to a total L2 norm of at most `max_norm`; returns the norm before.
    fn clip_grad_norm(&self, grads: Self::ViewMut<'_>, max_norm: f32) -> f32;
    fn optimizer_step(&self, opt: &mut Optimizer, params: Self::ViewMut<'_>, grads: Self::View<'_>, lr: f64);
}
