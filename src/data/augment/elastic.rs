//! The elastic distortion of Simard, Steinkraus and Platt (2003): a smooth random
//! displacement field, uniform noise in [−1, 1] per pixel blurred by a Gaussian of σ
//! (zero outside the image, truncated at 3σ, as scipy's `gaussian_filter` with
//! `mode="constant"`), times α; one field for x, one for y.
//!
//! Drawn in the blur's eigenbasis rather than by blurring: the blur along a column is
//! a symmetric matrix B = Q·Λ·Qᵀ, so the field α·B_r·N·B_cᵀ of noise N equals
//! α·(Q_rΛ_r)·(Q_rᵀ·N·Q_c)·(Q_cΛ_c)ᵀ, and the middle factor is again white noise of
//! the same variance (an orthogonal change of basis of white noise). We draw that
//! middle factor directly, uniform in [−1, 1] like N (from [`DrawKey::noise`], a hash of
//! the image's key that a GPU computes to the same bits, so that an engine can draw the
//! field where it resamples), and keep only the eigenvectors
//! whose eigenvalue is at least 1e-3 of the largest: the field has the blur's exact
//! covariance but for a part below 1e-6 of it. For σ = 4 on 28×28 that is 10 of 28
//! components per axis: 2·10·10 draws and ~6k multiply-adds per field instead of 784
//! draws and ~40k for the blur (tests/augment.rs checks the field's spread against
//! the blur's, computed from the Gaussian itself).

use super::DrawKey;
use crate::layers::{dispatch, Kernel, Lanes, L};

/// Components below this fraction of the largest eigenvalue are left out.
const KEEP: f64 = 1e-3;

/// The blur along one axis of length `n` as its scaled eigenvectors: column p of
/// `m` (n × k, row-major) is λ_p·q_p; `mt` is its transpose (k × stride, each row
/// padded with zeros to whole vectors of L lanes).
#[derive(Clone, Debug)]
struct Basis {
    n: usize,
    k: usize,
    stride: usize,
    m: Vec<f32>,
    mt: Vec<f32>,
}

impl Basis {
    fn new(n: usize, sigma: f32) -> Basis {
        let blur = blur_matrix(n, sigma as f64);
        let (values, vectors) = symmetric_eigen(blur, n);
        let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let kept: Vec<usize> = (0..n).filter(|&p| values[p].abs() >= KEEP * largest).collect();
        let k = kept.len();
        let stride = n.div_ceil(L) * L;
        let (mut m, mut mt) = (vec![0.0f32; n * k], vec![0.0f32; k * stride]);
        for i in 0..n {
            for (j, &p) in kept.iter().enumerate() {
                m[i * k + j] = (values[p] * vectors[i * n + p]) as f32;
                mt[j * stride + i] = m[i * k + j];
            }
        }
        Basis { n, k, stride, m, mt }
    }
}

/// The n×n matrix of a 1-D Gaussian blur of σ, truncated at 3σ, normalised over the
/// whole kernel (so that it is the same filter as the blur), zero outside [0, n).
fn blur_matrix(n: usize, sigma: f64) -> Vec<f64> {
    let radius = (3.0 * sigma).ceil() as i64;
    let g = |d: i64| (-((d * d) as f64) / (2.0 * sigma * sigma)).exp();
    let norm: f64 = (-radius..=radius).map(g).sum();
    let mut b = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d = i as i64 - j as i64;
            if d.abs() <= radius {
                b[i * n + j] = g(d) / norm;
            }
        }
    }
    b
}

/// Eigenvalues and eigenvectors (the columns of the second, row-major n×n) of the
/// symmetric n×n matrix `a`, by cyclic Jacobi rotations: each rotation zeroes one
/// off-diagonal pair; sweeps repeat until the off-diagonal part is negligible.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off <= 1e-30 * total {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation J (c at pp and qq, s at pq, −s at qp) with (JᵀAJ)_pq = 0.
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                let rotate = |x: f64, y: f64| (c * x - s * y, s * x + c * y);
                for k in 0..n {
                    (a[k * n + p], a[k * n + q]) = rotate(a[k * n + p], a[k * n + q]);
                }
                for k in 0..n {
                    (a[p * n + k], a[q * n + k]) = rotate(a[p * n + k], a[q * n + k]);
                }
                for k in 0..n {
                    (v[k * n + p], v[k * n + q]) = rotate(v[k * n + p], v[k * n + q]);
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// The field's generator for one image size and σ, built once per split.
#[derive(Clone, Debug)]
pub struct ElasticField {
    alpha: f32,
    rows: Basis,
    cols: Basis,
}

impl ElasticField {
    pub fn new(rows: usize, cols: usize, alpha: f32, sigma: f32) -> ElasticField {
        let rows_basis = Basis::new(rows, sigma);
        let cols_basis = if cols == rows { rows_basis.clone() } else { Basis::new(cols, sigma) };
        ElasticField { alpha, rows: rows_basis, cols: cols_basis }
    }

    /// Components drawn per field (per axis of displacement).
    pub fn components(&self) -> usize {
        self.rows.k * self.cols.k
    }

    /// The distance between rows of a drawn field (cols, padded to whole vectors).
    pub fn stride(&self) -> usize {
        self.cols.stride
    }

    /// Draw one field into `field` (rows × [`Self::stride`], row-major): α·R·Z·Cᵀ
    /// with Z uniform in [−1, 1] ([`DrawKey::noise`], numbers `axis`·k … `axis`·k + k − 1
    /// for k components), R and C the scaled eigenvectors. Returns the largest |value|.
    pub fn draw(&self, key: &DrawKey, axis: u32, field: &mut [f32]) -> f32 {
        let (kr, kc) = (self.rows.k, self.cols.k);
        let first = axis * (kr * kc) as u32;
        let z: Vec<f32> = (0..(kr * kc) as u32).map(|c| key.noise(first + c)).collect();
        dispatch(Draw { basis_rows: &self.rows, basis_cols: &self.cols, alpha: self.alpha, z: &z, field })
    }

    /// What an engine needs to draw the field itself, the same way: α, the rows'
    /// basis R (rows × kr, row-major), and the columns' Cᵀ (kc × [`Self::stride`]).
    pub fn basis(&self) -> FieldBasis<'_> {
        FieldBasis {
            alpha: self.alpha,
            rows: &self.rows.m,
            kr: self.rows.k,
            cols_t: &self.cols.mt,
            kc: self.cols.k,
            stride: self.cols.stride,
        }
    }
}

/// [`ElasticField::basis`].
#[derive(Clone, Copy, Debug)]
pub struct FieldBasis<'a> {
    pub alpha: f32,
    pub rows: &'a [f32],
    pub kr: usize,
    pub cols_t: &'a [f32],
    pub kc: usize,
    pub stride: usize,
}

/// The field's two products, with explicit vectors of L lanes along each row (rows
/// padded to whole vectors), multiplies and adds unfused: every instruction set
/// gives the same bits.
struct Draw<'a> {
    basis_rows: &'a Basis,
    basis_cols: &'a Basis,
    alpha: f32,
    z: &'a [f32],
    field: &'a mut [f32],
}

impl Kernel<f32> for Draw<'_> {
    type Output = f32;
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) -> f32 {
        let Draw { basis_rows: r, basis_cols: c, alpha, z, field } = self;
        let stride = c.stride;
        // T = α·Z·Cᵀ (kr × cols): row p of T is Σ_q α·Z[p, q]·(column q of C).
        let mut t = vec![0.0f32; r.k * stride];
        for (p, t_row) in t.chunks_mut(stride).enumerate() {
            for j in (0..stride).step_by(L) {
                let mut acc = V::zero();
                for q in 0..c.k {
                    let w = V::splat(alpha * z[p * c.k + q]);
                    acc = acc.add(w.mul(V::load(&c.mt[q * stride + j..])));
                }
                acc.store(&mut t_row[j..]);
            }
        }
        // field = R·T, a row at a time; and the largest |value|, lane by lane (the
        // padding lanes are zero: C's padding is).
        let mut reach = V::zero();
        for (i, f_row) in field.chunks_mut(stride).take(r.n).enumerate() {
            for j in (0..stride).step_by(L) {
                let mut acc = V::zero();
                for p in 0..r.k {
                    acc = acc.add(V::splat(r.m[i * r.k + p]).mul(V::load(&t[p * stride + j..])));
                }
                acc.store(&mut f_row[j..]);
                let negated = V::zero().sub(acc);
                reach = acc.gt_select(reach, acc, reach);
                reach = negated.gt_select(reach, negated, reach);
            }
        }
        let mut lanes = [0.0f32; L];
        reach.store(&mut lanes);
        lanes.iter().fold(0.0f32, |m, &v| m.max(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_the_blur() {
        let n = 28;
        let b = blur_matrix(n, 4.0);
        let (values, v) = symmetric_eigen(b.clone(), n);
        // B·q_p = λ_p·q_p for every p, and the q_p orthonormal.
        for p in 0..n {
            for i in 0..n {
                let bq: f64 = (0..n).map(|j| b[i * n + j] * v[j * n + p]).sum();
                assert!((bq - values[p] * v[i * n + p]).abs() < 1e-12, "p {p} i {i}");
            }
            for q in 0..n {
                let dot: f64 = (0..n).map(|i| v[i * n + p] * v[i * n + q]).sum();
                assert!((dot - if p == q { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn a_smooth_blur_keeps_few_components() {
        let f = ElasticField::new(28, 28, 34.0, 4.0);
        assert!((64..=144).contains(&f.components()), "{}", f.components());
        // A sharp blur keeps them all.
        assert_eq!(ElasticField::new(28, 28, 34.0, 0.5).components(), 28 * 28);
    }
}
