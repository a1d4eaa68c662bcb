//! The criteria on a batch's outputs z (B, classes) with labels c_n and optional class
//! weights w (all 1 without), averaged as PyTorch's `reduction="mean"`:
//! `L = Σ_n w[c_n]·E_n / Σ_n w[c_n]`, where E_n is
//!
//!   cross-entropy  E = −log softmax(z)_c = −z_c + log Σ_i e^(z_i)
//!   LeNet-5 eq. 9  E = y_c + log(e^(−j) + Σ_i e^(−y_i)),  y_i = −z_i (the RBF distances)
//!   LeNet-5 eq. 8  E = y_c = −z_c
//!
//! and ∂E/∂z_i = p_i − [i = c] for the first two (p the softmax of z, with the constant
//! output −j among the logits for eq. 9), −[i = c] for eq. 8.

use crate::layers::loss::LossStats;
use crate::spec::Criterion;

/// log Σ e^(v), computed around the largest v so that no exponential overflows.
fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The batch's mean loss and how many highest outputs (first maximum) are the label;
/// with `dz`, dz += ∂L/∂z.
pub fn loss(
    criterion: Criterion,
    dz: Option<&mut [f64]>,
    z: &[f64],
    labels: &[u8],
    class_weights: Option<&[f64]>,
    classes: usize,
) -> LossStats {
    let weight = |c: usize| class_weights.map_or(1.0, |w| w[c]);
    let weight_sum: f64 = labels.iter().map(|&c| weight(c as usize)).sum();
    let mut stats = LossStats { weight_sum, ..LossStats::default() };
    let mut dz = dz;
    for (n, &c) in labels.iter().enumerate() {
        let (c, row) = (c as usize, &z[n * classes..(n + 1) * classes]);
        // The softmax's logits: the outputs, and −j for eq. 9's rubbish class.
        let logits: Vec<f64> = match criterion {
            Criterion::Map { j } => row.iter().copied().chain([-(j as f64)]).collect(),
            _ => row.to_vec(),
        };
        let e = match criterion {
            Criterion::CrossEntropy | Criterion::Map { .. } => -row[c] + log_sum_exp(&logits),
            Criterion::Mse => -row[c],
        };
        stats.weighted_loss_sum += weight(c) * e;
        let first_max = (0..classes).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        stats.correct += (first_max == c) as usize;
        if let Some(dz) = dz.as_deref_mut() {
            let lse = log_sum_exp(&logits);
            for i in 0..classes {
                let p = match criterion {
                    Criterion::Mse => 0.0,
                    _ => (row[i] - lse).exp(),
                };
                dz[n * classes + i] += weight(c) * (p - (i == c) as u8 as f64) / weight_sum;
            }
        }
    }
    stats
}
