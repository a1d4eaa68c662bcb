//! Fully connected layer, PyTorch layout: weight (N, K), bias (N).

use rayon::prelude::*;

use super::matmul::{matmul, n, t};
use super::{add_partials, Par, Real};

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
    let chunk = par.chunk_len(batch);
    out[..batch * nout].par_chunks_mut(chunk * nout).zip(inp[..batch * k].par_chunks(chunk * k)).for_each(|(y, x)| {
        let rows = x.len() / k;
        matmul(y, n(x), t(weight), rows, nout, k, false);
        for row in y.chunks_mut(nout) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
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
    let chunk = par.chunk_len(batch);
    let partials: Vec<(Vec<T>, Vec<T>)> = dinp[..batch * k]
        .par_chunks_mut(chunk * k)
        .zip(dout[..batch * nout].par_chunks(chunk * nout))
        .zip(inp[..batch * k].par_chunks(chunk * k))
        .map(|((dx, dy), x)| {
            let rows = x.len() / k;
            matmul(dx, n(dy), n(weight), rows, k, nout, false);
            let mut dw = vec![T::zero(); nout * k];
            // dw (N, K) = dyᵀ (N, rows) · x (rows, K)
            matmul(&mut dw, t(dy), n(x), nout, k, rows, false);
            let mut db = vec![T::zero(); nout];
            for row in dy.chunks(nout) {
                for (d, &v) in db.iter_mut().zip(row) {
                    *d += v;
                }
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    add_partials(dweight, &dws);
    add_partials(dbias, &dbs);
}
