//! Quantization formats people load models in, byte-compatible with their reference
//! implementations: NF4 (bitsandbytes), GGML Q4_0/Q8_0/TQ2_0 (llama.cpp), int8, BitNet
//! b1.58 ternary and FP8.
//!
//! Every format produces a [`QuantizedTensor`] whose packed layout is fixed by the
//! [layout contract](format); the CPU, CubeCL and NPU kernels read that layout directly.
//!
//! The slice-level functions [`quantize`], [`dequantize`] and [`dequantize_into`] define the
//! exact semantics every kernel is tested against; each format's module documents its
//! rounding.
#![forbid(unsafe_code)]

pub mod bnb;
pub mod format;
pub mod fp8;
pub mod ggml;
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
pub use interop::{read_gguf_tensor, Quantizer};
pub use linear::TERNARY_EPS;
pub use ops::{dequantize, dequantize_into, quantize, quantize_with, NonFinitePolicy};
pub use stats::ErrorStats;
pub use tensor::{NestedAbsmax, QuantizedTensor};
