//! Elementwise activations y = f(x) and their derivatives:
//!
//!   sigmoid      f = 1 / (1 + e^(−x))        f' = f·(1 − f)
//!   tanh         f = tanh x                  f' = 1 − f²
//!   scaled tanh  f = A·tanh(S·x)             f' = A·S·(1 − tanh²(S·x)),  A = 1.7159, S = 2/3
//!                (LeNet-5's squashing function, appendix A of the paper)
//!   relu         f = max(x, 0)               f' = 1 for x > 0, else 0 (PyTorch's 0 at 0)
//!   leaky relu   f = x for x > 0, else a·x   f' = 1 for x > 0, else a

use crate::spec::Activation;

const A: f64 = 1.7159;
const S: f64 = 2.0 / 3.0;

/// f(x).
pub fn f(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Tanh => x.tanh(),
        Activation::ScaledTanh => A * (S * x).tanh(),
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                x
            } else {
                slope as f64 * x
            }
        }
    }
}

/// f'(x).
pub fn df(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Sigmoid => f(a, x) * (1.0 - f(a, x)),
        Activation::Tanh => 1.0 - x.tanh().powi(2),
        Activation::ScaledTanh => A * S * (1.0 - (S * x).tanh().powi(2)),
        Activation::Relu => (x > 0.0) as u8 as f64,
        Activation::LeakyRelu(slope) => {
            if x > 0.0 {
                1.0
            } else {
                slope as f64
            }
        }
    }
}

/// out = f(inp), elementwise.
pub fn activation_forward(out: &mut [f64], inp: &[f64], a: Activation) {
    for (y, &x) in out.iter_mut().zip(inp) {
        *y = f(a, x);
    }
}

/// dinp += f'(inp) · dout.
pub fn activation_backward(dinp: &mut [f64], inp: &[f64], dout: &[f64], a: Activation) {
    for ((dx, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
        *dx += df(a, x) * dy;
    }
}
