//! LeNet-5's trainable subsampling (S2, S4; section II-B of the paper): each output
//! is the sum of a non-overlapping size×size block of its map, times the map's
//! coefficient, plus the map's bias (rows and columns under no whole block are left
//! out):
//!
//!   `out[n, c, y, x] = coef[c] · Σ_i Σ_j inp[n, c, y·size + i, x·size + j] + bias[c]`

use crate::layers::subsample::SubsampleGeom;

/// The input indices (within a plane) of output (y, x)'s block.
fn block(g: &SubsampleGeom, y: usize, x: usize) -> impl Iterator<Item = usize> + '_ {
    (0..g.size).flat_map(move |i| (0..g.size).map(move |j| (y * g.size + i) * g.w + x * g.size + j))
}

/// out (B, C, OH, OW) from inp (B, C, H, W), coef (C), bias (C).
pub fn subsample_forward(out: &mut [f64], inp: &[f64], coef: &[f64], bias: &[f64], g: &SubsampleGeom, batch: usize) {
    let (oh, ow, hw) = (g.oh(), g.ow(), g.h * g.w);
    for p in 0..batch * g.c {
        let c = p % g.c;
        for y in 0..oh {
            for x in 0..ow {
                let sum: f64 = block(g, y, x).map(|i| inp[p * hw + i]).sum();
                out[(p * oh + y) * ow + x] = coef[c] * sum + bias[c];
            }
        }
    }
}

///   `dinp[n, c, block of (y, x)] += coef[c] · dout[n, c, y, x]`
///   `dcoef[c]                   += Σ dout[n, c, y, x] · (block sum)`
///   `dbias[c]                   += Σ dout[n, c, y, x]`
#[allow(clippy::too_many_arguments)]
pub fn subsample_backward(
    dinp: &mut [f64],
    dcoef: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    coef: &[f64],
    g: &SubsampleGeom,
    batch: usize,
) {
    let (oh, ow, hw) = (g.oh(), g.ow(), g.h * g.w);
    for p in 0..batch * g.c {
        let c = p % g.c;
        for y in 0..oh {
            for x in 0..ow {
                let d = dout[(p * oh + y) * ow + x];
                let sum: f64 = block(g, y, x).map(|i| inp[p * hw + i]).sum();
                dcoef[c] += d * sum;
                dbias[c] += d;
                block(g, y, x).for_each(|i| dinp[p * hw + i] += coef[c] * d);
            }
        }
    }
}
