//! The formats and the packed layout every kernel (CPU, CubeCL, NPU) reads.
//!
//! # Layout contract
//!
//! A [`QuantizedTensor`](crate::QuantizedTensor) holds a logical row-major tensor. For a weight matrix the shape is
//! `[N, K]` (N output features, K input features); "row" below means one run of the last
//! dimension (`K` elements), and `numel` is the product of the shape.
//!
//! | format | `data` | `scales` (f32) | blocks run over |
//! | --- | --- | --- | --- |
//! | `Nf4 { block_size, .. }` | 4-bit codes, two per byte, **first element in the high nibble** (bitsandbytes order); `ceil(numel/2)` bytes, an odd tail's low nibble is padding (our quantizer writes code 7, the value 0.0, as bitsandbytes does; readers ignore it) | one absmax per block: `ceil(numel/block_size)`; with double quantization these are the decoded absmax values (the 8-bit form is kept in [`QuantizedTensor::nested`](crate::QuantizedTensor::nested)) | the flattened tensor (bitsandbytes), last block may be partial |
//! | `Q4_0` | llama.cpp `block_q4_0`: 18 bytes per 32 values = f16 `d` (little-endian) then 16 bytes `qs`; byte `j` holds value `j` in its low nibble and value `j+16` in its high nibble; value = `d * (q - 8)` | empty (scales are inline) | each row, `K % 32 == 0` |
//! | `Q8_0` | llama.cpp `block_q8_0`: 34 bytes per 32 values = f16 `d` then 32 × i8; value = `d * q` | empty | each row, `K % 32 == 0` |
//! | `Q4_1` | llama.cpp `block_q4_1`: 20 bytes per 32 values = f16 `d`, f16 `m`, then 16 bytes `qs` packed as in Q4_0; value = `q * d + m` | empty | each row, `K % 32 == 0` |
//! | `Q5_0` | llama.cpp `block_q5_0`: 22 bytes per 32 values = f16 `d`, 4 bytes `qh` (little-endian u32: bit `j` is the fifth bit of value `j`), 16 bytes `qs` packed as in Q4_0; value = `d * (q - 16)` | empty | each row, `K % 32 == 0` |
//! | `Q5_1` | llama.cpp `block_q5_1`: 24 bytes per 32 values = f16 `d`, f16 `m`, 4 bytes `qh` (as Q5_0), 16 bytes `qs` packed as in Q4_0; value = `q * d + m` | empty | each row, `K % 32 == 0` |
//! | `Q5K` | llama.cpp `block_q5_K`: 176 bytes per 256 values = f16 `d`, f16 `dmin`, 12 bytes of scales and minimums (as Q4_K), 32 bytes `qh` (fifth bits), 128 bytes `qs` (as Q4_K); value = `(d * sc) * q - dmin * m` (details in `formats/q5_k.rs`) | empty | each row, `K % 256 == 0` |
//! | `Q2K` | llama.cpp `block_q2_K`: 84 bytes per 256 values = 16 bytes of 4-bit scales (low nibble) and minimums (high nibble) per 16 values, 64 bytes `qs` (2-bit codes), f16 `d`, f16 `dmin`; value = `(d * sc) * q - dmin * m` (details in `formats/q2_k.rs`) | empty | each row, `K % 256 == 0` |
//! | `Q3K` | llama.cpp `block_q3_K`: 110 bytes per 256 values = 32 bytes `hmask` (high bits), 64 bytes `qs` (low 2 bits), 12 bytes of sixteen 6-bit scales, f16 `d`; value = `(d * (s - 32)) * (q - 4)` (details in `formats/q3_k.rs`) | empty | each row, `K % 256 == 0` |
//! | `Q4K` | llama.cpp `block_q4_K`: 144 bytes per 256 values = f16 `d`, f16 `dmin`, 12 bytes of eight 6-bit scales and minimums (`get_scale_min_k4`), 128 bytes `qs`; byte `l` of `qs[32p..]` holds value `64p + l` (low nibble) and `64p + 32 + l` (high nibble); value = `(d * sc) * q - dmin * m` for the value's 32-value sub-block (details in `formats/q4_k.rs`) | empty | each row, `K % 256 == 0` |
//! | `Q6K` | llama.cpp `block_q6_K`: 210 bytes per 256 values = 128 bytes `ql`, 64 bytes `qh`, 16 × i8 `scales`, f16 `d`; 6-bit `q` split over `ql` and `qh`; value = `(d * scales[s]) * (q - 32)` for the value's 16-value sub-block (details in `formats/q6_k.rs`) | empty | each row, `K % 256 == 0` |
//! | `Iq4Nl` | llama.cpp `block_iq4_nl`: 18 bytes per 32 values = f16 `d` then 16 bytes `qs` packed as in Q4_0 (4-bit indices); value = `d * kvalues_iq4nl[index]` (the code book in `formats/iq4_nl.rs`) | empty | each row, `K % 32 == 0` |
//! | `Iq4Xs` | llama.cpp `block_iq4_xs`: 136 bytes per 256 values = f16 `d`, u16 `scales_h`, 4 bytes `scales_l` (eight 6-bit sub-block scales), 128 bytes `qs` (4-bit indices, as IQ4_NL per 32 values); value = `(d * (ls - 32)) * kvalues_iq4nl[index]` (details in `formats/iq4_xs.rs`) | empty | each row, `K % 256 == 0` |
//! | `Tq2_0` | llama.cpp `block_tq2_0`: 66 bytes per 256 values = 64 bytes `qs` then f16 `d`; in half `h` (0..2) byte `j` (0..32) of `qs[32h..]`, bits `2l..2l+2` (l in 0..4) hold value `128h + 32l + j` as `q` in 0..=2; value = `d * (q - 1)` | empty | each row, `K % 256 == 0` |
//! | `Ternary` (BitNet b1.58) | 2 bits per value, four per byte, value `i` in bits `2*(i%4)` of byte `i/4`, code `q` in 0..=2; `ceil(numel/4)` bytes | one per tensor: the absmean scale; value = `scale * (q - 1)` | the flattened tensor |
//! | `Int8PerChannel` | one i8 per value (stored as its byte) | one per row (absmax/127): `numel / K` | each row |
//! | `Int8PerBlock { block_size }` | one i8 per value | `rows * ceil(K/block_size)`, row-major | each row; the last block of a row may be partial |
//! | `Fp8E4M3 { block_size }`, `Fp8E5M2 { block_size }` | one FP8 byte per value (E4M3 is the finite-only "fn" variant) | `None`: one per tensor; `Some(b)`: `rows * ceil(K/b)`, row-major; value = `decode(byte) * scale` | each row (per block) |
//!
//! All multi-byte fields are little-endian. Every constructor validates that `data` and
//! `scales` lengths agree with the shape and format and answers `ShapeMismatch` otherwise, so
//! a kernel handed a `QuantizedTensor` may trust these lengths.

use std::fmt;

/// A quantization format with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    /// NormalFloat4 (QLoRA / bitsandbytes), blockwise absmax.
    Nf4 {
        /// Values per absmax block: a power of two from 32 to 4096 (bitsandbytes default 64).
        block_size: usize,
        /// Whether the absmax values are themselves quantized (QLoRA double quantization).
        double_quant: bool,
    },
    /// llama.cpp Q4_0: 32 values per block, f16 scale.
    Q4_0,
    /// llama.cpp Q8_0: 32 values per block, f16 scale.
    Q8_0,
    /// llama.cpp Q4_1: 32 values per block, f16 scale and f16 minimum, 4-bit codes.
    Q4_1,
    /// llama.cpp Q5_0: 32 values per block, f16 scale, 5-bit codes.
    Q5_0,
    /// llama.cpp Q2_K: 256 values per super-block, f16 scale and minimum, sixteen 4-bit
    /// sub-block scales and minimums, 2-bit codes.
    Q2K,
    /// llama.cpp Q3_K: 256 values per super-block, f16 scale, sixteen 6-bit sub-block
    /// scales, 3-bit codes (2 bits plus a high-bit mask).
    Q3K,
    /// llama.cpp Q5_1: 32 values per block, f16 scale and f16 minimum, 5-bit codes.
    Q5_1,
    /// llama.cpp Q5_K: 256 values per super-block, f16 scale and minimum, eight 6-bit
    /// sub-block scales and minimums, 5-bit codes.
    Q5K,
    /// llama.cpp Q4_K: 256 values per super-block, f16 scale and minimum, eight 6-bit
    /// sub-block scales and minimums, 4-bit codes.
    Q4K,
    /// llama.cpp Q6_K: 256 values per super-block, f16 scale, sixteen i8 sub-block scales,
    /// 6-bit codes.
    Q6K,
    /// llama.cpp IQ4_NL: 32 values per block, f16 scale, 4-bit indices into a fixed
    /// non-linear code book.
    Iq4Nl,
    /// llama.cpp IQ4_XS: 256 values per super-block, f16 scale, eight 6-bit sub-block
    /// scales, 4-bit indices into IQ4_NL's code book.
    Iq4Xs,
    /// llama.cpp TQ2_0: ternary, 256 values per block, f16 scale.
    Tq2_0,
    /// BitNet b1.58 ternary with one absmean scale per tensor.
    Ternary,
    /// Symmetric int8 with one absmax scale per row (output channel).
    Int8PerChannel,
    /// Symmetric int8 with one absmax scale per block of a row.
    Int8PerBlock {
        /// Values per block along a row.
        block_size: usize,
    },
    /// FP8 E4M3 (finite-only), scaled per tensor or per block of a row.
    Fp8E4M3 {
        /// `None` for one scale per tensor, else values per block along a row.
        block_size: Option<usize>,
    },
    /// FP8 E5M2, scaled per tensor or per block of a row.
    Fp8E5M2 {
        /// `None` for one scale per tensor, else values per block along a row.
        block_size: Option<usize>,
    },
}

impl QuantFormat {
    /// A short, stable name used in serialized metadata and bench ids (`nf4`, `q4_0`,
    /// `int8_block`, `fp8_e4m3`).
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Nf4 { .. } => "nf4",
            Self::Q4_0 => "q4_0",
            Self::Q8_0 => "q8_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q2K => "q2_k",
            Self::Q3K => "q3_k",
            Self::Q5_1 => "q5_1",
            Self::Q5K => "q5_k",
            Self::Q4K => "q4_k",
            Self::Q6K => "q6_k",
            Self::Iq4Nl => "iq4_nl",
            Self::Iq4Xs => "iq4_xs",
            Self::Tq2_0 => "tq2_0",
            Self::Ternary => "ternary",
            Self::Int8PerChannel => "int8_channel",
            Self::Int8PerBlock { .. } => "int8_block",
            Self::Fp8E4M3 { .. } => "fp8_e4m3",
            Self::Fp8E5M2 { .. } => "fp8_e5m2",
        }
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nf4 {
                block_size,
                double_quant,
            } => write!(
                f,
                "nf4(block {block_size}{})",
                if *double_quant { ", double quant" } else { "" }
            ),
            Self::Int8PerBlock { block_size } => write!(f, "int8_block({block_size})"),
            Self::Fp8E4M3 { block_size: Some(b) } | Self::Fp8E5M2 { block_size: Some(b) } => {
                write!(f, "{}(block {b})", self.name())
            }
            _ => f.write_str(self.name()),
        }
    }
}
