//! Weights packed once ([`crate::PackedWeights`]) in panels for the int8-activation kernels
//! of x86_64 and aarch64: the int8-activation path without any per-call decode or repack.
//!
//! # Layout
//!
//! The weight rows are taken in panels of `P` rows, one per 32-bit lane of the instruction
//! set's vectors ([`Isa::rows`]: 8 for AVX2, 16 for AVX-512 VNNI, 4 for NEON; the last panel padded with
//! zero rows). Per block of 32 values, a panel holds its codes as chunks of `4 P` bytes in
//! which the 32-bit lane `j` holds 4 consecutive code bytes of row `j`, in the original bit
//! width:
//!
//! | format | chunks per block | chunk `c`, lane `j` | scales per panel |
//! | --- | --- | --- | --- |
//! | Q4_0 | 4 | bytes `4c .. 4c + 4` of row `j`'s `qs`: low nibbles are codes `4c ..`, high nibbles codes `16 + 4c ..` | `P` f16 per block |
//! | Q8_0 | 8 | codes `4c .. 4c + 4` (i8) | `P` f16 per block |
//! | int8 per channel / per block (multiple of 32) | 8 | codes `4c .. 4c + 4`, zero past `K` | `P` f32 per scale block (per channel: one) |
//! | TQ2_0 | 16 per 256 values | bytes `4c .. 4c + 4` of row `j`'s 64 bytes of `qs` (2-bit fields: 4 blocks of 32 in one byte) | `P` f16 per 256 values |
//! | Q5_0 | 5 | as Q5_1's: chunks `0 .. 4` the codes' low 4 bits in Q4_0's order, chunk 4 their fifth bits (codes `q` 0..=31, offset 16) | `P` f16 per block |
//! | Q4_1 | 4 | as Q4_0: low nibbles codes `4c ..`, high nibbles codes `16 + 4c ..`, codes 0..=15 | `P` f16 `d` then `P` f16 `m` per block (the file's bits) |
//! | Q4_K | 36 per 256 values | per block 4 as Q4_1's (the sub-block pairs regrouped), then 4 chunks: lane `j` of chunk `s` holds row `j`'s 6-bit scale and minimum (bytes) of blocks `2s` and `2s + 1` | `P` f16 `d` then `P` f16 `dmin` per 256 values (the file's bits) |
//! | Q5_1 | 5 | chunks `0 .. 4` as Q4_1's (the codes' low 4 bits); chunk 4: lane `j` holds row `j`'s 32 fifth bits, code `4c + t`'s at bit `c` of byte `t` | as Q4_1 |
//! | Q5_K | 44 per 256 values | per block 5 as Q5_1's, then 4 chunks as Q4_K's | as Q4_K |
//! | Q2_K | 20 per 256 values | chunks `0 .. 16`: as TQ2_0's (bytes `4c .. 4c + 4` of row `j`'s 64 bytes of codes); chunks `16 .. 20`: bytes `4s .. 4s + 4` of its 16 scale bytes (4-bit scale and minimum per 16 values) | `P` f16 `d` then `P` f16 `dmin` per 256 values |
//! | Q6_K | 17 per 2 blocks | chunks `0 .. 8` and `8 .. 16`: the two blocks' codes `q - 32` (i8) as Q8_0's; chunk 16: lane `j` holds row `j`'s i8 sub-block scales (16 values each) `sc0, sc1` of the first block, then of the second | `P` f16 `d` per 256 values |
//! | Q6_K on AVX2 | 13 per 2 blocks | per block 4 chunks of the codes' (`q`, 0..=63) low nibbles as Q4_1's, then 2 chunks of their high 2 bits (lane `j`: row `j`'s, code `16 h + 4c + t`'s at bits `2c` of byte `t` of chunk `h`); chunk 12 as Q6_K's chunk 16 | as Q6_K |
//!
//! The packing of the first formats moves whole groups of 4 bytes, so it keeps the bit width
//! (4 bits stay 4 bits, 2 bits stay 2). Q5_0, Q4_1, Q5_1, Q4_K, Q5_K and Q6_K are converted block by
//! block through the generic kernels' block readers (`generic::weight_block`,
//! `affine_block`, `sub16_block`), so the packed kernels multiply exactly the codes and scales
//! the generic ones do: Q5_0 keeps its 5-bit codes in Q5_1's chunks (the file's 22 bytes per 32
//! values); Q6_K widens to 8-bit codes (34 bytes per 32 values against 26.25) but on AVX2,
//! which keeps its 6 bits (the file's 210 bytes per 256 values); Q4_1 keeps its 4-bit codes and its f16 `d` and `m` bits as they are (20
//! bytes per 32 values, as in the file: the kernels convert them to f32 in registers, the
//! values the generic kernel reads); Q4_K keeps 4-bit codes, its 6-bit sub-block scales and
//! minimums as bytes and its f16 `d` and `dmin`, the kernels forming a block's scale `d · sc`
//! and term `-(dmin · m)` in registers as the generic kernel forms them (148 bytes per 256
//! values against 144; the file's 12 bytes of scales and minimums are rebuilt from those
//! bytes to unpack, [`k_quant_header`]); Q5_1 and Q5_K keep their 5-bit codes, the fifth bits regrouped, with the scales of
//! Q4_1 and Q4_K (the file's 24 bytes per 32 values; 180 bytes per 256 against 176). Q2_K keeps its
//! super-block's bytes as they are, rearranged: the file's 84 bytes per 256 values. Every
//! layout converts back exactly ([`Packed::unpack_rows`]): the
//! converted formats rebuild their blocks bit for bit from the codes, the f16 scales and
//! what is kept aside. The `P` scales of a panel's block are contiguous, converted by one
//! `vcvtph2ps` (or loaded as they are). The codes live in 64-byte aligned storage, so every
//! chunk load of either set is aligned.
//!
//! # Kernels
//!
//! `x86_packed256` has the 8-row kernels (AVX2, AVX-VNNI), `x86_packed512` the 16-row ones
//! (AVX-512 VNNI), `arm_packed` the 4-row ones (NEON with the dot product); `panel_dispatch` picks
//! the one of the layout's instruction set. The affine formats run Q4_0's integer dot
//! products without an offset (Q4_1, Q4_K, and Q5_1 and Q5_K with each code's fifth bit put
//! back first), and add `add · (d_x · Σ x)` per block after
//! `(s_w · d_x) · isum`, two roundings as [`generic::q8_affine`] does; Q6_K sums each half
//! block apart and combines them with its sub-block scales in i32, as
//! [`generic::q8_sub16`] does; Q2_K does the same with its 4-bit scales and takes away
//! `dmin · (d_x · msum)` per block, `msum` its minimums times the sums of the activation
//! halves, as [`generic::q8_q2_k`] does. None of these has AVX-VNNI kernels: AVX-VNNI CPUs run
//! their AVX2 layouts.

use std::sync::OnceLock;

use aihal_core::Result;
use aihal_quantize::{QuantFormat, QuantizedTensor};
use rayon::prelude::*;

use super::ActQ8;
use crate::kernels::codes::{
    IQ4_NL_BLOCK_BYTES, IQ4_XS_BLOCK_BYTES, Q2_K_BLOCK_BYTES, Q3_K_BLOCK_BYTES, Q4_0_BLOCK_BYTES, Q4_1_BLOCK_BYTES,
    Q4_K_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q5_1_BLOCK_BYTES, Q5_K_BLOCK_BYTES, Q6_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES,
    TQ2_0_BLOCK_BYTES,
};
use crate::kernels::generic;
use crate::pages::PageBuf;

// IQ4_NL packs and unpacks as Q4_0 (`Kind::Iq4Nl`): the same block shape.
const _: () = assert!(IQ4_NL_BLOCK_BYTES == Q4_0_BLOCK_BYTES);

/// 64 bytes, aligned for vector loads: the storage unit of the packed codes.
#[derive(Clone, Copy, Debug, bytemuck::Zeroable, bytemuck::Pod)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; 64]);

/// The instruction set a packed matrix is laid out for (every variant exists on every
/// architecture; [`Isa::available`] lists those of this CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(target_arch = "aarch64", allow(dead_code))] // the x86 sets
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // the NEON set
pub(crate) enum Isa {
    /// AVX2 + FMA + F16C: panels of 8 rows, `vpmaddubsw` arithmetic.
    Avx2,
    /// AVX2 + FMA + F16C with AVX-VNNI (Intel since Alder Lake, AMD since Zen 4): the same
    /// panels of 8 rows, `vpdpbusd` on 256-bit vectors.
    AvxVnni,
    /// AVX-512 F/BW with VNNI: panels of 16 rows, `vpdpbusd` arithmetic.
    Avx512Vnni,
    /// aarch64 NEON with the int8 dot product (FEAT_DotProd: Cortex-A55/A76 and later):
    /// panels of 4 rows, `sdot` by element (4 activation codes against 4 codes of each row).
    NeonDot,
}

impl Isa {
    /// Every packed layout this CPU runs, from the least to the most capable.
    pub(crate) fn available() -> &'static [Self] {
        static AVAILABLE: OnceLock<Vec<Isa>> = OnceLock::new();
        AVAILABLE.get_or_init(|| {
            let mut v = Vec::new();
            let cpu = super::cpu();
            #[cfg(target_arch = "aarch64")]
            if cpu.dotprod {
                v.push(Self::NeonDot);
            }
            #[cfg(target_arch = "x86_64")]
            if cpu.avx2_set {
                v.push(Self::Avx2);
                if cpu.avx_vnni {
                    v.push(Self::AvxVnni);
                }
                if cpu.avx512_vnni {
                    v.push(Self::Avx512Vnni);
                }
            }
            v
        })
    }

    /// Weight rows per panel: one per 32-bit lane of the set's vectors.
    pub(crate) fn rows(self) -> usize {
        match self {
            Self::Avx2 | Self::AvxVnni => 8,
            Self::Avx512Vnni => 16,
            Self::NeonDot => 4,
        }
    }
}

/// The packed code layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Q4_0: 4 chunks per block, f16 scales per block.
    Q4_0,
    /// Q8_0: 8 chunks per block, f16 scales per block.
    Q8_0,
    /// Q5_0: its codes `q` (0..=31, value `d · (q - 16)`) in Q5_1's 5 chunks per block (the
    /// low nibbles in Q4_0's order, then the fifth bits, see [`five_bits`]), f16 scales per
    /// block; the 5-bit kernels of Q5_1 run it with an offset of 16 instead of a minimum.
    Q5_0,
    /// The affine formats, values `scale · code + add`: Q4_1 and Q4_K (codes 0..=15, 4 chunks
    /// per block of 32 in Q4_0's nibble order, Q4_K's nibbles regrouped), or with `five`
    /// Q5_1 and Q5_K (codes 0..=31: their low 4 bits so, then one chunk of fifth bits, see
    /// [`five_bits`]). Q4_1 and Q5_1: per block two slots of `P` f16, their `d` and `m` bits;
    /// the K-quants: per 256 values two slots of `P` f16, `d` and `dmin`, and after each 8
    /// blocks 4 chunks of sub-block scales and minimums ([`affine_chunks`]), the block's
    /// scale and term formed from them as
    /// [`generic::affine_block`](super::generic::affine_block) forms them.
    Affine {
        /// 5-bit codes (Q5_1, Q5_K), else 4-bit codes (Q4_1, Q4_K).
        five: bool,
        /// A K-quant (Q4_K, Q5_K; else Q4_1, Q5_1).
        k_quant: bool,
    },
    /// Q6_K, and Q3_K in the same layout (AVX-512 VNNI; AVX2 and NEON dotprod take
    /// [`Kind::Q6KSix`] and [`Kind::Q3KFour`]): per pair of blocks of 32, 8 chunks of codes (i8:
    /// Q6_K's `q - 32`, Q3_K's `q - 4`) per block, then one chunk whose lane `j` holds row
    /// `j`'s i8 sub-block scales of the two blocks (`sc0`, `sc1` of the even block, then of
    /// the odd one; Q3_K's 6-bit scales minus 32); f16 `d` per 256 values.
    Q6K,
    /// Q6_K at its 6 bits (AVX2, NEON dotprod): per pair of blocks of 32, per block 4 chunks of the codes'
    /// (`q`, 0..=63) low nibbles in Q4_0's order and 2 chunks of their high 2 bits
    /// ([`six_bits`]), then the pair's chunk of sub-block scales as [`Kind::Q6K`]'s; f16 `d`
    /// per 256 values: the file's 210 bytes per 256 values, against [`Kind::Q6K`]'s 274.
    Q6KSix,
    /// Q3_K in 4 bits (AVX2, NEON dotprod): per pair of blocks of 32, per block 4 chunks of its codes
    /// `q + 4` (0..=7) as nibbles in Q4_0's order, then the pair's chunk of sub-block scales as
    /// [`Kind::Q6K`]'s (the 6-bit scales minus 32), [`q3_k_chunks`]; f16 `d` per 256 values:
    /// 146 bytes per 256 values against the file's 110 and [`Kind::Q6K`]'s 274, each code one
    /// mask (or shift and mask) from its byte where the file's 3 bits take five operations.
    Q3KFour,
    /// TQ2_0: 16 chunks per 256 values, f16 scales per 256 values.
    Tq2_0,
    /// Q2_K: per 256 values, its 64 bytes of 2-bit codes in 16 chunks as TQ2_0's (the two
    /// blocks share their arrangement: block `g` in bits `2 (g % 4)` of bytes `32 (g / 4) ..`),
    /// then its 16 bytes of sub-block scales and minimums as they are, in 4 chunks (lane `j`
    /// of chunk `s`: row `j`'s bytes `4 s .. 4 s + 4`, the low nibble a scale, the high one
    /// a minimum, for the halves of blocks `2 s` and `2 s + 1`); two slots of `P` f16 per 256
    /// values, `d` then `dmin`. The file's 84 bytes per 256 values, rearranged.
    Q2K,
    /// IQ4_NL (AVX2, AVX-512 VNNI and NEON dotprod): packed as Q4_0 (its block has Q4_0's shape:
    /// f16 `d`, then 16 bytes of 4-bit indices in Q4_0's nibble order), 4 chunks per block of
    /// 32, f16 `d` per block; the kernels look the indices up in the code book's int8 levels.
    Iq4Nl,
    /// IQ4_XS (the sets of IQ4_NL, whose kernels run it): per block of 32, 4 chunks of its
    /// 4-bit indices as the file has them (Q4_0's nibble order), and an f32 scale
    /// `d · (ls - 32)` (its 6-bit sub-block scale applied, exactly); each super-block's
    /// 8-byte header (`d`, the scales' bits) kept aside to give the bytes back.
    Iq4Xs,
    /// int8 per channel (`block_size == None`) or per block of a multiple of 32: 8 chunks per
    /// block, f32 scales per scale block.
    Int8 {
        /// Values per scale block, `None` for one scale per row.
        block_size: Option<usize>,
    },
    /// NF4 whose blocks tile the rows (`K` a multiple of the block size, itself a multiple of
    /// 32), AVX-512 VNNI only: 4 chunks per block of 32 holding the codes in Q4_0's nibble
    /// order (byte `i` of a block: code `i` low, code `16 + i` high; bitsandbytes' order is
    /// restored on unpacking), f32 absmax per NF4 block.
    Nf4 {
        /// Values per absmax.
        block_size: usize,
    },
    /// FP8 E4M3 or E5M2 per tensor or per block of a multiple of 32, AVX-512 only, for the
    /// exact (f32-activation) path: 8 chunks per block, f32 scales per scale block (per
    /// tensor: the one scale in every row's single group).
    Fp8 {
        /// E5M2 (else E4M3).
        e5m2: bool,
        /// Values per scale, `None` for one scale per tensor.
        block_size: Option<usize>,
    },
}

impl Kind {
    /// The packed layout for `w` in `isa`'s panels, if there is one.
    pub(crate) fn for_tensor(w: &QuantizedTensor, isa: Isa) -> Option<Self> {
        use super::formats::{entry, Packing};
        let on_isa = match entry(w.format()).packing {
            Packing::AllIntegerSets => true,
            Packing::WideIntegerSets => matches!(isa, Isa::Avx512Vnni | Isa::NeonDot),
            Packing::Avx512Only => isa == Isa::Avx512Vnni,
            Packing::Sets(sets) => sets.contains(&isa),
            Packing::None(_) => false,
        };
        if !on_isa {
            return None;
        }
        // A matrix whose rows are whole blocks of `values`.
        let rows_of = |values: usize| w.shape().len() == 2 && w.shape()[1].is_multiple_of(values);
        Some(match w.format() {
            QuantFormat::Nf4 { block_size, .. }
                if block_size.is_multiple_of(32) && w.shape().len() == 2 && w.shape()[1].is_multiple_of(block_size) =>
            {
                Self::Nf4 { block_size }
            }
            QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size }
                if block_size.is_none_or(|b| b.is_multiple_of(32)) =>
            {
                Self::Fp8 {
                    e5m2: matches!(w.format(), QuantFormat::Fp8E5M2 { .. }),
                    block_size,
                }
            }
            QuantFormat::Q4_0 => Self::Q4_0,
            QuantFormat::Iq4Nl if rows_of(32) => Self::Iq4Nl,
            QuantFormat::Iq4Xs if rows_of(256) => Self::Iq4Xs,
            QuantFormat::Q8_0 => Self::Q8_0,
            // The GGML block formats with a minimum or sub-block scales: whole blocks per row
            // (the layout contract allows rows that split a block only through the flattened
            // tensor; the kernels read whole blocks per row).
            QuantFormat::Q5_0 if rows_of(32) => Self::Q5_0,
            QuantFormat::Q4_1 if rows_of(32) => Self::Affine {
                five: false,
                k_quant: false,
            },
            QuantFormat::Q4K if rows_of(256) => Self::Affine {
                five: false,
                k_quant: true,
            },
            QuantFormat::Q5_1 if rows_of(32) => Self::Affine {
                five: true,
                k_quant: false,
            },
            QuantFormat::Q5K if rows_of(256) => Self::Affine {
                five: true,
                k_quant: true,
            },
            QuantFormat::Q6K if rows_of(256) && matches!(isa, Isa::Avx2 | Isa::NeonDot) => Self::Q6KSix,
            QuantFormat::Q3K if rows_of(256) && matches!(isa, Isa::Avx2 | Isa::NeonDot) => Self::Q3KFour,
            QuantFormat::Q6K | QuantFormat::Q3K if rows_of(256) => Self::Q6K,
            QuantFormat::Tq2_0 => Self::Tq2_0,
            QuantFormat::Q2K if rows_of(256) => Self::Q2K,
            QuantFormat::Int8PerChannel => Self::Int8 { block_size: None },
            QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => Self::Int8 {
                block_size: Some(block_size),
            },
            _ => return None,
        })
    }

    /// A short name of the layout (`avx2-panel8-q4_0`, `avx512vnni-panel16-q4_0`, ...).
    pub(crate) fn name(self, isa: Isa) -> &'static str {
        match (isa, self) {
            (Isa::Avx2, Self::Q4_0) => "avx2-panel8-q4_0",
            (Isa::Avx2, Self::Q8_0) => "avx2-panel8-q8_0",
            (Isa::Avx2, Self::Tq2_0) => "avx2-panel8-tq2_0",
            (Isa::Avx2, Self::Q2K) => "avx2-panel8-q2_k",
            (Isa::Avx2, Self::Int8 { block_size: None }) => "avx2-panel8-int8_channel",
            (Isa::Avx2, Self::Int8 { .. }) => "avx2-panel8-int8_block",
            (Isa::AvxVnni, Self::Q4_0) => "avxvnni-panel8-q4_0",
            (Isa::AvxVnni, Self::Q8_0) => "avxvnni-panel8-q8_0",
            (Isa::AvxVnni, Self::Tq2_0) => "avxvnni-panel8-tq2_0",
            (Isa::AvxVnni, Self::Q2K) => "avxvnni-panel8-q2_k",
            (Isa::AvxVnni, Self::Int8 { block_size: None }) => "avxvnni-panel8-int8_channel",
            (Isa::AvxVnni, Self::Int8 { .. }) => "avxvnni-panel8-int8_block",
            (Isa::Avx512Vnni, Self::Q4_0) => "avx512vnni-panel16-q4_0",
            (Isa::Avx512Vnni, Self::Q8_0) => "avx512vnni-panel16-q8_0",
            (Isa::Avx512Vnni, Self::Tq2_0) => "avx512vnni-panel16-tq2_0",
            (Isa::Avx512Vnni, Self::Q2K) => "avx512vnni-panel16-q2_k",
            (Isa::Avx512Vnni, Self::Int8 { block_size: None }) => "avx512vnni-panel16-int8_channel",
            (Isa::Avx512Vnni, Self::Int8 { .. }) => "avx512vnni-panel16-int8_block",
            (Isa::NeonDot, Self::Q4_0) => "neondot-panel4-q4_0",
            (Isa::NeonDot, Self::Q8_0) => "neondot-panel4-q8_0",
            (Isa::NeonDot, Self::Tq2_0) => "neondot-panel4-tq2_0",
            (Isa::NeonDot, Self::Q2K) => "neondot-panel4-q2_k",
            (Isa::NeonDot, Self::Int8 { block_size: None }) => "neondot-panel4-int8_channel",
            (Isa::NeonDot, Self::Int8 { .. }) => "neondot-panel4-int8_block",
            (Isa::NeonDot, Self::Nf4 { .. }) => "neondot-panel4-nf4",
            (Isa::NeonDot, Self::Iq4Nl) => "neondot-panel4-iq4_nl",
            (Isa::Avx2, Self::Iq4Nl) => "avx2-panel8-iq4_nl",
            (_, Self::Iq4Nl) => "avx512vnni-panel16-iq4_nl",
            (Isa::NeonDot, Self::Iq4Xs) => "neondot-panel4-iq4_xs",
            (Isa::Avx2, Self::Iq4Xs) => "avx2-panel8-iq4_xs",
            (_, Self::Iq4Xs) => "avx512vnni-panel16-iq4_xs",
            (Isa::Avx2, Self::Q5_0) => "avx2-panel8-q5_0",
            (
                Isa::Avx2,
                Self::Affine {
                    five: false,
                    k_quant: false,
                },
            ) => "avx2-panel8-q4_1",
            (
                Isa::Avx2,
                Self::Affine {
                    five: false,
                    k_quant: true,
                },
            ) => "avx2-panel8-q4_k",
            (
                Isa::Avx2,
                Self::Affine {
                    five: true,
                    k_quant: false,
                },
            ) => "avx2-panel8-q5_1",
            (
                Isa::Avx2,
                Self::Affine {
                    five: true,
                    k_quant: true,
                },
            ) => "avx2-panel8-q5_k",
            (Isa::Avx2, Self::Q6KSix) => "avx2-panel8-q6_k",
            (Isa::Avx2, Self::Q3KFour) => "avx2-panel8-q3_k",
            (Isa::NeonDot, Self::Q3KFour) => "neondot-panel4-q3_k",
            (Isa::NeonDot, Self::Q6KSix) => "neondot-panel4-q6_k",
            // On AVX2 and NEON Q6_K and Q3_K take `Q6KSix` and `Q3KFour`.
            (Isa::Avx2 | Isa::NeonDot, Self::Q6K) | (_, Self::Q6KSix | Self::Q3KFour) => {
                unreachable!("{self:?} on {isa:?}: not a layout of that set (Kind::for_tensor)")
            }
            (Isa::AvxVnni, Self::Q5_0) => "avxvnni-panel8-q5_0",
            (
                Isa::AvxVnni,
                Self::Affine {
                    five: false,
                    k_quant: false,
                },
            ) => "avxvnni-panel8-q4_1",
            (
                Isa::AvxVnni,
                Self::Affine {
                    five: false,
                    k_quant: true,
                },
            ) => "avxvnni-panel8-q4_k",
            (
                Isa::AvxVnni,
                Self::Affine {
                    five: true,
                    k_quant: false,
                },
            ) => "avxvnni-panel8-q5_1",
            (
                Isa::AvxVnni,
                Self::Affine {
                    five: true,
                    k_quant: true,
                },
            ) => "avxvnni-panel8-q5_k",
            (Isa::AvxVnni, Self::Q6K) => "avxvnni-panel8-q6_k",
            (Isa::Avx512Vnni, Self::Q5_0) => "avx512vnni-panel16-q5_0",
            (
                Isa::Avx512Vnni,
                Self::Affine {
                    five: false,
                    k_quant: false,
                },
            ) => "avx512vnni-panel16-q4_1",
            (
                Isa::Avx512Vnni,
                Self::Affine {
                    five: false,
                    k_quant: true,
                },
            ) => "avx512vnni-panel16-q4_k",
            (
                Isa::Avx512Vnni,
                Self::Affine {
                    five: true,
                    k_quant: false,
                },
            ) => "avx512vnni-panel16-q5_1",
            (
                Isa::Avx512Vnni,
                Self::Affine {
                    five: true,
                    k_quant: true,
                },
            ) => "avx512vnni-panel16-q5_k",
            (Isa::Avx512Vnni, Self::Q6K) => "avx512vnni-panel16-q6_k",
            (Isa::NeonDot, Self::Q5_0) => "neondot-panel4-q5_0",
            (
                Isa::NeonDot,
                Self::Affine {
                    five: false,
                    k_quant: false,
                },
            ) => "neondot-panel4-q4_1",
            (
                Isa::NeonDot,
                Self::Affine {
                    five: false,
                    k_quant: true,
                },
            ) => "neondot-panel4-q4_k",
            (
                Isa::NeonDot,
                Self::Affine {
                    five: true,
                    k_quant: false,
                },
            ) => "neondot-panel4-q5_1",
            (
                Isa::NeonDot,
                Self::Affine {
                    five: true,
                    k_quant: true,
                },
            ) => "neondot-panel4-q5_k",
            (_, Self::Nf4 { .. }) => "avx512vnni-panel16-nf4",
            (_, Self::Fp8 { e5m2: false, .. }) => "avx512vnni-panel16-fp8_e4m3",
            (_, Self::Fp8 { e5m2: true, .. }) => "avx512vnni-panel16-fp8_e5m2",
        }
    }

    /// The offset added to the stored codes (`q + offset` is stored, or for 8-bit codes on
    /// AVX-512, `q + 128` is what the kernel multiplies), removed through the activation
    /// block sums.
    pub(crate) fn offset(self, isa: Isa) -> i32 {
        match (self, isa) {
            (Self::Q4_0, _) => 8,
            (Self::Q5_0, _) => 16,
            (Self::Tq2_0, _) => 1,
            // 8-bit codes on AVX2 and NEON enter signed; FP8 is not on the int8-activation path.
            // NF4 on NEON: its int8 levels, signed. The affine codes (0..=31) and Q2_K's
            // (0..=3) enter unsigned as they are, their minimum added per block instead.
            (
                Self::Q8_0 | Self::Q6K | Self::Int8 { .. } | Self::Nf4 { .. } | Self::Iq4Nl | Self::Iq4Xs,
                Isa::Avx2 | Isa::NeonDot,
            )
            | (Self::Fp8 { .. } | Self::Affine { .. } | Self::Q2K | Self::Q6KSix | Self::Q3KFour, _) => 0,
            // 8-bit codes on AVX-512 as `q + 128`; NF4's and IQ4_NL's int8 levels as
            // `level + 128`.
            (Self::Q8_0 | Self::Q6K | Self::Int8 { .. }, Isa::AvxVnni | Isa::Avx512Vnni)
            | (Self::Nf4 { .. } | Self::Iq4Nl | Self::Iq4Xs, _) => 128,
        }
    }

    /// Code chunks of a panel for `nb` blocks of 32 values (a chunk holds 4 code bytes per
    /// row): per block 4 (4-bit codes), 8 (8-bit codes) or 2 (TQ2_0's 2-bit codes); Q6_K's
    /// 8-bit codes and, per pair of blocks, one chunk of sub-block scales; Q2_K's 2-bit codes
    /// and, per 256 values, 4 chunks of sub-block scales and minimums.
    fn panel_chunks(self, nb: usize) -> usize {
        match self {
            Self::Q4_0
            | Self::Iq4Nl
            | Self::Iq4Xs
            | Self::Nf4 { .. }
            | Self::Affine {
                five: false,
                k_quant: false,
            } => 4 * nb,
            Self::Q5_0
            | Self::Affine {
                five: true,
                k_quant: false,
            } => 5 * nb,
            Self::Affine { five, k_quant: true } => affine_chunks(five, true, 0).2 * nb.div_ceil(8),
            Self::Q8_0 | Self::Int8 { .. } | Self::Fp8 { .. } => 8 * nb,
            Self::Tq2_0 => 2 * nb,
            Self::Q6K => 17 * nb.div_ceil(2),
            Self::Q6KSix => 13 * nb.div_ceil(2),
            Self::Q2K => 20 * nb.div_ceil(8),
            Self::Q3KFour => 9 * nb.div_ceil(2),
        }
    }

    /// Whether the scales are f32 (int8, NF4, FP8, IQ4_XS), else f16 bits (Q4_0, Q8_0, Q5_0,
    /// TQ2_0, the affine formats, Q6_K, Q2_K).
    pub(super) fn f32_scales(self) -> bool {
        matches!(
            self,
            Self::Int8 { .. } | Self::Nf4 { .. } | Self::Fp8 { .. } | Self::Iq4Xs
        )
    }

    /// Scale slots per group: 2 for the affine formats (the scales, then the additive terms)
    /// and Q2_K (`d`, then `dmin`), else 1.
    pub(super) fn scale_slots(self) -> usize {
        if let Self::Affine { .. } | Self::Q2K = self {
            2
        } else {
            1
        }
    }

    /// Blocks of 32 sharing one scale.
    pub(super) fn blocks_per_scale(self, nb: usize) -> usize {
        match self {
            Self::Q4_0 | Self::Iq4Nl | Self::Iq4Xs | Self::Q8_0 | Self::Q5_0 | Self::Affine { k_quant: false, .. } => 1,
            Self::Tq2_0 | Self::Q6K | Self::Q6KSix | Self::Q3KFour | Self::Q2K | Self::Affine { k_quant: true, .. } => {
                8
            }
            Self::Int8 { block_size: None } | Self::Fp8 { block_size: None, .. } => nb.max(1),
            Self::Int8 { block_size: Some(b) }
            | Self::Nf4 { block_size: b }
            | Self::Fp8 {
                block_size: Some(b), ..
            } => b / 32,
        }
    }
}

/// A weight matrix `[N, K]` packed in panels of [`Isa::rows`] rows (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    pub(crate) kind: Kind,
    pub(crate) isa: Isa,
    pub(crate) format: QuantFormat,
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// Blocks of 32 per row (the last one zero padded for int8 rows with `K % 32 != 0`).
    pub(crate) nb: usize,
    /// Scale groups per row (`ceil(nb / blocks_per_scale)`).
    pub(super) groups: usize,
    /// Code bytes per panel ([`Kind::panel_chunks`]` * 4 * rows`).
    panel_bytes: usize,
    /// The codes and then the scales, in one buffer (on huge pages where asked for and
    /// granted, see [`crate::pages`]): lines `..code_lines` hold the panels one after the
    /// other (past `panels * panel_bytes`, zeros up to a whole line); the lines after them
    /// hold `panels * groups * slots * rows` scales ([`Kind::scale_slots`]), f16 bits for
    /// Q4_0, Q8_0, Q5_0, TQ2_0, Q4_1, Q5_1 and Q6_K, f32 for the others ([`Kind::f32_scales`]), then
    /// zeros up to a whole line.
    buf: PageBuf<Line>,
    /// Lines of codes at the start of `buf`.
    code_lines: usize,
    /// Scales after them.
    scale_len: usize,
    /// NF4's 8-bit absmax (double quantization), kept as it came for unpacking.
    nested: Option<aihal_quantize::NestedAbsmax>,
    /// FP8 per tensor: the tensor's scales as they came, for unpacking.
    tensor_scales: Vec<f32>,
    /// The block headers kept as they came, for unpacking, row-major: IQ4_XS's 8 bytes per 256
    /// values (`d` and the scales' bits). Empty otherwise.
    headers: Vec<u8>,
    /// FP8: whether any code is NaN or infinite (the kernels then decode those codes).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // FP8 packs for AVX-512 only
    pub(super) fp8_special: bool,
}

/// One panel's share of the scales being packed.
enum PanelScalesMut<'a> {
    F16(&'a mut [u16]),
    F32(&'a mut [f32]),
}

/// 16 bytes of NF4 codes in bitsandbytes' order (code `2i` in the high nibble of byte `i`,
/// `2i + 1` in the low) to Q4_0's (code `i` in the low nibble of byte `i`, `16 + i` high).
fn nf4_to_q4_order(b: [u8; 16]) -> [u8; 16] {
    let code = |t: usize| {
        if t.is_multiple_of(2) {
            b[t / 2] >> 4
        } else {
            b[t / 2] & 0xF
        }
    };
    std::array::from_fn(|i| code(i) | code(16 + i) << 4)
}

/// The inverse of [`nf4_to_q4_order`].
fn q4_order_to_nf4(b: [u8; 16]) -> [u8; 16] {
    let code = |t: usize| if t < 16 { b[t] & 0xF } else { b[t - 16] >> 4 };
    std::array::from_fn(|i| code(2 * i) << 4 | code(2 * i + 1))
}

/// Where block `b` of an affine layout lies in its panel: the chunk its codes start at, for the
/// K-quants the chunk of its sub-block scale and minimum (bytes `2 (b % 2)` and `2 (b % 2) + 1`
/// of each lane, as u8), and the chunks per 256 values (K-quants: 8 blocks of 4 or 5 chunks,
/// then 4 chunks of scales and minimums; else 8 blocks).
pub(crate) const fn affine_chunks(five: bool, k_quant: bool, b: usize) -> (usize, usize, usize) {
    let per = if five { 5 } else { 4 };
    if k_quant {
        let stride = 8 * per + 4;
        let (sb, g) = (b / 8, b % 8);
        (stride * sb + per * g, stride * sb + 8 * per + g / 2, stride)
    } else {
        (per * b, 0, 8 * per)
    }
}

/// The 16 header bytes of a Q4_K or Q5_K super-block: `d` and `dmin` (f16 bits), then its 8
/// sub-blocks' 6-bit scales and minimums `(sc, m)` in the file's 12 bytes (sub-blocks 0-3 in
/// the low 6 bits of bytes 0-3 and 4-7; sub-blocks 4-7 with their low 4 bits in the nibbles
/// of bytes 8-11 and their high 2 bits in the top bits of bytes 0-7), the inverse of
/// `generic::q4_k_scale_min` (the 96 bits hold the 16 six-bit fields exactly once).
pub(crate) fn k_quant_header(d: u16, dmin: u16, sc_m: [(u8, u8); 8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..2].copy_from_slice(&d.to_le_bytes());
    h[2..4].copy_from_slice(&dmin.to_le_bytes());
    for j in 0..4 {
        let ((s, m), (s4, m4)) = (sc_m[j], sc_m[j + 4]);
        h[4 + j] = (s & 63) | (s4 >> 4) << 6;
        h[8 + j] = (m & 63) | (m4 >> 4) << 6;
        h[12 + j] = (s4 & 0xF) | (m4 & 0xF) << 4;
    }
    h
}

/// Lane `j` of the chunks of a block of 32 codes (0..=15, or 0..=31 with `five`) from chunk
/// `c0` of a panel of `pr` rows: 4 chunks of their low nibbles in Q4_0's order, then with
/// `five` one of their fifth bits ([`five_bits`]).
fn put_nibbles(pw: &mut [u32], pr: usize, j: usize, c0: usize, codes: &[u8; 32], five: bool) {
    let bytes: [u8; 16] = std::array::from_fn(|i| (codes[i] & 0xF) | (codes[16 + i] & 0xF) << 4);
    for (t, lane) in bytemuck::cast::<[u8; 16], [u32; 4]>(bytes).into_iter().enumerate() {
        pw[(c0 + t) * pr + j] = lane;
    }
    if five {
        pw[(c0 + 4) * pr + j] = five_bits(codes);
    }
}

/// The fifth bits of a block of 32 codes (Q5_1, Q5_K) as one lane of its fifth chunk: bit `c`
/// of byte `t` is code `4c + t`'s, so that the chunk's bits for the 4 codes of nibble chunk
/// `c` sit at bit `c` (low nibbles) and bit `c + 4` (high nibbles) of the 4 bytes those codes
/// occupy, one shift from bit 4.
pub(crate) fn five_bits(codes: &[u8; 32]) -> u32 {
    (0..32).fold(0u32, |h, i| h | u32::from((codes[i] >> 4) & 1) << (8 * (i % 4) + i / 4))
}

/// The chunk where block `b`'s codes start in a Q6_K panel, and the chunk of its sub-block
/// scales (bytes `2 (b % 2)` and `2 (b % 2) + 1` of each lane).
pub(crate) fn q6_k_chunks(b: usize) -> (usize, usize) {
    (17 * (b / 2) + 8 * (b % 2), 17 * (b / 2) + 16)
}

/// [`q6_k_chunks`] for [`Kind::Q6KSix`]: 6 chunks per block, the pair's scale chunk 13th.
pub(crate) fn q6_k_six_chunks(b: usize) -> (usize, usize) {
    (13 * (b / 2) + 6 * (b % 2), 13 * (b / 2) + 12)
}

/// The high 2 bits (`q >> 4`) of 16 codes (0..=63) as one lane of a [`Kind::Q6KSix`] chunk:
/// bits `2c .. 2c + 2` of byte `t` are code `4c + t`'s, so that nibble chunk `c`'s bits sit
/// one shift from bits 4 and 5 of the bytes its codes occupy.
pub(crate) fn six_bits(codes: &[u8]) -> u32 {
    (0..16).fold(0u32, |h, i| {
        h | u32::from((codes[i] >> 4) & 3) << (8 * (i % 4) + 2 * (i / 4))
    })
}

/// Each byte's low nibble in a word of 4 code bytes (the unpacking works 4 codes at a time).
const NIBBLES: u32 = 0x0F0F_0F0F;

/// Each byte's low 2 bits in a word of 4 code bytes.
const TWO_BITS: u32 = 0x0303_0303;

/// Bit `c` of a byte moved to bit `4c`: the fifth bits of a [`five_bits`] lane back in code
/// order with one lookup per byte (byte `t`'s bit `c` is code `4c + t`'s).
const SPREAD4: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut c = 0;
        while c < 8 {
            table[byte] |= ((byte as u32 >> c) & 1) << (4 * c);
            c += 1;
        }
        byte += 1;
    }
    table
};

/// The chunk where block `b`'s codes start in a Q2_K panel (8 chunks shared with the blocks of
/// its quarter of 128 values, its codes at bits `2 (b % 4)`), and the chunk of its sub-block
/// scales and minimums (bytes `2 (b % 2)` and `2 (b % 2) + 1` of each lane).
pub(crate) fn q2_k_chunks(b: usize) -> (usize, usize) {
    let (sb, g) = (b / 8, b % 8);
    (20 * sb + 8 * (g / 4), 20 * sb + 16 + g / 2)
}

/// [`q6_k_chunks`] for [`Kind::Q3KFour`]: 4 chunks per block, the pair's scale chunk 9th.
pub(crate) fn q3_k_chunks(b: usize) -> (usize, usize) {
    (9 * (b / 2) + 4 * (b % 2), 9 * (b / 2) + 8)
}

/// Q3_K's 12 bytes of 6-bit scales from the 16 scales (the inverse of
/// [`generic::q3_k_scale`]).
fn q3_k_scale_bytes(sc: &[u8; 16]) -> [u8; 12] {
    let mut packed = [0u8; 12];
    for (j, &s) in sc.iter().enumerate() {
        packed[j % 8] |= (s & 0xF) << (4 * (j / 8));
        packed[8 + j % 4] |= ((s >> 4) & 3) << (2 * (j / 4));
    }
    packed
}

/// Packs the rows of panel `p` (`pr` rows) of a format whose codes are converted block by
/// block (Q5_0, the affine formats, Q6_K and Q3_K, IQ4_XS), through the generic kernels' own block readers so that the
/// packed kernels see exactly the codes and scales the generic ones do: `pw` is the panel's
/// code words (word `c * pr + j` holds chunk `c`'s 4 bytes of row `j`; zeroed, as are the
/// rows past `N`), `ps` its scales.
fn pack_converted(w: &QuantizedTensor, kind: Kind, p: usize, pr: usize, pw: &mut [u32], ps: &mut PanelScalesMut<'_>) {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let nb = k / 32;
    let data = w.data();
    let word = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    for j in 0..pr {
        let row = p * pr + j;
        if row >= n {
            break;
        }
        for b in 0..nb {
            match (kind, &mut *ps) {
                (Kind::Q5_0, PanelScalesMut::F16(out)) => {
                    // The codes `q` (the generic kernel's `q - 16`, plus 16) as Q5_1's.
                    let (codes, _) = generic::weight_block(w, row, b);
                    let q: [u8; 32] = std::array::from_fn(|i| (codes[i] + 16) as u8);
                    put_nibbles(pw, pr, j, 5 * b, &q, true);
                    let blk = &data[(row * nb + b) * Q5_0_BLOCK_BYTES..];
                    out[b * pr + j] = u16::from_le_bytes([blk[0], blk[1]]);
                }
                (Kind::Affine { five, k_quant }, _) => {
                    let (codes, scale, add) = generic::affine_block(w, row, b);
                    let (c0, sc, _) = affine_chunks(five, k_quant, b);
                    put_nibbles(pw, pr, j, c0, &codes, five);
                    match (k_quant, &mut *ps) {
                        // The K-quants: the sub-block's 6-bit scale and minimum as bytes, the
                        // super-block's `d` and `dmin` as the file has them (the first 4 bytes
                        // of both blocks): `affine_block`'s scale `d · sc` and term
                        // `-(dmin · m)` are formed from them in registers.
                        (true, PanelScalesMut::F16(out)) => {
                            let bytes = if five { Q5_K_BLOCK_BYTES } else { Q4_K_BLOCK_BYTES };
                            let blk = &data[(row * (nb / 8) + b / 8) * bytes..][..16];
                            let (s, m) = generic::q4_k_scale_min(&blk[4..16], b % 8);
                            debug_assert!(
                                scale.to_bits() == (super::codes::f16_at(blk) * f32::from(s)).to_bits()
                                    && add.to_bits() == (-(super::codes::f16_at(&blk[2..]) * f32::from(m))).to_bits()
                            );
                            let mut lane = pw[sc * pr + j].to_ne_bytes();
                            lane[2 * (b % 2)] = s;
                            lane[2 * (b % 2) + 1] = m;
                            pw[sc * pr + j] = u32::from_ne_bytes(lane);
                            if b.is_multiple_of(8) {
                                out[2 * (b / 8) * pr + j] = u16::from_le_bytes([blk[0], blk[1]]);
                                out[(2 * (b / 8) + 1) * pr + j] = u16::from_le_bytes([blk[2], blk[3]]);
                            }
                        }
                        // Q4_1 and Q5_1: `d` and `m` as the file has them (the first 4 bytes of
                        // both blocks), whose f32 values are `scale` and `add` (`affine_block`
                        // reads them as f16).
                        (false, PanelScalesMut::F16(out)) => {
                            let bytes = if five { Q5_1_BLOCK_BYTES } else { Q4_1_BLOCK_BYTES };
                            let blk = &data[(row * nb + b) * bytes..][..4];
                            out[2 * b * pr + j] = u16::from_le_bytes([blk[0], blk[1]]);
                            out[(2 * b + 1) * pr + j] = u16::from_le_bytes([blk[2], blk[3]]);
                        }
                        _ => unreachable!("the affine formats pack f16 scales"),
                    }
                }
                (Kind::Iq4Xs, PanelScalesMut::F32(out)) => {
                    // The indices as stored (Q4_0's nibble order already), and the block's
                    // scale as the generic kernel computes it.
                    let (_, scale) = generic::weight_block(w, row, b);
                    let qs = &data[(row * (nb / 8) + b / 8) * IQ4_XS_BLOCK_BYTES + 8 + 16 * (b % 8)..][..16];
                    for t in 0..4 {
                        pw[(4 * b + t) * pr + j] = word(&qs[4 * t..]);
                    }
                    out[b * pr + j] = scale;
                }
                (Kind::Q6K | Kind::Q6KSix | Kind::Q3KFour, PanelScalesMut::F16(out)) => {
                    let (codes, [s0, s1], _) = generic::sub16_block(w, row, b);
                    let sc = if kind == Kind::Q3KFour {
                        // The codes `q` (the generic kernel's `q - 4`, plus 4) as nibbles.
                        let q: [u8; 32] = std::array::from_fn(|i| (codes[i] + 4) as u8);
                        let (c0, sc) = q3_k_chunks(b);
                        put_nibbles(pw, pr, j, c0, &q, false);
                        sc
                    } else if kind == Kind::Q6KSix {
                        // The codes `q` (the generic kernel's `q - 32`, plus 32).
                        let q: [u8; 32] = std::array::from_fn(|i| (codes[i] + 32) as u8);
                        let (c0, sc) = q6_k_six_chunks(b);
                        put_nibbles(pw, pr, j, c0, &q, false);
                        pw[(c0 + 4) * pr + j] = six_bits(&q[..16]);
                        pw[(c0 + 5) * pr + j] = six_bits(&q[16..]);
                        sc
                    } else {
                        let bytes = codes.map(|c| c as u8);
                        let (c0, sc) = q6_k_chunks(b);
                        for t in 0..8 {
                            pw[(c0 + t) * pr + j] = word(&bytes[4 * t..]);
                        }
                        sc
                    };
                    let mut lane = pw[sc * pr + j].to_ne_bytes();
                    lane[2 * (b % 2)] = s0 as u8;
                    lane[2 * (b % 2) + 1] = s1 as u8;
                    pw[sc * pr + j] = u32::from_ne_bytes(lane);
                    if b.is_multiple_of(8) {
                        // `d`, the last field of both super-blocks.
                        let bytes = if w.format() == QuantFormat::Q3K {
                            Q3_K_BLOCK_BYTES
                        } else {
                            Q6_K_BLOCK_BYTES
                        };
                        let d = &data[(row * (nb / 8) + b / 8 + 1) * bytes - 2..][..2];
                        out[(b / 8) * pr + j] = u16::from_le_bytes([d[0], d[1]]);
                    }
                }
                (Kind::Q2K, PanelScalesMut::F16(out)) => {
                    if !b.is_multiple_of(8) {
                        continue;
                    }
                    // The super-block as it is: its 64 bytes of codes (TQ2_0's arrangement), its
                    // 16 scale bytes, `d` and `dmin`.
                    let blk = &data[(row * (nb / 8) + b / 8) * Q2_K_BLOCK_BYTES..][..Q2_K_BLOCK_BYTES];
                    let c0 = 20 * (b / 8);
                    for t in 0..16 {
                        pw[(c0 + t) * pr + j] = word(&blk[16 + 4 * t..]);
                    }
                    for t in 0..4 {
                        pw[(c0 + 16 + t) * pr + j] = word(&blk[4 * t..]);
                    }
                    out[2 * (b / 8) * pr + j] = u16::from_le_bytes([blk[80], blk[81]]);
                    out[(2 * (b / 8) + 1) * pr + j] = u16::from_le_bytes([blk[82], blk[83]]);
                }
                _ => unreachable!("{kind:?} is not converted block by block, or its scales have another type"),
            }
        }
    }
}

impl Packed {
    /// Packs `w` (validated by `check_matmul`, rank 2) as `kind` in `isa`'s panels, in a
    /// buffer advised to use huge pages where `huge_pages` says so.
    pub(crate) fn pack(w: &QuantizedTensor, kind: Kind, isa: Isa, huge_pages: bool) -> Result<Self> {
        if Kind::for_tensor(w, isa) != Some(kind) {
            return Err(aihal_core::CoreError::invalid_input(format!(
                "{} weights {:?} have no {kind:?} layout for {isa:?}",
                w.format(),
                w.shape()
            )));
        }
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let pr = isa.rows();
        let nb = k.div_ceil(32);
        let bps = kind.blocks_per_scale(nb);
        let groups = nb.div_ceil(bps);
        let panels = n.div_ceil(pr);
        let panel_chunks = kind.panel_chunks(nb);
        let overflow = || aihal_core::CoreError::invalid_input(format!("packing {n} x {k} weights overflows"));
        let panel_bytes = panel_chunks.checked_mul(4 * pr).ok_or_else(overflow)?;
        let total = panels.checked_mul(panel_bytes).ok_or_else(overflow)?;
        let code_lines = total.div_ceil(64);
        let scale_len = panels
            .checked_mul(groups * pr * kind.scale_slots())
            .ok_or_else(overflow)?;
        let scale_bytes = scale_len
            .checked_mul(if kind.f32_scales() { 4 } else { 2 })
            .ok_or_else(overflow)?;
        let lines = code_lines.checked_add(scale_bytes.div_ceil(64)).ok_or_else(overflow)?;
        let mut buf = PageBuf::<Line>::zeroed(lines, huge_pages)?;
        let (codes, scale_lines) = buf.split_at_mut(code_lines);
        let scale_words: &mut [u8] = bytemuck::cast_slice_mut(scale_lines);
        let (scales16, scales32): (&mut [u16], &mut [f32]) = if kind.f32_scales() {
            (&mut [], &mut bytemuck::cast_slice_mut(scale_words)[..scale_len])
        } else {
            (&mut bytemuck::cast_slice_mut(scale_words)[..scale_len], &mut [])
        };
        // NF4's codes go into Q4_0's nibble order as they are copied (16 bytes per block of
        // 32), then are packed as Q4_0's.
        let nf4 = matches!(kind, Kind::Nf4 { .. });
        let data = if nf4 { &w.data()[..n * k / 2] } else { w.data() };
        // Codes: whole panels in parallel (each a disjoint slice of `codes`), each chunk
        // written at once from the panel's rows read side by side.
        let row_bytes = match kind {
            Kind::Q4_0 | Kind::Iq4Nl => nb * Q4_0_BLOCK_BYTES,
            Kind::Q8_0 => nb * Q8_0_BLOCK_BYTES,
            Kind::Tq2_0 => nb / 8 * TQ2_0_BLOCK_BYTES,
            Kind::Int8 { .. } | Kind::Fp8 { .. } => k,
            Kind::Nf4 { .. } => k / 2,
            // Converted block by block instead (`pack_converted`).
            Kind::Q5_0 | Kind::Affine { .. } | Kind::Q6K | Kind::Q6KSix | Kind::Q3KFour | Kind::Iq4Xs | Kind::Q2K => 0,
        };
        let converted = row_bytes == 0 && k > 0;
        // Where chunk `c` of a panel starts in each row's bytes.
        let source = |c: usize| match kind {
            Kind::Q4_0 | Kind::Iq4Nl => (c / 4) * Q4_0_BLOCK_BYTES + 2 + 4 * (c % 4),
            Kind::Q8_0 => (c / 8) * Q8_0_BLOCK_BYTES + 2 + 4 * (c % 8),
            Kind::Tq2_0 => (c / 16) * TQ2_0_BLOCK_BYTES + 4 * (c % 16),
            Kind::Int8 { .. } | Kind::Fp8 { .. } => 4 * c,
            Kind::Nf4 { .. } => (c / 4) * 16 + 4 * (c % 4),
            Kind::Q5_0 | Kind::Affine { .. } | Kind::Q6K | Kind::Q6KSix | Kind::Q3KFour | Kind::Iq4Xs | Kind::Q2K => 0,
        };
        // Consecutive chunks whose sources are one run of bytes in each row (a block's codes,
        // or 32 bytes of an unblocked row): copied a run at a time, one bounds check a run.
        let run = match kind {
            Kind::Q4_0 | Kind::Iq4Nl | Kind::Nf4 { .. } => 4,
            Kind::Q8_0 | Kind::Int8 { .. } | Kind::Fp8 { .. } => 8,
            Kind::Tq2_0 => 16,
            Kind::Q5_0 | Kind::Affine { .. } | Kind::Q6K | Kind::Q6KSix | Kind::Q3KFour | Kind::Iq4Xs | Kind::Q2K => 1,
        };
        debug_assert!(panel_chunks.is_multiple_of(run));
        let words: &mut [u32] = bytemuck::cast_slice_mut(codes);
        // Each panel's scales (`groups * pr`, group-major), written by the panel's own task
        // from the rows it copies.
        // (K = 0: no groups, no code bytes, so no panel has either.)
        let per_panel = (groups * pr * kind.scale_slots()).max(1);
        let panel_scales: Vec<PanelScalesMut<'_>> = if kind.f32_scales() {
            scales32.chunks_mut(per_panel).map(PanelScalesMut::F32).collect()
        } else {
            scales16.chunks_mut(per_panel).map(PanelScalesMut::F16).collect()
        };
        debug_assert_eq!(panel_scales.len(), if total == 0 { 0 } else { panels });
        words[..total / 4]
            .par_chunks_mut((panel_bytes / 4).max(1))
            .zip(panel_scales)
            .enumerate()
            .for_each(|(p, (pw, mut ps))| {
                if converted {
                    pack_converted(w, kind, p, pr, pw, &mut ps);
                    return;
                }
                let rows: Vec<&[u8]> = (0..pr)
                    .map(|j| {
                        let row = p * pr + j;
                        if row < n {
                            &data[row * row_bytes..(row + 1) * row_bytes]
                        } else {
                            &[]
                        }
                    })
                    .collect();
                for c0 in (0..panel_chunks).step_by(run) {
                    let from = source(c0);
                    for (j, src) in rows.iter().enumerate() {
                        // Word `c * pr + j` holds chunk `c`'s 4 bytes of row `j`.
                        match src.get(from..from + 4 * run) {
                            Some(bytes) => {
                                let reordered: [u8; 16];
                                let bytes = if nf4 {
                                    reordered = nf4_to_q4_order(bytes.try_into().expect("NF4 runs are one block"));
                                    &reordered[..]
                                } else {
                                    bytes
                                };
                                for (t, b) in bytes.chunks_exact(4).enumerate() {
                                    pw[(c0 + t) * pr + j] = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                                }
                            }
                            // Past the row's end (rows past N, a row of K not a multiple of 32):
                            // zeros.
                            None => {
                                for t in 0..run {
                                    let byte = |i: usize| src.get(from + 4 * t + i).copied().unwrap_or(0);
                                    pw[(c0 + t) * pr + j] = u32::from_ne_bytes([byte(0), byte(1), byte(2), byte(3)]);
                                }
                            }
                        }
                    }
                }
                // The scales of the panel's rows, side by side in each group.
                for (j, src) in rows.iter().enumerate().filter(|&(j, _)| p * pr + j < n) {
                    let row = p * pr + j;
                    match &mut ps {
                        PanelScalesMut::F16(out) => {
                            let (bytes, at) = match kind {
                                Kind::Q4_0 | Kind::Iq4Nl => (Q4_0_BLOCK_BYTES, 0),
                                Kind::Q8_0 => (Q8_0_BLOCK_BYTES, 0),
                                _ => (TQ2_0_BLOCK_BYTES, 64),
                            };
                            for (g, blk) in src.chunks_exact(bytes).enumerate() {
                                out[g * pr + j] = u16::from_le_bytes([blk[at], blk[at + 1]]);
                            }
                        }
                        PanelScalesMut::F32(out) => {
                            for g in 0..groups {
                                out[g * pr + j] = match kind {
                                    Kind::Fp8 { block_size: None, .. } => w.scales()[0],
                                    _ => w.scales()[row * groups + g],
                                };
                            }
                        }
                    }
                }
            });
        Ok(Self {
            kind,
            isa,
            format: w.format(),
            n,
            k,
            nb,
            groups,
            panel_bytes,
            buf,
            code_lines,
            scale_len,
            nested: w.nested().cloned(),
            headers: match kind {
                Kind::Iq4Xs => w
                    .data()
                    .chunks_exact(IQ4_XS_BLOCK_BYTES)
                    .flat_map(|blk| &blk[..8])
                    .copied()
                    .collect(),
                _ => Vec::new(),
            },
            tensor_scales: if let Kind::Fp8 { block_size: None, .. } = kind {
                w.scales().to_vec()
            } else {
                Vec::new()
            },
            fp8_special: match kind {
                Kind::Fp8 { e5m2: false, .. } => w.data().par_iter().any(|&b| b & 0x7F == 0x7F),
                Kind::Fp8 { e5m2: true, .. } => w.data().par_iter().any(|&b| b & 0x7F > 0x7B),
                _ => false,
            },
        })
    }

    /// The scales' bytes after the codes.
    fn scale_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.buf[self.code_lines..])
    }

    /// The f16 scales (bits), empty where [`Kind::f32_scales`].
    fn scales16(&self) -> &[u16] {
        if self.kind.f32_scales() {
            &[]
        } else {
            &bytemuck::cast_slice(self.scale_bytes())[..self.scale_len]
        }
    }

    /// The f32 scales, empty unless [`Kind::f32_scales`].
    fn scales32(&self) -> &[f32] {
        if self.kind.f32_scales() {
            &bytemuck::cast_slice(self.scale_bytes())[..self.scale_len]
        } else {
            &[]
        }
    }

    /// Whether the buffer was advised to use huge pages.
    pub(crate) fn huge_pages(&self) -> bool {
        self.buf.advised()
    }

    /// The code bytes of panel `p`.
    pub(crate) fn panel_codes(&self, p: usize) -> &[u8] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.buf[..self.code_lines]);
        &bytes[p * self.panel_bytes..(p + 1) * self.panel_bytes]
    }

    /// The scales of panel `p`: `groups * slots * rows` values, group-major (and within a
    /// group, slot-major: the affine formats' scales, then their additive terms).
    pub(super) fn panel_scales(&self, p: usize) -> Scales<'_> {
        let per = self.groups * self.isa.rows() * self.kind.scale_slots();
        if self.kind.f32_scales() {
            Scales::F32(&self.scales32()[p * per..(p + 1) * per])
        } else {
            Scales::F16(&self.scales16()[p * per..(p + 1) * per])
        }
    }

    /// Bytes held (codes and scales).
    pub(crate) fn storage_bytes(&self) -> usize {
        self.n.div_ceil(self.isa.rows()) * self.panel_bytes
            + self.scales16().len() * 2
            + (self.scales32().len() + self.tensor_scales.len()) * 4
            + self.headers.len()
    }

    /// Rows `n0 .. n0 + rows` in the original format, exactly the bytes they were packed from.
    /// `n0` is a multiple of the panel's rows and `n0 + rows <= N`; `data` and `scales` are reused
    /// buffers (cleared here).
    /// Rows `ids` dequantized to f32, `ids.len() × K` (bit for bit what
    /// [`aihal_reference::embedding`] gives from the original tensor, whose bytes each row's
    /// panel converts back to): the panel of each id unpacked, then its one row decoded.
    ///
    /// Errors: `InvalidInput` naming the first id that is not below `N`.
    pub(crate) fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (n, k, pr) = (self.n, self.k, self.isa.rows());
        let mut out = vec![0.0f32; ids.len() * k];
        let (mut data, mut scales) = (Vec::new(), Vec::new());
        for (i, (&id, row)) in ids.iter().zip(out.chunks_exact_mut(k.max(1))).enumerate() {
            let id = id as usize;
            if id >= n {
                return Err(aihal_core::CoreError::invalid_input(format!(
                    "rows of a packed weight: id {id} at index {i} is not below its {n} rows"
                )));
            }
            let n0 = id - id % pr;
            let tile = self.unpack_rows(n0, pr.min(n - n0), data, scales);
            aihal_quantize::decode::decode_row_into(&tile, id - n0, 0, row)?;
            (_, _, data, scales) = tile.into_parts();
        }
        Ok(out)
    }

    /// [`unpack_rows`](Self::unpack_rows) for the formats whose block is its f16 scale slots
    /// followed by its chunks' lanes in order (Q4_0, IQ4_NL, Q8_0, Q4_1), written into `data`
    /// (empty): each chunk of a panel is read once and its lanes copied straight to their
    /// rows, rather than a row at a time. `false` (and `data` untouched) for the other kinds.
    fn unpack_lanes(&self, n0: usize, rows: usize, data: &mut Vec<u8>) -> bool {
        let (slots, cpb) = match self.kind {
            Kind::Q4_0 | Kind::Iq4Nl => (1, 4),
            Kind::Q8_0 => (1, 8),
            Kind::Affine {
                five: false,
                k_quant: false,
            } => (2, 4),
            _ => return false,
        };
        let (nb, pr) = (self.nb, self.isa.rows());
        let block = 2 * slots + 4 * cpb;
        let row_bytes = nb * block;
        data.resize(rows * row_bytes, 0);
        let s16 = self.scales16();
        let mut r0 = 0;
        while r0 < rows {
            // Rows `r0 .. r0 + js` of the output are rows `j0 .. j0 + js` of panel `p`.
            let (p, j0) = ((n0 + r0) / pr, (n0 + r0) % pr);
            let js = (pr - j0).min(rows - r0);
            let codes = self.panel_codes(p);
            let sbase = p * self.groups * pr * slots;
            for j in 0..js {
                let row = &mut data[(r0 + j) * row_bytes..][..row_bytes];
                let lane = 4 * (j0 + j);
                for (b, out) in row.chunks_exact_mut(block).enumerate() {
                    let (head, body) = out.split_at_mut(2 * slots);
                    for (slot, h) in head.chunks_exact_mut(2).enumerate() {
                        h.copy_from_slice(&s16[sbase + (slots * b + slot) * pr + j0 + j].to_le_bytes());
                    }
                    // The block's chunks, and in each this row's 4 bytes.
                    let chunks = &codes[4 * pr * cpb * b..][..4 * pr * cpb];
                    for (dst, chunk) in body.chunks_exact_mut(4).zip(chunks.chunks_exact(4 * pr)) {
                        dst.copy_from_slice(&chunk[lane..lane + 4]);
                    }
                }
            }
            r0 += js;
        }
        true
    }

    pub(crate) fn unpack_rows(
        &self,
        n0: usize,
        rows: usize,
        mut data: Vec<u8>,
        mut scales: Vec<f32>,
    ) -> QuantizedTensor {
        let (nb, k, pr) = (self.nb, self.k, self.isa.rows());
        data.clear();
        scales.clear();
        let rest = if self.unpack_lanes(n0, rows, &mut data) {
            n0..n0
        } else {
            n0..n0 + rows
        };
        for row in rest {
            let (p, j) = (row / pr, row % pr);
            let pc = self.panel_codes(p);
            let sbase = p * self.groups * pr * self.kind.scale_slots() + j;
            let lane = |c: usize| &pc[4 * pr * c + 4 * j..][..4];
            // Q4_K's and Q5_K's 16 header bytes of super-block `sb`, from its `d` and `dmin`
            // slots and its sub-blocks' scale and minimum bytes.
            // Chunk `c`'s lane as a word (byte `t` its `t`-th byte).
            let word = |c: usize| {
                let l = lane(c);
                u32::from_le_bytes([l[0], l[1], l[2], l[3]])
            };
            // The fifth bits of the 5-bit block whose chunks start at `c0`, bit `i` code `i`'s
            // (the fifth chunk holds it at bit `8 (i % 4) + i / 4`, see [`five_bits`]).
            let fifth_bits = |c0: usize| {
                let f = lane(c0 + 4);
                (0..4).fold(0u32, |h, t| h | SPREAD4[usize::from(f[t])] << t)
            };
            // The 5-bit block whose chunks start at `c0` as Q5_0 and Q5_1 store its codes: `qh`
            // (its fifth bits), then 16 bytes of nibbles, byte `i` codes `i` and `16 + i`: the
            // panel's nibble chunks, in that order already.
            let push_q5 = |data: &mut Vec<u8>, c0: usize| {
                data.extend_from_slice(&fifth_bits(c0).to_le_bytes());
                for c in 0..4 {
                    data.extend_from_slice(lane(c0 + c));
                }
            };
            // Q4_K's and Q5_K's codes of sub-blocks `lo` and `hi` whose nibble chunks start at
            // `cl` and `ch`, as the file stores them: byte `i` code `i` of `lo` (low nibble) and
            // of `hi` (high), four at a time.
            let push_pair = |data: &mut Vec<u8>, cl: usize, ch: usize| {
                let mut out = [0u8; 32];
                for c in 0..4 {
                    let (a, b) = (word(cl + c), word(ch + c));
                    out[4 * c..][..4].copy_from_slice(&((a & NIBBLES) | (b & NIBBLES) << 4).to_le_bytes());
                    out[16 + 4 * c..][..4].copy_from_slice(&((a >> 4) & NIBBLES | (b & !NIBBLES)).to_le_bytes());
                }
                data.extend_from_slice(&out);
            };
            let k_header = |sb: usize, five: bool| {
                let slot = |s: usize| self.scales16()[sbase + (2 * sb + s) * pr];
                k_quant_header(
                    slot(0),
                    slot(1),
                    std::array::from_fn(|g| {
                        let b = 8 * sb + g;
                        let l = lane(affine_chunks(five, true, b).1);
                        (l[2 * (b % 2)], l[2 * (b % 2) + 1])
                    }),
                )
            };
            match self.kind {
                Kind::Q4_0
                | Kind::Iq4Nl
                | Kind::Q8_0
                | Kind::Affine {
                    five: false,
                    k_quant: false,
                } => unreachable!("{:?} is unpacked by unpack_lanes", self.kind),
                Kind::Q5_0 => {
                    for b in 0..nb {
                        // `block_q5_0`: `d`, then the codes as Q5_1 stores them.
                        data.extend_from_slice(&self.scales16()[sbase + b * pr].to_le_bytes());
                        push_q5(&mut data, 5 * b);
                    }
                }
                Kind::Affine { five: true, k_quant } => {
                    let c0 = |b: usize| affine_chunks(true, k_quant, b).0;
                    if !k_quant {
                        // `block_q5_1`: `d`, `m`, then the codes.
                        for b in 0..nb {
                            for slot in 0..2 {
                                data.extend_from_slice(&self.scales16()[sbase + (2 * b + slot) * pr].to_le_bytes());
                            }
                            push_q5(&mut data, c0(b));
                        }
                        continue;
                    }
                    for sb in 0..nb / 8 {
                        // `block_q5_K`: the header rebuilt, `qh` (bit `g` of byte `i`: the
                        // fifth bit of sub-block `g`'s code `i`), then the low nibbles as
                        // Q4_K's.
                        let b0 = 8 * sb;
                        data.extend_from_slice(&k_header(sb, true));
                        let f: [u32; 8] = std::array::from_fn(|g| fifth_bits(c0(b0 + g)));
                        data.extend((0..32).map(|i| (0..8).fold(0u8, |v, g| v | (((f[g] >> i) & 1) as u8) << g)));
                        for g in 0..4 {
                            push_pair(&mut data, c0(b0 + 2 * g), c0(b0 + 2 * g + 1));
                        }
                    }
                }
                Kind::Affine {
                    five: false,
                    k_quant: true,
                } => {
                    for sb in 0..nb / 8 {
                        data.extend_from_slice(&k_header(sb, false));
                        // Q4_K's order: sub-blocks 2g (low nibbles) and 2g + 1 (high) share 32
                        // bytes.
                        for g in 0..4 {
                            let (lo, hi) = (8 * sb + 2 * g, 8 * sb + 2 * g + 1);
                            push_pair(
                                &mut data,
                                affine_chunks(false, true, lo).0,
                                affine_chunks(false, true, hi).0,
                            );
                        }
                    }
                }
                Kind::Iq4Xs => {
                    for sb in 0..nb / 8 {
                        data.extend_from_slice(&self.headers[(row * (nb / 8) + sb) * 8..][..8]);
                        for c in 0..32 {
                            data.extend_from_slice(lane(32 * sb + c));
                        }
                    }
                }
                Kind::Q6K | Kind::Q6KSix | Kind::Q3KFour => {
                    // Q6_K's codes are `q - 32` and its scales as stored; Q3_K's codes `q - 4`
                    // and its 6-bit scales minus 32. `Q6KSix` and `Q3KFour` hold `q` itself.
                    // Four codes at a time: word `w` of a block holds its codes `4w .. 4w + 4`,
                    // one per byte (little-endian), and every mask keeps each byte's bits to
                    // itself.
                    let six = self.kind == Kind::Q6KSix;
                    let four = self.kind == Kind::Q3KFour;
                    let q3 = self.format == QuantFormat::Q3K;
                    let (code_add, scale_add) = if q3 { (4, 32) } else { (32, 0) };
                    for sb in 0..nb / 8 {
                        // The codes `q` and the sub-block scales of the 8 blocks, then the
                        // super-block's fields rebuilt from them.
                        let mut q = [[0u32; 8]; 8];
                        let mut sc = [0u8; 16];
                        for (g, qg) in q.iter_mut().enumerate() {
                            let b = 8 * sb + g;
                            let (c0, sc_chunk) = match self.kind {
                                Kind::Q6KSix => q6_k_six_chunks(b),
                                Kind::Q3KFour => q3_k_chunks(b),
                                _ => q6_k_chunks(b),
                            };
                            if four || six {
                                // Nibble chunk `c`: codes `4c ..` in its low nibbles, `16 + 4c ..`
                                // in its high ones; Q6_K's high 2 bits at bits `2c` of each
                                // byte of the halves' chunks ([`six_bits`]).
                                let h = if six { [word(c0 + 4), word(c0 + 5)] } else { [0; 2] };
                                for c in 0..4 {
                                    let v = word(c0 + c);
                                    qg[c] = (v & NIBBLES) | ((h[0] >> (2 * c)) & TWO_BITS) << 4;
                                    qg[4 + c] = ((v >> 4) & NIBBLES) | ((h[1] >> (2 * c)) & TWO_BITS) << 4;
                                }
                            } else {
                                for (c, qc) in qg.iter_mut().enumerate() {
                                    let l = lane(c0 + c);
                                    *qc = u32::from_le_bytes(std::array::from_fn(|t| {
                                        (l[t] as i8).wrapping_add(code_add) as u8
                                    }));
                                }
                            }
                            for (h, &v) in lane(sc_chunk)[2 * (b % 2)..][..2].iter().enumerate() {
                                sc[2 * g + h] = (v as i8).wrapping_add(scale_add) as u8;
                            }
                        }
                        let d = self.scales16()[sbase + sb * pr].to_le_bytes();
                        let put = |data: &mut Vec<u8>, words: [u32; 8]| {
                            for w in words {
                                data.extend_from_slice(&w.to_le_bytes());
                            }
                        };
                        if q3 {
                            // `block_q3_K`: `hmask` (bit `g` of byte `i`: the third bit of
                            // block `g`'s code `i`), the 2-bit fields (block `g = 4 h + t` at
                            // bits `2 t` of byte `32 h + i`), the scales' nibbles and high
                            // pairs, `d`.
                            put(
                                &mut data,
                                std::array::from_fn(|w| (0..8).fold(0, |v, g| v | ((q[g][w] >> 2) & 0x0101_0101) << g)),
                            );
                            for h in 0..2 {
                                put(
                                    &mut data,
                                    std::array::from_fn(|w| {
                                        (0..4).fold(0, |v, t| v | (q[4 * h + t][w] & TWO_BITS) << (2 * t))
                                    }),
                                );
                            }
                            data.extend_from_slice(&q3_k_scale_bytes(&sc));
                            data.extend_from_slice(&d);
                            continue;
                        }
                        // `block_q6_K`.
                        for h in 0..2 {
                            for s in 0..2 {
                                let (a, b) = (4 * h + s, 4 * h + s + 2);
                                put(
                                    &mut data,
                                    std::array::from_fn(|w| (q[a][w] & NIBBLES) | (q[b][w] & NIBBLES) << 4),
                                );
                            }
                        }
                        for h in 0..2 {
                            put(
                                &mut data,
                                std::array::from_fn(|w| {
                                    (0..4).fold(0, |v, t| v | ((q[4 * h + t][w] >> 4) & TWO_BITS) << (2 * t))
                                }),
                            );
                        }
                        data.extend_from_slice(&sc);
                        data.extend_from_slice(&d);
                    }
                }
                Kind::Tq2_0 => {
                    for sb in 0..nb / 8 {
                        for c in 0..16 {
                            data.extend_from_slice(lane(sb * 16 + c));
                        }
                        data.extend_from_slice(&self.scales16()[sbase + sb * pr].to_le_bytes());
                    }
                }
                Kind::Q2K => {
                    // `block_q2_K`: the scales and minimums, the codes, `d`, `dmin`.
                    for sb in 0..nb / 8 {
                        for c in 16..20 {
                            data.extend_from_slice(lane(20 * sb + c));
                        }
                        for c in 0..16 {
                            data.extend_from_slice(lane(20 * sb + c));
                        }
                        for slot in 0..2 {
                            data.extend_from_slice(&self.scales16()[sbase + (2 * sb + slot) * pr].to_le_bytes());
                        }
                    }
                }
                Kind::Nf4 { .. } => {
                    for b in 0..nb {
                        let mut blk = [0u8; 16];
                        for c in 0..4 {
                            blk[4 * c..4 * c + 4].copy_from_slice(lane(4 * b + c));
                        }
                        data.extend_from_slice(&q4_order_to_nf4(blk));
                    }
                    scales.extend((0..self.groups).map(|g| self.scales32()[sbase + g * pr]));
                }
                Kind::Int8 { .. } | Kind::Fp8 { .. } => {
                    let start = data.len();
                    for c in 0..8 * nb {
                        data.extend_from_slice(lane(c));
                    }
                    data.truncate(start + k);
                    if !matches!(self.kind, Kind::Fp8 { block_size: None, .. }) {
                        scales.extend((0..self.groups).map(|g| self.scales32()[sbase + g * pr]));
                    }
                }
            }
        }
        if let Kind::Fp8 { block_size: None, .. } = self.kind {
            scales.extend_from_slice(&self.tensor_scales);
        }
        QuantizedTensor::from_parts(self.format, vec![rows, k], data, scales)
            .expect("unpacking restores the lengths the layout contract checked at packing")
    }

    /// Every row back in the original format (with NF4's 8-bit absmax where it had one).
    pub(crate) fn unpack(&self) -> QuantizedTensor {
        let t = self.unpack_rows(0, self.n, Vec::new(), Vec::new());
        match &self.nested {
            Some(nested) => t
                .with_nested(nested.clone())
                .expect("the nested absmax came with a tensor of this shape and format"),
            None => t,
        }
    }
}

/// Activations quantized for the packed kernels: the [`ActQ8`] rows and, per row and block,
/// `-offset · Σ q` for the layout's code offset (Q6_K: per half block of 16), and for the
/// affine formats `d_x · Σ q` (computed once per call, not per panel).
pub(crate) struct PackedAct<'a> {
    pub(super) a: &'a ActQ8,
    /// The code offset these values were computed for (0: none, `neg` empty).
    pub(super) offset: i32,
    /// Row-major `-offset · Σ q` per row and block, for the 8-row kernels (empty for the
    /// AVX-512 ones, which read `groups`; Q6_K, whose halves need one each, has an offset on
    /// AVX-512 only).
    pub(super) neg: Vec<i32>,
    /// The affine formats: row-major `d_x · Σ q` per row and block (the exact code sum
    /// [`ActQ8::sums`] converted to f32, times the block scale: the generic kernel's
    /// product), for the 8-row and 4-row kernels (else empty).
    pub(super) dxsx: Vec<f32>,
    /// Q2_K, for the 8-row and 4-row kernels, and the AVX2 layouts of Q6_K and Q3_K: row-major,
    /// per row and block, the sums of the block's first and last 16 codes (empty for the other
    /// kinds, and on AVX-512, whose
    /// groups carry them in `neg` and `neg2`).
    pub(super) halves: Vec<i32>,
    /// For the AVX-512 kernels: the rows in the groups one pass over a panel takes, each
    /// group's rows interleaved block by block (empty for the other layouts).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) groups: Vec<ActGroup>,
}

/// Activation rows `row0 .. row0 + rows` interleaved per block: block `b` of row `row0 + r`
/// is `qs[32 (rows b + r) ..][..32]`, its scale `d[rows b + r]`, its offset correction
/// `neg[rows b + r]` (and Q6_K's second one `neg2[rows b + r]`, the affine formats'
/// `d_x · Σ q` `dxsx[rows b + r]`), so a pass over a panel reads one contiguous stream.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct ActGroup {
    pub(super) row0: usize,
    pub(super) rows: usize,
    pub(super) qs: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) neg: Vec<i32>,
    /// Q6_K: the offset correction of each block's last 16 codes (`neg` holds the first 16's);
    /// Q2_K: the sum of those codes (`neg` holds the first 16's); empty for the other kinds.
    pub(super) neg2: Vec<i32>,
    /// The affine formats: `d_x · Σ q` per block; empty for the other kinds.
    pub(super) dxsx: Vec<f32>,
}

/// The groups of activation rows the AVX-512 kernels take in one pass each,
/// `(first row, rows)`: as many of 6 as fit, then 4, then the last 1 to 3.
pub(super) fn row_groups(m: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut i0 = 0;
    std::iter::from_fn(move || {
        (i0 < m).then(|| {
            let rows = match m - i0 {
                6.. => 6,
                4..=5 => 4,
                r => r,
            };
            i0 += rows;
            (i0 - rows, rows)
        })
    })
}

impl<'a> PackedAct<'a> {
    /// `a` prepared for the kernels of `w`.
    pub(crate) fn new(w: &Packed, a: &'a ActQ8) -> Self {
        let offset = w.kind.offset(w.isa);
        let nb = a.nb;
        let q6k = w.kind == Kind::Q6K;
        let q2k = w.kind == Kind::Q2K;
        let affine = matches!(w.kind, Kind::Affine { .. });
        // The sum of the first (`half == 0`) or last 16 codes of block `t` of every row
        // (row-major).
        let half_sum =
            |t: usize, half: usize| -> i32 { a.qs[32 * t + 16 * half..][..16].iter().map(|&v| i32::from(v)).sum() };
        // Block `t`'s offset corrections over all 32 codes, or Q6_K's over the first or last
        // 16; for Q2_K, the sums of its halves themselves.
        let neg_at = |t: usize, half: usize| -> i32 {
            if q2k {
                half_sum(t, half)
            } else if q6k {
                -offset * half_sum(t, half)
            } else {
                -offset * a.sums[t]
            }
        };
        let dxsx_at = |t: usize| a.d[t] * a.sums[t] as f32;
        let interleave = w.isa == Isa::Avx512Vnni && (offset != 0 || affine || q2k);
        // The row-major values serve the 8-row and 4-row kernels; the AVX-512 ones read them
        // from the interleaved groups only.
        let row_major = !interleave;
        let all = a.rows * nb;
        assert!(!(q6k && offset != 0 && row_major), "Q6_K has an offset on AVX-512 only");
        let neg: Vec<i32> = if offset == 0 || !row_major {
            Vec::new()
        } else {
            (0..all).map(|t| neg_at(t, 0)).collect()
        };
        let dxsx: Vec<f32> = if affine && row_major {
            (0..all).map(dxsx_at).collect()
        } else {
            Vec::new()
        };
        // (Q6_K's 6-bit and Q3_K's 4-bit codes take the sums on AVX2; NEON takes the offset
        // from each code.)
        let halves_kind = q2k || (matches!(w.kind, Kind::Q6KSix | Kind::Q3KFour) && w.isa == Isa::Avx2);
        let halves: Vec<i32> = if halves_kind && row_major {
            (0..all).flat_map(|t| [half_sum(t, 0), half_sum(t, 1)]).collect()
        } else {
            Vec::new()
        };
        let mut groups = Vec::new();
        if interleave {
            for (row0, rows) in row_groups(a.rows) {
                let mut g = ActGroup {
                    row0,
                    rows,
                    qs: Vec::with_capacity(rows * nb * 32),
                    d: Vec::with_capacity(rows * nb),
                    neg: Vec::with_capacity(rows * nb),
                    neg2: Vec::with_capacity(if q6k || q2k { rows * nb } else { 0 }),
                    dxsx: Vec::with_capacity(if affine { rows * nb } else { 0 }),
                };
                for b in 0..nb {
                    for i in row0..row0 + rows {
                        let t = i * nb + b;
                        g.qs.extend_from_slice(&a.qs[t * 32..][..32]);
                        g.d.push(a.d[t]);
                        g.neg.push(neg_at(t, 0));
                        if q6k || q2k {
                            g.neg2.push(neg_at(t, 1));
                        }
                        if affine {
                            g.dxsx.push(dxsx_at(t));
                        }
                    }
                }
                groups.push(g);
            }
        }
        Self {
            a,
            offset,
            neg,
            dxsx,
            halves,
            groups,
        }
    }

    /// Activation row `i`'s sums of the two halves of each block (Q2_K's 8-row and 4-row
    /// layouts, Q6_K's 6-bit one and Q3_K's 4-bit one, else empty): `[first 16, last 16]` per
    /// block.
    pub(super) fn row_halves(&self, i: usize) -> &[[i32; 2]] {
        let nb = self.a.nb;
        if self.halves.is_empty() {
            &[]
        } else {
            bytemuck::cast_slice(&self.halves[2 * i * nb..][..2 * nb])
        }
    }

    /// Activation row `i`'s codes, block scales and offset corrections (empty without an
    /// offset).
    pub(super) fn row(&self, i: usize) -> (&[i8], &[f32], &[i32]) {
        let nb = self.a.nb;
        let neg = if self.offset == 0 {
            &[][..]
        } else {
            &self.neg[i * nb..][..nb]
        };
        (&self.a.qs[i * nb * 32..][..nb * 32], &self.a.d[i * nb..][..nb], neg)
    }

    /// Activation row `i`'s `d_x · Σ q` per block (the affine formats, else empty).
    pub(super) fn row_dxsx(&self, i: usize) -> &[f32] {
        let nb = self.a.nb;
        if self.dxsx.is_empty() {
            &[]
        } else {
            &self.dxsx[i * nb..][..nb]
        }
    }
}

/// Where a kernel reads a panel's scales.
#[derive(Clone, Copy)]
pub(crate) enum Scales<'a> {
    F16(&'a [u16]),
    F32(&'a [f32]),
}
