//! The numerical core: each layer is a `*_forward` / `*_backward` pair written
//! out explicitly in the style of llm.c, with the tensor shapes in comments.
//!
//! Two layouts. The public `*_forward` / `*_backward` functions take NCHW,
//! row-major batches, as PyTorch does. Inside, every kernel works on **tiles**:
//! [`L`] = 16 examples side by side, one per SIMD lane, so that a tensor of
//! per-example shape (C, H, W) is stored `[tile][C][H][W][lane]` (see [`tiles`]).
//! With the batch in the lanes, every operation of every layer is a vector
//! operation with all lanes busy, whatever the layer's geometry: convolutions
//! multiply a broadcast weight into a vector of 16 examples' pixels, pooling and
//! activations are lane-wise, and no im2col copy is ever made. The fused CPU
//! engine ([`crate::engine::tiled`]) keeps whole batches in this layout; the NCHW
//! functions convert on the way in and out.
//!
//! Backward functions overwrite the input gradient and accumulate (`+=`) into
//! parameter gradients. Every function is generic over the float type, so the
//! engine runs them in f32 while the tests check them in f64 against finite
//! differences.
//!
//! Parallelism is over the batch, in a fixed number of chunks ([`Par`]); partial
//! parameter gradients are summed in chunk order, so the same thread count always
//! gives bit-identical results.
//!
//! Kernels are `#[inline(always)]` and reach the machine through `dispatch`,
//! which runs a closure inside a function compiled for AVX-512 or AVX2+FMA when the
//! CPU has them (chosen once at run time), so the same generic code becomes 512-bit
//! or 256-bit vector code.

pub mod activation;
pub mod conv;
pub mod conv_probe;
pub mod direct;
mod lanes;
pub mod linear;
pub mod loss;
pub mod pool;
pub mod rbf;
pub mod simd;
pub mod subsample;
pub mod tiles;

use num_traits::Float;

pub(crate) use lanes::{dispatch, with_lanes, Kernel, Lanes};

/// Examples per tile: the lanes of one vector (16 f32 in an AVX-512 register).
pub const L: usize = 16;

/// One tile row: the same feature of the 16 examples of a tile.
pub type Lane<T> = [T; L];

/// The float types the layers run in (f32 in training, f64 in gradient checks),
/// with their vector types and the constants of [`Real::exp_v`].
pub trait Real:
    Float + Send + Sync + Default + std::iter::Sum + std::ops::AddAssign + std::fmt::Debug + 'static
{
    /// 16 lanes in AVX-512 registers (x86-64).
    type Avx512: Lanes<T = Self>;
    /// 16 lanes in AVX2 registers (x86-64).
    type Avx2: Lanes<T = Self>;

    /// 1.5·2^(mantissa bits): adding it rounds to an integer, left in the low bits.
    const EXP_MAGIC: f64;
    const EXP_MAGIC_BITS: u64;
    /// ln 2 split so that n·LN2_HI is exact.
    const LN2_HI: f64;
    const LN2_LO: f64;
    /// Taylor coefficients of eʳ, highest degree first.
    const EXP_TAYLOR: &'static [f64];
    /// Above: +inf; below: 0.
    const EXP_HI: f64;
    const EXP_LO: f64;

    /// 2ⁿ from t = n + EXP_MAGIC (the bits of t hold n).
    fn pow2_of_magic(self) -> Self;

    /// eˣ to within a few ulp, by the same steps as the vector kernels: x = n·ln2 + r
    /// with |r| ≤ ln2/2, eʳ by its Taylor polynomial, 2ⁿ from the exponent bits.
    /// +inf above the overflow threshold, 0 below the underflow threshold (subnormal
    /// results are flushed), NaN for NaN.
    #[inline(always)]
    fn exp_v(self) -> Self {
        let c = |v: f64| Self::from(v).expect("constant fits");
        let x = self;
        let t = x.mul_add(c(std::f64::consts::LOG2_E), c(Self::EXP_MAGIC));
        let n = t - c(Self::EXP_MAGIC);
        let r = n.mul_add(c(-Self::LN2_LO), n.mul_add(c(-Self::LN2_HI), x));
        let mut p = c(Self::EXP_TAYLOR[0]);
        for &k in &Self::EXP_TAYLOR[1..] {
            p = p.mul_add(r, c(k));
        }
        // p·2ⁿ as (p·2)·2ⁿ⁻¹, so that n at the top of the range does not overflow 2ⁿ.
        let v = (p + p) * (t - Self::one()).pow2_of_magic();
        if x > c(Self::EXP_HI) {
            Self::infinity()
        } else if c(Self::EXP_LO) > x {
            Self::zero()
        } else {
            v
        }
    }
}

impl Real for f32 {
    #[cfg(target_arch = "x86_64")]
    type Avx512 = lanes::x86::Z32;
    #[cfg(target_arch = "x86_64")]
    type Avx2 = lanes::x86::Y32;
    #[cfg(not(target_arch = "x86_64"))]
    type Avx512 = lanes::Plain<f32>;
    #[cfg(not(target_arch = "x86_64"))]
    type Avx2 = lanes::Plain<f32>;

    const EXP_MAGIC: f64 = 12_582_912.0;
    const EXP_MAGIC_BITS: u64 = 0x4B40_0000;
    const LN2_HI: f64 = 0.693_145_751_953_125;
    const LN2_LO: f64 = 1.428_606_765_330_187e-6;
    const EXP_TAYLOR: &'static [f64] = &[1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    const EXP_HI: f64 = 88.72;
    const EXP_LO: f64 = -87.33;

    #[inline(always)]
    fn pow2_of_magic(self) -> f32 {
        let n = self.to_bits().wrapping_sub(Self::EXP_MAGIC_BITS as u32);
        f32::from_bits(n.wrapping_add(127) << 23)
    }
}

impl Real for f64 {
    #[cfg(target_arch = "x86_64")]
    type Avx512 = lanes::x86::Z64;
    #[cfg(target_arch = "x86_64")]
    type Avx2 = lanes::x86::Y64;
    #[cfg(not(target_arch = "x86_64"))]
    type Avx512 = lanes::Plain<f64>;
    #[cfg(not(target_arch = "x86_64"))]
    type Avx2 = lanes::Plain<f64>;

    const EXP_MAGIC: f64 = 6_755_399_441_055_744.0;
    const EXP_MAGIC_BITS: u64 = 0x4338_0000_0000_0000;
    #[allow(clippy::excessive_precision)] // the exact split of ln 2 used by libm
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const EXP_TAYLOR: &'static [f64] = &[
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ];
    const EXP_HI: f64 = 709.78;
    const EXP_LO: f64 = -708.39;

    #[inline(always)]
    fn pow2_of_magic(self) -> f64 {
        let n = self.to_bits().wrapping_sub(Self::EXP_MAGIC_BITS);
        f64::from_bits(n.wrapping_add(1023) << 52)
    }
}

/// How a batch is split for parallel work: into `chunks` contiguous pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Par {
    pub chunks: usize,
}

impl Par {
    pub const SERIAL: Par = Par { chunks: 1 };

    pub fn new(chunks: usize) -> Self {
        Par { chunks: chunks.max(1) }
    }

    /// Examples per chunk for a batch of `batch`.
    pub fn chunk_len(self, batch: usize) -> usize {
        batch.div_ceil(self.chunks).max(1)
    }

    /// Tiles per chunk for a batch of `batch` examples: whole tiles, so that no tile is
    /// split between chunks.
    pub fn tiles_per_chunk(self, batch: usize) -> usize {
        batch.div_ceil(L).div_ceil(self.chunks).max(1)
    }
}

/// Sum per-chunk partial gradients into `dst` (`+=`), in chunk order.
pub(crate) fn add_partials<T: Real>(dst: &mut [T], partials: &[Vec<T>]) {
    for p in partials {
        for (d, &v) in dst.iter_mut().zip(p) {
            *d += v;
        }
    }
}

/// The sum of a tile row's lanes, in a fixed order (pairwise).
#[inline(always)]
pub fn lane_sum<T: Real>(v: &Lane<T>) -> T {
    let mut h = [T::zero(); L / 2];
    for i in 0..L / 2 {
        h[i] = v[i] + v[i + L / 2];
    }
    let mut q = [T::zero(); L / 4];
    for i in 0..L / 4 {
        q[i] = h[i] + h[i + L / 4];
    }
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Tile row `i` of a slice of tile rows.
#[inline(always)]
pub fn row<T>(s: &[T], i: usize) -> &Lane<T> {
    s[i * L..(i + 1) * L].try_into().expect("a tile row is L long")
}

/// Tile row `i` of a mutable slice of tile rows.
#[inline(always)]
pub fn row_mut<T>(s: &mut [T], i: usize) -> &mut Lane<T> {
    (&mut s[i * L..(i + 1) * L]).try_into().expect("a tile row is L long")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_v_matches_libm() {
        let mut worst32 = 0.0f64;
        let mut worst64 = 0.0f64;
        for i in -20000..=20000 {
            let x = i as f64 * 0.0043;
            let (a, b) = ((x as f32).exp_v() as f64, (x as f32).exp() as f64);
            worst32 = worst32.max((a - b).abs() / b);
            let (a, b) = (x.exp_v(), x.exp());
            worst64 = worst64.max((a - b).abs() / b);
        }
        assert!(worst32 < 4e-7, "f32 exp_v relative error {worst32}");
        assert!(worst64 < 1e-15, "f64 exp_v relative error {worst64}");
        assert_eq!(100.0f32.exp_v(), f32::INFINITY);
        assert_eq!((-100.0f32).exp_v(), 0.0);
        assert_eq!(1000.0f64.exp_v(), f64::INFINITY);
        assert_eq!((-1000.0f64).exp_v(), 0.0);
        assert!(f32::NAN.exp_v().is_nan() && f64::NAN.exp_v().is_nan());
        assert_eq!(0.0f32.exp_v(), 1.0);
        assert_eq!(0.0f64.exp_v(), 1.0);
    }

    #[test]
    fn magic_constants_agree() {
        assert_eq!((f32::EXP_MAGIC as f32).to_bits() as u64, f32::EXP_MAGIC_BITS);
        assert_eq!(f64::EXP_MAGIC.to_bits(), f64::EXP_MAGIC_BITS);
        assert_eq!(((f32::EXP_MAGIC as f32) + 5.0).pow2_of_magic(), 32.0);
        assert_eq!((f64::EXP_MAGIC - 3.0).pow2_of_magic(), 0.125);
    }

    #[test]
    fn vector_exp_matches_scalar_exp() {
        struct K(Vec<f64>);
        impl Kernel<f64> for K {
            type Output = Vec<f64>;
            fn run<V: Lanes<T = f64>>(self) -> Vec<f64> {
                let mut out = self.0.clone();
                for (o, x) in out.chunks_mut(L).zip(self.0.chunks(L)) {
                    V::load(x).exp().store(o);
                }
                out
            }
        }
        let xs: Vec<f64> = (0..L * 64).map(|i| (i as f64 - 512.0) * 1.7).collect();
        let got = dispatch(K(xs.clone()));
        for (g, x) in got.iter().zip(&xs) {
            assert_eq!(g.to_bits(), x.exp_v().to_bits(), "exp({x})");
        }
    }

    #[test]
    fn f32_vector_exp_is_accurate_and_has_the_limits() {
        struct K(Vec<f32>);
        impl Kernel<f32> for K {
            type Output = Vec<f32>;
            fn run<V: Lanes<T = f32>>(self) -> Vec<f32> {
                let mut out = self.0.clone();
                for (o, x) in out.chunks_mut(L).zip(self.0.chunks(L)) {
                    V::load(x).exp().store(o);
                }
                out
            }
        }
        let mut xs: Vec<f32> = (0..L * 400).map(|i| (i as f32 - 3200.0) * 0.0291).collect();
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 88.0, 89.0, -87.0, -104.0, 0.0]);
        xs.resize(xs.len().div_ceil(L) * L, 0.0);
        let got = dispatch(K(xs.clone()));
        for (g, x) in got.iter().zip(&xs) {
            let want = (*x as f64).exp();
            if x.is_nan() {
                assert!(g.is_nan());
            } else if want > f32::MAX as f64 {
                assert_eq!(*g, f32::INFINITY, "exp({x})");
            } else if want < 1e-37 {
                assert!(*g < 1e-37, "exp({x}) = {g}");
            } else {
                assert!(((*g as f64 - want) / want).abs() < 4e-7, "exp({x}) = {g}, want {want}");
            }
        }
    }

    #[test]
    fn lane_sum_adds_every_lane() {
        let v: Lane<f64> = std::array::from_fn(|i| (i * i) as f64);
        assert_eq!(lane_sum(&v), (0..16).map(|i| (i * i) as f64).sum::<f64>());
    }
}
