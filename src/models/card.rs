//! A shipped model's card: what it is, how it was made, how well it does.

use serde::{Deserialize, Serialize};

use crate::data::DatasetKind;

/// What a shipped model is and how it was made: `lenet models show NAME` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The shipped model's name, `<dataset>-<preset>`.
    pub name: String,
    /// The dataset it was trained and tested on.
    pub dataset: DatasetKind,
    /// The preset the architecture is.
    pub architecture: String,
    /// Length of the flat parameter buffer (a masked convolution's left-out weights,
    /// held at zero, included).
    pub parameters: usize,
    /// The `lenet train` command that trained it (scripts/train-models runs it).
    pub command: String,
    /// The training run's seed (`--seed`).
    pub seed: u64,
    /// Epochs trained: the epoch of the run's last checkpoint.
    pub epochs: usize,
    /// CPU threads and instruction set (`LENET_ISA`) it was trained with: the same
    /// command with both gives the same file, bit for bit.
    pub threads: usize,
    /// The instruction set, as `LENET_ISA` names it (`avx512`, `avx2`, `baseline`), read
    /// when the model was packed.
    pub isa: String,
    /// The packing machine's CPU model name and core count, e.g. `AMD EPYC (2 cores)`.
    pub cpu: String,
    /// The lenet version (Cargo package version) that packed the model.
    pub lenet_version: String,
    /// UTC, YYYY-MM-DD.
    pub date: String,
    /// Wall time of the training run, seconds (its epochs, evaluation included).
    pub train_seconds: f64,
    /// On the dataset's 10,000 test images.
    pub test_accuracy: f64,
    /// Test images misclassified, of the 10,000.
    pub test_errors: usize,
    /// Test accuracy of each class, 0 to 9.
    pub per_class_accuracy: Vec<f64>,
    /// SHA-256 of the model file.
    pub sha256: String,
}

impl ModelCard {
    /// The card as TOML, as `models/<name>.toml` holds it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a model card serialises")
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
    }
}
