//! Softmax cross-entropy with optional class weights, PyTorch's
//! `CrossEntropyLoss(weight=w, reduction="mean")`: the loss is
//! Σ_i w[y_i]·(−log p_i[y_i]) / Σ_i w[y_i].

use super::Real;

/// What one batch's loss pass measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    /// Σ_i w[y_i]·(−log p_i[y_i]), in f64.
    pub weighted_loss_sum: f64,
    /// Σ_i w[y_i].
    pub weight_sum: f64,
    /// Examples whose highest logit is the label.
    pub correct: usize,
}

impl LossStats {
    /// The batch's mean loss, as PyTorch reports it.
    pub fn mean(&self) -> f64 {
        self.weighted_loss_sum / self.weight_sum
    }
}

/// The index of the first maximum of a row (PyTorch's `argmax`).
pub fn argmax<T: Real>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Loss and accuracy of logits (B, C) against labels (B); when `dlogits` is
/// given, also the gradient of the mean loss: w[y_i]·(p_i − onehot(y_i)) / Σ w.
pub fn softmax_xent<T: Real>(
    dlogits: Option<&mut [T]>,
    logits: &[T],
    labels: &[u8],
    class_weights: Option<&[T]>,
    classes: usize,
) -> LossStats {
    let batch = labels.len();
    let weight = |y: usize| class_weights.map_or(T::one(), |w| w[y]);
    let weight_sum: T = labels.iter().map(|&y| weight(y as usize)).sum();
    let mut stats = LossStats { weight_sum: weight_sum.to_f64().unwrap(), ..LossStats::default() };
    let mut dlogits = dlogits;
    for i in 0..batch {
        let z = &logits[i * classes..(i + 1) * classes];
        let y = labels[i] as usize;
        let max = z.iter().copied().fold(T::neg_infinity(), T::max);
        let sum_exp: T = z.iter().map(|&v| (v - max).exp()).sum();
        let log_sum_exp = max + sum_exp.ln();
        stats.weighted_loss_sum += (weight(y) * (log_sum_exp - z[y])).to_f64().unwrap();
        stats.correct += usize::from(argmax(z) == y);
        if let Some(d) = dlogits.as_deref_mut() {
            let d = &mut d[i * classes..(i + 1) * classes];
            let scale = weight(y) / weight_sum;
            for c in 0..classes {
                let p = (z[c] - log_sum_exp).exp();
                d[c] = scale * (p - if c == y { T::one() } else { T::zero() });
            }
        }
    }
    stats
}
