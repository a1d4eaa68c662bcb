//! The GPU engine, with wgpu and WGSL compute shaders: NVIDIA, AMD and Intel through
//! Vulkan, Apple through Metal, Windows through DX12, and in CI Mesa's software Vulkan
//! device (lavapipe), which runs the same code.
//!
//! Choosing and opening a device ([`device`]); the kernels ([`kernels`]: every layer kind
//! forward and backward, the criteria with their sums kept on the device, batches
//! gathered and scaled from a split resident as bytes, the optimizers and clipping),
//! each tested against the CPU engine and the reference (tests/gpu.rs); and the engine
//! over them ([`engine::GpuEngine`]), which trains, evaluates and predicts.

pub mod device;
pub mod engine;
pub mod kernels;
