//! lenet: train, evaluate and serve LeNet convolutional networks on MNIST and
//! Fashion-MNIST. The library is the product; `src/main.rs` is a thin command line.

pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod curvature;
pub mod data;
pub mod engine;
pub mod eval;
pub mod export;
pub mod init;
pub mod input;
pub mod layers;
pub mod models;
pub mod network;
pub mod optim;
pub mod predict;
pub mod reference;
pub mod report;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod spec;
pub mod sweep;
pub mod trainer;
pub mod viz;

/// The unit tests measure allocations with the integration tests' counting allocator.
#[cfg(test)]
#[path = "../tests/common/counting_alloc.rs"]
mod counting_alloc;
