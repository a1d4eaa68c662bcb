//! A fully connected layer, as PyTorch's `Linear` (weight stored out × in):
//!
//!   `out[n, j] = b[j] + Σ_q w[j, q] · inp[n, q]`

/// out (B, N) from inp (B, K), w (N, K), b (N).
pub fn linear_forward(out: &mut [f64], inp: &[f64], w: &[f64], b: &[f64], batch: usize, k: usize, n: usize) {
    for i in 0..batch {
        for j in 0..n {
            out[i * n + j] = b[j] + (0..k).map(|q| w[j * k + q] * inp[i * k + q]).sum::<f64>();
        }
    }
}

///   `dinp[n, q] += Σ_j w[j, q] · dout[n, j]`
///   `dw[j, q]   += Σ_n dout[n, j] · inp[n, q]`
///   `db[j]      += Σ_n dout[n, j]`
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: &mut [f64],
    dw: &mut [f64],
    db: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    w: &[f64],
    batch: usize,
    k: usize,
    n: usize,
) {
    for i in 0..batch {
        for j in 0..n {
            let d = dout[i * n + j];
            db[j] += d;
            for q in 0..k {
                dinp[i * k + q] += w[j * k + q] * d;
                dw[j * k + q] += inp[i * k + q] * d;
            }
        }
    }
}
