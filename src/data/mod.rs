//! The datasets: MNIST and Fashion-MNIST, each 60,000 training and 10,000 test images
//! of 28×28 bytes with labels 0–9, found on this machine ([`locate()`]) and loaded
//! from their IDX files ([`Dataset::load`]). `lenet data fetch` and `scripts/setup-data`
//! install them.

pub mod dataset;
pub mod locate;

// The file formats and tools live in `crate::internal`; inside the crate they keep
// their paths under `data`.
pub(crate) use crate::internal::{augment, idx, pickle};

pub use augment::Augment;
pub use dataset::{DataFile, Dataset, DatasetKind, Part, Split};
pub use idx::{IdxError, Images};
pub use locate::{locate, NotFound};

impl Dataset {
    /// Find a dataset on this machine and load both splits (about 55 MB): the first of
    /// `data_dir` (when given), `$LENET_DATA`, the user cache (`~/.cache/lenet/<dataset>`)
    /// and Debian's `/usr/share/datasets/fashion-mnist` that holds its four files
    /// ([`locate()`] has the exact order). When none does, the error lists every place it
    /// looked and the commands that install it.
    pub fn load(kind: DatasetKind, data_dir: Option<&std::path::Path>) -> anyhow::Result<Dataset> {
        load(kind, data_dir)
    }
}

/// Find a dataset (see [`locate()`]) and load it.
pub fn load(kind: DatasetKind, data_dir: Option<&std::path::Path>) -> anyhow::Result<Dataset> {
    let dir = locate(kind, data_dir)?;
    Ok(Dataset::load_from(kind, &dir)?)
}

/// Find a dataset (see [`locate()`]) and load one of its splits: evaluating a model never
/// reads the 47 MB of training images.
pub fn load_part(kind: DatasetKind, data_dir: Option<&std::path::Path>, part: Part) -> anyhow::Result<Split> {
    let dir = locate(kind, data_dir)?;
    Ok(Dataset::load_part_from(kind, &dir, part)?)
}
