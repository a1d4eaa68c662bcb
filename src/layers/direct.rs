//! One example's convolution and linear layer, NCHW, vectorised along output rows
//! (convolutions) or input features (linear layers): the kernels of LeNet-5's one
//! pattern per update, where the batch-in-lanes tiles of [`super::conv`] would leave
//! 15 of 16 lanes idle. Plain loops the compiler vectorises; call them inside
//! `super::dispatch` so that they are compiled for the CPU's vector instructions.
//! Sums run in a fixed order, so results repeat bit for bit.

use super::conv::ConvGeom;

/// Σ a·b in eight interleaved partial sums (which the compiler keeps in one vector).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])) + tail
}

/// y += a·x.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// The input with its zero border, (C, H + 2p, W + 2p), in `scratch`; or the input
/// itself when there is no padding. Returns it with its height and width.
#[inline(always)]
fn padded<'a>(inp: &'a [f32], g: &ConvGeom, scratch: &'a mut Vec<f32>) -> (&'a [f32], usize, usize) {
    if g.pad == 0 {
        return (&inp[..g.c * g.h * g.w], g.h, g.w);
    }
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    scratch.clear();
    scratch.resize(g.c * hp * wp, 0.0);
    for c in 0..g.c {
        for y in 0..g.h {
            let src = &inp[(c * g.h + y) * g.w..][..g.w];
            scratch[(c * hp + y + g.pad) * wp + g.pad..][..g.w].copy_from_slice(src);
        }
    }
    (&scratch[..], hp, wp)
}

/// Whether the convolution reads its whole input once, as a linear layer over the
/// flattened input would (LeNet-5's C5: 16×5×5 in, 1×1 out).
#[inline(always)]
fn is_dense(g: &ConvGeom) -> bool {
    g.pad == 0 && g.k == g.h && g.k == g.w
}

/// out (O, OH, OW) = b + w ⋆ inp (C, H, W), one example. Kernels that are all zero
/// (a masked convolution's left-out pairs) are skipped.
#[inline(always)]
pub fn conv_forward(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], g: &ConvGeom, scratch: &mut Vec<f32>) {
    let kk = g.k * g.k;
    if is_dense(g) {
        let n = g.c * kk;
        for (o, v) in out[..g.o].iter_mut().enumerate() {
            *v = b[o] + dot(&w[o * n..(o + 1) * n], &inp[..n]);
        }
        return;
    }
    let (oh, ow, s) = (g.oh(), g.ow(), g.stride);
    let (x, hp, wp) = padded(inp, g, scratch);
    for o in 0..g.o {
        let plane = &mut out[o * oh * ow..(o + 1) * oh * ow];
        plane.fill(b[o]);
        for c in 0..g.c {
            let kernel = &w[(o * g.c + c) * kk..(o * g.c + c + 1) * kk];
            if kernel.iter().all(|&v| v == 0.0) {
                continue;
            }
            let src = &x[c * hp * wp..(c + 1) * hp * wp];
            for ki in 0..g.k {
                for kj in 0..g.k {
                    let wv = kernel[ki * g.k + kj];
                    for (y, row) in plane.chunks_exact_mut(ow).enumerate() {
                        let from = &src[(y * s + ki) * wp + kj..];
                        if s == 1 {
                            axpy(row, wv, &from[..ow]);
                        } else {
                            for (xo, r) in row.iter_mut().enumerate() {
                                *r += wv * from[xo * s];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The convolution's backward pass for one example: dw += ∂L/∂w, db += ∂L/∂b and,
/// when given, dinp = ∂L/∂inp. `scratch` and `dscratch` hold the padded input and
/// its gradient.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv_backward(
    dinp: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    g: &ConvGeom,
    scratch: &mut Vec<f32>,
    dscratch: &mut Vec<f32>,
) {
    let kk = g.k * g.k;
    if is_dense(g) {
        let n = g.c * kk;
        for o in 0..g.o {
            db[o] += dout[o];
            axpy(&mut dw[o * n..(o + 1) * n], dout[o], &inp[..n]);
        }
        if let Some(dx) = dinp {
            let dx = &mut dx[..n];
            dx.fill(0.0);
            for o in 0..g.o {
                axpy(dx, dout[o], &w[o * n..(o + 1) * n]);
            }
        }
        return;
    }
    let (oh, ow, s) = (g.oh(), g.ow(), g.stride);
    let (x, hp, wp) = padded(inp, g, scratch);
    let mut dx = dinp;
    if dx.is_some() {
        dscratch.clear();
        dscratch.resize(g.c * hp * wp, 0.0);
    }
    for o in 0..g.o {
        let d = &dout[o * oh * ow..(o + 1) * oh * ow];
        db[o] += d.iter().sum::<f32>();
        for c in 0..g.c {
            let base = (o * g.c + c) * kk;
            let src = &x[c * hp * wp..(c + 1) * hp * wp];
            let kernel = &w[base..base + kk];
            let connected = kernel.iter().any(|&v| v != 0.0);
            for ki in 0..g.k {
                for kj in 0..g.k {
                    let mut acc = 0.0;
                    for (y, drow) in d.chunks_exact(ow).enumerate() {
                        let from = &src[(y * s + ki) * wp + kj..];
                        acc += if s == 1 {
                            dot(drow, &from[..ow])
                        } else {
                            drow.iter().enumerate().map(|(xo, &v)| v * from[xo * s]).sum()
                        };
                    }
                    dw[base + ki * g.k + kj] += acc;
                    if let (true, Some(_)) = (connected, dx.as_ref()) {
                        let wv = kernel[ki * g.k + kj];
                        let dplane = &mut dscratch[c * hp * wp..(c + 1) * hp * wp];
                        for (y, drow) in d.chunks_exact(ow).enumerate() {
                            let to = &mut dplane[(y * s + ki) * wp + kj..];
                            if s == 1 {
                                axpy(&mut to[..ow], wv, drow);
                            } else {
                                for (xo, &v) in drow.iter().enumerate() {
                                    to[xo * s] += wv * v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(dx) = dx.as_mut() {
        for c in 0..g.c {
            for y in 0..g.h {
                let from = &dscratch[(c * hp + y + g.pad) * wp + g.pad..][..g.w];
                dx[(c * g.h + y) * g.w..][..g.w].copy_from_slice(from);
            }
        }
    }
}

/// out (N) = b + w (N, K) · inp (K), one example.
#[inline(always)]
pub fn linear_forward(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], k: usize, n: usize) {
    for (o, v) in out[..n].iter_mut().enumerate() {
        *v = b[o] + dot(&w[o * k..(o + 1) * k], &inp[..k]);
    }
}

/// dw += dout ⊗ inp, db += dout, dinp = wᵀ · dout, one example.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn linear_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    k: usize,
    n: usize,
) {
    let dinp = &mut dinp[..k];
    dinp.fill(0.0);
    for o in 0..n {
        db[o] += dout[o];
        axpy(&mut dw[o * k..(o + 1) * k], dout[o], &inp[..k]);
        axpy(dinp, dout[o], &w[o * k..(o + 1) * k]);
    }
}
