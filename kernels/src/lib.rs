//! CubeCL kernels for quantized inference, written once and run on any CubeCL runtime
//! (CUDA through `aihal-cuda`, Vulkan through wgpu with this crate's `wgpu` feature).
//!
//! - [`CubeProvider`]: the kernels as an `aihal-ops` execution provider on one device of any
//!   runtime: weights prepared once into device buffers, activations kept on the device
//!   between ops, transfers counted. [`wgpu_providers`] gives one per Vulkan adapter.
//! - [`dequantize`]: every `aihal_quantize` format into f32, f16 or bf16; [`embedding`]
//!   gathers rows of a quantized table.
//! - [`quant_matmul`]: `y = x · Wᵀ` over a packed weight (GEMV for one row, tiled GEMM
//!   otherwise), f32 or f16 activations, f32 accumulation; [`add_bias`].
//! - [`rms_norm`], [`layer_norm`], [`softmax`], [`silu`], [`gelu`], [`gelu_erf`],
//!   [`gated`], [`add`], [`rope`] (over [`RopeTables`]): the transformer glue.
//! - [`attention_cached`]: grouped-query attention, flash-style (tiles of keys, online
//!   softmax), over a batch of sequences in a key/value cache filled by [`kv_append`],
//!   with causal, sliding-window and padded masks; [`attention`] for one sequence.
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
mod formats;
mod launch;
mod matmul;
mod ops;
mod packed;
mod provider;
mod reduce;
mod rope;
#[cfg(feature = "wgpu")]
mod wgpu_device;

pub use attention::{attention, attention_cached, attention_units, fill, kv_append};
pub use dequant::{dequantize, dequantize_into, embedding};
pub use launch::{Context, DeviceBuffer, Limits};
pub use matmul::{quant_matmul, quant_matmul_into};
pub use ops::{add, add_bias, gated, gelu, gelu_erf, layer_norm, rms_norm, silu, softmax};
pub use packed::{device_support, DeviceQuantized};
pub use provider::{CubeData, CubeProvider, Transfers, ROPE_TABLE_POSITIONS};
pub use rope::{rope, RopeTables};
#[cfg(feature = "wgpu")]
pub use wgpu_device::{
    wgpu_adapters, wgpu_context, wgpu_device, wgpu_provider, wgpu_providers, WgpuAdapter, WgpuProbe,
};

/// Re-exported so that users name the CubeCL version these kernels were built with.
pub use cubecl;
