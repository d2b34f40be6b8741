//! The 4-row kernels over packed weights ([`Isa::NeonDot`]): the layout is
//! [`super::panels`]'s with 4 rows per panel, one per 32-bit lane of a 128-bit vector, so a
//! chunk is one 16-byte vector whose lane `j` holds 4 consecutive codes of row `j`.
//!
//! # Arithmetic
//!
//! For each activation row, a block's 32 codes are loaded as two vectors (codes `0 .. 16` and
//! `16 .. 32`), and each chunk is multiplied by the 4 activation codes it meets with one `sdot`
//! by element (`sdot v.4s, w.16b, x.4b[i]`: lane `j` gains the dot product of row `j`'s 4 codes
//! with group `i` of `x`), so a lane ends the block holding the whole integer dot product of
//! one weight row: no horizontal sums, and each chunk load serves every activation row of the
//! pass; each row keeps two integer accumulators (even and odd chunks, or low and high
//! nibbles), so that a single row (M = 1) is not held up by the latency of one chain of
//! `sdot`. 4-bit and 2-bit codes are stored unsigned (`q + 8`, `q + 1`) and enter `sdot` as they
//! are (below 16, valid signed bytes); the offset is removed exactly through the activation
//! block sums. Each block's sum is scaled as the generic kernel does it, `(s_w · d_x) · isum`
//! added to the f32 accumulator without FMA: the results are bit-identical to
//! [`generic`](super::generic)'s q8 kernels. Q5_0 runs Q5_1's 5-bit kernel with an offset of 16; the
//! affine formats run Q4_0's arithmetic without the offset (Q4_1, Q4_K; Q5_1 and Q5_K with
//! each code's fifth bit put back first) and add `add · (d_x · Σ x)` per block, rounded
//! apart; Q6_K (its 6-bit codes joined, 32 taken away from each before `sdot`) keeps each
//! half block's sum apart and combines them with its sub-block scales in i32 (`mul`, `mla`),
//! as does Q3_K, whose 4-bit codes `q + 4` lose their offset before `sdot`.

use std::arch::aarch64::{
    float32x4_t, int32x4_t, int8x16_t, uint32x4_t, uint8x16_t, vaddq_f32, vaddq_s32, vandq_u32, vandq_u8,
    vcvtq_f32_s32, vcvtq_f32_u32, vdupq_n_f32, vdupq_n_s32, vdupq_n_s8, vdupq_n_u32, vdupq_n_u8, vld1_u16, vld1q_f32,
    vld1q_s8, vld1q_u8, vmlaq_s32, vmulq_f32, vmulq_n_f32, vmulq_n_s32, vmulq_s32, vorrq_u8, vqtbl1q_s8,
    vreinterpretq_s32_s8, vreinterpretq_s32_u32, vreinterpretq_s8_u8, vreinterpretq_u32_u8, vreinterpretq_u8_s8,
    vreinterpretq_u8_u32, vshlq_n_s32, vshlq_u32, vshlq_u8, vshrq_n_s32, vshrq_n_u32, vshrq_n_u8, vst1q_f32, vst1q_u8,
    vsubq_f32, vsubq_u8,
};
use std::arch::asm;

use super::panels::{
    affine_chunks, q2_k_chunks, q3_k_chunks, q6_k_chunks, q6_k_six_chunks, Isa, Kind, Packed, PackedAct, Scales,
};
use crate::kernels::codes::{IQ4_LEVELS, NF4_I8};

/// Weight rows per panel: one per i32 lane of a 128-bit vector.
const ROWS: usize = 4;

/// Activation rows one pass over a panel takes at most.
const PASS_ROWS: usize = 4;

/// Bytes per chunk: 4 codes of each of the panel's rows.
const CHUNK: usize = 4 * ROWS;

/// `acc + Σ_{t<4} w[4 j + t] · x[4 lane + t]` in each lane `j` (`sdot` by element).
///
/// # Safety
/// The CPU has FEAT_DotProd.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_at(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t, lane: usize) -> int32x4_t {
    macro_rules! sdot {
        ($lane:literal) => {
            // SAFETY: `sdot` reads and writes registers only; the caller guarantees the
            // feature.
            unsafe {
                asm!(
                    concat!("sdot {0:v}.4s, {1:v}.16b, {2:v}.4b[", $lane, "]"),
                    inout(vreg) acc,
                    in(vreg) w,
                    in(vreg) x,
                    options(pure, nomem, nostack)
                );
            }
        };
    }
    match lane {
        0 => sdot!(0),
        1 => sdot!(1),
        2 => sdot!(2),
        _ => sdot!(3),
    }
    acc
}

/// One block of 32 values of a panel against `R` activation rows: the 4 lanes' integer dot
/// products (offset already removed).
trait BlockDot {
    /// Chunks [`BlockDot::dot`] reads from where [`BlockDot::chunk`] places a block.
    const CHUNKS: usize;
    /// The unsigned codes' offset (`q + OFFSET` is stored), 0 for signed codes.
    const OFFSET: i32;
    /// NF4: the codes are the code book's int8 levels (127 times the levels), scaled as
    /// [`generic::q8_nf4`](super::generic::q8_nf4) does, `s_w · (d_x · isum)`, and the sums
    /// divided by 127 at the end.
    const NF4: bool = false;
    /// Whether the format is affine (Q4_1, Q4_K: values `scale · code + add`): each block
    /// also adds `add · (d_x · Σ x)` after `(s_w · d_x) · isum`, as
    /// [`generic::q8_affine`](super::generic::q8_affine) does, and the panel's scales hold
    /// two slots per block (scales, then additive terms).
    const AFFINE: bool = false;
    /// With `AFFINE`: the K-quants (Q4_K, Q5_K), whose scale slots hold each super-block's `d`
    /// and `dmin` and whose sub-block scale and minimum are bytes of the chunk
    /// [`BlockDot::kq_chunk`]: a block's scale is `d · sc` and its term `-(dmin · m)`, formed
    /// in registers as [`generic::affine_block`](super::generic::affine_block) forms them.
    const KQ: bool = false;
    /// With `KQ`: the chunk holding block `b`'s sub-block scale and minimum (bytes
    /// `2 (b % 2)` and `2 (b % 2) + 1` of each lane), relative to the panel.
    fn kq_chunk(_b: usize) -> usize {
        0
    }
    /// Whether the format has minimums per half block (Q2_K: values `d · sc · q - dmin · m`):
    /// the scales hold two slots per 256 values (`d`, `dmin`), and each block also takes
    /// away `dmin · (d_x · msum)`, `msum` from [`BlockDot::mins`], as
    /// [`generic::q8_q2_k`](super::generic::q8_q2_k) does.
    const MINS: bool = false;
    /// With `MINS`: per row, `m_0 · s[r][0] + m_1 · s[r][1]` in each lane (the block's two
    /// minimums times the sums of its halves' activation codes).
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn mins<const R: usize>(_w: *const u8, _b: usize, _s: [[i32; 2]; R]) -> [int32x4_t; R] {
        [vdupq_n_s32(0); R]
    }
    /// The chunk the block's codes start at, relative to the panel, for block `b`.
    fn chunk(b: usize) -> usize;
    /// # Safety
    /// NEON and FEAT_DotProd are available; `w` points at the block's chunks (as
    /// [`BlockDot::chunk`] places them), each `x[r]` at 32 readable activation codes.
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [int32x4_t; R];
}

/// The 32 activation codes at each `x[r]` as two vectors, codes `0 .. 16` and `16 .. 32`.
///
/// # Safety
/// NEON is available; 32 bytes at each `x[r]` are readable.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_x<const R: usize>(x: [*const i8; R]) -> [[int8x16_t; 2]; R] {
    // SAFETY: the caller guarantees 32 readable bytes at each pointer.
    std::array::from_fn(|r| unsafe { [vld1q_s8(x[r]), vld1q_s8(x[r].add(16))] })
}

/// Q4_0's nibbles (`q + 8`), or with `AFFINE` the unsigned codes of Q4_1 and Q4_K in the same
/// order (no offset; their minimum is added per block, see [`BlockDot::AFFINE`]).
struct Q4<const AFFINE: bool, const K: bool = false>;
impl<const AFFINE: bool, const K: bool> BlockDot for Q4<AFFINE, K> {
    const CHUNKS: usize = if K { 8 } else { 4 };
    const OFFSET: i32 = if AFFINE { 0 } else { 8 };
    const AFFINE: bool = AFFINE;
    const KQ: bool = K;
    fn chunk(b: usize) -> usize {
        affine_chunks(false, K, b).0
    }
    fn kq_chunk(b: usize) -> usize {
        affine_chunks(false, K, b).1
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        let mut acc: [[int32x4_t; R]; 2] = [std::array::from_fn(|r| vdupq_n_s32(neg[r])), [vdupq_n_s32(0); R]];
        for c in 0..4 {
            // SAFETY: the block has 4 chunks (the caller's contract).
            let v = unsafe { vld1q_u8(w.add(CHUNK * c)) };
            // Low nibbles: codes 4c .. 4c + 4 of each row; high nibbles: codes 16 + 4c ...
            let lo = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F)));
            let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                unsafe {
                    acc[0][r] = sdot_at(acc[0][r], lo, xs[r][0], c);
                    acc[1][r] = sdot_at(acc[1][r], hi, xs[r][1], c);
                }
            }
        }
        std::array::from_fn(|r| vaddq_s32(acc[0][r], acc[1][r]))
    }
}

/// NF4, or with `IQ4` IQ4_NL (codes in Q4_0's nibble order): each code looked up in the code
/// book's int8 levels (`tbl`), then as Q4_0 without an offset. IQ4_NL's levels are its values
/// (`d` times a level), so it rounds as the other formats do ([`BlockDot::NF4`] false).
struct Nf4<const IQ4: bool = false>;
impl<const IQ4: bool> BlockDot for Nf4<IQ4> {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 0;
    const NF4: bool = !IQ4;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        let table = if IQ4 { &IQ4_LEVELS } else { &NF4_I8 };
        // SAFETY: forwarded from the caller; the table has 16 levels.
        let (xs, levels) = unsafe { (load_x(x), vld1q_s8(table.as_ptr())) };
        let mut acc = [[vdupq_n_s32(0); R]; 2];
        for c in 0..4 {
            // SAFETY: the block has 4 chunks (the caller's contract).
            let v = unsafe { vld1q_u8(w.add(CHUNK * c)) };
            let lo = vqtbl1q_s8(levels, vandq_u8(v, vdupq_n_u8(0x0F)));
            let hi = vqtbl1q_s8(levels, vshrq_n_u8::<4>(v));
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                unsafe {
                    acc[0][r] = sdot_at(acc[0][r], lo, xs[r][0], c);
                    acc[1][r] = sdot_at(acc[1][r], hi, xs[r][1], c);
                }
            }
        }
        std::array::from_fn(|r| vaddq_s32(acc[0][r], acc[1][r]))
    }
}

struct Tq2;
impl BlockDot for Tq2 {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 1;
    fn chunk(b: usize) -> usize {
        16 * (b / 8) + 8 * ((b % 8) / 4)
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        let mut acc: [[int32x4_t; R]; 2] = [std::array::from_fn(|r| vdupq_n_s32(neg[r])), [vdupq_n_s32(0); R]];
        // Block b's codes are the 2-bit field b % 4 of its half of the 256-value block.
        let shift = vreinterpretq_s8_u8(vdupq_n_u8((-2 * (b % 4) as i8) as u8));
        for c in 0..8 {
            // SAFETY: the half block has 8 chunks (the caller's contract).
            let v = unsafe { vld1q_u8(w.add(CHUNK * c)) };
            let q = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v, shift), vdupq_n_u8(3)));
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                acc[c % 2][r] = unsafe { sdot_at(acc[c % 2][r], q, xs[r][c / 4], c % 4) };
            }
        }
        std::array::from_fn(|r| vaddq_s32(acc[0][r], acc[1][r]))
    }
}

/// Q2_K: 2-bit codes in TQ2_0's arrangement ([`q2_k_chunks`]) shifted down as [`Tq2`]'s, each
/// half of 16 codes (chunks 0..4 and 4..8) in its own accumulator, then
/// `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 (`mul`, `mla`) with the 4-bit scales
/// of the block's scale chunk, and from its high nibbles the minimums ([`BlockDot::mins`]):
/// the arithmetic of [`generic::q8_q2_k`](super::generic::q8_q2_k). `CHUNKS` reaches the
/// scale chunk from the last block of a super-block.
struct Q2;
impl Q2 {
    /// The block's scale chunk as 4 lanes, shifted so that its half-block bytes are the low 16
    /// bits of each.
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn scale_bytes(w: *const u8, b: usize) -> uint32x4_t {
        let (c0, sc) = q2_k_chunks(b);
        // SAFETY: the super-block's scale chunks lie in the panel (the caller's contract).
        let s = vreinterpretq_u32_u8(unsafe { vld1q_u8(w.add(CHUNK * (sc - c0))) });
        vshlq_u32(s, vdupq_n_s32(-16 * (b % 2) as i32))
    }
}
impl BlockDot for Q2 {
    const CHUNKS: usize = 12;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    fn chunk(b: usize) -> usize {
        q2_k_chunks(b).0
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        let mut acc = [[vdupq_n_s32(0); R]; 2];
        let shift = vreinterpretq_s8_u8(vdupq_n_u8((-2 * (b % 4) as i8) as u8));
        for c in 0..8 {
            // SAFETY: the quarter has 8 chunks (the caller's contract).
            let v = unsafe { vld1q_u8(w.add(CHUNK * c)) };
            let q = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(v, shift), vdupq_n_u8(3)));
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                acc[c / 4][r] = unsafe { sdot_at(acc[c / 4][r], q, xs[r][c / 4], c % 4) };
            }
        }
        // SAFETY: forwarded from the caller.
        let s = unsafe { Self::scale_bytes(w, b) };
        let nib = vdupq_n_u32(0xF);
        let sc0 = vreinterpretq_s32_u32(vandq_u32(s, nib));
        let sc1 = vreinterpretq_s32_u32(vandq_u32(vshrq_n_u32::<8>(s), nib));
        std::array::from_fn(|r| vmlaq_s32(vmulq_s32(acc[0][r], sc0), acc[1][r], sc1))
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn mins<const R: usize>(w: *const u8, b: usize, s: [[i32; 2]; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let bytes = unsafe { Self::scale_bytes(w, b) };
        let nib = vdupq_n_u32(0xF);
        let m0 = vreinterpretq_s32_u32(vandq_u32(vshrq_n_u32::<4>(bytes), nib));
        let m1 = vreinterpretq_s32_u32(vandq_u32(vshrq_n_u32::<12>(bytes), nib));
        std::array::from_fn(|r| vmlaq_s32(vmulq_n_s32(m0, s[r][0]), m1, vdupq_n_s32(s[r][1])))
    }
}

/// Q5_1 and Q5_K: per block, 4 chunks of the codes' low nibbles in Q4_0's order and a chunk of
/// their fifth bits ([`five_bits`](super::panels::five_bits)), each code rebuilt as a byte
/// (0..=31, a valid signed byte) and multiplied as it is; their minimum is added per block
/// (see [`BlockDot::AFFINE`]). With `SYM`, Q5_0 in the same chunks: not affine, its offset of
/// 16 removed through `neg` (the first accumulator's start).
struct U5<const K: bool, const SYM: bool = false>;
impl<const K: bool, const SYM: bool> BlockDot for U5<K, SYM> {
    const CHUNKS: usize = if K { 9 } else { 5 };
    const OFFSET: i32 = if SYM { 16 } else { 0 };
    const AFFINE: bool = !SYM;
    const KQ: bool = K;
    fn chunk(b: usize) -> usize {
        affine_chunks(true, K, b).0
    }
    fn kq_chunk(b: usize) -> usize {
        affine_chunks(true, K, b).1
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        // SAFETY: the block has 5 chunks (the caller's contract).
        let h = vreinterpretq_u32_u8(unsafe { vld1q_u8(w.add(CHUNK * 4)) });
        let five = vdupq_n_u8(0x10);
        // (`neg` is 0 but with `SYM`.)
        let mut acc: [[int32x4_t; R]; 2] = [std::array::from_fn(|r| vdupq_n_s32(neg[r])), [vdupq_n_s32(0); R]];
        for c in 0..4 {
            // SAFETY: as above.
            let v = unsafe { vld1q_u8(w.add(CHUNK * c)) };
            // Bit c of each byte of `h` to bit 4 (the low nibbles' codes), and bit c + 4.
            let lo5 = vandq_u8(vreinterpretq_u8_u32(vshlq_u32(h, vdupq_n_s32(4 - c as i32))), five);
            let hi5 = vandq_u8(vreinterpretq_u8_u32(vshlq_u32(h, vdupq_n_s32(-(c as i32)))), five);
            let lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(v, vdupq_n_u8(0x0F)), lo5));
            let hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(v), hi5));
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                unsafe {
                    acc[0][r] = sdot_at(acc[0][r], lo, xs[r][0], c);
                    acc[1][r] = sdot_at(acc[1][r], hi, xs[r][1], c);
                }
            }
        }
        std::array::from_fn(|r| vaddq_s32(acc[0][r], acc[1][r]))
    }
}

/// 8-bit signed codes (Q8_0, int8).
struct S8;
impl BlockDot for S8 {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 0;
    fn chunk(b: usize) -> usize {
        8 * b
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        let mut acc = [[vdupq_n_s32(0); R]; 2];
        for c in 0..8 {
            // SAFETY: the block has 8 chunks (the caller's contract).
            let v = unsafe { vld1q_s8(w.add(CHUNK * c).cast()) };
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                acc[c % 2][r] = unsafe { sdot_at(acc[c % 2][r], v, xs[r][c / 4], c % 4) };
            }
        }
        std::array::from_fn(|r| vaddq_s32(acc[0][r], acc[1][r]))
    }
}

/// Q6_K widened to 8-bit codes `q - 32` (a [`Kind::Q6KSix`] panel decoded once for more than
/// one pass of rows, [`widen_q6_k_six`]) as [`S8`]'s, each half of 16 codes (chunks 0..4 and 4..8) in its
/// own accumulator, then `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 (`mul`, `mla`),
/// the sub-block scales sign-extended from the pair's scale chunk
/// ([`q6_k_chunks`](super::panels::q6_k_chunks)): the arithmetic of
/// [`generic::q8_sub16`](super::generic::q8_sub16). `CHUNKS` counts the scale chunk, which
/// follows the odd block's codes.
struct Q6;
impl BlockDot for Q6 {
    const CHUNKS: usize = 9;
    const OFFSET: i32 = 0;
    fn chunk(b: usize) -> usize {
        q6_k_chunks(b).0
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: forwarded from the caller.
        let xs = unsafe { load_x(x) };
        let mut acc = [[vdupq_n_s32(0); R]; 2];
        for c in 0..8 {
            // SAFETY: the block has 8 chunks (the caller's contract).
            let v = unsafe { vld1q_s8(w.add(CHUNK * c).cast()) };
            for r in 0..R {
                // SAFETY: FEAT_DotProd is available (the caller's contract).
                acc[c / 4][r] = unsafe { sdot_at(acc[c / 4][r], v, xs[r][c / 4], c % 4) };
            }
        }
        let (c0, sc) = q6_k_chunks(b);
        // SAFETY: the pair's scale chunk lies in the panel (the caller's contract: `CHUNKS`
        // reaches it from the odd block, and the even block's lies before that).
        let (sc0, sc1) = unsafe { sub16_scales(w.add(CHUNK * (sc - c0)), b) };
        std::array::from_fn(|r| vmlaq_s32(vmulq_s32(acc[0][r], sc0), acc[1][r], sc1))
    }
}

/// Q6_K at its 6 bits ([`Kind::Q6KSix`]): each nibble chunk's codes `q` (0..=63) joined with
/// their high 2 bits (one shift and mask from the half's chunk of high bits, see
/// [`q6_codes`]), 32 taken away from each before `sdot` (signed codes -32..=31, the values
/// [`Q6`] reads as bytes), then each half of 16 codes in its own accumulator and the sub-block
/// scales as [`Q6`]: the same integers, so the same results. `CHUNKS` counts the scale chunk,
/// which follows the odd block's codes.
struct Q6Six;
impl BlockDot for Q6Six {
    const CHUNKS: usize = 7;
    const OFFSET: i32 = 0;
    fn chunk(b: usize) -> usize {
        q6_k_six_chunks(b).0
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        // SAFETY: the block has 6 chunks (the caller's contract).
        let (h0, h1) = unsafe { (vld1q_u8(w.add(CHUNK * 4)), vld1q_u8(w.add(CHUNK * 5))) };
        let (c0, sc) = q6_k_six_chunks(b);
        // SAFETY: forwarded from the caller; the pair's scale chunk lies in the panel (as
        // `Q6`'s).
        unsafe { nibble_halves_dot(w, x, sc - c0, b, |v, c| q6_codes(v, h0, h1, c)) }
    }
}

/// The signed codes `q - 32` of nibble chunk `c` of a [`Kind::Q6KSix`] block, `[low nibbles
/// (codes 4c .. 4c + 4 of each row), high nibbles (codes 16 + 4c ..)]`, from the chunk `v`
/// and the halves' chunks of high bits `h0`, `h1` (bits `2c` and `2c + 1` of each byte, see
/// [`six_bits`](super::panels::six_bits), moved to bits 4 and 5).
#[target_feature(enable = "neon")]
#[inline]
fn q6_codes(v: uint8x16_t, h0: uint8x16_t, h1: uint8x16_t, c: usize) -> [int8x16_t; 2] {
    let (nib, top, off) = (vdupq_n_u8(0x0F), vdupq_n_u8(0x30), vdupq_n_u8(32));
    // Bits 2c and 2c + 1 to bits 4 and 5: a shift left by 4 - 2c (right by 2 for c = 3).
    let shift = vdupq_n_s8(4 - 2 * c as i8);
    let high = |h: uint8x16_t| vandq_u8(vshlq_u8(h, shift), top);
    [
        vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vandq_u8(v, nib), high(h0)), off)),
        vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(vshrq_n_u8::<4>(v), high(h1)), off)),
    ]
}

/// Panel `codes` of a [`Kind::Q6KSix`] layout (`nb` blocks) widened into `out` in [`Q6`]'s
/// layout ([`q6_k_chunks`]): per block 8 chunks of the codes `q - 32` as bytes, then each
/// pair's scale chunk as it is.
///
/// # Panics
/// If `codes` or `out` is shorter than the panel in its layout.
#[target_feature(enable = "neon")]
fn widen_q6_k_six(codes: &[u8], nb: usize, out: &mut [u8]) {
    let pairs = nb.div_ceil(2);
    assert!(codes.len() >= CHUNK * 13 * pairs && out.len() >= CHUNK * 17 * pairs);
    let chunk = |c: usize| -> uint8x16_t {
        // SAFETY: chunk `c` of the panel lies in `codes` (asserted above).
        unsafe { vld1q_u8(codes[CHUNK * c..][..CHUNK].as_ptr()) }
    };
    for b in 0..nb {
        let ((s0, ssc), (d0, dsc)) = (q6_k_six_chunks(b), q6_k_chunks(b));
        let mut put = |c: usize, v: uint8x16_t| {
            // SAFETY: chunk `c` of the widened panel lies in `out` (asserted above).
            unsafe { vst1q_u8(out[CHUNK * c..][..CHUNK].as_mut_ptr(), v) }
        };
        let (h0, h1) = (chunk(s0 + 4), chunk(s0 + 5));
        for c in 0..4 {
            let [lo, hi] = q6_codes(chunk(s0 + c), h0, h1, c);
            put(d0 + c, vreinterpretq_u8_s8(lo));
            put(d0 + 4 + c, vreinterpretq_u8_s8(hi));
        }
        if b % 2 == 1 || b + 1 == nb {
            put(dsc, chunk(ssc));
        }
    }
}

/// The sub-block scales of block `b` from its pair's scale chunk at `s` (bytes `2 (b % 2)` and
/// `2 (b % 2) + 1` of each lane), sign-extended to i32.
///
/// # Safety
/// NEON is available; 16 bytes at `s` are readable.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn sub16_scales(s: *const u8, b: usize) -> (int32x4_t, int32x4_t) {
    // SAFETY: the caller guarantees 16 readable bytes.
    let s = vreinterpretq_s32_s8(unsafe { vld1q_s8(s.cast()) });
    if b.is_multiple_of(2) {
        (
            vshrq_n_s32::<24>(vshlq_n_s32::<24>(s)),
            vshrq_n_s32::<24>(vshlq_n_s32::<16>(s)),
        )
    } else {
        (vshrq_n_s32::<24>(vshlq_n_s32::<8>(s)), vshrq_n_s32::<24>(s))
    }
}

/// Q3_K in 4 bits ([`Kind::Q3KFour`]): the codes `q + 4` (0..=7) as [`Q4`]'s nibbles, 4 taken
/// away from each before `sdot` (signed codes -4..=3), each half of 16 codes (low nibbles:
/// codes 0..16, high: 16..32) in its own accumulator, combined with the sub-block scales in
/// i32 as [`Q6`] does: the arithmetic of [`generic::q8_sub16`](super::generic::q8_sub16).
/// `CHUNKS` counts the scale chunk, which follows the odd block's codes.
struct Q3;
impl BlockDot for Q3 {
    const CHUNKS: usize = 5;
    const OFFSET: i32 = 0;
    fn chunk(b: usize) -> usize {
        q3_k_chunks(b).0
    }
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [int32x4_t; R] {
        let (nib, four) = (vdupq_n_u8(0x0F), vdupq_n_u8(4));
        let (c0, sc) = q3_k_chunks(b);
        // SAFETY: forwarded from the caller; the pair's scale chunk lies in the panel (as
        // `Q6`'s).
        unsafe {
            nibble_halves_dot(w, x, sc - c0, b, |v, _| {
                [
                    vreinterpretq_s8_u8(vsubq_u8(vandq_u8(v, nib), four)),
                    vreinterpretq_s8_u8(vsubq_u8(vshrq_n_u8::<4>(v), four)),
                ]
            })
        }
    }
}

/// The block dot product of [`Q3`] and [`Q6Six`]: for each of the block's 4 nibble chunks `v`
/// (at `w`), `codes(v, c)` gives its signed codes `[low nibbles (codes 4c .. 4c + 4 of each
/// row), high nibbles (codes 16 + 4c ..)]`; each half of 16 codes is summed in its own
/// accumulator, then `sc_0 · half_0 + sc_1 · half_1` in i32 with the sub-block scales of the
/// pair's chunk `sc` chunks past `w`.
///
/// # Safety
/// As [`BlockDot::dot`]; the chunk `sc` chunks past `w` is readable.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn nibble_halves_dot<const R: usize>(
    w: *const u8,
    x: [*const i8; R],
    sc: usize,
    b: usize,
    codes: impl Fn(uint8x16_t, usize) -> [int8x16_t; 2],
) -> [int32x4_t; R] {
    // SAFETY: forwarded from the caller.
    let xs = unsafe { load_x(x) };
    let mut acc = [[vdupq_n_s32(0); R]; 2];
    for c in 0..4 {
        // SAFETY: the block has 4 nibble chunks (the caller's contract).
        let [lo, hi] = codes(unsafe { vld1q_u8(w.add(CHUNK * c)) }, c);
        for r in 0..R {
            // SAFETY: FEAT_DotProd is available (the caller's contract).
            unsafe {
                acc[0][r] = sdot_at(acc[0][r], lo, xs[r][0], c);
                acc[1][r] = sdot_at(acc[1][r], hi, xs[r][1], c);
            }
        }
    }
    // SAFETY: the scale chunk is readable (the caller's contract).
    let (sc0, sc1) = unsafe { sub16_scales(w.add(CHUNK * sc), b) };
    std::array::from_fn(|r| vmlaq_s32(vmulq_s32(acc[0][r], sc0), acc[1][r], sc1))
}

/// The 4 scales of group `g`.
///
/// # Safety
/// NEON is available.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_scales(scales: Scales<'_>, g: usize) -> float32x4_t {
    match scales {
        Scales::F16(s) => {
            let s = &s[g * ROWS..][..ROWS];
            // SAFETY: `s` has 4 u16; `fcvtl` (half to single, base NEON) reads and writes
            // registers only.
            unsafe {
                let h = vld1_u16(s.as_ptr());
                let f: float32x4_t;
                asm!("fcvtl {0:v}.4s, {1:v}.4h", out(vreg) f, in(vreg) h, options(pure, nomem, nostack));
                f
            }
        }
        Scales::F32(s) => {
            let s = &s[g * ROWS..][..ROWS];
            // SAFETY: `s` has 4 f32.
            unsafe { vld1q_f32(s.as_ptr()) }
        }
    }
}

/// Panel `p` (its codes `codes`, laid out for `D`) against activation rows `row0 .. row0 + R`
/// of `act`: `out[r][j]` is the output of weight row `4p + j` for activation row `row0 + r`.
///
/// # Safety
/// NEON and FEAT_DotProd are available; `p` is a panel of `w`, laid out for
/// [`Isa::NeonDot`]; `act` was prepared for `w` and has rows `row0 .. row0 + R`; `w.kind`
/// matches `D` (or `D` is [`Q6`] and `codes` panel `p` of a [`Kind::Q6KSix`] layout widened).
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn panel_rows<D: BlockDot, const R: usize>(
    w: &Packed,
    p: usize,
    codes: &[u8],
    act: &PackedAct<'_>,
    row0: usize,
) -> [[f32; 4]; R] {
    let nb = w.nb;
    assert!(act.a.nb == nb && act.offset == D::OFFSET && w.isa == Isa::NeonDot && row0 + R <= act.a.rows);
    let scales = w.panel_scales(p);
    let bps = w.kind.blocks_per_scale(nb);
    // Each activation row's codes, scales and block corrections, sliced once (and for the
    // affine formats `d_x · Σ x` per block).
    let rows: [_; R] = std::array::from_fn(|r| act.row(row0 + r));
    let dxsx: [&[f32]; R] = std::array::from_fn(|r| act.row_dxsx(row0 + r));
    assert!(D::AFFINE == matches!(w.kind, Kind::Affine { .. }) && (!D::AFFINE || dxsx.iter().all(|v| v.len() == nb)));
    // Q2_K: the sums of each block's halves.
    let halves: [&[[i32; 2]]; R] = std::array::from_fn(|r| act.row_halves(row0 + r));
    assert!(D::MINS == (w.kind == Kind::Q2K) && (!D::MINS || halves.iter().all(|v| v.len() == nb)));
    // `D::chunk` grows with the block, so the last block bounds every block's chunks.
    assert!(nb == 0 || CHUNK * (D::chunk(nb - 1) + D::CHUNKS) <= codes.len());
    // The K-quants' scale chunks: the last block's bounds every block's.
    assert!(!D::KQ || nb == 0 || CHUNK * (D::kq_chunk(nb - 1) + 1) <= codes.len());
    let cp = codes.as_ptr();
    let mut accf = [vdupq_n_f32(0.0); R];
    for g in 0..w.groups {
        // SAFETY: g < groups (the affine formats and Q2_K: slots 2g and 2g + 1 of 2 groups);
        // NEON is enabled here.
        let (sw, adds) = unsafe {
            if D::AFFINE || D::MINS {
                (load_scales(scales, 2 * g), load_scales(scales, 2 * g + 1))
            } else {
                (load_scales(scales, g), vdupq_n_f32(0.0))
            }
        };
        // (`b` indexes the codes, each row's scales and corrections alike.)
        #[allow(clippy::needless_range_loop)]
        for b in g * bps..nb.min((g + 1) * bps) {
            // b < nb: the block's chunks lie inside `codes` (asserted above) and its 32 codes
            // inside each row's codes (nb * 32 long).
            let wb = cp.wrapping_add(CHUNK * D::chunk(b));
            let x: [*const i8; R] = std::array::from_fn(|r| rows[r].0.as_ptr().wrapping_add(32 * b));
            let neg: [i32; R] = if D::OFFSET == 0 {
                [0; R]
            } else {
                std::array::from_fn(|r| rows[r].2[b])
            };
            // SAFETY: `wb` points at the block's D::CHUNKS chunks and each x[r] at 32 codes
            // (above); the features are enabled here.
            let dots = unsafe { D::dot::<R>(wb, b, x, neg) };
            // The K-quants: the block's scale `d · sc` and the minimum's product `dmin · m` (its
            // term negated), sc and m from the block's scale chunk.
            let (sw, adds) = if D::KQ {
                // SAFETY: the block's scale chunk lies in the panel (asserted above).
                let s = vreinterpretq_u32_u8(unsafe { vld1q_u8(cp.add(CHUNK * D::kq_chunk(b))) });
                let s = vshlq_u32(s, vdupq_n_s32(-16 * (b % 2) as i32));
                let byte = vdupq_n_u32(0xFF);
                let sc = vcvtq_f32_u32(vandq_u32(s, byte));
                let m = vcvtq_f32_u32(vandq_u32(vshrq_n_u32::<8>(s), byte));
                (vmulq_f32(sw, sc), vmulq_f32(adds, m))
            } else {
                (sw, adds)
            };
            let msums = if D::MINS {
                // SAFETY: as `dot`; b < nb, each row's halves hold nb pairs (asserted above).
                unsafe { D::mins::<R>(wb, b, std::array::from_fn(|r| halves[r][b])) }
            } else {
                [vdupq_n_s32(0); R]
            };
            for r in 0..R {
                // The generic kernel's rounding, lane by lane: (s_w · d_x) · isum, or for NF4
                // s_w · (d_x · isum), then added.
                let d = rows[r].1[b];
                let isum = vcvtq_f32_s32(dots[r]);
                let term = if D::NF4 {
                    vmulq_f32(sw, vmulq_n_f32(isum, d))
                } else {
                    vmulq_f32(isum, vmulq_n_f32(sw, d))
                };
                accf[r] = vaddq_f32(accf[r], term);
                if D::AFFINE {
                    // Then add · (d_x · Σ x), rounded apart: the generic kernel's second sum.
                    let t = vmulq_n_f32(adds, dxsx[r][b]);
                    // (The K-quants hold `dmin · m`, the term negated: taking it away rounds as
                    // adding the term does.)
                    accf[r] = if D::KQ {
                        vsubq_f32(accf[r], t)
                    } else {
                        vaddq_f32(accf[r], t)
                    };
                }
                if D::MINS {
                    // Then dmin · (d_x · msum) taken away, rounded apart: the generic kernel's
                    // second sum.
                    accf[r] = vsubq_f32(accf[r], vmulq_f32(adds, vmulq_n_f32(vcvtq_f32_s32(msums[r]), d)));
                }
            }
        }
    }
    let mut out = [[0.0f32; 4]; R];
    for (o, acc) in out.iter_mut().zip(accf) {
        // SAFETY: `o` has 4 f32.
        unsafe { vst1q_f32(o.as_mut_ptr(), acc) };
        if D::NF4 {
            for v in o.iter_mut() {
                *v /= 127.0;
            }
        }
    }
    out
}

/// Panel `p` against every activation row of `a`, up to [`PASS_ROWS`] at a time, written to
/// `y[4 i + j]`.
///
/// # Safety
/// NEON and FEAT_DotProd are available; as [`panel_rows`] for every row; `y.len() >= 4 a.rows`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn panel_all<D: BlockDot>(w: &Packed, p: usize, a: &PackedAct<'_>, y: &mut [f32]) {
    if w.kind == Kind::Q6KSix && a.a.rows > PASS_ROWS {
        // Q6_K at 6 bits for more than one pass of rows: the panel's codes decoded once, into
        // a buffer of this thread, then every pass reads them as bytes.
        thread_local! {
            static WIDE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        WIDE.with_borrow_mut(|wide| {
            // Grown once per thread (never cleared: every byte read is written first).
            let need = CHUNK * 17 * w.nb.div_ceil(2);
            if wide.len() < need {
                wide.resize(need, 0);
            }
            let wide = &mut wide[..need];
            widen_q6_k_six(w.panel_codes(p), w.nb, wide);
            // SAFETY: forwarded from the caller; `wide` holds the panel in the layout `Q6`
            // reads.
            unsafe { panel_all_in::<Q6>(w, p, wide, a, y) }
        });
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { panel_all_in::<D>(w, p, w.panel_codes(p), a, y) }
}

/// [`panel_all`] over the panel's codes `codes` (as laid out for `D`).
///
/// # Safety
/// As [`panel_all`], and as [`panel_rows`] for `codes`.
#[target_feature(enable = "neon,dotprod")]
unsafe fn panel_all_in<D: BlockDot>(w: &Packed, p: usize, codes: &[u8], a: &PackedAct<'_>, y: &mut [f32]) {
    let m = a.a.rows;
    let mut i0 = 0;
    while i0 < m {
        let rows = (m - i0).min(PASS_ROWS);
        let mut put = |out: &[[f32; 4]]| {
            for (r, lanes) in out.iter().enumerate() {
                y[ROWS * (i0 + r)..][..ROWS].copy_from_slice(lanes);
            }
        };
        // SAFETY: forwarded from the caller; rows i0 .. i0 + rows of `a` exist.
        unsafe {
            match rows {
                4 => put(&panel_rows::<D, 4>(w, p, codes, a, i0)),
                3 => put(&panel_rows::<D, 3>(w, p, codes, a, i0)),
                2 => put(&panel_rows::<D, 2>(w, p, codes, a, i0)),
                _ => put(&panel_rows::<D, 1>(w, p, codes, a, i0)),
            }
        }
        i0 += rows;
    }
}

const _: () = assert!(PASS_ROWS == 4);

/// Panel `p` of `w` against every row of `act`, written to `y[4 i + j]`.
///
/// # Panics
/// If `w` is not laid out for [`Isa::NeonDot`] on a CPU with FEAT_DotProd, or holds a kind
/// the NEON panels do not take (FP8), or `y` is shorter than `4 act.a.rows`.
pub(crate) fn panel(w: &Packed, p: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    assert!(w.isa == Isa::NeonDot && super::cpu().dotprod && p < w.n.div_ceil(ROWS) && y.len() >= ROWS * act.a.rows);
    // SAFETY: NEON and FEAT_DotProd were detected; `p` is a panel of `w`, laid out for
    // NeonDot; the caller (`panel_dispatch::panel`) checked that `act` was prepared for `w`; `y` is
    // long enough (asserted above); the kind picks the matching block dot product.
    unsafe {
        match w.kind {
            Kind::Q4_0 => panel_all::<Q4<false>>(w, p, act, y),
            Kind::Affine {
                five: false,
                k_quant: false,
            } => panel_all::<Q4<true>>(w, p, act, y),
            Kind::Affine {
                five: false,
                k_quant: true,
            } => panel_all::<Q4<true, true>>(w, p, act, y),
            Kind::Affine {
                five: true,
                k_quant: false,
            } => panel_all::<U5<false>>(w, p, act, y),
            Kind::Affine {
                five: true,
                k_quant: true,
            } => panel_all::<U5<true>>(w, p, act, y),
            Kind::Q6KSix => panel_all::<Q6Six>(w, p, act, y),
            Kind::Q3KFour => panel_all::<Q3>(w, p, act, y),
            Kind::Tq2_0 => panel_all::<Tq2>(w, p, act, y),
            Kind::Q2K => panel_all::<Q2>(w, p, act, y),
            Kind::Q5_0 => panel_all::<U5<false, true>>(w, p, act, y),
            Kind::Q8_0 | Kind::Int8 { .. } => panel_all::<S8>(w, p, act, y),
            Kind::Nf4 { .. } => panel_all::<Nf4>(w, p, act, y),
            Kind::Iq4Nl | Kind::Iq4Xs => panel_all::<Nf4<true>>(w, p, act, y),
            Kind::Fp8 { .. } | Kind::Q6K => unreachable!("no NEON panel layout for {:?}", w.kind),
        }
    }
}
