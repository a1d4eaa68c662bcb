//! The numerical core: each layer is a `*_forward` / `*_backward` pair written
//! out explicitly in the style of llm.c, with the tensor shapes in comments.
//! Tensors are NCHW, row-major. Backward functions overwrite the input gradient
//! and accumulate (`+=`) into parameter gradients.
//!
//! Every function is generic over the float type, so the engine runs them in
//! f32 while the tests check them in f64 against finite differences.
//!
//! Parallelism is over the batch, in a fixed number of chunks ([`Par`]); partial
//! parameter gradients are summed in chunk order, so the same thread count always
//! gives bit-identical results.

pub mod activation;
pub mod conv;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod pool;

use num_traits::Float;

/// The float types the layers run in (f32 in training, f64 in gradient checks).
pub trait Real:
    Float + Send + Sync + Default + std::iter::Sum + std::ops::AddAssign + std::fmt::Debug + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}

/// How a batch is split for parallel work: into `chunks` contiguous pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Par {
    pub chunks: usize,
}

impl Par {
    pub const SERIAL: Par = Par { chunks: 1 };

    pub fn new(chunks: usize) -> Self {
        Par { chunks: chunks.max(1) }
    }

    /// Examples per chunk for a batch of `batch`.
    pub fn chunk_len(self, batch: usize) -> usize {
        batch.div_ceil(self.chunks).max(1)
    }
}

/// Sum per-chunk partial gradients into `dst` (`+=`), in chunk order.
pub(crate) fn add_partials<T: Real>(dst: &mut [T], partials: &[Vec<T>]) {
    for p in partials {
        for (d, &v) in dst.iter_mut().zip(p) {
            *d += v;
        }
    }
}
