//! 2-D average and max pooling (no padding, floor mode, as PyTorch's defaults),
//! on tiles: every window is a few lane-wise vector operations.

use num_traits::{NumCast, One};
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
    // LeNet's 2×2 windows get their loops unrolled; the kind is chosen once, not per window.
    match (g.kind, g.size) {
        (PoolKind::Avg, 2) => forward_tile_k::<V, true, 2>(out, inp, g, planes),
        (PoolKind::Max, 2) => forward_tile_k::<V, false, 2>(out, inp, g, planes),
        (PoolKind::Avg, _) => forward_tile_k::<V, true, 0>(out, inp, g, planes),
        (PoolKind::Max, _) => forward_tile_k::<V, false, 0>(out, inp, g, planes),
    }
}

/// [`forward_tile`] for average (`AVG`) or max pooling with windows of `K` (0: `g.size`).
#[inline(always)]
fn forward_tile_k<V: Lanes, const AVG: bool, const K: usize>(
    out: &mut [V::T],
    inp: &[V::T],
    g: &PoolGeom,
    planes: usize,
) {
    let k = if K > 0 { K } else { g.size };
    let (oh, ow, s, h, w) = (g.oh(), g.ow(), g.stride, g.h, g.w);
    let scale = V::splat(V::T::one() / <V::T as NumCast>::from(k * k).expect("window size fits"));
    // Every window lies inside its plane ((oh − 1)·s + k ≤ h by the definition of oh), so
    // the loops read inp[..planes·h·w·L] and write out[..planes·oh·ow·L]: checked here once.
    assert!(inp.len() >= planes * h * w * L && out.len() >= planes * oh * ow * L, "pooling tile out of bounds");
    let (x, y) = (inp.as_ptr(), out.as_mut_ptr());
    for c in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                // SAFETY: the window's rows i·s..i·s+k and columns j·s..j·s+k are inside
                // plane c, and output (c, i, j) inside out (both checked above).
                unsafe {
                    let at = x.add(((c * h + i * s) * w + j * s) * L);
                    let mut acc = V::load_ptr(at);
                    for di in 0..k {
                        for dj in 0..k {
                            if di + dj == 0 {
                                continue;
                            }
                            let v = V::load_ptr(at.add((di * w + dj) * L));
                            acc = if AVG { acc.add(v) } else { v.gt_select(acc, v, acc) };
                        }
                    }
                    if AVG {
                        acc = acc.mul(scale);
                    }
                    acc.store_ptr(y.add(((c * oh + i) * ow + j) * L));
                }
            }
        }
    }
}

/// dx[0..L] = v, or += v where windows overlap.
///
/// # Safety
/// `dx` must be valid for reads and writes of L values.
#[inline(always)]
unsafe fn put<V: Lanes>(dx: *mut V::T, v: V, disjoint: bool) {
    if disjoint {
        v.store_ptr(dx);
    } else {
        V::load_ptr(dx).add(v).store_ptr(dx);
    }
}

/// Where a backward pass reads the pooling's input and writes its gradient: two
/// buffers, or one (in place: each position is read before it is written).
pub(crate) struct Io<'a, T> {
    dx: *mut T,
    x: *const T,
    len: usize,
    in_place: bool,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

impl<'a, T> Io<'a, T> {
    pub(crate) fn split(dinp: &'a mut [T], inp: &'a [T]) -> Self {
        let (dx, x, len) = (dinp.as_mut_ptr(), inp.as_ptr(), dinp.len().min(inp.len()));
        Io { dx, x, len, in_place: false, _borrow: std::marker::PhantomData }
    }
    /// The gradient over the input itself.
    pub(crate) fn in_place(inp: &'a mut [T]) -> Self {
        let (dx, len) = (inp.as_mut_ptr(), inp.len());
        Io { dx, x: dx, len, in_place: true, _borrow: std::marker::PhantomData }
    }
}

/// dinp (C, H, W, L) from dout (C, OH, OW, L) for one tile: average spreads the
/// gradient evenly over the window; max routes it to the window's (first) maximum,
/// found again in inp.
#[inline(always)]
pub(crate) fn backward_tile<V: Lanes>(dinp: &mut [V::T], inp: &[V::T], dout: &[V::T], g: &PoolGeom, planes: usize) {
    backward_tile_io::<V>(Io::split(dinp, inp), dout, g, planes, None);
}

/// [`backward_tile`] with the pooling's input and its gradient given by `io`, and, when
/// `act` is given, followed by the backward pass of that activation, whose outputs the
/// pooling's input is: dinp = f'·(pooling's gradient), taken from the outputs
/// ([`activation::from_output`]), in one pass. The same bits as the two passes; only
/// for windows that do not overlap (each position gets its whole gradient at once).
/// In place (the activation's outputs needed no more: no second buffer to bring into
/// the cache) only with an activation and windows that tile the whole input, so that
/// every position gets written.
#[inline(always)]
pub(crate) fn backward_tile_io<V: Lanes>(
    io: Io<V::T>,
    dout: &[V::T],
    g: &PoolGeom,
    planes: usize,
    act: Option<Activation>,
) {
    assert!(!io.in_place || (act.is_some() && tiles_input(g)), "pooling backward in place: {act:?}, {g:?}");
    let Some(act) = act else {
        return backward_tile_with::<V, NoAct>(io, dout, g, planes, NoAct);
    };
    assert!(g.stride >= g.size && activation::from_output(act), "pooling backward with {act:?} fused");
    // One kernel per activation: a match inside the store would cost more than the
    // pass saves. (Types, not closures: a closure is compiled without the vector
    // instruction sets its caller is compiled for, so its intrinsics become calls.)
    let d = dout;
    match act {
        Activation::Sigmoid => backward_tile_with::<V, _>(io, d, g, planes, Df::<0>(0.0)),
        Activation::Tanh => backward_tile_with::<V, _>(io, d, g, planes, Df::<1>(0.0)),
        Activation::Relu => backward_tile_with::<V, _>(io, d, g, planes, Df::<2>(0.0)),
        Activation::LeakyRelu(s) => backward_tile_with::<V, _>(io, d, g, planes, Df::<3>(s)),
        Activation::ScaledTanh => backward_tile_with::<V, _>(io, d, g, planes, Df::<4>(0.0)),
    }
}

/// Whether the windows tile the whole input: each position in exactly one window.
pub(crate) fn tiles_input(g: &PoolGeom) -> bool {
    g.stride == g.size && g.oh() * g.size == g.h && g.ow() * g.size == g.w
}

/// What the pooling's backward pass stores at a position of its input, given the
/// gradient there and a pointer to the input's value there.
trait Epilogue: Copy {
    /// # Safety
    /// `inp` must be valid for reads of L values.
    unsafe fn apply<V: Lanes>(self, d: V, inp: *const V::T) -> V;
}

/// The gradient itself.
#[derive(Clone, Copy)]
struct NoAct;

impl Epilogue for NoAct {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(self, d: V, _: *const V::T) -> V {
        d
    }
}

/// The gradient times the derivative of activation A (0 sigmoid, 1 tanh, 2 ReLU,
/// 3 leaky ReLU with the slope held, 4 scaled tanh) from its output, the pooling's input.
#[derive(Clone, Copy)]
struct Df<const A: u8>(f32);

impl<const A: u8> Epilogue for Df<A> {
    #[inline(always)]
    unsafe fn apply<V: Lanes>(self, d: V, inp: *const V::T) -> V {
        let a = match A {
            0 => Activation::Sigmoid,
            1 => Activation::Tanh,
            2 => Activation::Relu,
            4 => Activation::ScaledTanh,
            _ => Activation::LeakyRelu(self.0),
        };
        activation::df_from_output(a, d, V::load_ptr(inp))
    }
}

/// The pooling's backward pass, storing `epi.apply(gradient, inp)` at each
/// position of inp (which must map a zero gradient to zero: positions no window
/// reaches are zero).
#[inline(always)]
fn backward_tile_with<V: Lanes, E: Epilogue>(io: Io<V::T>, dout: &[V::T], g: &PoolGeom, planes: usize, epi: E) {
    let d = dout;
    match (g.kind, g.size) {
        (PoolKind::Avg, 2) => backward_tile_k::<V, E, true, 2>(io, d, g, planes, epi),
        (PoolKind::Max, 2) => backward_tile_k::<V, E, false, 2>(io, d, g, planes, epi),
        (PoolKind::Avg, _) => backward_tile_k::<V, E, true, 0>(io, d, g, planes, epi),
        (PoolKind::Max, _) => backward_tile_k::<V, E, false, 0>(io, d, g, planes, epi),
    }
}

/// [`backward_tile_with`] for average (`AVG`) or max pooling with windows of `K`
/// (0: `g.size`).
#[inline(always)]
fn backward_tile_k<V: Lanes, E: Epilogue, const AVG: bool, const K: usize>(
    io: Io<V::T>,
    dout: &[V::T],
    g: &PoolGeom,
    planes: usize,
    epi: E,
) {
    let k = if K > 0 { K } else { g.size };
    let (oh, ow, s, h, w) = (g.oh(), g.ow(), g.stride, g.h, g.w);
    let scale = V::splat(V::T::one() / <V::T as NumCast>::from(k * k).expect("window size fits"));
    let (zero, one) = (V::zero(), V::splat(V::T::one()));
    // Non-overlapping windows write every covered position once: no need to add.
    let disjoint = s >= k;
    // As in the forward pass, every window lies inside its plane: the loops read
    // inp and dinp up to planes·h·w·L and dout up to planes·oh·ow·L, checked here once.
    let n = planes * h * w * L;
    assert!(io.len >= n && dout.len() >= planes * oh * ow * L, "pooling tile out of bounds");
    let (x, dx, dy) = (io.x, io.dx, dout.as_ptr());
    // Windows that tile the whole input write every position: no need to clear
    // (and in place, no clearing: `backward_tile_io` checks they tile it).
    if !tiles_input(g) && !io.in_place {
        // SAFETY: dx has n values (checked above).
        unsafe { std::ptr::write_bytes(dx, 0, n) };
    }
    for c in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                // SAFETY: window (c, i, j) is inside plane c and output (c, i, j) inside
                // dout, as checked above.
                unsafe {
                    let d = V::load_ptr(dy.add(((c * oh + i) * ow + j) * L));
                    let p0 = ((c * h + i * s) * w + j * s) * L;
                    if AVG {
                        let v = d.mul(scale);
                        for di in 0..k {
                            for dj in 0..k {
                                let p = p0 + (di * w + dj) * L;
                                put(dx.add(p), epi.apply(v, x.add(p)), disjoint);
                            }
                        }
                    } else {
                        // The first maximum of each lane's window: its value and position.
                        let mut best = V::load_ptr(x.add(p0));
                        let (mut at, mut e) = (zero, zero);
                        for di in 0..k {
                            for dj in 0..k {
                                let v = V::load_ptr(x.add(p0 + (di * w + dj) * L));
                                at = v.gt_select(best, e, at);
                                best = v.gt_select(best, v, best);
                                e = e.add(one);
                            }
                        }
                        let mut e = zero;
                        for di in 0..k {
                            for dj in 0..k {
                                let p = p0 + (di * w + dj) * L;
                                put(dx.add(p), epi.apply(at.eq_select(e, d, zero), x.add(p)), disjoint);
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
