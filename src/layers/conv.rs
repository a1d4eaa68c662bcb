//! 2-D convolution on tiles of L examples (see [`super::tiles`]): the batch is in
//! the vector lanes, so each multiply-add is a broadcast weight times the same
//! pixel of 16 examples. No im2col copy: the kernels read the (padded) input in
//! place, with a register block of output channels × output columns.
//!
//! - forward: out (O, OH, OW) = act(w ⋆ x + b), the activation fused in registers;
//! - weight gradient: dw += Σ dz ⋆ x, accumulated per lane (summed over lanes once
//!   per batch chunk);
//! - input gradient: a forward convolution of the zero-padded (and, for stride > 1,
//!   dilated) output gradient with the flipped, transposed weights.

// Register-blocked kernels index several arrays with one loop variable on purpose.
#![allow(clippy::needless_range_loop)]

use num_traits::Zero;
use rayon::prelude::*;

use super::activation::f_lanes;
use super::tiles::{count, from_tiles, to_tiles, Aligned};
use super::{add_partials, with_lanes, Kernel, Lanes, Par, Real, L};
use crate::spec::Activation;

/// Convolution geometry: input (C, H, W), weight (O, C, K, K), output (O, OH, OW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub pad: usize,
    pub stride: usize,
}

impl ConvGeom {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.o * self.oh() * self.ow()
    }
    /// C·K·K: the weights of one output channel.
    pub fn patch_len(&self) -> usize {
        self.c * self.k * self.k
    }
    pub fn weight_len(&self) -> usize {
        self.o * self.patch_len()
    }
    /// The padded input's height and width.
    pub fn hp(&self) -> usize {
        self.h + 2 * self.pad
    }
    pub fn wp(&self) -> usize {
        self.w + 2 * self.pad
    }
    /// Values per example of the padded input.
    pub fn padded_len(&self) -> usize {
        self.c * self.hp() * self.wp()
    }
    /// The convolution that computes the input gradient: over the output gradient
    /// spread onto a grid of stride `stride` and padded by K−1 (channels O), with the
    /// flipped, transposed weights (C, O, K, K). Its output covers the padded input
    /// (C, Hp, Wp) up to the last row and column the forward windows reach.
    pub fn input_grad_geom(&self) -> ConvGeom {
        let (h, w) = (self.spread_h(), self.spread_w());
        ConvGeom { c: self.o, h, w, o: self.c, k: self.k, pad: 0, stride: 1 }
    }
    fn spread_h(&self) -> usize {
        (self.oh() - 1) * self.stride + 1 + 2 * (self.k - 1)
    }
    fn spread_w(&self) -> usize {
        (self.ow() - 1) * self.stride + 1 + 2 * (self.k - 1)
    }
    /// Values per example of the spread output gradient.
    pub fn spread_len(&self) -> usize {
        self.o * self.spread_h() * self.spread_w()
    }
    /// Whether the input-gradient convolution's output is exactly the (unpadded) input.
    fn input_grad_is_exact(&self) -> bool {
        let gt = self.input_grad_geom();
        self.pad == 0 && gt.oh() == self.h && gt.ow() == self.w
    }
}

/// xp (C, Hp, Wp, L) = x (C, H, W, L) with a border of `pad` zeros.
#[inline(always)]
pub fn pad_tile<T: Real>(xp: &mut [T], x: &[T], g: &ConvGeom) {
    let (hp, wp, p) = (g.hp(), g.wp(), g.pad);
    if p == 0 {
        xp[..x.len()].copy_from_slice(x);
        return;
    }
    for c in 0..g.c {
        let plane = &mut xp[c * hp * wp * L..(c + 1) * hp * wp * L];
        plane[..p * wp * L].fill(T::zero());
        plane[(p + g.h) * wp * L..].fill(T::zero());
        for y in 0..g.h {
            let dst = &mut plane[(p + y) * wp * L..(p + y + 1) * wp * L];
            dst[..p * L].fill(T::zero());
            dst[(p + g.w) * L..].fill(T::zero());
            let src = &x[(c * g.h + y) * g.w * L..(c * g.h + y + 1) * g.w * L];
            dst[p * L..(p + g.w) * L].copy_from_slice(src);
        }
    }
}

/// The part of a kernel's (padded) input that can be nonzero: rows `rows.0..rows.1`,
/// columns `cols.0..cols.1`. A register block skips the taps whose inputs all lie
/// outside it (they would add exact zeros): the padding of a forward convolution, and
/// the K−1 border of zeros around the output gradient in the input-gradient one.
#[derive(Clone, Copy, Debug)]
struct Live {
    rows: (usize, usize),
    cols: (usize, usize),
}

/// One register block of the forward pass: output channels o0..o0+MO, output
/// row y, columns x0..x0+MX. `K` is the kernel size when known at compile time
/// (0: take it from `g`). Rows outside `live` are skipped; so are columns when
/// `COLS` (the input-gradient convolution, whose zero border is K−1 wide). An `EDGE`
/// block ([`Edge`]) skips the single taps that read that border.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block<V: Lanes, const MO: usize, const MX: usize, const K: usize, const COLS: bool, const EDGE: u8>(
    out: &mut [V::T],
    xp: &[V::T],
    w: &[V::T],
    b: Option<&[V::T]>,
    g: &ConvGeom,
    act: Option<Activation>,
    live: Live,
    o0: usize,
    y: usize,
    x0: usize,
) {
    let k = if K > 0 { K } else { g.k };
    let (s, hp, wp, oh, ow) = (g.stride, g.hp(), g.wp(), g.oh(), g.ow());
    let kk = g.c * k * k;
    // Everything below reads xp[..x_end] and w[..w_end] and writes out[..o_end]:
    // checked here once, so the loops can use unchecked pointer loads.
    let x_end = (((g.c - 1) * hp + y * s + k - 1) * wp + x0 * s + (MX - 1) * s + k) * L;
    let w_end = (o0 + MO) * kk;
    let o_end = (((o0 + MO - 1) * oh + y) * ow + x0 + MX) * L;
    assert!(x_end <= xp.len() && w_end <= w.len() && o_end <= out.len(), "conv block out of bounds");
    let mut acc = [[V::zero(); MX]; MO];
    if let Some(b) = b {
        for mo in 0..MO {
            acc[mo] = [V::splat(b[o0 + mo]); MX];
        }
    }
    // Tap columns kj..kj+(MX−1)·s: the taps outside kj_lo..kj_hi read only zero columns.
    let kj_lo = live.cols.0.saturating_sub(x0 * s + (MX - 1) * s);
    let kj_hi = live.cols.1.saturating_sub(x0 * s).min(k);
    let all_taps = kj_lo == 0 && kj_hi == k;
    debug_assert!(EDGE == Edge::NONE || s == 1, "edge blocks are for stride 1");
    let (xp, w) = (xp.as_ptr(), w.as_ptr());
    for ci in 0..g.c {
        for ki in 0..k {
            if y * s + ki < live.rows.0 || y * s + ki >= live.rows.1 {
                continue; // a row of zeros
            }
            // SAFETY: every offset below is at most x_end − L (for xp) and
            // w_end − 1 (for w), both checked above.
            unsafe {
                let xrow = xp.add(((ci * hp + y * s + ki) * wp + x0 * s) * L);
                let wrow = w.add(o0 * kk + (ci * k + ki) * k);
                // COLS is a type parameter, not a runtime flag: a second tap loop beside
                // the first made conv1's forward pass take half again as long.
                if COLS && EDGE == Edge::NONE && !all_taps {
                    for kj in kj_lo..kj_hi {
                        forward_tap::<V, MO, MX, EDGE>(&mut acc, xrow, wrow, kk, k, s, kj);
                    }
                } else {
                    for kj in 0..k {
                        forward_tap::<V, MO, MX, EDGE>(&mut acc, xrow, wrow, kk, k, s, kj);
                    }
                }
            }
        }
    }
    for (mo, a) in acc.iter().enumerate() {
        for (mx, &v) in a.iter().enumerate() {
            let v = match act {
                Some(f) => f_lanes(f, v),
                None => v,
            };
            v.store(&mut out[(((o0 + mo) * oh + y) * ow + x0 + mx) * L..]);
        }
    }
}

/// Which taps of a register block read the K−1 columns of zeros on either side of
/// the input-gradient convolution's input, when the block is K−1 columns wide and
/// sits at the left or right end of its row: tap (mx, kj) reads column x0 + mx + kj.
struct Edge;
impl Edge {
    /// Every tap counts.
    const NONE: u8 = 0;
    /// x0 = 0: columns below K−1 are zero, so only mx + kj ≥ K−1 count.
    const LEFT: u8 = 1;
    /// x0 = OW − MX: columns from OW on are zero, so only mx + kj < MX count.
    const RIGHT: u8 = 2;
}

/// One kernel column `kj` of a forward register block:
/// acc[mo][mx] += w[mo·kk + kj] · x[(mx·s + kj)·L] for the row pointers `wrow`, `xrow`,
/// without the taps an [`Edge`] block's zero border makes exact zeros (stride 1 there).
/// With K, MX and EDGE constants and the loops unrolled that test folds away: each
/// block is straight-line code of its live taps alone.
///
/// # Safety
/// `xrow` must be readable up to offset ((MX−1)·s + kj + 1)·L and `wrow` at (MO−1)·kk + kj.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_tap<V: Lanes, const MO: usize, const MX: usize, const EDGE: u8>(
    acc: &mut [[V; MX]; MO],
    xrow: *const V::T,
    wrow: *const V::T,
    kk: usize,
    k: usize,
    s: usize,
    kj: usize,
) {
    let live = |mx: usize| match EDGE {
        Edge::LEFT => mx + kj >= k - 1,
        Edge::RIGHT => mx + kj < MX,
        _ => true,
    };
    // Registers: MO·MX accumulators, MX inputs, one broadcast weight.
    let mut xv = [V::zero(); MX];
    for mx in 0..MX {
        if live(mx) {
            xv[mx] = V::load_ptr(xrow.add((mx * s + kj) * L));
        }
    }
    for mo in 0..MO {
        let wv = V::splat(*wrow.add(mo * kk + kj));
        for mx in 0..MX {
            if live(mx) {
                acc[mo][mx] = wv.fma(xv[mx], acc[mo][mx]);
            }
        }
    }
}

/// Output channels o0..o0+MO over the whole output: column blocks of MX, then single columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_channels<V: Lanes, const MO: usize, const MX: usize, const K: usize, const COLS: bool>(
    out: &mut [V::T],
    xp: &[V::T],
    w: &[V::T],
    b: Option<&[V::T]>,
    g: &ConvGeom,
    act: Option<Activation>,
    live: Live,
    o0: usize,
) {
    let ow = g.ow();
    // The input-gradient convolution's rows start and end with K−1 columns that
    // reach the zero border: one edge block at each end then (the narrower blocks
    // in the middle), so that every other block is all live taps.
    let edges = COLS && K > 0 && MX + 1 == K && ow >= 2 * MX && live.cols == (K - 1, ow);
    let (first, end) = if edges { (MX, ow - MX) } else { (0, ow) };
    for y in 0..g.oh() {
        if edges {
            forward_block::<V, MO, MX, K, COLS, { Edge::LEFT }>(out, xp, w, b, g, act, live, o0, y, 0);
        }
        let mut x0 = first;
        while x0 + MX <= end {
            forward_block::<V, MO, MX, K, COLS, { Edge::NONE }>(out, xp, w, b, g, act, live, o0, y, x0);
            x0 += MX;
        }
        if MX > 2 && x0 + 2 <= end {
            forward_block::<V, MO, 2, K, COLS, { Edge::NONE }>(out, xp, w, b, g, act, live, o0, y, x0);
            x0 += 2;
        }
        while x0 < end {
            forward_block::<V, MO, 1, K, COLS, { Edge::NONE }>(out, xp, w, b, g, act, live, o0, y, x0);
            x0 += 1;
        }
        if edges {
            forward_block::<V, MO, MX, K, COLS, { Edge::RIGHT }>(out, xp, w, b, g, act, live, o0, y, end);
        }
    }
}

#[inline(always)]
fn forward_tile_k<V: Lanes, const K: usize, const COLS: bool>(
    out: &mut [V::T],
    xp: &[V::T],
    w: &[V::T],
    b: Option<&[V::T]>,
    g: &ConvGeom,
    act: Option<Activation>,
    live: Live,
) {
    let mut o0 = 0;
    // Four channels by five columns when the width splits so and not in threes
    // (conv2's 10): 9 loads per 20 multiply-adds, where eight by two loads 10 per 16.
    if g.ow().is_multiple_of(5) && !g.ow().is_multiple_of(3) {
        while o0 + 4 <= g.o {
            forward_channels::<V, 4, 5, K, COLS>(out, xp, w, b, g, act, live, o0);
            o0 += 4;
        }
    }
    // Eight channels by three columns, or by two when the width splits evenly so.
    let pairs = !g.ow().is_multiple_of(3) && g.ow().is_multiple_of(2);
    while o0 + 8 <= g.o {
        if pairs {
            forward_channels::<V, 8, 2, K, COLS>(out, xp, w, b, g, act, live, o0);
        } else {
            forward_channels::<V, 8, 3, K, COLS>(out, xp, w, b, g, act, live, o0);
        }
        o0 += 8;
    }
    if g.o - o0 >= 6 {
        forward_channels::<V, 6, 4, K, COLS>(out, xp, w, b, g, act, live, o0);
        o0 += 6;
    }
    if g.o - o0 >= 4 {
        forward_channels::<V, 4, 4, K, COLS>(out, xp, w, b, g, act, live, o0);
        o0 += 4;
    }
    if g.o - o0 >= 2 {
        forward_channels::<V, 2, 4, K, COLS>(out, xp, w, b, g, act, live, o0);
        o0 += 2;
    }
    if g.o - o0 >= 1 {
        forward_channels::<V, 1, 4, K, COLS>(out, xp, w, b, g, act, live, o0);
    }
}

/// out (O, OH, OW, L) = act(w (O, C, K, K) ⋆ xp (C, Hp, Wp, L) + b (O)) for one
/// tile, xp being the input already padded ([`pad_tile`]: its border is zero, and
/// skipped); no bias when `b` is None.
#[inline(always)]
pub(crate) fn forward_tile<V: Lanes>(
    out: &mut [V::T],
    xp: &[V::T],
    w: &[V::T],
    b: Option<&[V::T]>,
    g: &ConvGeom,
    act: Option<Activation>,
) {
    let live = Live { rows: (g.pad, g.pad + g.h), cols: (g.pad, g.pad + g.w) };
    forward_tile_live::<V, false>(out, xp, w, b, g, act, live);
}

/// [`forward_tile`] when only the `live` part of xp can be nonzero.
#[inline(always)]
fn forward_tile_live<V: Lanes, const COLS: bool>(
    out: &mut [V::T],
    xp: &[V::T],
    w: &[V::T],
    b: Option<&[V::T]>,
    g: &ConvGeom,
    act: Option<Activation>,
    live: Live,
) {
    if g.k == 5 {
        V::outline(ForwardTileK::<_, 5, COLS> { out, xp, w, b, g, act, live });
    } else {
        V::outline(ForwardTileK::<_, 0, COLS> { out, xp, w, b, g, act, live });
    }
}

/// [`forward_tile_k`] in a function of its own ([`Lanes::outline`]): the register
/// blocks of every shape are most of a training step's code.
struct ForwardTileK<'a, T, const K: usize, const COLS: bool> {
    out: &'a mut [T],
    xp: &'a [T],
    w: &'a [T],
    b: Option<&'a [T]>,
    g: &'a ConvGeom,
    act: Option<Activation>,
    live: Live,
}

impl<T: Real, const K: usize, const COLS: bool> Kernel<T> for ForwardTileK<'_, T, K, COLS> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = T>>(self) {
        let ForwardTileK { out, xp, w, b, g, act, live } = self;
        // What the callers know at compile time, spelled out again: constants do not
        // reach a function of its own. The input-gradient convolution (COLS) has no bias
        // and no activation, so its blocks carry neither; a forward one has a bias.
        if COLS {
            debug_assert!(b.is_none() && act.is_none());
            forward_tile_k::<V, K, COLS>(out, xp, w, None, g, None, live);
        } else {
            let b = b.expect("a forward convolution has a bias");
            forward_tile_k::<V, K, COLS>(out, xp, w, Some(b), g, act, live);
        }
    }
}

/// Output channels o0..o0+MO, input channel ci, kernel row ki: the weight
/// gradients of that row (all K columns when K > 0, else column kj0 alone),
/// accumulated per lane into dwl.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grad_block<V: Lanes, const MO: usize, const K: usize>(
    dwl: &mut [V::T],
    dz: &[V::T],
    xp: &[V::T],
    g: &ConvGeom,
    o0: usize,
    ci: usize,
    ki: usize,
    kj0: usize,
) {
    let k = g.k;
    let n = if K > 0 { K } else { 1 };
    let (s, hp, wp, oh, ow) = (g.stride, g.hp(), g.wp(), g.oh(), g.ow());
    let hw = oh * ow;
    // Reads dz[..d_end] and xp[..x_end], checked once for the unchecked loads below.
    let d_end = (o0 + MO) * hw * L;
    let x_end = ((ci * hp + (oh - 1) * s + ki) * wp + kj0 + (ow - 1) * s + n) * L;
    assert!(d_end <= dz.len() && x_end <= xp.len(), "conv weight-gradient block out of bounds");
    let mut acc = [[V::zero(); 8]; MO];
    let (dz, xp) = (dz.as_ptr(), xp.as_ptr());
    // Rows y·s + ki in the top or bottom padding read only zeros: skipped.
    let y_lo = g.pad.saturating_sub(ki).div_ceil(s);
    let y_hi = (g.pad + g.h).saturating_sub(ki).div_ceil(s).min(oh);
    for y in y_lo..y_hi {
        // SAFETY: the largest offsets read are d_end − L and x_end − L, checked above.
        unsafe {
            let xrow = xp.add(((ci * hp + y * s + ki) * wp + kj0) * L);
            let drow = dz.add((o0 * hw + y * ow) * L);
            for x in 0..ow {
                let mut d = [V::zero(); MO];
                for mo in 0..MO {
                    d[mo] = V::load_ptr(drow.add((mo * hw + x) * L));
                }
                for j in 0..n {
                    let xv = V::load_ptr(xrow.add((x * s + j) * L));
                    for mo in 0..MO {
                        acc[mo][j] = d[mo].fma(xv, acc[mo][j]);
                    }
                }
            }
        }
    }
    for (mo, a) in acc.iter().enumerate() {
        for (j, &v) in a.iter().enumerate().take(n) {
            let p = (((o0 + mo) * g.c + ci) * k + ki) * k + kj0 + j;
            let dst = &mut dwl[p * L..];
            V::load(dst).add(v).store(dst);
        }
    }
}

#[inline(always)]
fn weight_grad_channels<V: Lanes, const MO: usize>(
    dwl: &mut [V::T],
    dz: &[V::T],
    xp: &[V::T],
    g: &ConvGeom,
    o0: usize,
) {
    for ci in 0..g.c {
        for ki in 0..g.k {
            if g.k == 5 {
                weight_grad_block::<V, MO, 5>(dwl, dz, xp, g, o0, ci, ki, 0);
            } else {
                for kj in 0..g.k {
                    weight_grad_block::<V, MO, 0>(dwl, dz, xp, g, o0, ci, ki, kj);
                }
            }
        }
    }
}

/// dwl (O, C, K, K, L) += per lane Σ_positions dz (O, OH, OW, L) · xp (C, Hp, Wp, L),
/// and dbl (O, L) += per lane Σ_positions dz, for one tile.
#[inline(always)]
pub(crate) fn weight_grad_tile<V: Lanes>(dwl: &mut [V::T], dbl: &mut [V::T], dz: &[V::T], xp: &[V::T], g: &ConvGeom) {
    V::outline(WeightGradTile { dwl, dbl, dz, xp, g });
}

/// [`weight_grad_tile`]'s body in a function of its own ([`Lanes::outline`]).
struct WeightGradTile<'a, T> {
    dwl: &'a mut [T],
    dbl: &'a mut [T],
    dz: &'a [T],
    xp: &'a [T],
    g: &'a ConvGeom,
}

impl<T: Real> Kernel<T> for WeightGradTile<'_, T> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = T>>(self) {
        let WeightGradTile { dwl, dbl, dz, xp, g } = self;
        weight_grad_blocks::<V>(dwl, dbl, dz, xp, g);
    }
}

#[inline(always)]
fn weight_grad_blocks<V: Lanes>(dwl: &mut [V::T], dbl: &mut [V::T], dz: &[V::T], xp: &[V::T], g: &ConvGeom) {
    let mut o0 = 0;
    if !g.o.is_multiple_of(4) && g.o.is_multiple_of(3) {
        while o0 + 3 <= g.o {
            weight_grad_channels::<V, 3>(dwl, dz, xp, g, o0);
            o0 += 3;
        }
    }
    while o0 + 4 <= g.o {
        weight_grad_channels::<V, 4>(dwl, dz, xp, g, o0);
        o0 += 4;
    }
    if g.o - o0 >= 2 {
        weight_grad_channels::<V, 2>(dwl, dz, xp, g, o0);
        o0 += 2;
    }
    if g.o - o0 >= 1 {
        weight_grad_channels::<V, 1>(dwl, dz, xp, g, o0);
    }
    let hw = g.oh() * g.ow();
    for o in 0..g.o {
        let mut acc = V::zero();
        for p in 0..hw {
            acc = acc.add(V::load(&dz[(o * hw + p) * L..]));
        }
        let dst = &mut dbl[o * L..];
        V::load(dst).add(acc).store(dst);
    }
}

/// dw (+)= the lane sums of dwl (one row of L per value of dw).
#[inline(always)]
pub(crate) fn reduce_lanes<V: Lanes>(dw: &mut [V::T], dwl: &[V::T]) {
    for (i, d) in dw.iter_mut().enumerate() {
        *d += V::load(&dwl[i * L..]).sum();
    }
}

/// wf (C, O, K, K) = w (O, C, K, K) transposed in its channels and flipped in space.
pub fn flip_weights<T: Real>(wf: &mut [T], w: &[T], g: &ConvGeom) {
    let k = g.k;
    for o in 0..g.o {
        for c in 0..g.c {
            for ki in 0..k {
                for kj in 0..k {
                    wf[((c * g.o + o) * k + k - 1 - ki) * k + k - 1 - kj] = w[((o * g.c + c) * k + ki) * k + kj];
                }
            }
        }
    }
}

/// dx (C, H, W, L) = ∂L/∂x for one tile, from dz (O, OH, OW, L) and the flipped
/// weights wf ([`flip_weights`]). `spread` (O, SH, SW, L) is scratch whose border
/// and holes must be zero (only the positions dz lands on are written), `dxp`
/// scratch of (C, Hp, Wp, L), used when the gradient must be cropped.
#[inline(always)]
pub(crate) fn input_grad_tile<V: Lanes>(
    dx: &mut [V::T],
    dz: &[V::T],
    wf: &[V::T],
    g: &ConvGeom,
    spread: &mut [V::T],
    dxp: &mut [V::T],
) {
    let gt = g.input_grad_geom();
    let (oh, ow, s, k) = (g.oh(), g.ow(), g.stride, g.k);
    for o in 0..g.o {
        for y in 0..oh {
            let src = &dz[(o * oh + y) * ow * L..(o * oh + y + 1) * ow * L];
            let row = (o * gt.h + k - 1 + y * s) * gt.w + k - 1;
            if s == 1 {
                spread[row * L..(row + ow) * L].copy_from_slice(src);
            } else {
                for x in 0..ow {
                    spread[(row + x * s) * L..(row + x * s + 1) * L].copy_from_slice(&src[x * L..(x + 1) * L]);
                }
            }
        }
    }
    // The spread gradient is zero outside these rows and columns.
    let live = Live { rows: (k - 1, k + (oh - 1) * s), cols: (k - 1, k + (ow - 1) * s) };
    if g.input_grad_is_exact() {
        forward_tile_live::<V, true>(dx, spread, wf, None, &gt, None, live);
        return;
    }
    // The gradient of the padded input, then cropped; rows and columns the windows
    // never reach get zero.
    let (gh, gw) = (gt.oh(), gt.ow());
    let full = &mut dxp[..g.c * gh * gw * L];
    forward_tile_live::<V, true>(full, spread, wf, None, &gt, None, live);
    for c in 0..g.c {
        for y in 0..g.h {
            for x in 0..g.w {
                let (py, px) = (y + g.pad, x + g.pad);
                let dst = &mut dx[((c * g.h + y) * g.w + x) * L..((c * g.h + y) * g.w + x + 1) * L];
                if py < gh && px < gw {
                    dst.copy_from_slice(&full[((c * gh + py) * gw + px) * L..((c * gh + py) * gw + px + 1) * L]);
                } else {
                    dst.fill(V::T::zero());
                }
            }
        }
    }
}

/// Scratch sizes (values per tile) the tile functions need for geometry `g`.
pub fn scratch_len(g: &ConvGeom) -> (usize, usize, usize) {
    let gt = g.input_grad_geom();
    (g.padded_len() * L, g.spread_len() * L, g.c * gt.oh() * gt.ow() * L)
}

/// out (B, O, OH, OW) = inp (B, C, H, W) ⋆ weight (O, C, K, K) + bias (O).
pub fn conv2d_forward<T: Real>(
    out: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: &[T],
    g: &ConvGeom,
    batch: usize,
    par: Par,
) {
    let (il, ol) = (g.in_len(), g.out_len());
    let per = par.tiles_per_chunk(batch);
    out[..batch * ol].par_chunks_mut(per * L * ol).zip(inp[..batch * il].par_chunks(per * L * il)).for_each(
        |(out, inp)| {
            let b = inp.len() / il;
            let (mut xt, mut xp, mut yt) =
                (Aligned::<T>::zeros(il * L), Aligned::<T>::zeros(g.padded_len() * L), Aligned::<T>::zeros(ol * L));
            for t in 0..count(b) {
                let n = (b - t * L).min(L);
                to_tiles(&mut xt, &inp[t * L * il..], n, il);
                pad_tile(&mut xp, &xt, g);
                with_lanes!('a, T => V;
                    yt: &'a mut [T] = &mut yt, xp: &'a [T] = &xp, w: &'a [T] = weight, b: &'a [T] = bias,
                    g: &'a ConvGeom = g;
                    () => forward_tile::<V>(yt, xp, w, Some(b), g, None));
                from_tiles(&mut out[t * L * ol..], &yt, n, ol);
            }
        },
    );
}

/// From dout (B, O, OH, OW): dweight += Σ_b dout_b ⋆ inp_b, dbias += Σ dout,
/// and, when asked, dinp (B, C, H, W) = ∂L/∂inp.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward<T: Real>(
    dinp: Option<&mut [T]>,
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    g: &ConvGeom,
    batch: usize,
    par: Par,
) {
    let (il, ol) = (g.in_len(), g.out_len());
    let per = par.tiles_per_chunk(batch);
    let chunk = per * L;
    let dinp_chunks: Vec<Option<&mut [T]>> = match dinp {
        Some(d) => d[..batch * il].chunks_mut(chunk * il).map(Some).collect(),
        None => (0..batch.div_ceil(chunk)).map(|_| None).collect(),
    };
    let mut wf = vec![T::zero(); g.weight_len()];
    flip_weights(&mut wf, weight, g);
    let (_, spread_len, dxp_len) = scratch_len(g);
    let partials: Vec<(Vec<T>, Vec<T>)> = dinp_chunks
        .into_par_iter()
        .zip(dout[..batch * ol].par_chunks(chunk * ol))
        .zip(inp[..batch * il].par_chunks(chunk * il))
        .map(|((mut dinp, dout), inp)| {
            let b = inp.len() / il;
            let mut dwl = Aligned::<T>::zeros(g.weight_len() * L);
            let mut dbl = Aligned::<T>::zeros(g.o * L);
            let (mut xt, mut xp, mut dz) =
                (Aligned::<T>::zeros(il * L), Aligned::<T>::zeros(g.padded_len() * L), Aligned::<T>::zeros(ol * L));
            let (mut spread, mut dxp, mut dx) =
                (Aligned::<T>::zeros(spread_len), Aligned::<T>::zeros(dxp_len), Aligned::<T>::zeros(il * L));
            for t in 0..count(b) {
                let n = (b - t * L).min(L);
                to_tiles(&mut xt, &inp[t * L * il..], n, il);
                to_tiles(&mut dz, &dout[t * L * ol..], n, ol);
                pad_tile(&mut xp, &xt, g);
                with_lanes!('a, T => V;
                    dwl: &'a mut [T] = &mut dwl, dbl: &'a mut [T] = &mut dbl, dz: &'a [T] = &dz, xp: &'a [T] = &xp,
                    g: &'a ConvGeom = g;
                    () => weight_grad_tile::<V>(dwl, dbl, dz, xp, g));
                if dinp.is_some() {
                    with_lanes!('a, T => V;
                        dx: &'a mut [T] = &mut dx, dz: &'a [T] = &dz, wf: &'a [T] = &wf, g: &'a ConvGeom = g,
                        spread: &'a mut [T] = &mut spread, dxp: &'a mut [T] = &mut dxp;
                        () => input_grad_tile::<V>(dx, dz, wf, g, spread, dxp));
                }
                if let Some(d) = dinp.as_deref_mut() {
                    from_tiles(&mut d[t * L * il..], &dx, n, il);
                }
            }
            let mut dw = vec![T::zero(); g.weight_len()];
            let mut db = vec![T::zero(); g.o];
            with_lanes!('a, T => V;
                dw: &'a mut [T] = &mut dw, db: &'a mut [T] = &mut db, dwl: &'a [T] = &dwl, dbl: &'a [T] = &dbl;
                () => { reduce_lanes::<V>(dw, dwl); reduce_lanes::<V>(db, dbl) });
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    add_partials(dweight, &dws);
    add_partials(dbias, &dbs);
}
