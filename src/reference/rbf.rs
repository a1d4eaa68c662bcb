//! LeNet-5's Euclidean RBF output units (section II-B, equation 7 of the paper):
//! y_i = Σ_j (x_j − w_ij)², w_ij fixed (±1, the digits' 7×12 bitmaps). The layer
//! outputs −y_i, so that, as for logits, the highest output is the prediction:
//!
//!   out[n, i] = −Σ_j (inp[n, j] − centres[i, j])²

/// out (B, N) from inp (B, K) and centres (N, K).
pub fn rbf_forward(out: &mut [f64], inp: &[f64], centres: &[f64], batch: usize, k: usize, n: usize) {
    for b in 0..batch {
        for i in 0..n {
            out[b * n + i] = -(0..k).map(|j| (inp[b * k + j] - centres[i * k + j]).powi(2)).sum::<f64>();
        }
    }
}

///   dinp[n, j] += Σ_i −2·(inp[n, j] − centres[i, j]) · dout[n, i]
/// (the centres are fixed: no parameter gradient).
pub fn rbf_backward(dinp: &mut [f64], dout: &[f64], inp: &[f64], centres: &[f64], batch: usize, k: usize, n: usize) {
    for b in 0..batch {
        for i in 0..n {
            for j in 0..k {
                dinp[b * k + j] += -2.0 * (inp[b * k + j] - centres[i * k + j]) * dout[b * n + i];
            }
        }
    }
}
