//! Fully connected layer, PyTorch layout: weight (N, K), bias (N), on tiles.
//!
//! Forward and input gradient work one tile at a time (a broadcast weight times a
//! vector of 16 examples). The weight gradient sums over examples, which live in
//! lanes; rather than summing lanes per weight, it is computed once per batch chunk
//! from the inputs transposed to (example, K) rows, so the vectors run along K.
//! Forward and input gradient also come for two tiles at once, where each
//! broadcast weight feeds two FMAs.

// Register-blocked kernels index several arrays with one loop variable on purpose.
#![allow(clippy::needless_range_loop)]

use num_traits::Zero;
use rayon::prelude::*;

use super::activation::f_lanes;
use super::tiles::{count, from_tiles, to_tiles, transpose_tile, Aligned};
use super::{add_partials, with_lanes, Lanes, Par, Real, L};
use crate::spec::Activation;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block<V: Lanes, const MN: usize>(
    out: &mut [V::T],
    inp: &[V::T],
    w: &[V::T],
    b: &[V::T],
    k: usize,
    act: Option<Activation>,
    n0: usize,
) {
    let mut acc = [V::zero(); MN];
    for mn in 0..MN {
        acc[mn] = V::splat(b[n0 + mn]);
    }
    let w = &w[n0 * k..(n0 + MN) * k];
    let inp = &inp[..k * L];
    let (wp, xp) = (w.as_ptr(), inp.as_ptr());
    for q in 0..k {
        // SAFETY: q < k and mn < MN, so q·L + L ≤ inp.len() and mn·k + q < w.len()
        // (both lengths fixed by the slicing above): the loop needs no bounds checks.
        unsafe {
            let x = V::load_ptr(xp.add(q * L));
            for (mn, a) in acc.iter_mut().enumerate() {
                *a = V::splat(*wp.add(mn * k + q)).fma(x, *a);
            }
        }
    }
    for (mn, &a) in acc.iter().enumerate() {
        let v = match act {
            Some(f) => f_lanes(f, a),
            None => a,
        };
        v.store(&mut out[(n0 + mn) * L..]);
    }
}

/// [`forward_block`] on two tiles at once: each broadcast weight feeds two FMAs, so
/// the loop is bound by the FMAs rather than by loads. Every output is the same sum
/// in the same order as on one tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block2<V: Lanes, const MN: usize>(
    out: [&mut [V::T]; 2],
    inp: [&[V::T]; 2],
    w: &[V::T],
    b: &[V::T],
    k: usize,
    act: Option<Activation>,
    n0: usize,
) {
    let mut acc = [[V::zero(); 2]; MN];
    for (mn, a) in acc.iter_mut().enumerate() {
        *a = [V::splat(b[n0 + mn]); 2];
    }
    let w = &w[n0 * k..(n0 + MN) * k];
    let (x0, x1) = (&inp[0][..k * L], &inp[1][..k * L]);
    let (wp, p0, p1) = (w.as_ptr(), x0.as_ptr(), x1.as_ptr());
    for q in 0..k {
        // SAFETY: q < k and mn < MN, so q·L + L ≤ k·L = x0.len() = x1.len() and
        // mn·k + q < w.len() (all fixed by the slicing above).
        unsafe {
            let (a0, a1) = (V::load_ptr(p0.add(q * L)), V::load_ptr(p1.add(q * L)));
            for (mn, a) in acc.iter_mut().enumerate() {
                let wv = V::splat(*wp.add(mn * k + q));
                a[0] = wv.fma(a0, a[0]);
                a[1] = wv.fma(a1, a[1]);
            }
        }
    }
    let [o0, o1] = out;
    for (mn, a) in acc.iter().enumerate() {
        for (t, o) in [&mut *o0, &mut *o1].into_iter().enumerate() {
            let v = match act {
                Some(f) => f_lanes(f, a[t]),
                None => a[t],
            };
            v.store(&mut o[(n0 + mn) * L..]);
        }
    }
}

/// [`forward_tile`] on two tiles.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_tile2<V: Lanes>(
    out: [&mut [V::T]; 2],
    inp: [&[V::T]; 2],
    w: &[V::T],
    b: &[V::T],
    k: usize,
    n: usize,
    act: Option<Activation>,
) {
    let [o0, o1] = out;
    let mut n0 = 0;
    while n0 + 8 <= n {
        forward_block2::<V, 8>([&mut *o0, &mut *o1], inp, w, b, k, act, n0);
        n0 += 8;
    }
    while n0 < n {
        forward_block2::<V, 1>([&mut *o0, &mut *o1], inp, w, b, k, act, n0);
        n0 += 1;
    }
}

/// out (N, L) = act(w (N, K) · inp (K, L) + b) for one tile.
#[inline(always)]
pub(crate) fn forward_tile<V: Lanes>(
    out: &mut [V::T],
    inp: &[V::T],
    w: &[V::T],
    b: &[V::T],
    k: usize,
    n: usize,
    act: Option<Activation>,
) {
    let mut n0 = 0;
    while n0 + 8 <= n {
        forward_block::<V, 8>(out, inp, w, b, k, act, n0);
        n0 += 8;
    }
    while n0 < n {
        forward_block::<V, 1>(out, inp, w, b, k, act, n0);
        n0 += 1;
    }
}

#[inline(always)]
fn input_grad_block<V: Lanes, const MK: usize>(
    dinp: &mut [V::T],
    dout: &[V::T],
    w: &[V::T],
    k: usize,
    n: usize,
    k0: usize,
) {
    let mut acc = [V::zero(); MK];
    for j in 0..n {
        let d = V::load(&dout[j * L..]);
        let wr = &w[j * k + k0..j * k + k0 + MK];
        for mk in 0..MK {
            acc[mk] = V::splat(wr[mk]).fma(d, acc[mk]);
        }
    }
    for (mk, a) in acc.iter().enumerate() {
        a.store(&mut dinp[(k0 + mk) * L..]);
    }
}

/// [`input_grad_block`] for two tiles: each broadcast weight feeds two FMAs.
#[inline(always)]
fn input_grad_block2<V: Lanes, const MK: usize>(
    dinp: [&mut [V::T]; 2],
    dout: [&[V::T]; 2],
    w: &[V::T],
    k: usize,
    n: usize,
    k0: usize,
) {
    // Reads dout[u][..n·L] and w[..(n − 1)·k + k0 + MK], checked once for the
    // unchecked loads below.
    assert!(
        k0 + MK <= k && w.len() >= n * k && dout.iter().all(|d| d.len() >= n * L),
        "linear input-gradient block out of bounds"
    );
    let mut acc = [[V::zero(); MK]; 2];
    let (da, db, w) = (dout[0].as_ptr(), dout[1].as_ptr(), w.as_ptr());
    for j in 0..n {
        // SAFETY: j < n and k0 + mk < k, checked above.
        unsafe {
            let (a, b) = (V::load_ptr(da.add(j * L)), V::load_ptr(db.add(j * L)));
            let wr = w.add(j * k + k0);
            let [acc_a, acc_b] = &mut acc;
            for (mk, (sa, sb)) in acc_a.iter_mut().zip(acc_b.iter_mut()).enumerate() {
                let wv = V::splat(*wr.add(mk));
                *sa = wv.fma(a, *sa);
                *sb = wv.fma(b, *sb);
            }
        }
    }
    for (dx, acc) in dinp.into_iter().zip(&acc) {
        for (mk, a) in acc.iter().enumerate() {
            a.store(&mut dx[(k0 + mk) * L..]);
        }
    }
}

/// [`input_grad_tile`] for two tiles at once, with the same bits.
#[inline(always)]
pub(crate) fn input_grad_tile2<V: Lanes>(dinp: [&mut [V::T]; 2], dout: [&[V::T]; 2], w: &[V::T], k: usize, n: usize) {
    let [da, db] = dinp;
    let mut k0 = 0;
    while k0 + 8 <= k {
        input_grad_block2::<V, 8>([&mut *da, &mut *db], dout, w, k, n, k0);
        k0 += 8;
    }
    while k0 < k {
        input_grad_block2::<V, 1>([&mut *da, &mut *db], dout, w, k, n, k0);
        k0 += 1;
    }
}

/// dinp (K, L) = wᵀ (K, N) · dout (N, L) for one tile.
#[inline(always)]
pub(crate) fn input_grad_tile<V: Lanes>(dinp: &mut [V::T], dout: &[V::T], w: &[V::T], k: usize, n: usize) {
    let mut k0 = 0;
    while k0 + 8 <= k {
        input_grad_block::<V, 8>(dinp, dout, w, k, n, k0);
        k0 += 8;
    }
    while k0 < k {
        input_grad_block::<V, 1>(dinp, dout, w, k, n, k0);
        k0 += 1;
    }
}

/// Row stride of transposed inputs: K rounded up to whole lanes.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(L) * L
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grad_block<V: Lanes, const MN: usize, const MV: usize>(
    dw: &mut [V::T],
    douts: &[V::T],
    xts: &[V::T],
    tiles: usize,
    k: usize,
    n: usize,
    n0: usize,
    v0: usize,
) {
    let kp = padded_k(k);
    // Reads douts[..tiles·n·L] and xts[..tiles·L·kp], checked once for the
    // unchecked loads below.
    assert!(
        n0 + MN <= n && (v0 + MV) * L <= kp && douts.len() >= tiles * n * L && xts.len() >= tiles * L * kp,
        "linear weight-gradient block out of bounds"
    );
    let mut acc = [[V::zero(); MV]; MN];
    for t in 0..tiles {
        // SAFETY: every offset below is below tiles·n·L (douts) or tiles·L·kp
        // (xts): n0 + mn < n, lane < L and (v0 + mv + 1)·L ≤ kp, checked above.
        unsafe {
            let dout = douts.as_ptr().add(t * n * L + n0 * L);
            let xt = xts.as_ptr().add(t * L * kp + v0 * L);
            for lane in 0..L {
                let mut x = [V::zero(); MV];
                for mv in 0..MV {
                    x[mv] = V::load_ptr(xt.add(lane * kp + mv * L));
                }
                for mn in 0..MN {
                    let d = V::splat(*dout.add(mn * L + lane));
                    for mv in 0..MV {
                        acc[mn][mv] = d.fma(x[mv], acc[mn][mv]);
                    }
                }
            }
        }
    }
    for (mn, a) in acc.iter().enumerate() {
        let dst = &mut dw[(n0 + mn) * k..(n0 + mn + 1) * k];
        for (mv, &v) in a.iter().enumerate() {
            let q = (v0 + mv) * L;
            if q + L <= k {
                V::load(&dst[q..]).add(v).store(&mut dst[q..]);
            } else {
                let mut buf = [V::T::zero(); L];
                v.store(&mut buf);
                for (d, &b) in dst[q..].iter_mut().zip(&buf) {
                    *d += b;
                }
            }
        }
    }
}

/// The weight gradients of inputs v0·L..(v0 + MV)·L, all outputs: the inputs'
/// transposed values of every tile (MV·L·L values a tile) stay in L1 while the
/// output rows go by.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn weight_grad_cols<V: Lanes, const MV: usize>(
    dw: &mut [V::T],
    douts: &[V::T],
    xts: &[V::T],
    tiles: usize,
    k: usize,
    n: usize,
    v0: usize,
) {
    let mut n0 = 0;
    // Registers: 6·MV accumulators, MV inputs, one broadcast output gradient.
    while n0 + 6 <= n {
        weight_grad_block::<V, 6, MV>(dw, douts, xts, tiles, k, n, n0, v0);
        n0 += 6;
    }
    while n0 < n {
        weight_grad_block::<V, 1, MV>(dw, douts, xts, tiles, k, n, n0, v0);
        n0 += 1;
    }
}

/// dw (N, K) += Σ over `tiles` tiles and their lanes of dout (N, L) ⊗ x, with the
/// inputs given transposed, `xts` (tiles, L, padded_k(K)) ([`transpose_tile`]);
/// db (N) += Σ dout.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn weight_grad<V: Lanes>(
    dw: &mut [V::T],
    db: &mut [V::T],
    douts: &[V::T],
    xts: &[V::T],
    tiles: usize,
    k: usize,
    n: usize,
) {
    let vs = padded_k(k) / L;
    let mut v0 = 0;
    while v0 + 4 <= vs {
        weight_grad_cols::<V, 4>(dw, douts, xts, tiles, k, n, v0);
        v0 += 4;
    }
    while v0 < vs {
        weight_grad_cols::<V, 1>(dw, douts, xts, tiles, k, n, v0);
        v0 += 1;
    }
    for (j, d) in db[..n].iter_mut().enumerate() {
        let mut acc = V::zero();
        for t in 0..tiles {
            acc = acc.add(V::load(&douts[(t * n + j) * L..]));
        }
        *d += acc.sum();
    }
}

/// out (B, N) = inp (B, K) · weightᵀ (K, N) + bias (N).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward<T: Real>(
    out: &mut [T],
    inp: &[T],
    weight: &[T],
    bias: &[T],
    batch: usize,
    k: usize,
    nout: usize,
    par: Par,
) {
    let chunk = par.tiles_per_chunk(batch) * L;
    out[..batch * nout].par_chunks_mut(chunk * nout).zip(inp[..batch * k].par_chunks(chunk * k)).for_each(|(y, x)| {
        let b = x.len() / k;
        let (mut xt, mut yt) = (Aligned::<T>::zeros(k * L), Aligned::<T>::zeros(nout * L));
        for t in 0..count(b) {
            let m = (b - t * L).min(L);
            to_tiles(&mut xt, &x[t * L * k..], m, k);
            with_lanes!('a, T => V;
                yt: &'a mut [T] = &mut yt, xt: &'a [T] = &xt, w: &'a [T] = weight, b: &'a [T] = bias,
                k: usize = k, n: usize = nout;
                () => forward_tile::<V>(yt, xt, w, b, k, n, None));
            from_tiles(&mut y[t * L * nout..], &yt, m, nout);
        }
    });
}

/// dinp (B, K) = dout (B, N) · weight (N, K); dweight += doutᵀ · inp; dbias += Σ_b dout.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<T: Real>(
    dinp: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    weight: &[T],
    batch: usize,
    k: usize,
    nout: usize,
    par: Par,
) {
    let chunk = par.tiles_per_chunk(batch) * L;
    let kp = padded_k(k);
    let partials: Vec<(Vec<T>, Vec<T>)> = dinp[..batch * k]
        .par_chunks_mut(chunk * k)
        .zip(dout[..batch * nout].par_chunks(chunk * nout))
        .zip(inp[..batch * k].par_chunks(chunk * k))
        .map(|((dx, dy), x)| {
            let b = x.len() / k;
            let tiles = count(b);
            let (mut xt, mut dxt) = (Aligned::<T>::zeros(k * L), Aligned::<T>::zeros(k * L));
            let (mut douts, mut xts) = (Aligned::<T>::zeros(tiles * nout * L), Aligned::<T>::zeros(tiles * L * kp));
            for t in 0..tiles {
                let m = (b - t * L).min(L);
                to_tiles(&mut xt, &x[t * L * k..], m, k);
                let dyt = &mut douts[t * nout * L..(t + 1) * nout * L];
                to_tiles(dyt, &dy[t * L * nout..], m, nout);
                transpose_tile(&mut xts[t * L * kp..(t + 1) * L * kp], &xt, k, kp);
                with_lanes!('a, T => V;
                    dxt: &'a mut [T] = &mut dxt, dyt: &'a [T] = dyt, w: &'a [T] = weight, k: usize = k, n: usize = nout;
                    () => input_grad_tile::<V>(dxt, dyt, w, k, n));
                from_tiles(&mut dx[t * L * k..], &dxt, m, k);
            }
            let mut dw = vec![T::zero(); nout * k];
            let mut db = vec![T::zero(); nout];
            with_lanes!('a, T => V;
                dw: &'a mut [T] = &mut dw, db: &'a mut [T] = &mut db, douts: &'a [T] = &douts, xts: &'a [T] = &xts,
                tiles: usize = tiles, k: usize = k, n: usize = nout;
                () => weight_grad::<V>(dw, db, douts, xts, tiles, k, n));
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    add_partials(dweight, &dws);
    add_partials(dbias, &dbs);
}
