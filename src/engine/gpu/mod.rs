//! The GPU engine, with wgpu and WGSL compute shaders: NVIDIA, AMD and Intel through
//! Vulkan, Apple through Metal, Windows through DX12, and in CI Mesa's software Vulkan
//! device (lavapipe), which runs the same code.
//!
//! What is here so far: choosing and opening a device ([`device`]), and the kernels
//! ([`kernels`]: the convolution, forward and backward), each tested against the CPU
//! engine and the reference (tests/gpu.rs). The remaining layers, the `Engine`
//! implementation and training on the GPU come next.

pub mod device;
pub mod kernels;
