//! GGML tensor type ids as GGUF stores them, with their block layouts.

use std::fmt;

use aihal_core::DType;

use crate::format::QuantFormat;

/// A GGML tensor type id, as stored in a GGUF tensor info.
///
/// Any `u32` can appear in a file: ids this crate does not know are kept (and listed by
/// [`GgufFile::tensors`](super::GgufFile::tensors)) so that a file with one exotic tensor
/// still opens; only reading such a tensor is an error. The associated constants name the
/// ids of ggml's `ggml_type` enum (ids 4, 5, 31–33 and 36–38 belong to types ggml has
/// removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GgmlType(pub u32);

/// `(id, name, values per block, bytes per block)` of every type ggml defines today, from
/// the `GGML_QUANT_SIZES` table of the `gguf` Python package 0.19.0.
const TYPES: &[(u32, &str, u64, u64)] = &[
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// 32-bit float.
    pub const F32: Self = Self(0);
    /// 16-bit IEEE float.
    pub const F16: Self = Self(1);
    /// llama.cpp Q4_0 (read as [`QuantFormat::Q4_0`]).
    pub const Q4_0: Self = Self(2);
    /// llama.cpp Q4_1 (read as [`QuantFormat::Q4_1`]).
    pub const Q4_1: Self = Self(3);
    /// llama.cpp Q5_0 (read as [`QuantFormat::Q5_0`]).
    pub const Q5_0: Self = Self(6);
    /// llama.cpp Q5_1 (read as [`QuantFormat::Q5_1`]).
    pub const Q5_1: Self = Self(7);
    /// llama.cpp Q8_0 (read as [`QuantFormat::Q8_0`]).
    pub const Q8_0: Self = Self(8);
    /// llama.cpp Q8_1.
    pub const Q8_1: Self = Self(9);
    /// llama.cpp Q2_K (read as [`QuantFormat::Q2K`]).
    pub const Q2_K: Self = Self(10);
    /// llama.cpp Q3_K (read as [`QuantFormat::Q3K`]).
    pub const Q3_K: Self = Self(11);
    /// llama.cpp Q4_K (read as [`QuantFormat::Q4K`]).
    pub const Q4_K: Self = Self(12);
    /// llama.cpp Q5_K (read as [`QuantFormat::Q5K`]).
    pub const Q5_K: Self = Self(13);
    /// llama.cpp Q6_K (read as [`QuantFormat::Q6K`]).
    pub const Q6_K: Self = Self(14);
    /// llama.cpp Q8_K.
    pub const Q8_K: Self = Self(15);
    /// llama.cpp IQ4_NL (read as [`QuantFormat::Iq4Nl`]).
    pub const IQ4_NL: Self = Self(20);
    /// llama.cpp IQ4_XS (read as [`QuantFormat::Iq4Xs`]).
    pub const IQ4_XS: Self = Self(23);
    /// 8-bit signed integer.
    pub const I8: Self = Self(24);
    /// 16-bit signed integer.
    pub const I16: Self = Self(25);
    /// 32-bit signed integer.
    pub const I32: Self = Self(26);
    /// 64-bit signed integer.
    pub const I64: Self = Self(27);
    /// 64-bit float.
    pub const F64: Self = Self(28);
    /// bfloat16.
    pub const BF16: Self = Self(30);
    /// llama.cpp TQ1_0 (ternary, base-3 packing).
    pub const TQ1_0: Self = Self(34);
    /// llama.cpp TQ2_0 (ternary, 2 bits; read as [`QuantFormat::Tq2_0`]).
    pub const TQ2_0: Self = Self(35);

    /// The numeric id.
    pub const fn id(self) -> u32 {
        self.0
    }

    fn entry(self) -> Option<&'static (u32, &'static str, u64, u64)> {
        TYPES.iter().find(|t| t.0 == self.0)
    }

    /// ggml's name of the type (`"TQ2_0"`), or `None` for an id ggml does not define.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|t| t.1)
    }

    /// `(values per block, bytes per block)`: 1 value for the plain number types. `None` for
    /// an id ggml does not define (then the byte size of such a tensor is unknown).
    pub fn block_layout(self) -> Option<(u64, u64)> {
        self.entry().map(|t| (t.2, t.3))
    }

    /// The aihal format a tensor of this type is read into without conversion:
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS and TQ2_0.
    pub fn quant_format(self) -> Option<QuantFormat> {
        crate::formats::by_ggml_type(self.0).map(|b| b.format)
    }

    /// The GGML type a tensor of `format` is stored as, `None` for the formats that are
    /// not GGML blocks.
    pub fn of_format(format: QuantFormat) -> Option<Self> {
        crate::formats::block_format(format).map(|b| Self(b.ggml_type))
    }

    /// The element type of a plain (unquantized) tensor of this type: F32, F16, BF16, F64,
    /// I8, I16, I32 and I64.
    pub fn dense_dtype(self) -> Option<DType> {
        Some(match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
            Self::F64 => DType::F64,
            Self::I8 => DType::I8,
            Self::I16 => DType::I16,
            Self::I32 => DType::I32,
            Self::I64 => DType::I64,
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "GGML type {} (unknown)", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_layouts_match_the_formats_we_read() {
        for (i, a) in TYPES.iter().enumerate() {
            assert!(TYPES[i + 1..].iter().all(|b| b.0 != a.0 && b.1 != a.1), "{}", a.1);
        }
        let bytes = |f| crate::tensor::expected_lens(f, &[1, 256]).unwrap().0 as u64;
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q2_K,
            GgmlType::Q3_K,
            GgmlType::Q4_K,
            GgmlType::Q5_K,
            GgmlType::Q6_K,
            GgmlType::IQ4_NL,
            GgmlType::IQ4_XS,
            GgmlType::TQ2_0,
        ] {
            let (values, block) = t.block_layout().unwrap();
            let f = t.quant_format().unwrap();
            assert_eq!(256 / values * block, bytes(f), "{t}");
            assert_eq!(GgmlType::of_format(f), Some(t));
            assert_eq!(f.name(), t.name().unwrap().to_lowercase());
        }
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::I64] {
            let size = t.dense_dtype().unwrap().size_in_bytes() as u64;
            assert_eq!(t.block_layout(), Some((1, size)), "{t}");
        }
        assert_eq!(GgmlType(4).name(), None);
        assert_eq!(GgmlType(4).to_string(), "GGML type 4 (unknown)");
        assert_eq!(GgmlType::TQ2_0.to_string(), "TQ2_0");
    }
}
