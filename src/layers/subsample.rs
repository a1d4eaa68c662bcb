//! LeNet-5's trainable subsampling (S2 and S4 of the paper): each output is the sum
//! of a non-overlapping size×size block of its map, times the map's trainable
//! coefficient, plus the map's trainable bias. NCHW, plain loops: the layer is a
//! small share of the network's work.

use super::Real;

/// The shape of one subsampling layer: `c` maps of h×w in, blocks of `size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubsampleGeom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub size: usize,
}

impl SubsampleGeom {
    pub fn oh(&self) -> usize {
        self.h / self.size
    }
    pub fn ow(&self) -> usize {
        self.w / self.size
    }
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.c * self.oh() * self.ow()
    }

    /// The sum of the block under output (y, x) of plane `p` (h×w).
    #[inline(always)]
    fn block_sum<T: Real>(&self, p: &[T], y: usize, x: usize) -> T {
        let mut s = T::zero();
        for i in 0..self.size {
            for j in 0..self.size {
                s += p[(y * self.size + i) * self.w + x * self.size + j];
            }
        }
        s
    }
}

/// `out (B, C, OH, OW) = coef[c] · Σ_block inp (B, C, H, W) + bias[c]`.
pub fn subsample_forward<T: Real>(out: &mut [T], inp: &[T], coef: &[T], bias: &[T], g: &SubsampleGeom, batch: usize) {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    for p in 0..batch * g.c {
        let ch = p % g.c;
        let plane = &inp[p * hw..(p + 1) * hw];
        for y in 0..g.oh() {
            for x in 0..g.ow() {
                out[p * ohw + y * g.ow() + x] = coef[ch] * g.block_sum(plane, y, x) + bias[ch];
            }
        }
    }
}

/// `dcoef[c] += Σ dout · block sum`, `dbias[c] += Σ dout` and, when given,
/// `dinp = coef[c] · dout` of the block's output (zero under no block).
#[allow(clippy::too_many_arguments)]
pub fn subsample_backward<T: Real>(
    dinp: Option<&mut [T]>,
    dcoef: &mut [T],
    dbias: &mut [T],
    dout: &[T],
    inp: &[T],
    coef: &[T],
    g: &SubsampleGeom,
    batch: usize,
) {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    for p in 0..batch * g.c {
        let ch = p % g.c;
        let plane = &inp[p * hw..(p + 1) * hw];
        let d = &dout[p * ohw..(p + 1) * ohw];
        for y in 0..g.oh() {
            for x in 0..g.ow() {
                let dy = d[y * g.ow() + x];
                dcoef[ch] += dy * g.block_sum(plane, y, x);
                dbias[ch] += dy;
            }
        }
    }
    if let Some(dinp) = dinp {
        spread(dinp, dout, coef, g, batch);
    }
}

/// dinp = scale[c] · dout of the block's output, at every position of the block (zero
/// under no block): the input gradient with the coefficients, the input curvature
/// with their squares.
fn spread<T: Real>(dinp: &mut [T], dout: &[T], scale: &[T], g: &SubsampleGeom, batch: usize) {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    for p in 0..batch * g.c {
        let ch = p % g.c;
        let dx = &mut dinp[p * hw..(p + 1) * hw];
        dx.fill(T::zero());
        let d = &dout[p * ohw..(p + 1) * ohw];
        for y in 0..g.oh() {
            for x in 0..g.ow() {
                let v = scale[ch] * d[y * g.ow() + x];
                for i in 0..g.size {
                    for j in 0..g.size {
                        dx[(y * g.size + i) * g.w + x * g.size + j] = v;
                    }
                }
            }
        }
    }
}

/// The Gauss–Newton second derivatives (appendix C of the paper) through the layer:
/// `hcoef[c] += Σ d2out · (block sum)²`, `hbias[c] += Σ d2out` and, when given,
/// `d2inp = coef[c]² · d2out` of the block's output.
#[allow(clippy::too_many_arguments)]
pub fn subsample_curvature<T: Real>(
    d2inp: Option<&mut [T]>,
    hcoef: &mut [T],
    hbias: &mut [T],
    d2out: &[T],
    inp: &[T],
    coef: &[T],
    g: &SubsampleGeom,
    batch: usize,
) {
    let (hw, ohw) = (g.h * g.w, g.oh() * g.ow());
    for p in 0..batch * g.c {
        let ch = p % g.c;
        let plane = &inp[p * hw..(p + 1) * hw];
        for y in 0..g.oh() {
            for x in 0..g.ow() {
                let h = d2out[p * ohw + y * g.ow() + x];
                let s = g.block_sum(plane, y, x);
                hcoef[ch] += h * s * s;
                hbias[ch] += h;
            }
        }
    }
    if let Some(d2inp) = d2inp {
        let squared: Vec<T> = coef.iter().map(|&c| c * c).collect();
        spread(d2inp, d2out, &squared, g, batch);
    }
}
