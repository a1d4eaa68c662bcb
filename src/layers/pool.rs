//! 2-D average and max pooling (no padding, floor mode, as PyTorch's defaults).

use rayon::prelude::*;

use super::Real;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Avg,
    Max,
}

/// Pooling geometry over planes of `h`×`w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub kind: PoolKind,
    pub h: usize,
    pub w: usize,
    pub size: usize,
    pub stride: usize,
}

impl PoolGeom {
    pub fn oh(&self) -> usize {
        (self.h - self.size) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w - self.size) / self.stride + 1
    }
}

/// out (P, OH, OW) = pool(inp (P, H, W)), where P = batch × channels planes.
pub fn pool_forward<T: Real>(out: &mut [T], inp: &[T], g: &PoolGeom) {
    let (oh, ow, k, s) = (g.oh(), g.ow(), g.size, g.stride);
    let scale = T::one() / T::from(k * k).unwrap();
    out.par_chunks_mut(oh * ow).zip(inp.par_chunks(g.h * g.w)).for_each(|(o, x)| {
        for i in 0..oh {
            for j in 0..ow {
                let window = (0..k).flat_map(|di| (0..k).map(move |dj| (i * s + di) * g.w + j * s + dj));
                o[i * ow + j] = match g.kind {
                    PoolKind::Avg => window.map(|p| x[p]).sum::<T>() * scale,
                    PoolKind::Max => window.map(|p| x[p]).fold(T::neg_infinity(), T::max),
                };
            }
        }
    });
}

/// Index (within the plane) of the first maximum of window (i, j).
fn argmax<T: Real>(x: &[T], g: &PoolGeom, i: usize, j: usize) -> usize {
    let mut best = (i * g.stride) * g.w + j * g.stride;
    for di in 0..g.size {
        for dj in 0..g.size {
            let p = (i * g.stride + di) * g.w + j * g.stride + dj;
            if x[p] > x[best] {
                best = p;
            }
        }
    }
    best
}

/// dinp (P, H, W) from dout (P, OH, OW): average spreads the gradient evenly
/// over the window; max routes it to the window's (first) maximum.
pub fn pool_backward<T: Real>(dinp: &mut [T], inp: &[T], dout: &[T], g: &PoolGeom) {
    let (oh, ow, k, s) = (g.oh(), g.ow(), g.size, g.stride);
    let scale = T::one() / T::from(k * k).unwrap();
    dinp.par_chunks_mut(g.h * g.w).zip(inp.par_chunks(g.h * g.w)).zip(dout.par_chunks(oh * ow)).for_each(
        |((dx, x), dy)| {
            dx.fill(T::zero());
            for i in 0..oh {
                for j in 0..ow {
                    let d = dy[i * ow + j];
                    match g.kind {
                        PoolKind::Avg => {
                            for di in 0..k {
                                for dj in 0..k {
                                    dx[(i * s + di) * g.w + j * s + dj] += d * scale;
                                }
                            }
                        }
                        PoolKind::Max => dx[argmax(x, g, i, j)] += d,
                    }
                }
            }
        },
    );
}
