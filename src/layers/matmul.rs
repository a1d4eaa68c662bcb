//! Row-major matrix products on top of the `gemm` crate, with slice-length
//! checks that make the unsafe call sound.

use super::Real;

/// A row-major matrix operand, possibly read transposed.
#[derive(Clone, Copy)]
pub struct Mat<'a, T> {
    pub data: &'a [T],
    /// Read as the transpose of the stored matrix.
    pub transposed: bool,
}

pub fn n<T>(data: &[T]) -> Mat<'_, T> {
    Mat { data, transposed: false }
}
pub fn t<T>(data: &[T]) -> Mat<'_, T> {
    Mat { data, transposed: true }
}

/// c (m×n) = a (m×k) · b (k×n), or c += a·b when `accumulate`.
/// Stored shapes: a is (m×k), or (k×m) when transposed; b is (k×n), or (n×k).
pub fn matmul<T: Real>(c: &mut [T], a: Mat<T>, b: Mat<T>, m: usize, n: usize, k: usize, accumulate: bool) {
    assert!(c.len() >= m * n && a.data.len() >= m * k && b.data.len() >= k * n, "matmul operand too short");
    if m == 0 || n == 0 {
        return;
    }
    // (row stride, column stride) of each operand as read.
    let (a_rs, a_cs) = if a.transposed { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if b.transposed { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the asserts above guarantee every index the strides reach,
    // (m-1, n-1, k-1), lies inside the slices; `c` does not alias `a` or `b`
    // (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
