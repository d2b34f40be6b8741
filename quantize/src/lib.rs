//! Quantization formats people load models in, byte-compatible with their reference
//! implementations: NF4 (bitsandbytes), GGML Q4_0/Q8_0/TQ2_0 (llama.cpp), int8, BitNet
//! b1.58 ternary and FP8.
//!
//! Every format produces a [`QuantizedTensor`] whose packed layout is fixed by the
//! [layout contract](format); the CPU, CubeCL and NPU kernels read that layout directly.
#![forbid(unsafe_code)]

pub mod format;
mod tensor;

pub use format::QuantFormat;
pub use tensor::{NestedAbsmax, QuantizedTensor};
