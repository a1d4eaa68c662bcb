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

/// Σ_i w[y_i] over a batch's labels (all weights 1 when `class_weights` is None),
/// summed in label order: the normaliser of the mean loss.
pub fn weight_sum<T: Real>(labels: &[u8], class_weights: Option<&[T]>) -> T {
    labels.iter().map(|&y| class_weight(class_weights, y as usize)).sum()
}

/// w[y], or 1 without class weights.
pub fn class_weight<T: Real>(class_weights: Option<&[T]>, y: usize) -> T {
    class_weights.map_or(T::one(), |w| w[y])
}

/// One example's logits `z` against label `y` whose class weight is `weight`:
/// returns w·(−log p[y]) and whether the highest logit is the label; when `d` is
/// given, writes the example's row of ∂(mean loss)/∂logits, w·(p − onehot(y)) / `weight_sum`.
pub fn xent_example<T: Real>(d: Option<&mut [T]>, z: &[T], y: usize, weight: T, weight_sum: T) -> (f64, bool) {
    let max = z.iter().copied().fold(T::neg_infinity(), T::max);
    let sum_exp: T = z.iter().map(|&v| (v - max).exp()).sum();
    let log_sum_exp = max + sum_exp.ln();
    let loss = (weight * (log_sum_exp - z[y])).to_f64().unwrap();
    if let Some(d) = d {
        let scale = weight / weight_sum;
        for (c, (dc, &zc)) in d.iter_mut().zip(z).enumerate() {
            let p = (zc - log_sum_exp).exp();
            *dc = scale * (p - if c == y { T::one() } else { T::zero() });
        }
    }
    (loss, argmax(z) == y)
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
    let weight_sum: T = weight_sum(labels, class_weights);
    let mut stats = LossStats { weight_sum: weight_sum.to_f64().unwrap(), ..LossStats::default() };
    let mut dlogits = dlogits;
    for (i, &y) in labels.iter().enumerate() {
        let z = &logits[i * classes..(i + 1) * classes];
        let d = dlogits.as_deref_mut().map(|d| &mut d[i * classes..(i + 1) * classes]);
        let (loss, correct) = xent_example(d, z, y as usize, class_weight(class_weights, y as usize), weight_sum);
        stats.weighted_loss_sum += loss;
        stats.correct += usize::from(correct);
    }
    stats
}
