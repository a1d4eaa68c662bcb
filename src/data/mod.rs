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

pub use dataset::{DataFile, Dataset, DatasetKind, Split};
pub use idx::{IdxError, Images};
pub use locate::{locate, NotFound};

/// Find a dataset (see [`locate`]) and load it.
pub fn load(kind: DatasetKind, data_dir: Option<&std::path::Path>) -> anyhow::Result<Dataset> {
    let dir = locate(kind, data_dir)?;
    Ok(Dataset::load_from(kind, &dir)?)
}
