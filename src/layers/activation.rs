//! Elementwise activations, in any layout. Backward uses whichever of input `x`
//! and output `y` gives the derivative most directly; the fused kernels use the
//! output alone ([`from_output`]), so the pre-activation values need not be kept.

use num_traits::Zero;
use rayon::prelude::*;

use super::{with_lanes, Lanes, Real, L};
use crate::spec::Activation;

/// Elements per parallel piece; elementwise work is identical however it is split.
const PIECE: usize = 1 << 14;

use super::lanes::splat_f64 as c;

/// LeNet-5's squashing function A·tanh(S·x) (appendix A of the paper): A = 1.7159,
/// S = 2/3, so that f(±1) = ±1, the second derivative is largest at ±1, and the gain
/// near 0 is about 1.
pub const SCALED_TANH_A: f64 = 1.7159;
pub const SCALED_TANH_S: f64 = 2.0 / 3.0;

/// f(x) for 16 lanes.
#[inline(always)]
pub(crate) fn f_lanes<V: Lanes>(a: Activation, x: V) -> V {
    let (one, zero) = (c::<V>(1.0), V::zero());
    // Exponents are capped at 80 so that 1/(1 + e) stays finite for the
    // reciprocal estimate; e^80 ≫ 1/ε, so the results are the limits.
    let cap = c::<V>(80.0);
    match a {
        Activation::Sigmoid => x.sigmoid(),
        // 1 − 2/(e^{2x} + 1): exact limits ±1.
        Activation::Tanh => one.sub(c::<V>(2.0).mul(cap.min(x.add(x)).exp().add(one).recip())),
        // A·tanh(S·x) = A − 2A/(e^{2S·x} + 1).
        Activation::ScaledTanh => {
            let a = c::<V>(SCALED_TANH_A);
            a.sub(c::<V>(2.0 * SCALED_TANH_A).mul(cap.min(x.mul(c(2.0 * SCALED_TANH_S))).exp().add(one).recip()))
        }
        Activation::Relu => x.gt_select(zero, x, zero),
        Activation::LeakyRelu(s) => x.gt_select(zero, x, x.mul(c(s as f64))),
    }
}

/// dy · f'(x) for 16 lanes, from y = f(x) (see [`from_output`]).
#[inline(always)]
pub(crate) fn df_from_output<V: Lanes>(a: Activation, dy: V, y: V) -> V {
    let (one, zero) = (c::<V>(1.0), V::zero());
    match a {
        Activation::Sigmoid => dy.mul(y.mul(one.sub(y))),
        Activation::Tanh => dy.mul(one.sub(y.mul(y))),
        // f' = A·S·(1 − tanh²) = (S/A)·(A² − y²).
        Activation::ScaledTanh => {
            dy.mul(c::<V>(SCALED_TANH_S / SCALED_TANH_A).mul(c::<V>(SCALED_TANH_A * SCALED_TANH_A).sub(y.mul(y))))
        }
        Activation::Relu => y.gt_select(zero, dy, zero),
        Activation::LeakyRelu(s) => y.gt_select(zero, dy, dy.mul(c(s as f64))),
    }
}

/// dy · f'(x) for 16 lanes, from x and y = f(x).
#[inline(always)]
pub(crate) fn df_from_input<V: Lanes>(a: Activation, dy: V, x: V, y: V) -> V {
    let zero = V::zero();
    match a {
        // PyTorch's convention: the derivative at 0 is 0.
        Activation::Relu => x.gt_select(zero, dy, zero),
        Activation::LeakyRelu(s) => x.gt_select(zero, dy, dy.mul(c(s as f64))),
        _ => df_from_output(a, dy, y),
    }
}

/// Whether f'(x) can be had from y = f(x) alone (true except for leaky ReLU with a
/// negative slope, where y > 0 no longer means x > 0).
pub fn from_output(a: Activation) -> bool {
    !matches!(a, Activation::LeakyRelu(s) if s < 0.0)
}

/// The lanes of `s` from `i`, or of its tail padded with zeros.
#[inline(always)]
fn load_part<V: Lanes>(s: &[V::T], i: usize) -> V {
    if i + L <= s.len() {
        V::load(&s[i..])
    } else {
        let mut buf = [V::T::zero(); L];
        buf[..s.len() - i].copy_from_slice(&s[i..]);
        V::load(&buf)
    }
}

#[inline(always)]
fn store_part<V: Lanes>(v: V, s: &mut [V::T], i: usize) {
    if i + L <= s.len() {
        v.store(&mut s[i..]);
    } else {
        let mut buf = [V::T::zero(); L];
        v.store(&mut buf);
        let n = s.len() - i;
        s[i..].copy_from_slice(&buf[..n]);
    }
}

/// v ← f(v), any length.
#[inline(always)]
pub(crate) fn apply<V: Lanes>(a: Activation, v: &mut [V::T]) {
    for i in (0..v.len()).step_by(L) {
        let y = f_lanes(a, load_part::<V>(v, i));
        store_part(y, v, i);
    }
}

/// d ← d · f'(x), from the outputs y = f(x) (see [`from_output`]).
#[inline(always)]
pub(crate) fn backward_from_output<V: Lanes>(a: Activation, d: &mut [V::T], y: &[V::T]) {
    debug_assert!(from_output(a));
    let d = &mut d[..y.len()];
    for i in (0..y.len()).step_by(L) {
        let v = df_from_output(a, load_part::<V>(d, i), load_part::<V>(y, i));
        store_part(v, d, i);
    }
}

/// dx = f'(x) · dy, from the inputs x and outputs y.
#[inline(always)]
pub(crate) fn backward_from_input<V: Lanes>(a: Activation, dx: &mut [V::T], x: &[V::T], y: &[V::T], dy: &[V::T]) {
    let n = dx.len();
    let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
    for i in (0..n).step_by(L) {
        let v = df_from_input(a, load_part::<V>(dy, i), load_part::<V>(x, i), load_part::<V>(y, i));
        store_part(v, dx, i);
    }
}

/// out = f(inp), any shape.
pub fn activation_forward<T: Real>(out: &mut [T], inp: &[T], a: Activation) {
    let out = &mut out[..inp.len()];
    out.par_chunks_mut(PIECE).zip(inp.par_chunks(PIECE)).for_each(|(o, x)| {
        o.copy_from_slice(x);
        with_lanes!('a, T => V; o: &'a mut [T] = o, a: Activation = a; () => apply::<V>(a, o));
    });
}

/// dinp = f'(inp) · dout.
pub fn activation_backward<T: Real>(dinp: &mut [T], inp: &[T], out: &[T], dout: &[T], a: Activation) {
    let dinp = &mut dinp[..inp.len()];
    dinp.par_chunks_mut(PIECE)
        .zip(inp.par_chunks(PIECE))
        .zip(out.par_chunks(PIECE))
        .zip(dout.par_chunks(PIECE))
        .for_each(|(((dx, x), y), dy)| {
            with_lanes!('a, T => V;
                dx: &'a mut [T] = dx, x: &'a [T] = x, y: &'a [T] = y, dy: &'a [T] = dy, a: Activation = a;
                () => backward_from_input::<V>(a, dx, x, y, dy));
        });
}
