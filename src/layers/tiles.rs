//! The tile layout: a batch of B examples, each a tensor of `numel` values,
//! stored as ⌈B/L⌉ tiles of `[numel][L]`: value f of example b sits at
//! `(b / L)·numel·L + f·L + b % L`. Lanes past the end of the batch hold zeros.

use std::ops::{Deref, DerefMut};

use super::{Real, L};

/// A zero-filled buffer whose first element sits on a 64-byte boundary, so that
/// every tile row (L values) is one cache line and vector loads never straddle two
/// (heap blocks from malloc are only 16-byte aligned: unaligned, every 512-bit load
/// of a row would touch two lines).
pub struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Real> Aligned<T> {
    pub fn zeros(len: usize) -> Self {
        let slack = 64 / std::mem::size_of::<T>();
        let buf = vec![T::zero(); len + slack];
        let off = buf.as_ptr().align_offset(64).min(slack);
        Aligned { buf, off, len }
    }
}

impl<T> Default for Aligned<T> {
    fn default() -> Self {
        Aligned { buf: Vec::new(), off: 0, len: 0 }
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<T: Clone> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        // A fresh allocation has its own alignment offset.
        let slack = self.buf.len() - self.len;
        let mut buf = Vec::with_capacity(self.len + slack);
        buf.extend_from_slice(&self.buf[self.off..self.off + self.len]);
        buf.extend_from_slice(&self.buf[..slack]);
        let off = buf.as_ptr().align_offset(64).min(slack);
        if off > 0 {
            buf.rotate_right(off);
        }
        Aligned { buf, off, len: self.len }
    }
}

/// Tiles needed for `batch` examples.
pub fn count(batch: usize) -> usize {
    batch.div_ceil(L)
}

/// dst (⌈B/L⌉, numel, L) = src (B, numel); lanes past B are zeroed.
pub fn to_tiles<T: Real>(dst: &mut [T], src: &[T], batch: usize, numel: usize) {
    let dst = &mut dst[..count(batch) * numel * L];
    for (t, tile) in dst.chunks_mut(numel * L).enumerate() {
        for lane in 0..L {
            let b = t * L + lane;
            if b < batch {
                let ex = &src[b * numel..(b + 1) * numel];
                for (f, &v) in ex.iter().enumerate() {
                    tile[f * L + lane] = v;
                }
            } else {
                for f in 0..numel {
                    tile[f * L + lane] = T::zero();
                }
            }
        }
    }
}

/// dst (B, numel) = the first B examples of src (⌈B/L⌉, numel, L).
pub fn from_tiles<T: Real>(dst: &mut [T], src: &[T], batch: usize, numel: usize) {
    for (b, ex) in dst[..batch * numel].chunks_mut(numel).enumerate() {
        let tile = &src[(b / L) * numel * L..];
        let lane = b % L;
        for (f, v) in ex.iter_mut().enumerate() {
            *v = tile[f * L + lane];
        }
    }
}

/// One tile (numel, L) transposed to (L, stride): row `lane` holds that example's
/// `numel` values, then zeros up to `stride`.
#[inline(always)]
pub fn transpose_tile<T: Real>(dst: &mut [T], src: &[T], numel: usize, stride: usize) {
    for lane in 0..L {
        let out = &mut dst[lane * stride..(lane + 1) * stride];
        for (f, o) in out[..numel].iter_mut().enumerate() {
            *o = src[f * L + lane];
        }
        out[numel..].fill(T::zero());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [1, 15, 16, 1000, 100_000] {
            let a = Aligned::<f32>::zeros(len);
            assert_eq!(a.len(), len);
            assert_eq!(a.as_ptr() as usize % 64, 0);
            let mut b = Aligned::<f64>::zeros(len);
            b[len - 1] = 2.0;
            assert_eq!(b.as_ptr() as usize % 64, 0);
            let c = b.clone();
            assert_eq!(c.as_ptr() as usize % 64, 0);
            assert_eq!(&c[..], &b[..]);
        }
    }

    #[test]
    fn round_trip_and_zero_padding() {
        let (batch, numel) = (19, 5);
        let src: Vec<f64> = (0..batch * numel).map(|i| i as f64 + 1.0).collect();
        let mut t = vec![f64::NAN; count(batch) * numel * L];
        to_tiles(&mut t, &src, batch, numel);
        // example 17 = tile 1, lane 1
        assert_eq!(t[numel * L + 3 * L + 1], src[17 * numel + 3]);
        // lanes past the batch are zero
        assert!(t[numel * L..].chunks(L).all(|r| r[3..].iter().all(|&v| v == 0.0)));
        let mut back = vec![0.0; batch * numel];
        from_tiles(&mut back, &t, batch, numel);
        assert_eq!(back, src);
        let mut tr = vec![f64::NAN; L * 8];
        transpose_tile(&mut tr, &t[..numel * L], numel, 8);
        assert_eq!(&tr[2 * 8..3 * 8], &[11.0, 12.0, 13.0, 14.0, 15.0, 0.0, 0.0, 0.0]);
    }
}
