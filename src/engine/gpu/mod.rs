//! The GPU engine, with wgpu and WGSL compute shaders: NVIDIA, AMD and Intel through
//! Vulkan, Apple through Metal, Windows through DX12, and in CI Mesa's software Vulkan
//! device (lavapipe), which runs the same code.
//!
//! What is here so far: choosing and opening a device ([`device`]), and the kernels
//! ([`kernels`]: every layer kind forward and backward, the criteria with their sums kept
//! on the device, batches gathered and scaled from a split resident as bytes), each
//! tested against the CPU engine and the reference (tests/gpu.rs). The `Engine`
//! implementation (optimizers and clipping on the device, many steps per submission) and
//! training on the GPU come next.

pub mod device;
pub mod kernels;
