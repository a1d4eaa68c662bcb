//! 2-D convolution as im2col + GEMM, one GEMM per example, examples split into
//! parallel chunks.

use rayon::prelude::*;

use super::matmul::{matmul, n, t};
use super::{add_partials, Par, Real};

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
    /// Rows of the im2col matrix: C·K·K.
    pub fn patch_len(&self) -> usize {
        self.c * self.k * self.k
    }
    pub fn weight_len(&self) -> usize {
        self.o * self.patch_len()
    }
}

/// The input pixel that patch row `r` sees at output position (oy, ox), or
/// None in the zero padding.
#[inline]
fn source(g: &ConvGeom, r: usize, oy: usize, ox: usize) -> Option<usize> {
    let (ci, ki, kj) = (r / (g.k * g.k), (r / g.k) % g.k, r % g.k);
    let iy = (oy * g.stride + ki).checked_sub(g.pad).filter(|&y| y < g.h)?;
    let ix = (ox * g.stride + kj).checked_sub(g.pad).filter(|&x| x < g.w)?;
    Some((ci * g.h + iy) * g.w + ix)
}

/// col (C·K·K, OH·OW) = the patches of one example x (C, H, W).
pub fn im2col<T: Real>(col: &mut [T], x: &[T], g: &ConvGeom) {
    let (oh, ow) = (g.oh(), g.ow());
    for r in 0..g.patch_len() {
        let row = &mut col[r * oh * ow..(r + 1) * oh * ow];
        for oy in 0..oh {
            for ox in 0..ow {
                row[oy * ow + ox] = source(g, r, oy, ox).map_or(T::zero(), |p| x[p]);
            }
        }
    }
}

/// dx (C, H, W) = the sum of the patch gradients dcol (C·K·K, OH·OW) back onto
/// the pixels they came from (the adjoint of [`im2col`]).
pub fn col2im<T: Real>(dx: &mut [T], dcol: &[T], g: &ConvGeom) {
    let (oh, ow) = (g.oh(), g.ow());
    dx.fill(T::zero());
    for r in 0..g.patch_len() {
        for oy in 0..oh {
            for ox in 0..ow {
                if let Some(p) = source(g, r, oy, ox) {
                    dx[p] += dcol[r * oh * ow + oy * ow + ox];
                }
            }
        }
    }
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
    let (il, ol, pl, hw) = (g.in_len(), g.out_len(), g.patch_len(), g.oh() * g.ow());
    let chunk = par.chunk_len(batch);
    out[..batch * ol].par_chunks_mut(chunk * ol).zip(inp[..batch * il].par_chunks(chunk * il)).for_each(
        |(out, inp)| {
            let mut col = vec![T::zero(); pl * hw];
            for (y, x) in out.chunks_mut(ol).zip(inp.chunks(il)) {
                im2col(&mut col, x, g);
                // y (O, OH·OW) = weight (O, C·K·K) · col (C·K·K, OH·OW)
                matmul(y, n(weight), n(&col), g.o, hw, pl, false);
                for (plane, &b) in y.chunks_mut(hw).zip(bias) {
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        },
    );
}

/// From dout (B, O, OH, OW): dweight += Σ_b dout_b · col_bᵀ, dbias += Σ dout,
/// and, when asked, dinp (B, C, H, W) = col2im(weightᵀ · dout_b).
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
    let (il, ol, pl, hw) = (g.in_len(), g.out_len(), g.patch_len(), g.oh() * g.ow());
    let chunk = par.chunk_len(batch);
    let dinp_chunks: Vec<Option<&mut [T]>> = match dinp {
        Some(d) => d[..batch * il].chunks_mut(chunk * il).map(Some).collect(),
        None => (0..batch.div_ceil(chunk)).map(|_| None).collect(),
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = dinp_chunks
        .into_par_iter()
        .zip(dout[..batch * ol].par_chunks(chunk * ol))
        .zip(inp[..batch * il].par_chunks(chunk * il))
        .map(|((mut dinp, dout), inp)| {
            let mut dw = vec![T::zero(); g.weight_len()];
            let mut db = vec![T::zero(); g.o];
            let mut col = vec![T::zero(); pl * hw];
            let mut dcol = vec![T::zero(); pl * hw];
            for (e, (dy, x)) in dout.chunks(ol).zip(inp.chunks(il)).enumerate() {
                im2col(&mut col, x, g);
                // dw (O, C·K·K) += dy (O, OH·OW) · colᵀ (OH·OW, C·K·K)
                matmul(&mut dw, n(dy), t(&col), g.o, pl, hw, true);
                for (db, plane) in db.iter_mut().zip(dy.chunks(hw)) {
                    *db += plane.iter().copied().sum::<T>();
                }
                if let Some(dx) = dinp.as_deref_mut() {
                    // dcol (C·K·K, OH·OW) = weightᵀ (C·K·K, O) · dy (O, OH·OW)
                    matmul(&mut dcol, t(weight), n(dy), pl, hw, g.o, false);
                    col2im(&mut dx[e * il..(e + 1) * il], &dcol, g);
                }
            }
            (dw, db)
        })
        .collect();
    let (dws, dbs): (Vec<Vec<T>>, Vec<Vec<T>>) = partials.into_iter().unzip();
    add_partials(dweight, &dws);
    add_partials(dbias, &dbs);
}
