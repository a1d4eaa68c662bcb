//! lenet: train, evaluate and serve LeNet convolutional networks on MNIST and
//! Fashion-MNIST. The library is the product; `src/main.rs` is a thin command line.

pub mod atomic;
pub mod data;
