//! CubeCL kernels for quantized inference, written once and run on any CubeCL runtime
//! (CUDA through `aihal-cuda`, Vulkan through wgpu with this crate's `wgpu` feature).
//!
//! - [`dequantize`]: every `aihal_quantize` format into f32, f16 or bf16.
//! - [`quant_matmul`]: `y = x · Wᵀ` over a packed weight (GEMV for one row, tiled GEMM
//!   otherwise), f32 or f16 activations, f32 accumulation.
//! - [`rms_norm`], [`softmax`], [`silu`], [`gelu`], [`rope`]: the transformer glue.
//! - [`attention`]: causal grouped-query attention, flash-style (tiles of keys, online
//!   softmax).
//!
//! Every op takes a [`Context`] (a CubeCL client and the launch limits read from it) and
//! device buffers; every failure, including a panic inside CubeCL, is a [`CoreError`].
//!
//! [`CoreError`]: aihal_core::CoreError
#![deny(
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod attention;
#[cfg(feature = "export-tests")]
pub mod conformance;
mod decode;
mod dequant;
mod launch;
mod matmul;
mod ops;
mod packed;
mod reduce;
#[cfg(feature = "wgpu")]
mod wgpu_device;

pub use attention::{attention, AttentionDims};
pub use dequant::{dequantize, dequantize_into};
pub use launch::{Context, DeviceBuffer, Limits};
pub use matmul::{quant_matmul, quant_matmul_into};
pub use ops::{gelu, rms_norm, rope, rope_tables, silu, softmax, RopeStyle};
pub use packed::DeviceQuantized;
#[cfg(feature = "wgpu")]
pub use wgpu_device::{wgpu_adapters, wgpu_context, wgpu_device, WgpuAdapter, WgpuProbe};

/// Re-exported so that users name the CubeCL version these kernels were built with.
pub use cubecl;
