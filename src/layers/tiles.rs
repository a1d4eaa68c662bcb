//! The tile layout: a batch of B examples, each a tensor of `numel` values,
//! stored as ⌈B/L⌉ tiles of `[numel][L]`: value f of example b sits at
//! `(b / L)·numel·L + f·L + b % L`. Lanes past the end of the batch hold zeros.

use super::{Real, L};

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
