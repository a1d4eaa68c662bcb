//! The training criteria, with optional class weights: softmax cross-entropy,
//! PyTorch's `CrossEntropyLoss(weight=w, reduction="mean")`, whose loss is
//! `Σ_i w[y_i]·(−log p_i[y_i]) / Σ_i w[y_i]`; and LeNet-5's equations 8 and 9 on RBF
//! outputs (see [`Criterion`]), weighted and averaged the same way.

use super::Real;
use crate::spec::Criterion;

/// What one batch's loss pass measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    /// `Σ_i w[y_i]·(−log p_i[y_i])`, in f64.
    pub weighted_loss_sum: f64,
    /// `Σ_i w[y_i]`.
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

/// `Σ_i w[y_i]` over a batch's labels (all weights 1 when `class_weights` is None),
/// summed in label order: the normaliser of the mean loss.
pub fn weight_sum<T: Real>(labels: &[u8], class_weights: Option<&[T]>) -> T {
    labels.iter().map(|&y| class_weight(class_weights, y as usize)).sum()
}

/// `w[y]`, or 1 without class weights.
pub fn class_weight<T: Real>(class_weights: Option<&[T]>, y: usize) -> T {
    class_weights.map_or(T::one(), |w| w[y])
}

/// One example's outputs `z` against label `y` under `criterion` (see
/// [`Criterion`]), its class weight being `weight`: returns w·loss and whether the
/// highest output is the label; when `d` is given, writes the example's row of
/// ∂(mean loss)/∂z.
pub fn example_loss<T: Real>(
    criterion: Criterion,
    d: Option<&mut [T]>,
    z: &[T],
    y: usize,
    weight: T,
    weight_sum: T,
) -> (f64, bool) {
    match criterion {
        Criterion::CrossEntropy => xent_example(d, z, y, weight, weight_sum),
        Criterion::Map { j } => {
            let rubbish = -T::from(j).expect("j is finite");
            xent_with_rubbish(d, z, y, weight, weight_sum, Some(rubbish))
        }
        Criterion::Mse => {
            // E = y_correct = −z[y]: ∂E/∂z[y] = −1, nothing else.
            if let Some(d) = d {
                for (c, dc) in d.iter_mut().enumerate() {
                    *dc = if c == y { -weight / weight_sum } else { T::zero() };
                }
            }
            ((weight * -z[y]).to_f64().unwrap(), argmax(z) == y)
        }
    }
}

/// One example's logits `z` against label `y` whose class weight is `weight`:
/// returns `w·(−log p[y])` and whether the highest logit is the label; when `d` is
/// given, writes the example's row of ∂(mean loss)/∂logits, w·(p − onehot(y)) / `weight_sum`.
pub fn xent_example<T: Real>(d: Option<&mut [T]>, z: &[T], y: usize, weight: T, weight_sum: T) -> (f64, bool) {
    xent_with_rubbish(d, z, y, weight, weight_sum, None)
}

/// [`xent_example`] with, optionally, one more logit of constant value `rubbish`
/// in the softmax's denominator (equation 9's e^(−j)); it takes no gradient.
fn xent_with_rubbish<T: Real>(
    d: Option<&mut [T]>,
    z: &[T],
    y: usize,
    weight: T,
    weight_sum: T,
    rubbish: Option<T>,
) -> (f64, bool) {
    let mut max = z.iter().copied().fold(T::neg_infinity(), T::max);
    if let Some(r) = rubbish {
        max = max.max(r);
    }
    let mut sum_exp: T = z.iter().map(|&v| (v - max).exp()).sum();
    if let Some(r) = rubbish {
        sum_exp += (r - max).exp();
    }
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
/// given, also the gradient of the mean loss: `w[y_i]·(p_i − onehot(y_i)) / Σ w`.
pub fn softmax_xent<T: Real>(
    dlogits: Option<&mut [T]>,
    logits: &[T],
    labels: &[u8],
    class_weights: Option<&[T]>,
    classes: usize,
) -> LossStats {
    batch_loss(Criterion::CrossEntropy, dlogits, logits, labels, class_weights, classes)
}

/// Loss and accuracy of outputs (B, C) against labels (B) under `criterion`: the
/// weighted mean `Σ_i w[y_i]·E_i / Σ w`; when `dlogits` is given, also its gradient.
pub fn batch_loss<T: Real>(
    criterion: Criterion,
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
        let w = class_weight(class_weights, y as usize);
        let (loss, correct) = example_loss(criterion, d, z, y as usize, w, weight_sum);
        stats.weighted_loss_sum += loss;
        stats.correct += usize::from(correct);
    }
    stats
}
