//! Train, evaluate and run LeNet convolutional networks on MNIST and Fashion-MNIST, on
//! all CPU cores (or a GPU): the library under the `lenet` command line.
//!
//! Read a digit with a model shipped inside the crate (no data, no training):
//!
//! ```
//! use lenet::{models, Classifier};
//!
//! let model = models::find("mnist-relu")?.checkpoint();
//! let mut classifier = Classifier::new(&model)?;
//! // A "7" as MNIST stores its digits: 28×28 bytes, white ink on black, row-major.
//! let mut digit = [0u8; 28 * 28];
//! for col in 8..20 {
//!     digit[6 * 28 + col] = 255; // the bar
//! }
//! for row in 7..23 {
//!     digit[row * 28 + 19 - (row - 7) * 7 / 16] = 255; // the stem, down and to the left
//! }
//! let seen = classifier.classify_pixels(&digit)?;
//! assert_eq!(seen.name, "7");
//! println!("{} ({:.1} %)", seen.name, 100.0 * seen.probability);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Train d2l's LeNet (the sigmoid network of *Dive into Deep Learning* 7.6, SGD lr 0.9,
//! batch 256, 10 epochs) on Fashion-MNIST, as `lenet train` does; the data comes from
//! `scripts/setup-data` or `lenet data fetch fashion-mnist`:
//!
//! ```no_run
//! use lenet::{trainer::Silent, Dataset, DatasetKind, TrainConfig, Trainer};
//!
//! let data = Dataset::load(DatasetKind::FashionMnist, None)?;
//! let mut trainer = Trainer::on_cpu(TrainConfig::d2l(), &data)?;
//! while !trainer.is_finished() {
//!     let m = trainer.train_epoch(&mut Silent)?;
//!     println!("epoch {}  loss {:.3}  test acc {:.3}", m.epoch, m.train_loss, m.test_acc);
//! }
//! lenet::checkpoint::save("d2l.safetensors", &trainer.checkpoint())?; // PyTorch's keys
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! The pieces, left to right:
//!
//! - [`Spec`]: an architecture as data, an input description and a layer list in the
//!   order of PyTorch's `nn.Sequential` ([`Spec::preset`]: `d2l`, `relu`, `lenet5`; or
//!   built in code, or read from TOML).
//! - [`Dataset`]: MNIST or Fashion-MNIST from their IDX files, found on this machine.
//! - [`TrainConfig`] and [`Trainer`]: everything that determines a run's numbers, and the
//!   loop of epochs; the same config, seed and thread count give the same bits.
//! - [`Network`]: a spec's layers on an engine ([`CpuEngine`]), with flat parameters in
//!   PyTorch `state_dict` order, forward and backward passes.
//! - [`Checkpoint`]: parameters, optimizer state, config and history in a safetensors
//!   file whose tensor names are PyTorch's `state_dict` keys.
//! - [`Classifier`]: pictures of any size or colour, prepared as MNIST was made, read by a
//!   trained network; [`models`] holds the trained networks shipped inside the crate.
//!
//! The examples (`cargo run --release --example train`, `predict`, `custom_net`) are
//! whole programs. Everything under `lenet::internal` is the command line's machinery,
//! public only for the `lenet` binary and the tests, and outside semver.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod init;
pub mod models;
pub mod network;
pub mod optim;
pub mod predict;
pub mod schedule;
pub mod spec;
pub mod trainer;

#[doc(hidden)]
pub mod internal;

pub use checkpoint::Checkpoint;
pub use data::{Dataset, DatasetKind, Images, Split};
pub use internal::engine::cpu::CpuEngine;
pub use network::Network;
pub use predict::{Classifier, Prediction};
pub use spec::Spec;
pub use trainer::{EpochMetrics, TrainConfig, Trainer};

// Inside the crate the machinery keeps its short paths (`crate::engine::…`).
use internal::{atomic, curvature, engine, input, layers, report, run, viz};

/// The unit tests measure allocations with the integration tests' counting allocator.
#[cfg(test)]
#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;
