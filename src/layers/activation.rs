//! Elementwise activations. Backward uses whichever of input `x` and output `y`
//! gives the derivative most directly.

use rayon::prelude::*;

use super::Real;
use crate::spec::Activation;

/// Elements per parallel piece; elementwise work is identical however it is split.
const PIECE: usize = 1 << 14;

fn f<T: Real>(a: Activation, x: T) -> T {
    match a {
        Activation::Sigmoid => T::one() / (T::one() + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::Relu => x.max(T::zero()),
        Activation::LeakyRelu(s) => {
            if x > T::zero() {
                x
            } else {
                x * T::from(s).unwrap()
            }
        }
    }
}

/// dy/dx from the input x and output y.
fn df<T: Real>(a: Activation, x: T, y: T) -> T {
    match a {
        Activation::Sigmoid => y * (T::one() - y),
        Activation::Tanh => T::one() - y * y,
        // PyTorch's convention: the derivative at 0 is 0.
        Activation::Relu => {
            if x > T::zero() {
                T::one()
            } else {
                T::zero()
            }
        }
        Activation::LeakyRelu(s) => {
            if x > T::zero() {
                T::one()
            } else {
                T::from(s).unwrap()
            }
        }
    }
}

/// out = f(inp), any shape.
pub fn activation_forward<T: Real>(out: &mut [T], inp: &[T], a: Activation) {
    out.par_chunks_mut(PIECE).zip(inp.par_chunks(PIECE)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(a, x);
        }
    });
}

/// dinp = f'(inp) · dout.
pub fn activation_backward<T: Real>(dinp: &mut [T], inp: &[T], out: &[T], dout: &[T], a: Activation) {
    dinp.par_chunks_mut(PIECE)
        .zip(inp.par_chunks(PIECE))
        .zip(out.par_chunks(PIECE))
        .zip(dout.par_chunks(PIECE))
        .for_each(|(((dx, x), y), dy)| {
            for i in 0..dx.len() {
                dx[i] = df(a, x[i], y[i]) * dy[i];
            }
        });
}
