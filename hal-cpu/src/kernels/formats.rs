//! The registry of formats in this crate: for every [`QuantFormat`], which kernel families
//! exist here, and for each one that does not, why. The kernel tables ([`super::Kernels`]),
//! [`CpuProvider::supports`](crate::CpuProvider), [`has_int8_activation_path`](crate::has_int8_activation_path)
//! and the packed layout choice ([`super::panels::Kind::for_tensor`]) all read [`entry`], so a
//! format is added to this crate in one `match` here, and then in the kernel files the entry
//! names.
//!
//! The families:
//! - **exact**: f32 activations, the weight decoded to f32 (the generic kernel decodes every
//!   format through [`aihal_quantize::decode`]; the SIMD sets decode some formats in
//!   registers, the others through the same chunked decode).
//! - **q8**: int8 activations in blocks of 32 (one f32 scale and one code sum per block),
//!   each block's dot product with the weight's integer codes exact in i32, then scaled in
//!   f32. Only formats whose values are `scale · code (+ min)` with integer codes per run of
//!   16 or 32 values have it.
//! - **panel** and **exact panel**: the per-call sets' M > 1 kernels over repacked panels.
//! - **packed**: the layouts of [`PackedWeights`](crate::PackedWeights).

use aihal_quantize::QuantFormat;

use super::panels::Isa;

/// Which packed layouts (panels repacked once) a format has, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packing {
    /// Every int8 panel layout (AVX2, AVX-VNNI, AVX-512 VNNI, NEON dotprod).
    AllIntegerSets,
    /// The AVX-512 VNNI and NEON dotprod layouts only (NF4: no AVX2 kernel reads it yet,
    /// though IQ4_NL's table look-up on AVX2 would serve its levels too).
    WideIntegerSets,
    /// The AVX-512 layout only (FP8 on f32 or bf16 activations).
    Avx512Only,
    /// The layouts of the sets listed; a CPU whose best set is not listed runs the best one
    /// that is (an AVX-VNNI CPU the AVX2 layout).
    Sets(&'static [Isa]),
    /// None: the format runs the per-call kernels of `matmul_with`.
    None(&'static str),
}

/// What this crate runs for one format.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// The exact path (every format this crate knows), or why not.
    pub(crate) exact: Result<(), &'static str>,
    /// The int8-activation path, or why not.
    pub(crate) q8: Result<(), &'static str>,
    /// Whether the per-call SIMD sets have panel kernels (int8 panels on the q8 path, exact
    /// panels on the f32 path) for it; without, their row kernels run for every M.
    pub(crate) panels: bool,
    /// The packed layouts.
    pub(crate) packing: Packing,
}

/// No int8-activation path: the values are not integer codes times a scale.
const NOT_INTEGER: &str = "its values are not integer codes times a block scale";

/// The one table of formats (see the module documentation).
pub(crate) fn entry(format: QuantFormat) -> Entry {
    let yes = Ok(());
    match format {
        QuantFormat::Q4_0 | QuantFormat::Q8_0 | QuantFormat::Tq2_0 | QuantFormat::Int8PerChannel => Entry {
            exact: yes,
            q8: yes,
            panels: true,
            packing: Packing::AllIntegerSets,
        },
        QuantFormat::Int8PerBlock { block_size } => {
            let whole = block_size.is_multiple_of(32);
            Entry {
                exact: yes,
                q8: if whole {
                    yes
                } else {
                    Err("its scale blocks do not tile the activation blocks of 32")
                },
                panels: whole,
                packing: if whole {
                    Packing::AllIntegerSets
                } else {
                    Packing::None("its scale blocks do not tile the panels' blocks of 32")
                },
            }
        }
        // NF4 block sizes are powers of two from 32 (validated by aihal-quantize); the packed
        // layouts further need the blocks to tile the rows (`panels::Kind::for_tensor`).
        QuantFormat::Nf4 { block_size, .. } => Entry {
            exact: yes,
            q8: if block_size.is_multiple_of(32) {
                yes
            } else {
                Err("its absmax blocks are shorter than the activation blocks of 32")
            },
            panels: true,
            packing: Packing::WideIntegerSets,
        },
        QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => Entry {
            exact: yes,
            q8: Err(NOT_INTEGER),
            panels: block_size.is_none_or(|b| b.is_multiple_of(32)),
            packing: if block_size.is_none_or(|b| b.is_multiple_of(32)) {
                Packing::Avx512Only
            } else {
                Packing::None("its scale blocks do not tile the panels' blocks of 32")
            },
        },
        // The llama.cpp block formats with a minimum or sub-block scales: the q8 path is defined
        // by the generic kernels (`generic::weight_block`, `affine_block`, `sub16_block`); the
        // AVX2 set has row kernels for Q4_1, Q5_0 and Q4_K, the other sets run the generic
        // ones; no per-call panel kernel reads them. Packed: Q5_0 in Q5_1's 5-bit layout (its
        // kernels with an offset of 16); Q4_1 and Q4_K in one affine 4-bit layout and
        // Q6_K with its sub-block scales beside its 8-bit codes (see `panels`), on the sets
        // listed: no AVX-VNNI kernels of their own (none could be tested on the machine they
        // were written on), so AVX-VNNI CPUs run the AVX2 layout.
        // Q3_K packs in Q6_K's layout (8-bit codes, i8 scales per 16 values, f16 `d`), on AVX2
        // and NEON dotprod as 4-bit codes with the same scales; IQ4_NL
        // as Q4_0 (the same block shape) with its code book looked up in a table: `vpshufb` on
        // AVX2 (AVX-VNNI CPUs run that layout), `vpermb` or `vpshufb` on AVX-512 VNNI (as
        // NF4), NF4's look-up on NEON dotprod; IQ4_XS in the same panels, its sub-block
        // scales applied into an f32 scale per block of 32.
        // Q5_1 and Q5_K in the affine layout of Q4_1 and Q4_K with a chunk of fifth bits
        // beside the nibbles; Q2_K with its 2-bit codes in TQ2_0's panels and its scale bytes
        // beside them.
        QuantFormat::Q5_0
        | QuantFormat::Q2K
        | QuantFormat::Q4_1
        | QuantFormat::Q5_1
        | QuantFormat::Q4K
        | QuantFormat::Q5K
        | QuantFormat::Q6K
        | QuantFormat::Q3K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs => Entry {
            exact: yes,
            q8: yes,
            panels: false,
            packing: Packing::Sets(&[Isa::Avx2, Isa::Avx512Vnni, Isa::NeonDot]),
        },
        QuantFormat::Ternary => Entry {
            exact: yes,
            q8: Err("its codes are not stored in blocks of 32 with a scale each"),
            panels: false,
            packing: Packing::None("no packed kernel reads its codes"),
        },
    }
}
