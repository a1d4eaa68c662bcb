//! Convolution, as PyTorch's `Conv2d` (cross-correlation, zero padding):
//!
//!   `out[n, o, y, x] = b[o] + Σ_c Σ_i Σ_j w[o, c, i, j] · inp[n, c, y·s + i − p, x·s + j − p]`
//!
//! with taps outside the input reading zero. A partially connected convolution
//! (LeNet-5's C3) is this with the left-out kernels `w[o, c]` held at zero.

use crate::layers::conv::ConvGeom;

/// The input index read by output (y, x) through tap (i, j), None in the padding.
fn tap(g: &ConvGeom, y: usize, x: usize, i: usize, j: usize) -> Option<(usize, usize)> {
    let iy = (y * g.stride + i).checked_sub(g.pad).filter(|&v| v < g.h)?;
    let ix = (x * g.stride + j).checked_sub(g.pad).filter(|&v| v < g.w)?;
    Some((iy, ix))
}

/// out (B, O, OH, OW) from inp (B, C, H, W), w (O, C, K, K), b (O).
pub fn conv_forward(out: &mut [f64], inp: &[f64], w: &[f64], b: &[f64], g: &ConvGeom, batch: usize) {
    let (oh, ow) = (g.oh(), g.ow());
    for n in 0..batch {
        for o in 0..g.o {
            for y in 0..oh {
                for x in 0..ow {
                    let mut s = b[o];
                    for c in 0..g.c {
                        for i in 0..g.k {
                            for j in 0..g.k {
                                if let Some((iy, ix)) = tap(g, y, x, i, j) {
                                    s += w[((o * g.c + c) * g.k + i) * g.k + j]
                                        * inp[((n * g.c + c) * g.h + iy) * g.w + ix];
                                }
                            }
                        }
                    }
                    out[((n * g.o + o) * oh + y) * ow + x] = s;
                }
            }
        }
    }
}

/// The forward pass's sum run backwards, each product sending dout to both factors:
///
///   `dinp[n, c, iy, ix] += Σ w[o, c, i, j] · dout[n, o, y, x]`   over the (o, y, x, i, j) reading (iy, ix)
///   `dw[o, c, i, j]     += Σ_n Σ_y Σ_x dout[n, o, y, x] · inp[n, c, iy, ix]`
///   `db[o]              += Σ_n Σ_y Σ_x dout[n, o, y, x]`
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    dinp: &mut [f64],
    dw: &mut [f64],
    db: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    w: &[f64],
    g: &ConvGeom,
    batch: usize,
) {
    let (oh, ow) = (g.oh(), g.ow());
    for n in 0..batch {
        for o in 0..g.o {
            for y in 0..oh {
                for x in 0..ow {
                    let d = dout[((n * g.o + o) * oh + y) * ow + x];
                    db[o] += d;
                    for c in 0..g.c {
                        for i in 0..g.k {
                            for j in 0..g.k {
                                if let Some((iy, ix)) = tap(g, y, x, i, j) {
                                    let (xi, wi) =
                                        (((n * g.c + c) * g.h + iy) * g.w + ix, ((o * g.c + c) * g.k + i) * g.k + j);
                                    dinp[xi] += w[wi] * d;
                                    dw[wi] += inp[xi] * d;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
