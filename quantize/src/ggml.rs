//! llama.cpp's GGML block formats: the block constants (bytes per block, IQ4's code book)
//! that the kernel crates read.
//!
//! Each block format lives in its own module under `formats/` (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, TQ2_0): its layout, its quantizer
//! (llama.cpp's reference quantizer, `quantize_row_*_ref` in `ggml-quants.c`, operation by
//! operation, so our bytes are the bytes llama.cpp writes) and its decoder
//! (`dequantize_row_*`, bit for bit). In short:
//!
//! - Q8_0: `d = amax / 127`, `q = roundf(x * (1/d))` (half away from zero).
//! - Q4_0: `d = max / -8` where `max` is the signed value of largest magnitude (the first
//!   one on ties), `q = min(15, trunc(x * (1/d) + 8.5))`; Q5_0 likewise with `-16`, `16.5`, 31.
//! - Q4_1: `d = (max - min) / 15`, `m = min`, `q = min(15, trunc((x - min) * (1/d) + 0.5))`.
//! - TQ2_0: `d = amax`, `q = lroundf(x * (1/d)) + 1`.
//! - Q2_K .. Q6_K: fitted sub-block scales (`make_qkx2_quants`, `make_q3_quants`,
//!   `make_qx_quants`), quantized to 4, 6 or 8 bits, values rounded to nearest (ties to
//!   even) against them.
//! - IQ4_NL, IQ4_XS: 4-bit indices into the non-linear `kvalues_iq4nl` code book, the
//!   scale (and IQ4_XS's 6-bit sub-block scales) fitted with a search of trial scales.
//!
//! `d` is stored as IEEE f16 rounded to nearest even. Dequantization multiplies by that
//! f16 scale (widened to f32).

/// Values per Q4_0 / Q8_0 block.
pub const QK: usize = 32;
/// Values per TQ2_0 block (and per K-format super-block).
pub const QK_K: usize = 256;
/// Bytes per Q4_0 block.
pub const Q4_0_BYTES: usize = crate::formats::q4_0::BYTES;
/// Bytes per Q8_0 block.
pub const Q8_0_BYTES: usize = crate::formats::q8_0::BYTES;
/// Bytes per TQ2_0 block.
pub const TQ2_0_BYTES: usize = crate::formats::tq2_0::BYTES;
/// Bytes per Q4_1 block (32 values).
pub const Q4_1_BYTES: usize = crate::formats::q4_1::BYTES;
/// Bytes per Q5_0 block (32 values).
pub const Q5_0_BYTES: usize = crate::formats::q5_0::BYTES;
/// Bytes per Q4_K super-block (256 values).
pub const Q4_K_BYTES: usize = crate::formats::q4_k::BYTES;
/// Bytes per Q6_K super-block (256 values).
pub const Q6_K_BYTES: usize = crate::formats::q6_k::BYTES;
/// Bytes per Q5_1 block (32 values).
pub const Q5_1_BYTES: usize = crate::formats::q5_1::BYTES;
/// Bytes per Q2_K super-block (256 values).
pub const Q2_K_BYTES: usize = crate::formats::q2_k::BYTES;
/// Bytes per Q3_K super-block (256 values).
pub const Q3_K_BYTES: usize = crate::formats::q3_k::BYTES;
/// Bytes per Q5_K super-block (256 values).
pub const Q5_K_BYTES: usize = crate::formats::q5_k::BYTES;
/// Bytes per IQ4_NL block (32 values).
pub const IQ4_NL_BYTES: usize = crate::formats::iq4_nl::BYTES;
/// Bytes per IQ4_XS super-block (256 values).
pub const IQ4_XS_BYTES: usize = crate::formats::iq4_xs::BYTES;
/// The 16 levels of IQ4_NL's and IQ4_XS's non-linear code book, indexed by the 4-bit code
/// (llama.cpp's `kvalues_iq4nl`): a value is its block's scale times `IQ4_LEVELS[code]`.
pub const IQ4_LEVELS: [i8; 16] = crate::formats::iq4_nl::KVALUES;

/// `(values per block, bytes per block)` of a GGML block format, `None` for the others.
pub fn block_layout(format: crate::QuantFormat) -> Option<(usize, usize)> {
    crate::formats::block_format(format).map(|b| (b.values, b.bytes))
}
