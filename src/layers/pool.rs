//! 2-D average and max pooling (no padding, floor mode, as PyTorch's defaults),
//! on tiles: every window is a few lane-wise vector operations.

use num_traits::{NumCast, One, Zero};
use rayon::prelude::*;

use super::activation;
use super::tiles::{count, from_tiles, to_tiles, Aligned};
use super::{with_lanes, Lanes, Real, L};
use crate::spec::Activation;

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

/// out (C, OH, OW, L) = pool(inp (C, H, W, L)) for one tile of `planes` = C planes.
#[inline(always)]
pub(crate) fn forward_tile<V: Lanes>(out: &mut [V::T], inp: &[V::T], g: &PoolGeom, planes: usize) {
    let (oh, ow, k, s, h, w) = (g.oh(), g.ow(), g.size, g.stride, g.h, g.w);
    let scale = V::splat(V::T::one() / <V::T as NumCast>::from(k * k).expect("window size fits"));
    for c in 0..planes {
        let x = &inp[c * h * w * L..(c + 1) * h * w * L];
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = V::load(&x[((i * s) * w + j * s) * L..]);
                for di in 0..k {
                    for dj in 0..k {
                        if di + dj == 0 {
                            continue;
                        }
                        let v = V::load(&x[((i * s + di) * w + j * s + dj) * L..]);
                        acc = match g.kind {
                            PoolKind::Avg => acc.add(v),
                            PoolKind::Max => v.gt_select(acc, v, acc),
                        };
                    }
                }
                if g.kind == PoolKind::Avg {
                    acc = acc.mul(scale);
                }
                acc.store(&mut out[((c * oh + i) * ow + j) * L..]);
            }
        }
    }
}

/// dx[p..p + L] = v, or += v where windows overlap.
#[inline(always)]
fn put<V: Lanes>(dx: &mut [V::T], p: usize, v: V, disjoint: bool) {
    if disjoint {
        v.store(&mut dx[p..]);
    } else {
        V::load(&dx[p..]).add(v).store(&mut dx[p..]);
    }
}

/// dinp (C, H, W, L) from dout (C, OH, OW, L) for one tile: average spreads the
/// gradient evenly over the window; max routes it to the window's (first) maximum,
/// found again in inp.
#[inline(always)]
pub(crate) fn backward_tile<V: Lanes>(dinp: &mut [V::T], inp: &[V::T], dout: &[V::T], g: &PoolGeom, planes: usize) {
    backward_tile_with::<V, NoAct>(dinp, inp, dout, g, planes, NoAct);
}

/// [`backward_tile`] followed by the backward pass of activation `act`, whose
/// outputs `inp` is: dinp = f'·(pooling's gradient), taken from the outputs
/// ([`activation::from_output`]), in one pass. The same bits as the two passes;
/// only for windows that do not overlap (each position gets its whole gradient at once).
#[inline(always)]
pub(crate) fn backward_tile_act<V: Lanes>(
    dinp: &mut [V::T],
    inp: &[V::T],
    dout: &[V::T],
    g: &PoolGeom,
    planes: usize,
    act: Activation,
) {
    assert!(g.stride >= g.size && activation::from_output(act), "pooling backward with {act:?} fused");
    // One kernel per activation: a match inside the store would cost more than the
    // pass saves. (Types, not closures: a closure is compiled without the vector
    // instruction sets its caller is compiled for, so its intrinsics become calls.)
    let (x, d) = (inp, dout);
    match act {
        Activation::Sigmoid => backward_tile_with::<V, _>(dinp, x, d, g, planes, Df::<0>(0.0)),
        Activation::Tanh => backward_tile_with::<V, _>(dinp, x, d, g, planes, Df::<1>(0.0)),
        Activation::Relu => backward_tile_with::<V, _>(dinp, x, d, g, planes, Df::<2>(0.0)),
        Activation::LeakyRelu(s) => backward_tile_with::<V, _>(dinp, x, d, g, planes, Df::<3>(s)),
    }
}

/// What the pooling's backward pass stores at position p of its input, given the
/// gradient there.
trait Epilogue: Copy {
    fn apply<V: Lanes>(self, d: V, inp: &[V::T], p: usize) -> V;
}

/// The gradient itself.
#[derive(Clone, Copy)]
struct NoAct;

impl Epilogue for NoAct {
    #[inline(always)]
    fn apply<V: Lanes>(self, d: V, _: &[V::T], _: usize) -> V {
        d
    }
}

/// The gradient times the derivative of activation A (0 sigmoid, 1 tanh, 2 ReLU,
/// 3 leaky ReLU with the slope held) from its output, the pooling's input.
#[derive(Clone, Copy)]
struct Df<const A: u8>(f32);

impl<const A: u8> Epilogue for Df<A> {
    #[inline(always)]
    fn apply<V: Lanes>(self, d: V, inp: &[V::T], p: usize) -> V {
        let a = match A {
            0 => Activation::Sigmoid,
            1 => Activation::Tanh,
            2 => Activation::Relu,
            _ => Activation::LeakyRelu(self.0),
        };
        activation::df_from_output(a, d, V::load(&inp[p..]))
    }
}

/// The pooling's backward pass, storing `epi.apply(gradient, inp, p)` at each
/// position p of inp (which must map a zero gradient to zero: positions no window
/// reaches are zero).
#[inline(always)]
fn backward_tile_with<V: Lanes, E: Epilogue>(
    dinp: &mut [V::T],
    inp: &[V::T],
    dout: &[V::T],
    g: &PoolGeom,
    planes: usize,
    epi: E,
) {
    let (oh, ow, k, s, h, w) = (g.oh(), g.ow(), g.size, g.stride, g.h, g.w);
    let scale = V::splat(V::T::one() / <V::T as NumCast>::from(k * k).expect("window size fits"));
    let (zero, one) = (V::zero(), V::splat(V::T::one()));
    // Non-overlapping windows write every covered position once: no need to add.
    let disjoint = s >= k;
    // Windows that tile the whole input write every position: no need to clear.
    if !(s == k && oh * k == h && ow * k == w) {
        dinp[..planes * h * w * L].fill(V::T::zero());
    }
    for c in 0..planes {
        let x = &inp[c * h * w * L..(c + 1) * h * w * L];
        let dx = &mut dinp[c * h * w * L..(c + 1) * h * w * L];
        for i in 0..oh {
            for j in 0..ow {
                let d = V::load(&dout[((c * oh + i) * ow + j) * L..]);
                let p0 = ((i * s) * w + j * s) * L;
                match g.kind {
                    PoolKind::Avg => {
                        let v = d.mul(scale);
                        for di in 0..k {
                            for dj in 0..k {
                                let p = p0 + (di * w + dj) * L;
                                put(dx, p, epi.apply(v, inp, c * h * w * L + p), disjoint);
                            }
                        }
                    }
                    PoolKind::Max => {
                        // The first maximum of each lane's window: its value and position.
                        let mut best = V::load(&x[p0..]);
                        let (mut at, mut e) = (zero, zero);
                        for di in 0..k {
                            for dj in 0..k {
                                let v = V::load(&x[p0 + (di * w + dj) * L..]);
                                at = v.gt_select(best, e, at);
                                best = v.gt_select(best, v, best);
                                e = e.add(one);
                            }
                        }
                        let mut e = zero;
                        for di in 0..k {
                            for dj in 0..k {
                                let p = p0 + (di * w + dj) * L;
                                put(dx, p, epi.apply(at.eq_select(e, d, zero), inp, c * h * w * L + p), disjoint);
                                e = e.add(one);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Tiles of planes per parallel piece (pooling has no reduction, so any split gives
/// the same bits).
const PIECE_TILES: usize = 8;

/// out (P, OH, OW) = pool(inp (P, H, W)), where P = batch × channels planes.
pub fn pool_forward<T: Real>(out: &mut [T], inp: &[T], g: &PoolGeom) {
    let (il, ol) = (g.h * g.w, g.oh() * g.ow());
    let planes = inp.len() / il;
    let piece = PIECE_TILES * L;
    out[..planes * ol].par_chunks_mut(piece * ol).zip(inp[..planes * il].par_chunks(piece * il)).for_each(
        |(out, inp)| {
            let p = inp.len() / il;
            let (mut xt, mut yt) = (Aligned::<T>::zeros(il * L), Aligned::<T>::zeros(ol * L));
            for t in 0..count(p) {
                let n = (p - t * L).min(L);
                to_tiles(&mut xt, &inp[t * L * il..], n, il);
                with_lanes!('a, T => V; yt: &'a mut [T] = &mut yt, xt: &'a [T] = &xt, g: &'a PoolGeom = g;
                    () => forward_tile::<V>(yt, xt, g, 1));
                from_tiles(&mut out[t * L * ol..], &yt, n, ol);
            }
        },
    );
}

/// dinp (P, H, W) from dout (P, OH, OW): average spreads the gradient evenly
/// over the window; max routes it to the window's (first) maximum.
pub fn pool_backward<T: Real>(dinp: &mut [T], inp: &[T], dout: &[T], g: &PoolGeom) {
    let (il, ol) = (g.h * g.w, g.oh() * g.ow());
    let planes = inp.len() / il;
    let piece = PIECE_TILES * L;
    dinp[..planes * il]
        .par_chunks_mut(piece * il)
        .zip(inp[..planes * il].par_chunks(piece * il))
        .zip(dout[..planes * ol].par_chunks(piece * ol))
        .for_each(|((dinp, inp), dout)| {
            let p = inp.len() / il;
            let (mut xt, mut dyt, mut dxt) =
                (Aligned::<T>::zeros(il * L), Aligned::<T>::zeros(ol * L), Aligned::<T>::zeros(il * L));
            for t in 0..count(p) {
                let n = (p - t * L).min(L);
                to_tiles(&mut xt, &inp[t * L * il..], n, il);
                to_tiles(&mut dyt, &dout[t * L * ol..], n, ol);
                with_lanes!('a, T => V;
                    dxt: &'a mut [T] = &mut dxt, xt: &'a [T] = &xt, dyt: &'a [T] = &dyt, g: &'a PoolGeom = g;
                    () => backward_tile::<V>(dxt, xt, dyt, g, 1));
                from_tiles(&mut dinp[t * L * il..], &dxt, n, il);
            }
        });
}
