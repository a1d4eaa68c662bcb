//! Evaluation: loss, accuracy, per-class accuracy and the confusion matrix of
//! a network over a whole split.

use std::fmt;

use crate::engine::Engine;
use crate::layers::loss::argmax;
use crate::network::Network;

/// What [`evaluate`] measured over a whole split.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// Examples evaluated.
    pub count: usize,
    /// Mean loss per example under the architecture's criterion (cross-entropy in nats,
    /// or LeNet-5's equation 9 or 8), class-weighted if weights are set.
    pub loss: f64,
    /// Fraction of the examples whose predicted class is the label, in [0, 1] (NaN for none).
    pub accuracy: f64,
    /// Counts by true class and predicted class: `confusion[true][predicted]`, 10×10.
    pub confusion: Vec<Vec<usize>>,
    /// The predicted class of every example, in order.
    pub predictions: Vec<u8>,
}

impl EvalResult {
    /// Accuracy on each true class.
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: usize = row.iter().sum();
                if n == 0 {
                    f64::NAN
                } else {
                    row[c] as f64 / n as f64
                }
            })
            .collect()
    }

    /// A text report: totals, per-class accuracy and the confusion matrix.
    pub fn report(&self, class_names: &[&str]) -> String {
        let mut s = format!(
            "examples {}  loss {:.4}  accuracy {:.4}\n\nper-class accuracy\n",
            self.count, self.loss, self.accuracy
        );
        for (name, acc) in class_names.iter().zip(self.per_class_accuracy()) {
            s += &format!("  {name:<12} {acc:.4}\n");
        }
        s += "\nconfusion matrix (rows: true class, columns: predicted)\n";
        s += &format!("  {:<12}", "");
        for c in 0..self.confusion.len() {
            s += &format!("{c:>6}");
        }
        s += "\n";
        for (name, row) in class_names.iter().zip(&self.confusion) {
            s += &format!("  {name:<12}");
            for v in row {
                s += &format!("{v:>6}");
            }
            s += "\n";
        }
        s
    }
}

impl fmt::Display for EvalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "loss {:.3}, accuracy {:.3} on {} examples", self.loss, self.accuracy, self.count)
    }
}

/// Run the network over every example of `examples`, `batch` at a time.
pub fn evaluate<E: Engine>(net: &mut Network<E>, examples: &E::Examples, batch: usize) -> EvalResult
where
    Network<E>: Send,
{
    let n = E::example_count(examples);
    let classes = net.num_classes();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut predictions = Vec::with_capacity(n);
    let (mut loss_sum, mut weight_sum, mut correct) = (0.0, 0.0, 0);
    let indices: Vec<u32> = (0..n as u32).collect();
    let labels = E::labels(examples);
    for chunk in indices.chunks(batch.max(1)) {
        let (stats, logits) = net.infer(examples, chunk);
        loss_sum += stats.weighted_loss_sum;
        weight_sum += stats.weight_sum;
        correct += stats.correct;
        for (row, &i) in logits.chunks(classes).zip(chunk) {
            let p = argmax(row);
            confusion[labels[i as usize] as usize][p] += 1;
            predictions.push(p as u8);
        }
    }
    EvalResult {
        count: n,
        loss: if weight_sum > 0.0 { loss_sum / weight_sum } else { f64::NAN },
        accuracy: if n > 0 { correct as f64 / n as f64 } else { f64::NAN },
        confusion,
        predictions,
    }
}
