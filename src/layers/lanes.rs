//! Explicit vectors of [`L`] = 16 lanes.
//!
//! The kernels are written once, generic over a [`Lanes`] type: 16 values of the
//! float type T in registers, with the handful of operations the layers need. Each
//! instruction set has its own `Lanes` types: one 512-bit register of f32 (two of
//! f64) with AVX-512, two (four) 256-bit registers with AVX2 + FMA, and a plain
//! array everywhere else. [`dispatch`] picks the best set the CPU has
//! ([`super::simd::isa`]) and runs a [`Kernel`] inside a function compiled for it.
//!
//! Why not let the compiler vectorise `[T; 16]` loops: it does, sometimes. The same
//! source was measured 17× slower after an unrelated change of crate name, which
//! reorders LLVM's passes; explicit vectors leave nothing to chance.
//!
//! This module is private: the x86 lane types may only exist inside [`dispatch`],
//! after the CPU was found to have their instructions, and nothing outside the
//! crate can name them.

// The unrolled lane code spells out every index term (0·stride and +0 included)
// so that it reads like the formula, and keeps `a = a + b` for generic lane types.
#![allow(clippy::erasing_op, clippy::identity_op, clippy::assign_op_pattern)]

use super::simd::{isa, Isa};
use super::{Real, L};
use num_traits::{Float, NumCast, Zero};

/// 16 lanes of `T` held in registers. Loads and stores take the first L values of
/// a slice (panicking if it is shorter).
pub trait Lanes: Copy + 'static {
    type T: Real;
    fn splat(x: Self::T) -> Self;
    fn load(s: &[Self::T]) -> Self;
    fn store(self, s: &mut [Self::T]);
    /// # Safety
    /// `p` must be valid for reading L values.
    unsafe fn load_ptr(p: *const Self::T) -> Self;
    /// # Safety
    /// `p` must be valid for writing L values.
    unsafe fn store_ptr(self, p: *mut Self::T);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// self · b + c: fused, except in [`Plain`] lanes on a target without an FMA
    /// instruction (see [`PLAIN_FMA_FUSED`]).
    fn fma(self, b: Self, c: Self) -> Self;
    /// Lane-wise `if self > o { yes } else { no }`.
    fn gt_select(self, o: Self, yes: Self, no: Self) -> Self;
    /// Lane-wise `if self < o { self } else { o }`: o where either is NaN.
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        o.gt_select(self, self, o)
    }
    /// Lane-wise `if self == o { yes } else { no }`.
    fn eq_select(self, o: Self, yes: Self, no: Self) -> Self;
    /// Lane l = the byte at `base + offsets[l]`, as a float.
    ///
    /// # Safety
    /// For every lane, the 4 bytes from `base + offsets[l]` must be readable (the
    /// vector versions read a 32-bit word and keep its low byte).
    #[inline(always)]
    unsafe fn gather_u8(base: *const u8, offsets: &[i32; L]) -> Self {
        let mut v = [Self::T::zero(); L];
        for (d, &o) in v.iter_mut().zip(offsets) {
            *d = <Self::T as NumCast>::from(*base.offset(o as isize)).expect("a byte fits");
        }
        Self::load(&v)
    }
    /// `k.run::<Self>()` in a function of its own, compiled for this lane type's
    /// instruction set (inside a [`dispatch`], where `Self` may exist). The biggest
    /// kernels go through it: LLVM's loop passes cost about the number of loops times
    /// the size of the function they sit in, so one function per instruction set
    /// holding every kernel of a training step took most of the crate's build time
    /// (25 minutes of LLVM's on 2 cores; 2 with the convolutions outlined).
    fn outline<K: Kernel<Self::T>>(k: K) -> K::Output;
    /// 2ⁿ, where `self` is n + M with M the float type's rounding constant
    /// ([`Real::EXP_MAGIC`]) and n an integer in the normal exponent range.
    fn pow2_of_magic(self) -> Self;

    #[inline(always)]
    fn zero() -> Self {
        Self::splat(Self::T::zero())
    }
    /// 1/self: exact, or (f32 with AVX) the hardware estimate refined by one Newton
    /// step, within 2 ulp, for finite nonzero self.
    #[inline(always)]
    fn recip(self) -> Self {
        splat_f64::<Self>(1.0).div(self)
    }
    /// The lanes' sum, in a fixed (pairwise) order.
    #[inline(always)]
    fn sum(self) -> Self::T {
        let mut a = [Self::T::zero(); L];
        self.store(&mut a);
        super::lane_sum(&a)
    }
    /// eˣ per lane; see [`Real::exp_v`].
    #[inline(always)]
    fn exp(self) -> Self {
        let c = splat_f64::<Self>;
        let magic = c(Self::T::EXP_MAGIC);
        let t = self.fma(c(std::f64::consts::LOG2_E), magic);
        let n = t.sub(magic);
        let r = n.fma(c(-Self::T::LN2_LO), n.fma(c(-Self::T::LN2_HI), self));
        let coef = Self::T::EXP_TAYLOR;
        let mut p = c(coef[0]);
        for &k in &coef[1..] {
            p = p.fma(r, c(k));
        }
        // p·2ⁿ as (p·2)·2ⁿ⁻¹, so that n at the top of the range does not overflow 2ⁿ.
        let v = p.add(p).mul(t.sub(c(1.0)).pow2_of_magic());
        let v = self.gt_select(c(Self::T::EXP_HI), Self::splat(<Self::T as Float>::infinity()), v);
        c(Self::T::EXP_LO).gt_select(self, Self::zero(), v)
    }
    /// 1/(1 + e⁻ˣ) per lane. The exponent is capped at 80 so that 1 + e⁻ˣ stays
    /// finite for the reciprocal estimate; e⁸⁰ ≫ 1/ε, so the results are the limits.
    #[inline(always)]
    fn sigmoid(self) -> Self {
        let one = splat_f64::<Self>(1.0);
        one.add(splat_f64::<Self>(80.0).min(Self::zero().sub(self)).exp()).recip()
    }
}

/// A constant in all lanes.
#[inline(always)]
pub fn splat_f64<V: Lanes>(v: f64) -> V {
    V::splat(<V::T as NumCast>::from(v).expect("constant fits"))
}

/// Lanes as a plain array: any CPU.
#[derive(Clone, Copy)]
pub struct Plain<T>([T; L]);

/// Whether [`Plain`] lanes fuse `fma`: only where the target has the instruction. On
/// baseline x86-64 a fused multiply-add is a libm call per lane: the baseline trained d2l
/// at about 360 examples/s, and the calls and the spills around them made its code three
/// times the size. There it rounds twice instead (8,600 examples/s, the same losses to 4
/// decimals). Every instruction set, the baseline included, is checked against the f64
/// reference chain and the PyTorch fixture with tolerances, not bit for bit
/// (`kernels_agree_on_every_instruction_set`, `pytorch_fixture_matches_on_every_instruction_set`).
pub const PLAIN_FMA_FUSED: bool =
    cfg!(any(target_feature = "fma", not(any(target_arch = "x86_64", target_arch = "x86"))));

impl<T: Real> Lanes for Plain<T> {
    type T = T;
    #[inline(never)]
    fn outline<K: Kernel<T>>(k: K) -> K::Output {
        k.run::<Self>()
    }
    #[inline(always)]
    fn splat(x: T) -> Self {
        Plain([x; L])
    }
    #[inline(always)]
    fn load(s: &[T]) -> Self {
        Plain(s[..L].try_into().expect("L values"))
    }
    #[inline(always)]
    fn store(self, s: &mut [T]) {
        s[..L].copy_from_slice(&self.0);
    }
    #[inline(always)]
    unsafe fn load_ptr(p: *const T) -> Self {
        Plain(std::ptr::read_unaligned(p as *const [T; L]))
    }
    #[inline(always)]
    unsafe fn store_ptr(self, p: *mut T) {
        std::ptr::write_unaligned(p as *mut [T; L], self.0)
    }
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i] + o.0[i];
        }
        self
    }
    #[inline(always)]
    fn sub(mut self, o: Self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i] - o.0[i];
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, o: Self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i] * o.0[i];
        }
        self
    }
    #[inline(always)]
    fn div(mut self, o: Self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i] / o.0[i];
        }
        self
    }
    #[inline(always)]
    fn fma(mut self, b: Self, c: Self) -> Self {
        for i in 0..L {
            self.0[i] = if PLAIN_FMA_FUSED { self.0[i].mul_add(b.0[i], c.0[i]) } else { self.0[i] * b.0[i] + c.0[i] };
        }
        self
    }
    #[inline(always)]
    fn gt_select(self, o: Self, mut yes: Self, no: Self) -> Self {
        for i in 0..L {
            if self.0[i] <= o.0[i] || self.0[i].is_nan() || o.0[i].is_nan() {
                yes.0[i] = no.0[i];
            }
        }
        yes
    }
    #[inline(always)]
    fn eq_select(self, o: Self, mut yes: Self, no: Self) -> Self {
        for i in 0..L {
            if self.0[i] != o.0[i] {
                yes.0[i] = no.0[i];
            }
        }
        yes
    }
    #[inline(always)]
    fn pow2_of_magic(mut self) -> Self {
        for i in 0..L {
            self.0[i] = self.0[i].pow2_of_magic();
        }
        self
    }
}

/// A computation generic over the lane type, run by [`dispatch`] (or by
/// [`Lanes::outline`] inside one). `run` must be `#[inline(always)]`, as must
/// everything it calls: only code inlined into the dispatching function is compiled
/// for its instruction set (anything else gets the baseline, where every vector
/// intrinsic becomes a function call).
pub trait Kernel<T: Real> {
    type Output;
    fn run<V: Lanes<T = T>>(self) -> Self::Output;
}

/// Run `k` with the best lane type for this CPU, inside a function compiled for
/// its instruction set. Everything `k.run` calls must be `#[inline(always)]` to be
/// compiled that way too.
#[inline(always)]
pub fn dispatch<T: Real, K: Kernel<T>>(k: K) -> K::Output {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returns Avx512 only when the CPU has AVX-512F, AVX2 and FMA.
        Isa::Avx512 => unsafe { x86::run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returns Avx2 only when the CPU has AVX2 and FMA.
        Isa::Avx2 => unsafe { x86::run_avx2(k) },
        _ => k.run::<Plain<T>>(),
    }
}

/// The x86 lane types. They are only ever created inside [`dispatch`], after the
/// CPU was found to have their instructions; that is what makes the `unsafe`
/// intrinsic calls below sound.
#[cfg(target_arch = "x86_64")]
pub mod x86 {
    use std::arch::x86_64::*;

    use super::{Kernel, Lanes, L};
    use crate::layers::Real;

    /// # Safety
    /// The CPU must have AVX-512F, AVX2 and FMA.
    #[inline(never)] // a function of its own for `Lanes::outline` too
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn run_avx512<T: Real, K: Kernel<T>>(k: K) -> K::Output {
        k.run::<T::Avx512>()
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[inline(never)] // a function of its own for `Lanes::outline` too
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run_avx2<T: Real, K: Kernel<T>>(k: K) -> K::Output {
        k.run::<T::Avx2>()
    }

    // SAFETY (every `unsafe` block below): Z32/Z64 exist only inside `run_avx512`
    // and Y32/Y64 only inside `run_avx2`, whose callers checked the CPU features
    // the intrinsics need; loads and stores are bounds-checked by slicing first.

    /// 16 f32 in one AVX-512 register.
    #[derive(Clone, Copy)]
    pub struct Z32([__m512; 1]);

    /// Single-register operations of Z32, always inlined (so that, inlined into
    /// a function compiled for the instruction set, the intrinsics inline too).
    mod z32 {
        use std::arch::x86_64::*;

        use crate::layers::Real;

        #[inline(always)]
        pub unsafe fn gt(a: __m512, b: __m512, yes: __m512, no: __m512) -> __m512 {
            _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), no, yes)
        }
        #[inline(always)]
        pub unsafe fn eq(a: __m512, b: __m512, yes: __m512, no: __m512) -> __m512 {
            _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, b), no, yes)
        }
        #[inline(always)]
        pub unsafe fn pow2(a: __m512) -> __m512 {
            let n = _mm512_sub_epi32(_mm512_castps_si512(a), _mm512_set1_epi32(f32::EXP_MAGIC_BITS as i32));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127))))
        }
    }

    impl Lanes for Z32 {
        type T = f32;
        #[inline(always)]
        fn outline<K: Kernel<f32>>(k: K) -> K::Output {
            // SAFETY: a Z32 exists only inside `run_avx512` (see above).
            unsafe { run_avx512(k) }
        }
        #[inline(always)]
        unsafe fn gather_u8(base: *const u8, offsets: &[i32; L]) -> Self {
            let idx = _mm512_loadu_si512(offsets.as_ptr() as *const _);
            let words = _mm512_i32gather_epi32::<1>(idx, base as *const _);
            Z32([_mm512_cvtepi32_ps(_mm512_and_si512(words, _mm512_set1_epi32(0xFF)))])
        }
        #[inline(always)]
        fn min(self, o: Self) -> Self {
            unsafe { Z32([_mm512_min_ps(self.0[0], o.0[0])]) }
        }
        /// eˣ as the generic version computes it (same range reduction and
        /// polynomial), with 2ⁿ applied by `vscalefps`, which also gives the
        /// overflow (+inf) and underflow (0) limits and passes NaN through.
        #[inline(always)]
        fn exp(self) -> Self {
            unsafe {
                // Clamped so that ±inf give +inf and 0 (NaN stays NaN: min and max
                // return their second operand when one is NaN).
                let x = _mm512_max_ps(_mm512_set1_ps(-104.0), self.0[0]);
                let x = _mm512_min_ps(_mm512_set1_ps(89.0), x);
                let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::LN2_HI as f32), x);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(f32::LN2_LO as f32), r);
                let coef = f32::EXP_TAYLOR;
                let mut p = _mm512_set1_ps(coef[0] as f32);
                let mut i = 1;
                while i < coef.len() {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coef[i] as f32));
                    i += 1;
                }
                Z32([_mm512_scalef_ps(p, n)])
            }
        }
        /// 1/(1 + e⁻ˣ) in 15 instructions, 16 uops (the generic steps take 19; it is the
        /// d2l network's most frequent function): x clamped to [−80, 104] (−x as the
        /// generic version clamps it: 1 + e⁻ˣ finite, e⁻ˣ down to 0), e⁻ˣ = 2ⁿ·eʳ with
        /// n = round(−x·log₂e) and r = −x − n·ln2 in one fused step (ln 2 rounded to
        /// f32 adds at most |n|·2e-9 to r), eʳ by a degree-5 minimax polynomial on
        /// |r| ≤ ln2/2 (relative error 7.5e-8, 1.35e-7 with f32 coefficients), 2ⁿ by
        /// `vscalefps`, the reciprocal by its estimate and one Newton step. The
        /// sigmoid's absolute error stays within 1.5 ulp of 1 (tests/engine.rs).
        #[inline(always)]
        fn sigmoid(self) -> Self {
            // eʳ's polynomial, highest degree first (a Remez fit, scripts/minimax_exp.py).
            const SIGMOID_EXP: [f32; 6] =
                [0.008_297_655, 0.041_915_382, 0.166_675_75, 0.499_988_95, 0.999_999_7, 1.000_000_1];
            unsafe {
                // NaN stays NaN (max and min return their second operand then).
                let x = _mm512_max_ps(_mm512_set1_ps(-80.0), self.0[0]);
                let x = _mm512_min_ps(_mm512_set1_ps(104.0), x);
                // n = round(−x·log₂e) by adding and taking away 1.5·2²³ (|n| ≤ 151 here):
                // one FMA and a subtraction, where `vrndscaleps` is two uops.
                let magic = _mm512_set1_ps(f32::EXP_MAGIC as f32);
                let t = _mm512_fmadd_ps(x, _mm512_set1_ps(-std::f32::consts::LOG2_E), magic);
                let n = _mm512_sub_ps(t, magic);
                // −(n·ln2) − x
                let r = _mm512_fnmsub_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
                let mut p = _mm512_set1_ps(SIGMOID_EXP[0]);
                let mut i = 1;
                while i < SIGMOID_EXP.len() {
                    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SIGMOID_EXP[i]));
                    i += 1;
                }
                let e = _mm512_scalef_ps(p, n);
                Z32([_mm512_add_ps(_mm512_set1_ps(1.0), e)]).recip()
            }
        }
        #[inline(always)]
        fn recip(self) -> Self {
            unsafe {
                let r = _mm512_rcp14_ps(self.0[0]);
                // r·(2 − d·r): one Newton step doubles the 14 correct bits.
                Z32([_mm512_mul_ps(r, _mm512_fnmadd_ps(self.0[0], r, _mm512_set1_ps(2.0)))])
            }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Z32([_mm512_set1_ps(x); 1]) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..L];
            unsafe { Z32([_mm512_loadu_ps(s.as_ptr().add(0 * 16))]) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            let s = &mut s[..L];
            unsafe {
                _mm512_storeu_ps(s.as_mut_ptr().add(0 * 16), self.0[0]);
            }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f32) -> Self {
            Z32([_mm512_loadu_ps(p.add(0 * 16))])
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f32) {
            _mm512_storeu_ps(p.add(0 * 16), self.0[0]);
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Z32([_mm512_add_ps(self.0[0], o.0[0])]) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe { Z32([_mm512_sub_ps(self.0[0], o.0[0])]) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe { Z32([_mm512_mul_ps(self.0[0], o.0[0])]) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            unsafe { Z32([_mm512_div_ps(self.0[0], o.0[0])]) }
        }
        #[inline(always)]
        fn fma(self, b: Self, c: Self) -> Self {
            unsafe { Z32([_mm512_fmadd_ps(self.0[0], b.0[0], c.0[0])]) }
        }
        #[inline(always)]
        fn gt_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe { Z32([z32::gt(self.0[0], o.0[0], yes.0[0], no.0[0])]) }
        }
        #[inline(always)]
        fn eq_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe { Z32([z32::eq(self.0[0], o.0[0], yes.0[0], no.0[0])]) }
        }
        #[inline(always)]
        fn pow2_of_magic(self) -> Self {
            unsafe { Z32([z32::pow2(self.0[0])]) }
        }
    }

    /// 16 f64 in two AVX-512 registers.
    #[derive(Clone, Copy)]
    pub struct Z64([__m512d; 2]);

    /// Single-register operations of Z64, always inlined (so that, inlined into
    /// a function compiled for the instruction set, the intrinsics inline too).
    mod z64 {
        use std::arch::x86_64::*;

        use crate::layers::Real;

        #[inline(always)]
        pub unsafe fn gt(a: __m512d, b: __m512d, yes: __m512d, no: __m512d) -> __m512d {
            _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_GT_OQ>(a, b), no, yes)
        }
        #[inline(always)]
        pub unsafe fn eq(a: __m512d, b: __m512d, yes: __m512d, no: __m512d) -> __m512d {
            _mm512_mask_blend_pd(_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(a, b), no, yes)
        }
        #[inline(always)]
        pub unsafe fn pow2(a: __m512d) -> __m512d {
            let n = _mm512_sub_epi64(_mm512_castpd_si512(a), _mm512_set1_epi64(f64::EXP_MAGIC_BITS as i64));
            _mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_add_epi64(n, _mm512_set1_epi64(1023))))
        }
    }

    impl Lanes for Z64 {
        type T = f64;
        #[inline(always)]
        fn outline<K: Kernel<f64>>(k: K) -> K::Output {
            // SAFETY: a Z64 exists only inside `run_avx512` (see above).
            unsafe { run_avx512(k) }
        }
        #[inline(always)]
        fn splat(x: f64) -> Self {
            unsafe { Z64([_mm512_set1_pd(x); 2]) }
        }
        #[inline(always)]
        fn load(s: &[f64]) -> Self {
            let s = &s[..L];
            unsafe { Z64([_mm512_loadu_pd(s.as_ptr().add(0 * 8)), _mm512_loadu_pd(s.as_ptr().add(1 * 8))]) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f64]) {
            let s = &mut s[..L];
            unsafe {
                _mm512_storeu_pd(s.as_mut_ptr().add(0 * 8), self.0[0]);
                _mm512_storeu_pd(s.as_mut_ptr().add(1 * 8), self.0[1]);
            }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f64) -> Self {
            Z64([_mm512_loadu_pd(p.add(0 * 8)), _mm512_loadu_pd(p.add(1 * 8))])
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f64) {
            _mm512_storeu_pd(p.add(0 * 8), self.0[0]);
            _mm512_storeu_pd(p.add(1 * 8), self.0[1]);
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Z64([_mm512_add_pd(self.0[0], o.0[0]), _mm512_add_pd(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe { Z64([_mm512_sub_pd(self.0[0], o.0[0]), _mm512_sub_pd(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe { Z64([_mm512_mul_pd(self.0[0], o.0[0]), _mm512_mul_pd(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            unsafe { Z64([_mm512_div_pd(self.0[0], o.0[0]), _mm512_div_pd(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn fma(self, b: Self, c: Self) -> Self {
            unsafe { Z64([_mm512_fmadd_pd(self.0[0], b.0[0], c.0[0]), _mm512_fmadd_pd(self.0[1], b.0[1], c.0[1])]) }
        }
        #[inline(always)]
        fn gt_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Z64([z64::gt(self.0[0], o.0[0], yes.0[0], no.0[0]), z64::gt(self.0[1], o.0[1], yes.0[1], no.0[1])])
            }
        }
        #[inline(always)]
        fn eq_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Z64([z64::eq(self.0[0], o.0[0], yes.0[0], no.0[0]), z64::eq(self.0[1], o.0[1], yes.0[1], no.0[1])])
            }
        }
        #[inline(always)]
        fn pow2_of_magic(self) -> Self {
            unsafe { Z64([z64::pow2(self.0[0]), z64::pow2(self.0[1])]) }
        }
    }

    /// 16 f32 in two AVX registers.
    #[derive(Clone, Copy)]
    pub struct Y32([__m256; 2]);

    /// Single-register operations of Y32, always inlined (so that, inlined into
    /// a function compiled for the instruction set, the intrinsics inline too).
    mod y32 {
        use std::arch::x86_64::*;

        use crate::layers::Real;

        #[inline(always)]
        pub unsafe fn gt(a: __m256, b: __m256, yes: __m256, no: __m256) -> __m256 {
            _mm256_blendv_ps(no, yes, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b))
        }
        #[inline(always)]
        pub unsafe fn eq(a: __m256, b: __m256, yes: __m256, no: __m256) -> __m256 {
            _mm256_blendv_ps(no, yes, _mm256_cmp_ps::<_CMP_EQ_OQ>(a, b))
        }
        #[inline(always)]
        pub unsafe fn pow2(a: __m256) -> __m256 {
            let n = _mm256_sub_epi32(_mm256_castps_si256(a), _mm256_set1_epi32(f32::EXP_MAGIC_BITS as i32));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127))))
        }
    }

    impl Lanes for Y32 {
        type T = f32;
        #[inline(always)]
        fn outline<K: Kernel<f32>>(k: K) -> K::Output {
            // SAFETY: a Y32 exists only inside `run_avx2` (see above).
            unsafe { run_avx2(k) }
        }
        #[inline(always)]
        unsafe fn gather_u8(base: *const u8, offsets: &[i32; L]) -> Self {
            let half = |i: usize| {
                let idx = _mm256_loadu_si256(offsets.as_ptr().add(8 * i) as *const _);
                let words = _mm256_i32gather_epi32::<1>(base as *const i32, idx);
                _mm256_cvtepi32_ps(_mm256_and_si256(words, _mm256_set1_epi32(0xFF)))
            };
            Y32([half(0), half(1)])
        }
        #[inline(always)]
        fn recip(self) -> Self {
            unsafe {
                let two = _mm256_set1_ps(2.0);
                let step = |d: __m256| {
                    let r = _mm256_rcp_ps(d);
                    // Two Newton steps: 12 correct bits, then 24.
                    let r = _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, two));
                    _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, two))
                };
                Y32([step(self.0[0]), step(self.0[1])])
            }
        }
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Y32([_mm256_set1_ps(x); 2]) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            let s = &s[..L];
            unsafe { Y32([_mm256_loadu_ps(s.as_ptr().add(0 * 8)), _mm256_loadu_ps(s.as_ptr().add(1 * 8))]) }
        }
        #[inline(always)]
        fn store(self, s: &mut [f32]) {
            let s = &mut s[..L];
            unsafe {
                _mm256_storeu_ps(s.as_mut_ptr().add(0 * 8), self.0[0]);
                _mm256_storeu_ps(s.as_mut_ptr().add(1 * 8), self.0[1]);
            }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f32) -> Self {
            Y32([_mm256_loadu_ps(p.add(0 * 8)), _mm256_loadu_ps(p.add(1 * 8))])
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f32) {
            _mm256_storeu_ps(p.add(0 * 8), self.0[0]);
            _mm256_storeu_ps(p.add(1 * 8), self.0[1]);
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Y32([_mm256_add_ps(self.0[0], o.0[0]), _mm256_add_ps(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe { Y32([_mm256_sub_ps(self.0[0], o.0[0]), _mm256_sub_ps(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe { Y32([_mm256_mul_ps(self.0[0], o.0[0]), _mm256_mul_ps(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            unsafe { Y32([_mm256_div_ps(self.0[0], o.0[0]), _mm256_div_ps(self.0[1], o.0[1])]) }
        }
        #[inline(always)]
        fn fma(self, b: Self, c: Self) -> Self {
            unsafe { Y32([_mm256_fmadd_ps(self.0[0], b.0[0], c.0[0]), _mm256_fmadd_ps(self.0[1], b.0[1], c.0[1])]) }
        }
        #[inline(always)]
        fn gt_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Y32([y32::gt(self.0[0], o.0[0], yes.0[0], no.0[0]), y32::gt(self.0[1], o.0[1], yes.0[1], no.0[1])])
            }
        }
        #[inline(always)]
        fn eq_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Y32([y32::eq(self.0[0], o.0[0], yes.0[0], no.0[0]), y32::eq(self.0[1], o.0[1], yes.0[1], no.0[1])])
            }
        }
        #[inline(always)]
        fn pow2_of_magic(self) -> Self {
            unsafe { Y32([y32::pow2(self.0[0]), y32::pow2(self.0[1])]) }
        }
    }

    /// 16 f64 in four AVX registers.
    #[derive(Clone, Copy)]
    pub struct Y64([__m256d; 4]);

    /// Single-register operations of Y64, always inlined (so that, inlined into
    /// a function compiled for the instruction set, the intrinsics inline too).
    mod y64 {
        use std::arch::x86_64::*;

        use crate::layers::Real;

        #[inline(always)]
        pub unsafe fn gt(a: __m256d, b: __m256d, yes: __m256d, no: __m256d) -> __m256d {
            _mm256_blendv_pd(no, yes, _mm256_cmp_pd::<_CMP_GT_OQ>(a, b))
        }
        #[inline(always)]
        pub unsafe fn eq(a: __m256d, b: __m256d, yes: __m256d, no: __m256d) -> __m256d {
            _mm256_blendv_pd(no, yes, _mm256_cmp_pd::<_CMP_EQ_OQ>(a, b))
        }
        #[inline(always)]
        pub unsafe fn pow2(a: __m256d) -> __m256d {
            let n = _mm256_sub_epi64(_mm256_castpd_si256(a), _mm256_set1_epi64x(f64::EXP_MAGIC_BITS as i64));
            _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(n, _mm256_set1_epi64x(1023))))
        }
    }

    impl Lanes for Y64 {
        type T = f64;
        #[inline(always)]
        fn outline<K: Kernel<f64>>(k: K) -> K::Output {
            // SAFETY: a Y64 exists only inside `run_avx2` (see above).
            unsafe { run_avx2(k) }
        }
        #[inline(always)]
        fn splat(x: f64) -> Self {
            unsafe { Y64([_mm256_set1_pd(x); 4]) }
        }
        #[inline(always)]
        fn load(s: &[f64]) -> Self {
            let s = &s[..L];
            unsafe {
                Y64([
                    _mm256_loadu_pd(s.as_ptr().add(0 * 4)),
                    _mm256_loadu_pd(s.as_ptr().add(1 * 4)),
                    _mm256_loadu_pd(s.as_ptr().add(2 * 4)),
                    _mm256_loadu_pd(s.as_ptr().add(3 * 4)),
                ])
            }
        }
        #[inline(always)]
        fn store(self, s: &mut [f64]) {
            let s = &mut s[..L];
            unsafe {
                _mm256_storeu_pd(s.as_mut_ptr().add(0 * 4), self.0[0]);
                _mm256_storeu_pd(s.as_mut_ptr().add(1 * 4), self.0[1]);
                _mm256_storeu_pd(s.as_mut_ptr().add(2 * 4), self.0[2]);
                _mm256_storeu_pd(s.as_mut_ptr().add(3 * 4), self.0[3]);
            }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f64) -> Self {
            Y64([
                _mm256_loadu_pd(p.add(0 * 4)),
                _mm256_loadu_pd(p.add(1 * 4)),
                _mm256_loadu_pd(p.add(2 * 4)),
                _mm256_loadu_pd(p.add(3 * 4)),
            ])
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f64) {
            _mm256_storeu_pd(p.add(0 * 4), self.0[0]);
            _mm256_storeu_pd(p.add(1 * 4), self.0[1]);
            _mm256_storeu_pd(p.add(2 * 4), self.0[2]);
            _mm256_storeu_pd(p.add(3 * 4), self.0[3]);
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe {
                Y64([
                    _mm256_add_pd(self.0[0], o.0[0]),
                    _mm256_add_pd(self.0[1], o.0[1]),
                    _mm256_add_pd(self.0[2], o.0[2]),
                    _mm256_add_pd(self.0[3], o.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn sub(self, o: Self) -> Self {
            unsafe {
                Y64([
                    _mm256_sub_pd(self.0[0], o.0[0]),
                    _mm256_sub_pd(self.0[1], o.0[1]),
                    _mm256_sub_pd(self.0[2], o.0[2]),
                    _mm256_sub_pd(self.0[3], o.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe {
                Y64([
                    _mm256_mul_pd(self.0[0], o.0[0]),
                    _mm256_mul_pd(self.0[1], o.0[1]),
                    _mm256_mul_pd(self.0[2], o.0[2]),
                    _mm256_mul_pd(self.0[3], o.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn div(self, o: Self) -> Self {
            unsafe {
                Y64([
                    _mm256_div_pd(self.0[0], o.0[0]),
                    _mm256_div_pd(self.0[1], o.0[1]),
                    _mm256_div_pd(self.0[2], o.0[2]),
                    _mm256_div_pd(self.0[3], o.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn fma(self, b: Self, c: Self) -> Self {
            unsafe {
                Y64([
                    _mm256_fmadd_pd(self.0[0], b.0[0], c.0[0]),
                    _mm256_fmadd_pd(self.0[1], b.0[1], c.0[1]),
                    _mm256_fmadd_pd(self.0[2], b.0[2], c.0[2]),
                    _mm256_fmadd_pd(self.0[3], b.0[3], c.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn gt_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Y64([
                    y64::gt(self.0[0], o.0[0], yes.0[0], no.0[0]),
                    y64::gt(self.0[1], o.0[1], yes.0[1], no.0[1]),
                    y64::gt(self.0[2], o.0[2], yes.0[2], no.0[2]),
                    y64::gt(self.0[3], o.0[3], yes.0[3], no.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn eq_select(self, o: Self, yes: Self, no: Self) -> Self {
            unsafe {
                Y64([
                    y64::eq(self.0[0], o.0[0], yes.0[0], no.0[0]),
                    y64::eq(self.0[1], o.0[1], yes.0[1], no.0[1]),
                    y64::eq(self.0[2], o.0[2], yes.0[2], no.0[2]),
                    y64::eq(self.0[3], o.0[3], yes.0[3], no.0[3]),
                ])
            }
        }
        #[inline(always)]
        fn pow2_of_magic(self) -> Self {
            unsafe { Y64([y64::pow2(self.0[0]), y64::pow2(self.0[1]), y64::pow2(self.0[2]), y64::pow2(self.0[3])]) }
        }
    }
}

/// Run `$body` with the best lane type `$V` for this CPU (see [`dispatch`]). The
/// body sees only the listed bindings, each with its type (`$lt` is their lifetime,
/// `$T` the float type, as generic parameters of a kernel struct made on the spot):
///
/// ```ignore
/// with_lanes!('a, T => V; out: &'a mut [T] = out, x: &'a [T] = &x; () => apply_lanes::<V>(a, out));
/// ```
macro_rules! with_lanes {
    ($lt:lifetime, $T:ident => $V:ident; $($n:ident : $t:ty = $e:expr),* $(,)? ; $out:ty => $body:expr) => {{
        #[allow(non_camel_case_types)]
        struct __K<$lt, $T: $crate::layers::Real> {
            $($n: $t,)*
            _p: ::std::marker::PhantomData<&$lt $T>,
        }
        impl<$lt, $T: $crate::layers::Real> $crate::layers::Kernel<$T> for __K<$lt, $T> {
            type Output = $out;
            #[inline(always)]
            fn run<$V: $crate::layers::Lanes<T = $T>>(self) -> $out {
                let __K { $($n,)* .. } = self;
                $body
            }
        }
        $crate::layers::dispatch(__K { $($n: $e,)* _p: ::std::marker::PhantomData })
    }};
}
pub(crate) use with_lanes;
