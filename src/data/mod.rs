//! The data layer: IDX files, the MNIST and Fashion-MNIST datasets, finding,
//! fetching, importing, verifying, previewing and distorting them.

pub mod augment;
pub mod dataset;
pub mod fetch;
pub mod idx;
pub mod import;
pub mod locate;
pub mod pickle;
pub mod preview;
pub mod verify;

pub use dataset::{DataFile, Dataset, DatasetKind, Part, Split};
pub use idx::{IdxError, Images};
pub use locate::{locate, NotFound};

/// Find a dataset (see [`locate`]) and load it.
pub fn load(kind: DatasetKind, data_dir: Option<&std::path::Path>) -> anyhow::Result<Dataset> {
    let dir = locate(kind, data_dir)?;
    Ok(Dataset::load_from(kind, &dir)?)
}

/// Find a dataset (see [`locate`]) and load one of its splits: evaluating a model never
/// reads the 47 MB of training images.
pub fn load_part(kind: DatasetKind, data_dir: Option<&std::path::Path>, part: Part) -> anyhow::Result<Split> {
    let dir = locate(kind, data_dir)?;
    Ok(Dataset::load_part_from(kind, &dir, part)?)
}
