//! The machinery under the `lenet` command line: the kernels and engines, the f64
//! reference chain, the file formats, run folders, reports, pictures, export, `serve`,
//! `sweep` and `bench`. Public only because the `lenet` binary and the test suite are
//! separate crates that need it; hidden from the documentation and outside semver:
//! anything here may change in any release. The library's API is what the crate root
//! shows.
//!
//! The files stay where the design puts them (`src/engine/`, `src/serve/`, …); only
//! their module path, `lenet::internal::…`, says they are not the API.

#[path = "../atomic.rs"]
pub mod atomic;
#[path = "../bench.rs"]
pub mod bench;
#[path = "../curvature.rs"]
pub mod curvature;
#[path = "../engine/mod.rs"]
pub mod engine;
#[path = "../export/mod.rs"]
pub mod export;
#[path = "../input.rs"]
pub mod input;
#[path = "../layers/mod.rs"]
pub mod layers;
#[path = "../reference/mod.rs"]
pub mod reference;
#[path = "../report.rs"]
pub mod report;
#[path = "../run.rs"]
pub mod run;
#[path = "../serve/mod.rs"]
pub mod serve;
#[path = "../sweep/mod.rs"]
pub mod sweep;
#[path = "../viz/mod.rs"]
pub mod viz;

// The data layer's file formats and tools (`lenet::data` keeps the datasets).
#[path = "../data/augment/mod.rs"]
pub mod augment;
#[path = "../data/fetch.rs"]
pub mod fetch;
#[path = "../data/idx.rs"]
pub mod idx;
#[path = "../data/import.rs"]
pub mod import;
#[path = "../data/pickle.rs"]
pub mod pickle;
#[path = "../data/preview.rs"]
pub mod preview;
#[path = "../data/verify.rs"]
pub mod verify;
