//! AVX-512 VNNI kernels over weights packed in panels of 16 rows ([`Isa::Avx512Vnni`]).
//!
//! The layout is the one [`super::panels`] documents, with 16 rows per panel: a chunk is
//! one 64-byte vector whose 32-bit lane `j` holds 4 consecutive code bytes of row `j`, and the
//! 16 rows' scales of a group are contiguous (one `vcvtph2ps` or one load).
//!
//! # Arithmetic
//!
//! Each group of 4 activation codes is broadcast to the 16 lanes and multiplied into the 16
//! rows by one `vpdpbusd` (unsigned weight bytes times signed activation bytes, 4 products
//! summed into each i32 lane without saturation), so a lane ends the block holding the whole
//! integer dot product of one weight row. The weight bytes must be unsigned: 4-bit and 2-bit
//! codes are stored as `q + 8` and `q + 1` already, and 8-bit codes are flipped to `q + 128` by
//! one `xor 0x80` per chunk (shared by every activation row). Each offset is removed exactly
//! through the activation block sums (`-offset · Σ x`, the accumulator's starting value), so
//! the block sum is the exact integer the generic kernel computes, and it is scaled and added
//! as the generic kernel does, `(s_w · d_x) · isum` without FMA: the results are bit-identical
//! to [`generic`](super::generic)'s q8 kernels. Q5_0 runs Q5_1's 5-bit kernel with an offset of 16. The
//! affine formats (Q4_1, Q4_K) multiply their unsigned nibbles without an offset and then add
//! `add · (d_x · Σ x)` per block, rounded apart; Q6_K flips its 8-bit codes as Q8_0's, keeps
//! each half block's sum in its own accumulator (each started at its own offset correction)
//! and combines them with its sub-block scales in i32 (`vpmulld`) before the scaling.
//!
//! Up to 6 activation rows share one pass over a panel, each row with two integer
//! accumulators, so that even a single row at M = 1 is not held up by the latency of one
//! chain of `vpdpbusd`. The rows of a pass are interleaved block by block once per call
//! ([`ActGroup`]), so a pass reads one stream of activations through one pointer. With more
//! than 6 rows, the passes cover 64 blocks at a time, so that the panel's codes for those
//! blocks stay in L1/L2 while every group of rows passes over them, and the 8-bit kernels
//! take two panels per pass (32 blocks at a time), one accumulator per row and panel.
//!
//! One file per kind of arithmetic: `int8.rs` (the integer formats on int8 activations,
//! `vpdpbusd`), `fp8.rs` (FP8 decoded to f32 in registers against f32 activations, FMA) and
//! `fp8_bf16.rs` (FP8 looked up as bf16 against bf16 activations, `vdpbf16ps`); this file
//! holds what they share: the panel height, the walk over a panel's scales and the passes
//! over its blocks.

use std::arch::x86_64::{__m512, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_loadu_ps, _mm512_set1_ps};

use super::panels::Scales;

mod fp8;
mod fp8_bf16;
mod int8;

pub(crate) use fp8::fp8_panel;
pub(crate) use fp8_bf16::{fp8_bf16_panel, Bf16Act};
#[cfg(any(test, feature = "test-internals"))]
pub(crate) use int8::checks;
pub(super) use int8::{panel, panels_per_call};

/// Weight rows per panel: one per i32 lane of a 512-bit vector.
const ROWS: usize = 16;

/// The scales of blocks `b0 .. b1` of `P` panels visited in order, reloaded only where a
/// scale group starts: one loop over the blocks, without a nested loop per group (Q4_0 and
/// Q8_0 have a group per block).
struct ScaleWalk<'a, const P: usize> {
    scales: [Scales<'a>; P],
    bps: usize,
    b1: usize,
    g: usize,
    g_end: usize,
    sw: [__m512; P],
}

impl<'a, const P: usize> ScaleWalk<'a, P> {
    /// # Safety
    /// AVX-512 F is available; `b0 < b1`, and the groups of blocks `b0 .. b1` exist in
    /// every `scales[q]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn new(scales: [Scales<'a>; P], bps: usize, b0: usize, b1: usize) -> Self {
        let g = b0 / bps;
        let mut sw = [_mm512_set1_ps(0.0); P];
        for q in 0..P {
            // SAFETY: the caller's contract.
            sw[q] = unsafe { load_scales(scales[q], g) };
        }
        Self {
            scales,
            bps,
            b1,
            g,
            g_end: ((g + 1) * bps).min(b1),
            sw,
        }
    }

    /// The 16 scales of block `b` of each panel.
    ///
    /// # Safety
    /// As [`ScaleWalk::new`]; the blocks are asked for in order, each below `b1`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn at(&mut self, b: usize) -> [__m512; P] {
        if b == self.g_end {
            self.g += 1;
            self.g_end = ((self.g + 1) * self.bps).min(self.b1);
            for q in 0..P {
                // SAFETY: the caller's contract.
                self.sw[q] = unsafe { load_scales(self.scales[q], self.g) };
            }
        }
        self.sw
    }
}

/// The 16 scales of group `g`.
///
/// # Safety
/// AVX-512 F is available.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_scales(s: Scales<'_>, g: usize) -> __m512 {
    match s {
        Scales::F16(s) => {
            let s = &s[g * ROWS..][..ROWS];
            // SAFETY: `s` has 16 u16 (32 bytes).
            _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s.as_ptr().cast()) })
        }
        Scales::F32(s) => {
            let s = &s[g * ROWS..][..ROWS];
            // SAFETY: `s` has 16 f32.
            unsafe { _mm512_loadu_ps(s.as_ptr()) }
        }
    }
}

/// Blocks ahead the FP8 codes are prefetched.
const PREFETCH: usize = 8;

/// Bytes ahead the integer kernels prefetch their codes. Measured at M = 1 on the AMD EPYC
/// (Zen 5) VM: 8 KiB kept the 4-bit and 2-bit kernels closer to the read floor than 2 or
/// 4 KiB (8 blocks of Q4_0 ahead was 2 KiB), and made no difference to Q8_0's.
const PREFETCH_BYTES: usize = 8192;

/// Blocks per pass when more than 6 activation rows share a panel: the panel's codes for
/// these blocks (16 KiB of Q4_0, 32 KiB of Q8_0; a pair of 8-bit panels takes half as many)
/// stay in L1/L2 while every group of rows passes over them.
const K_BLOCKS: usize = 64;

/// The ranges of blocks `P` panels are passed over for `m` activation rows: all `nb` blocks
/// at once for up to 6 rows (one group), else [`K_BLOCKS`]` / P` at a time.
fn block_ranges<const P: usize>(m: usize, nb: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if m > 6 { K_BLOCKS / P } else { nb.max(1) };
    (0..nb).step_by(step).map(move |b0| (b0, nb.min(b0 + step)))
}
