//! Quantization formats people load models in, byte-compatible with their reference
//! implementations: NF4 (bitsandbytes), GGML Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS/TQ2_0 (llama.cpp), int8, BitNet
//! b1.58 ternary and FP8.
//!
//! Every format produces a [`QuantizedTensor`] whose packed layout is fixed by the
//! [layout contract](mod@format); the CPU, CubeCL and NPU kernels read that layout directly.
//!
//! - Slice level: [`quantize`], [`quantize_with`] (with a [`NonFinitePolicy`]),
//!   [`dequantize`] and [`dequantize_into`] define the exact semantics every kernel is
//!   tested against. The rounding of each format is documented in [`nf4`], [`ggml`], and
//!   [`fp8`] (FP8 codecs), and below for int8 and ternary.
//! - Candle level: [`Quantizer`] implements aihal-core's `Quantize` / `Dequantize` on
//!   candle tensors; [`QuantizedTensor::from_qtensor`] and [`read_gguf_tensor`] take GGML
//!   tensors (from a GGUF file) as they are.
//! - Files: [`io`] saves and loads any [`QuantizedTensor`] to safetensors with metadata
//!   that fully describes it (the file layout is documented there); [`bnb`] reads and
//!   writes bitsandbytes' serialized NF4 weights.
//! - [`decode`]: one row of a `[N, K]` weight back to f32 as the contract defines it, for
//!   the scalar reference and generic kernels.
//! - [`ErrorStats`]: RMSE, max |error| and SNR of a round trip.
//!
//! Int8 (per channel or per block): `scale = absmax / 127`, `q = round(x / scale)` (half
//! away from zero). Ternary (BitNet b1.58): `scale = max(mean |x|, 1e-5)` over the tensor,
//! `q = clamp(round_half_even(x / scale), -1, 1)`. FP8: `scale = absmax / max_finite`, per
//! tensor or per block of a row, bytes rounded to nearest even and saturating.
//!
//! Large tensors are quantized and dequantized in parallel on rayon's pool.
//!
//! ```
//! use aihal_quantize::{dequantize, quantize, ErrorStats, QuantFormat};
//!
//! let w: Vec<f32> = (0..4096).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
//! let q = quantize(QuantFormat::Nf4 { block_size: 64, double_quant: true }, &w, &[32, 128])?;
//! assert!(q.bits_per_weight() < 4.2);
//! let stats = ErrorStats::between(&w, &dequantize(&q)?)?;
//! assert!(stats.snr_db > 15.0);
//! # Ok::<(), aihal_core::CoreError>(())
//! ```
#![forbid(unsafe_code)]

pub mod bnb;
pub mod decode;
pub mod format;
mod formats;
pub mod fp8;
pub mod ggml;
pub mod gguf;
mod interop;
pub mod io;
mod linear;
pub mod nf4;
mod ops;
mod par;
pub mod stats;
mod tensor;
mod validate;

pub use format::QuantFormat;
pub use gguf::{GgmlType, GgufFile, GgufTensorData, GgufTensorInfo, GgufTensors, GgufValue};
pub use interop::{read_gguf_tensor, Quantizer};
pub use linear::TERNARY_EPS;
pub use ops::{dequantize, dequantize_into, quantize, quantize_with, NonFinitePolicy};
pub use stats::ErrorStats;
pub use tensor::{NestedAbsmax, QuantizedTensor};
