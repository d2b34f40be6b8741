//! The 8-row kernels over packed weights ([`Isa::Avx2`], [`Isa::AvxVnni`]): the layout is
//! [`super::panels`]'s with 8 rows per panel (one per 32-bit lane of a 256-bit vector).
//!
//! # Arithmetic (AVX2)
//!
//! For each activation row, 4 activation codes are broadcast to every lane and multiplied into
//! the 8 rows at once with `vpmaddubsw` (unsigned weight codes × signed activation codes), so a
//! lane ends a block holding the whole integer dot product of one weight row: no horizontal
//! sums. 4-bit and 2-bit codes are unsigned (`q + 8`, `q + 1`); their offset is removed exactly
//! through the activation block sums, and their products are summed in 16 bits (8 pairs of
//! at most `2 · 15 · 127` stay below `2^15`), so one `vpmaddwd` per block and row widens them.
//! 8-bit codes enter as `|w|` with the activations taking the sign of `w` (`vpsignb`).
//! Each block's sum is then scaled as the generic kernel does it, `(s_w · d_x) · isum` added
//! to the f32 accumulator without FMA: the results are bit-identical to
//! [`generic`](super::generic)'s q8 kernels.
//!
//! IQ4_NL is a Q4_0 layout whose nibbles index its code book: looked up with `vpshufb`, its
//! signed levels enter as 8-bit codes do. Q5_0 runs Q5_1's 5-bit kernel with an offset of 16. The affine
//! formats run Q4_0's arithmetic without the offset (Q4_1, Q4_K; Q5_1 and Q5_K with each
//! code's fifth bit put back first), and add `add · (d_x · Σ x)` per block, rounded apart; Q6_K
//! runs the 8-bit codes' arithmetic with each half block in its own accumulator, combined
//! with its sub-block scales in i32 (`vpmulld`). Q2_K's and Q3_K's half blocks are summed in
//! i16 and take their sub-block scales as `vpmaddwd`'s 16-bit multipliers.
//!
//! With AVX-VNNI the same panels are multiplied by `vpdpbusd` on 256-bit vectors, with the
//! offsets of the AVX-512 kernels (see the AVX-VNNI section below). Q4_1, Q4_K, Q6_K and
//! IQ4_NL have no AVX-VNNI kernels (no CPU here to test one): AVX-VNNI CPUs pack them for AVX2.

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi16, _mm256_add_epi32, _mm256_add_epi8, _mm256_add_ps, _mm256_and_si256,
    _mm256_broadcastsi128_si256, _mm256_cvtepi32_ps, _mm256_cvtph_ps, _mm256_dpbusd_avx_epi32, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_mullo_epi32, _mm256_or_si256,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps,
    _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_sign_epi8, _mm256_sll_epi32, _mm256_slli_epi16,
    _mm256_slli_epi32, _mm256_srai_epi16, _mm256_srai_epi32, _mm256_srl_epi16, _mm256_srl_epi32, _mm256_srli_epi16,
    _mm256_srli_epi32, _mm256_storeu_ps, _mm256_storeu_si256, _mm256_sub_epi32, _mm256_sub_ps, _mm256_xor_si256,
    _mm_cvtsi32_si128, _mm_loadu_si128, _mm_prefetch, _MM_HINT_T0,
};

use super::codes::IQ4_LEVELS;
use super::panels::{
    affine_chunks, q2_k_chunks, q3_k_chunks, q6_k_chunks, q6_k_six_chunks, Isa, Kind, Packed, PackedAct, Scales,
};

/// One block of 32 values of a panel against `R` activation rows: the 8 lanes' integer dot
/// products (offset already removed).
trait BlockDot {
    /// Chunks [`BlockDot::dot`] reads from where [`BlockDot::chunk`] places a block.
    const CHUNKS: usize;
    /// Chunks the block's codes start at, relative to the panel, for block `b`.
    fn chunk(b: usize) -> usize;
    /// # Safety
    /// AVX2 is available; `w` points at the block's chunks (as [`BlockDot::chunk`] places
    /// them), each `x[r]` at 32 readable activation codes in -127..=127.
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R];
    /// The unsigned codes' offset (`q + OFFSET` is stored), 0 for signed codes.
    const OFFSET: i32;
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
    /// Whether the block's dot products take each row's sums of its halves' activation codes
    /// ([`BlockDot::dot_halves`] runs instead of [`BlockDot::dot`]; Q6_K at 6 bits).
    const HALVES: bool = false;
    /// With `HALVES`: [`BlockDot::dot`] given `s[r]`, row `r`'s sums of the block's first and
    /// last 16 activation codes.
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot_halves<const R: usize>(
        _w: *const u8,
        _b: usize,
        _x: [*const i8; R],
        _s: [[i32; 2]; R],
    ) -> [__m256i; R] {
        [_mm256_setzero_si256(); R]
    }
    /// With `MINS`: per row, `m_0 · s[r][0] + m_1 · s[r][1]` in each lane (the block's two
    /// minimums times the sums of its halves' activation codes).
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn mins<const R: usize>(_w: *const u8, _b: usize, _s: [[i32; 2]; R]) -> [__m256i; R] {
        [_mm256_setzero_si256(); R]
    }
}

/// Broadcasts the 4 activation codes at `p` to every 32-bit lane.
///
/// # Safety
/// 4 bytes at `p` are readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn bcast4(p: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes.
    _mm256_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// `acc` (i16 sums of unsigned codes times activations, two per lane) widened to i32, plus
/// `neg = -offset * Σ x`.
#[target_feature(enable = "avx2")]
#[inline]
fn finish_unsigned(acc: __m256i, neg: i32) -> __m256i {
    _mm256_add_epi32(_mm256_madd_epi16(acc, _mm256_set1_epi16(1)), _mm256_set1_epi32(neg))
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
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_si256(); R];
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
                let (xl, xh) = unsafe { (bcast4(x[r].add(4 * c)), bcast4(x[r].add(16 + 4 * c))) };
                // Codes below 16: every i16 partial sum stays within 8 · 2 · 15 · 127 < 2^15.
                acc[r] = _mm256_add_epi16(acc[r], _mm256_maddubs_epi16(lo, xl));
                acc[r] = _mm256_add_epi16(acc[r], _mm256_maddubs_epi16(hi, xh));
            }
        }
        std::array::from_fn(|r| finish_unsigned(acc[r], neg[r]))
    }
}

/// IQ4_NL: Q4_0's nibbles (the packed block is Q4_0's), each an index into the code book's
/// 16 int8 levels ([`IQ4_LEVELS`]), looked up with `vpshufb` (the table in both 128-bit
/// halves). The levels are signed (-127 ..= 113) and enter as [`S8`]'s codes do: `|w|` times
/// the activation with `w`'s sign, each pair widened to i32 at once (a pair is at most
/// `2 · 127 · 127 < 2^15`, two are not). The arithmetic of
/// [`generic::weight_block`](super::generic::weight_block) over IQ4_NL.
struct Iq4;
impl BlockDot for Iq4 {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 0;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // SAFETY: `IQ4_LEVELS` is 16 bytes.
        let lut = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(IQ4_LEVELS.as_ptr().cast()) });
        let mut acc = [_mm256_setzero_si256(); R];
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, mask));
            let hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask));
            let (alo, ahi) = (_mm256_sign_epi8(lo, lo), _mm256_sign_epi8(hi, hi));
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
                let (xl, xh) = unsafe { (bcast4(x[r].add(4 * c)), bcast4(x[r].add(16 + 4 * c))) };
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(alo, _mm256_sign_epi8(xl, lo)), ones);
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(ahi, _mm256_sign_epi8(xh, hi)), ones);
                acc[r] = _mm256_add_epi32(acc[r], _mm256_add_epi32(pl, ph));
            }
        }
        acc
    }
}

struct Tq2;
impl BlockDot for Tq2 {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 1;
    fn chunk(b: usize) -> usize {
        16 * (b / 8) + 8 * ((b % 8) / 4)
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(3);
        let shift = _mm_cvtsi32_si128(2 * (b % 4) as i32);
        let mut acc = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            // SAFETY: the half block has 8 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let q = _mm256_and_si256(_mm256_srl_epi16(v, shift), mask);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = unsafe { bcast4(x[r].add(4 * c)) };
                acc[r] = _mm256_add_epi16(acc[r], _mm256_maddubs_epi16(q, xb));
            }
        }
        std::array::from_fn(|r| finish_unsigned(acc[r], neg[r]))
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
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            // SAFETY: the block has 8 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let aw = _mm256_sign_epi8(v, v);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = _mm256_sign_epi8(unsafe { bcast4(x[r].add(4 * c)) }, v);
                // |w| <= 128, |x| <= 127: a pair is at most 2 · 128 · 127 < 2^15.
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xb), ones);
                acc[r] = _mm256_add_epi32(acc[r], p);
            }
        }
        acc
    }
}

/// Q5_1 and Q5_K: per block, 4 chunks of the codes' low nibbles in Q4_0's order and a chunk of
/// their fifth bits ([`five_bits`](super::panels::five_bits)), each code rebuilt as an unsigned
/// byte (0..=31) and multiplied as it is by `vpmaddubsw`; their minimum is added per block (see
/// [`BlockDot::AFFINE`]). A pair of products is at most `2 · 31 · 127`, so the low and the high
/// nibbles' codes sum in i16 each (4 pairs: at most 31,496) before `vpmaddwd` widens them.
/// With `SYM`, Q5_0 in the same chunks: not affine, its offset of 16 removed through `neg`.
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
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let ones = _mm256_set1_epi16(1);
        let nib = _mm256_set1_epi8(0x0F);
        let five = _mm256_set1_epi8(0x10);
        // SAFETY: the block has 5 chunks of 32 bytes (the caller's contract).
        let h = unsafe { _mm256_loadu_si256(w.add(32 * 4).cast()) };
        let mut acc = [[_mm256_setzero_si256(); R]; 2];
        for c in 0..4 {
            // SAFETY: as above.
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            // Bit c of each byte of `h` to bit 4 (the low nibbles' codes), and bit c + 4.
            let lo5 = _mm256_and_si256(_mm256_sll_epi32(h, _mm_cvtsi32_si128(4 - c as i32)), five);
            let hi5 = _mm256_and_si256(_mm256_srl_epi32(h, _mm_cvtsi32_si128(c as i32)), five);
            let lo = _mm256_or_si256(_mm256_and_si256(v, nib), lo5);
            let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), nib), hi5);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
                let (xl, xh) = unsafe { (bcast4(x[r].add(4 * c)), bcast4(x[r].add(16 + 4 * c))) };
                acc[0][r] = _mm256_add_epi16(acc[0][r], _mm256_maddubs_epi16(lo, xl));
                acc[1][r] = _mm256_add_epi16(acc[1][r], _mm256_maddubs_epi16(hi, xh));
            }
        }
        std::array::from_fn(|r| {
            let sum = _mm256_add_epi32(_mm256_madd_epi16(acc[0][r], ones), _mm256_madd_epi16(acc[1][r], ones));
            // `neg` is 0 but with `SYM`.
            _mm256_add_epi32(sum, _mm256_set1_epi32(neg[r]))
        })
    }
}

/// Q2_K: 2-bit codes in TQ2_0's arrangement ([`q2_k_chunks`]) shifted down as [`Tq2`]'s, each
/// half of 16 codes (chunks 0..4 and 4..8) in its own i16 accumulator (4 pairs of at most
/// `2 · 3 · 127`), then `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 with the 4-bit
/// scales of the block's scale chunk, and from its high nibbles the minimums
/// ([`BlockDot::mins`]): the arithmetic of [`generic::q8_q2_k`](super::generic::q8_q2_k).
/// The scales enter as 16-bit multipliers of `vpmaddwd` (each half's scale in both 16-bit
/// halves of a lane; the two minimums side by side against the halves' two activation sums),
/// so a row's block takes three `vpmaddwd` and no 32-bit multiply.
/// `CHUNKS` reaches the scale chunk from the last block of a super-block.
struct Q2;
impl Q2 {
    /// The block's scale chunk with, in each 32-bit lane, the lane's bytes `i` and `j` of the
    /// block (0: half 0's scale and minimum, 1: half 1's) widened to its low and high 16 bits.
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scale_pair<const I: u8, const J: u8>(w: *const u8, b: usize) -> __m256i {
        let (c0, sc) = q2_k_chunks(b);
        // SAFETY: the super-block's scale chunks lie in the panel (the caller's contract).
        spread_bytes::<I, J, false>(unsafe { _mm256_loadu_si256(w.add(32 * (sc - c0)).cast()) }, b)
    }
}

/// In each 32-bit lane of the scale chunk `s`, bytes `2 (b % 2) + i` and `2 (b % 2) + j`
/// (block `b`'s of the pair the chunk holds) widened to the lane's low and high 16 bits,
/// zero-extended, or with `SIGNED` sign-extended.
#[target_feature(enable = "avx2")]
#[inline]
fn spread_bytes<const I: u8, const J: u8, const SIGNED: bool>(s: __m256i, b: usize) -> __m256i {
    // The block's two bytes shifted down to bytes 0 and 1 of each lane, then spread by a
    // constant shuffle.
    let s = _mm256_srl_epi32(s, _mm_cvtsi32_si128(16 * (b % 2) as i32));
    // Lane k's control bytes (a high bit set: zero): 4k + I, none, 4k + J, none; signed, the
    // bytes land in the high halves of their 16 bits, whose arithmetic shift extends the sign.
    let lane = |k: u8| {
        i32::from_le_bytes(if SIGNED {
            [0x80, 4 * k + I, 0x80, 4 * k + J]
        } else {
            [4 * k + I, 0x80, 4 * k + J, 0x80]
        })
    };
    let pick = _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(0), lane(1), lane(2), lane(3));
    let v = _mm256_shuffle_epi8(s, pick);
    if SIGNED {
        _mm256_srai_epi16::<8>(v)
    } else {
        v
    }
}
impl BlockDot for Q2 {
    const CHUNKS: usize = 12;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    fn chunk(b: usize) -> usize {
        q2_k_chunks(b).0
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(3);
        let shift = _mm_cvtsi32_si128(2 * (b % 4) as i32);
        let mut acc = [[_mm256_setzero_si256(); R]; 2];
        for c in 0..8 {
            // SAFETY: the quarter has 8 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let q = _mm256_and_si256(_mm256_srl_epi16(v, shift), mask);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = unsafe { bcast4(x[r].add(4 * c)) };
                acc[c / 4][r] = _mm256_add_epi16(acc[c / 4][r], _mm256_maddubs_epi16(q, xb));
            }
        }
        // Each half's 4-bit scale in both 16-bit halves of every lane.
        let nib = _mm256_set1_epi16(0xF);
        // SAFETY: forwarded from the caller.
        let (sc0, sc1) = unsafe {
            (
                _mm256_and_si256(Self::scale_pair::<0, 0>(w, b), nib),
                _mm256_and_si256(Self::scale_pair::<1, 1>(w, b), nib),
            )
        };
        // |half| <= 4 · 762 and sc <= 15: the products and their sums fit i32 exactly.
        std::array::from_fn(|r| _mm256_add_epi32(_mm256_madd_epi16(acc[0][r], sc0), _mm256_madd_epi16(acc[1][r], sc1)))
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn mins<const R: usize>(w: *const u8, b: usize, s: [[i32; 2]; R]) -> [__m256i; R] {
        // The two minimums (high nibbles) as the low and high 16 bits of every lane.
        // SAFETY: forwarded from the caller.
        let m = _mm256_srli_epi16::<4>(unsafe { Self::scale_pair::<0, 1>(w, b) });
        std::array::from_fn(|r| {
            // A half's sum of 16 codes is at most 16 · 127 in magnitude: an i16.
            let pair = (s[r][0] as u16 as u32 | ((s[r][1] as u16 as u32) << 16)) as i32;
            _mm256_madd_epi16(m, _mm256_set1_epi32(pair))
        })
    }
}

/// Q6_K: 8-bit codes `q - 32` as [`S8`]'s, each half of 16 codes (chunks 0..4 and 4..8) in its
/// own accumulator, then `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 (`vpmulld`),
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
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); R]; 2];
        for c in 0..8 {
            // SAFETY: the block has 8 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let aw = _mm256_sign_epi8(v, v);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = _mm256_sign_epi8(unsafe { bcast4(x[r].add(4 * c)) }, v);
                // |w| <= 32, |x| <= 127: a pair is at most 2 · 32 · 127 < 2^15.
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xb), ones);
                acc[c / 4][r] = _mm256_add_epi32(acc[c / 4][r], p);
            }
        }
        let (c0, sc) = q6_k_chunks(b);
        // SAFETY: the pair's scale chunk lies in the panel (the caller's contract: `CHUNKS`
        // reaches it from the odd block, and the even block's lies before that).
        let s = unsafe { _mm256_loadu_si256(w.add(32 * (sc - c0)).cast()) };
        let (sc0, sc1) = q6_k_scales(s, b);
        std::array::from_fn(|r| {
            _mm256_add_epi32(_mm256_mullo_epi32(acc[0][r], sc0), _mm256_mullo_epi32(acc[1][r], sc1))
        })
    }
}

/// The sub-block scales of block `b` from its pair's scale chunk `s` (bytes `2 (b % 2)` and
/// `2 (b % 2) + 1` of each lane), sign-extended to i32.
#[target_feature(enable = "avx2")]
#[inline]
fn q6_k_scales(s: __m256i, b: usize) -> (__m256i, __m256i) {
    if b.is_multiple_of(2) {
        (
            _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(s)),
            _mm256_srai_epi32::<24>(_mm256_slli_epi32::<16>(s)),
        )
    } else {
        (
            _mm256_srai_epi32::<24>(_mm256_slli_epi32::<8>(s)),
            _mm256_srai_epi32::<24>(s),
        )
    }
}

/// Q6_K at its 6 bits ([`Kind::Q6KSix`]), or with `WIDE` the same panel widened to 8-bit
/// codes `q` ([`widen_q6_k_six`], in [`Q6`]'s chunks), which a panel takes for more than 8
/// activation rows so that its codes are decoded once rather than once per 4 rows. Each
/// nibble chunk's codes `q` (0..=63) are joined with their high 2 bits (one shift and mask from
/// the half's chunk of high bits, see [`q6_codes`]) and multiplied unsigned (`vpmaddubsw`: a
/// pair is at most 2 · 63 · 127, two chunks' pairs fit i16); each half of 16 codes (low
/// nibbles: codes 0..16, high: 16..32) is summed apart, its offset of 32 taken away through the
/// half's activation sum (`Σ (q - 32) x = Σ q x - 32 Σ x`, exactly), then
/// `isum = sc_0 · half_0 + sc_1 · half_1` in i32 as [`Q6`] forms it: the arithmetic of
/// [`generic::q8_sub16`](super::generic::q8_sub16). `CHUNKS` counts the scale chunk, which
/// follows the odd block's codes.
struct Q6Six<const WIDE: bool>;
impl<const WIDE: bool> BlockDot for Q6Six<WIDE> {
    const CHUNKS: usize = if WIDE { 9 } else { 7 };
    const OFFSET: i32 = 0;
    const HALVES: bool = true;
    fn chunk(b: usize) -> usize {
        if WIDE {
            q6_k_chunks(b).0
        } else {
            q6_k_six_chunks(b).0
        }
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(_w: *const u8, _b: usize, _x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        unreachable!("Q6_K at 6 bits needs its halves' sums (BlockDot::dot_halves)")
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot_halves<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], s: [[i32; 2]; R]) -> [__m256i; R] {
        let ones = _mm256_set1_epi16(1);
        let (c0, sc) = if WIDE { q6_k_chunks(b) } else { q6_k_six_chunks(b) };
        // SAFETY: the pair's scale chunk lies in the panel (the caller's contract: `CHUNKS`
        // reaches it from the odd block, and the even block's lies before that).
        let (sc0, sc1) = q6_k_scales(unsafe { _mm256_loadu_si256(w.add(32 * (sc - c0)).cast()) }, b);
        let mut out = [_mm256_setzero_si256(); R];
        for h in 0..2 {
            let hb = if WIDE {
                _mm256_setzero_si256()
            } else {
                // SAFETY: the block has 6 chunks of 32 bytes (8 with `WIDE`; the caller's
                // contract).
                unsafe { _mm256_loadu_si256(w.add(32 * (4 + h)).cast()) }
            };
            let mut acc = [_mm256_setzero_si256(); R];
            for pair in 0..2 {
                let mut a16 = [_mm256_setzero_si256(); R];
                for c in 2 * pair..2 * pair + 2 {
                    // SAFETY: as above.
                    let q = unsafe {
                        if WIDE {
                            _mm256_loadu_si256(w.add(32 * (4 * h + c)).cast())
                        } else {
                            let codes = q6_codes(_mm256_loadu_si256(w.add(32 * c).cast()), hb, c);
                            codes[h]
                        }
                    };
                    for r in 0..R {
                        // SAFETY: codes 16h + 4c .. 16h + 4c + 4 lie in the 32 at x[r].
                        let xb = unsafe { bcast4(x[r].add(16 * h + 4 * c)) };
                        a16[r] = _mm256_add_epi16(a16[r], _mm256_maddubs_epi16(q, xb));
                    }
                }
                for r in 0..R {
                    acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(a16[r], ones));
                }
            }
            let sch = if h == 0 { sc0 } else { sc1 };
            for r in 0..R {
                let half = _mm256_sub_epi32(acc[r], _mm256_set1_epi32(32 * s[r][h]));
                out[r] = _mm256_add_epi32(out[r], _mm256_mullo_epi32(half, sch));
            }
        }
        out
    }
}

/// The codes `q` (0..=63) of nibble chunk `c` of a [`Kind::Q6KSix`] block, `[low nibbles,
/// high nibbles]` of `v`, each with bits `2c` and `2c + 1` of each byte of `hb` moved to bits
/// 4 and 5: `hb` is one half's chunk of high bits, so only that half's entry is a code (the
/// callers take that one; the other, unused, is not computed).
#[target_feature(enable = "avx2")]
#[inline]
fn q6_codes(v: __m256i, hb: __m256i, c: usize) -> [__m256i; 2] {
    let nib = _mm256_set1_epi8(0x0F);
    let top = _mm256_set1_epi8(0x30);
    // The bits moved to bits 4 and 5 come from the same byte; the mask drops the rest.
    let t = match c {
        0 => _mm256_slli_epi16::<4>(hb),
        1 => _mm256_slli_epi16::<2>(hb),
        2 => hb,
        _ => _mm256_srli_epi16::<2>(hb),
    };
    let high = _mm256_and_si256(t, top);
    [
        _mm256_or_si256(_mm256_and_si256(v, nib), high),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(v), nib), high),
    ]
}

/// Panel `codes` of a [`Kind::Q6KSix`] layout (`nb` blocks, 8 rows) widened into `out` in
/// [`Q6`]'s chunks ([`q6_k_chunks`]): per block 8 chunks of the codes `q` as bytes (chunk `c`:
/// codes `4c .. 4c + 4`), then each pair's scale chunk as it is.
///
/// # Panics
/// If `codes` or `out` is shorter than the panel in its layout.
#[target_feature(enable = "avx2")]
fn widen_q6_k_six(codes: &[u8], nb: usize, out: &mut [u8]) {
    let pairs = nb.div_ceil(2);
    assert!(codes.len() >= 32 * 13 * pairs && out.len() >= 32 * 17 * pairs);
    for b in 0..nb {
        let ((s0, ssc), (d0, dsc)) = (q6_k_six_chunks(b), q6_k_chunks(b));
        let chunk = |c: usize| -> __m256i {
            // SAFETY: chunk `c` of the panel lies in `codes` (asserted above).
            unsafe { _mm256_loadu_si256(codes[32 * c..][..32].as_ptr().cast()) }
        };
        let mut put = |c: usize, v: __m256i| {
            // SAFETY: chunk `c` of the widened panel lies in `out` (asserted above).
            unsafe { _mm256_storeu_si256(out[32 * c..][..32].as_mut_ptr().cast(), v) }
        };
        let (h0, h1) = (chunk(s0 + 4), chunk(s0 + 5));
        for c in 0..4 {
            let v = chunk(s0 + c);
            put(d0 + c, q6_codes(v, h0, c)[0]);
            put(d0 + 4 + c, q6_codes(v, h1, c)[1]);
        }
        if b % 2 == 1 || b + 1 == nb {
            put(dsc, chunk(ssc));
        }
    }
}

/// Q3_K in 4 bits ([`Kind::Q3KFour`]): the codes `u = q + 4` (0..=7) as [`Q4`]'s nibbles, each
/// half of 16 codes (low nibbles: codes 0..16, high: 16..32) in its own i16 accumulator (4
/// pairs of at most `2 · 7 · 127`), widened by `vpmaddwd` with its signed sub-block scale as
/// the 16-bit multiplier; the offset of 4 taken away through the halves' activation sums
/// (`Σ sc (u - 4) x = Σ sc u x - 4 Σ sc x`, exactly in i32): the integers of
/// [`generic::q8_sub16`](super::generic::q8_sub16). `CHUNKS` counts the scale chunk, which
/// follows the odd block's codes.
struct Q3;
impl Q3 {
    /// The pair's scale chunk with, in each 32-bit lane, the lane's signed scale bytes `i`
    /// and `j` of block `b` (0: half 0's, 1: half 1's) widened to its low and high 16 bits.
    ///
    /// # Safety
    /// As [`BlockDot::dot`].
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scale_pair<const I: u8, const J: u8>(w: *const u8, b: usize) -> __m256i {
        let (c0, sc) = q3_k_chunks(b);
        // SAFETY: the pair's scale chunk lies in the panel (the caller's contract).
        spread_bytes::<I, J, true>(unsafe { _mm256_loadu_si256(w.add(32 * (sc - c0)).cast()) }, b)
    }
}
impl BlockDot for Q3 {
    const CHUNKS: usize = 5;
    const OFFSET: i32 = 0;
    const HALVES: bool = true;
    fn chunk(b: usize) -> usize {
        q3_k_chunks(b).0
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot<const R: usize>(_w: *const u8, _b: usize, _x: [*const i8; R], _neg: [i32; R]) -> [__m256i; R] {
        unreachable!("Q3_K in 4 bits needs its halves' sums (BlockDot::dot_halves)")
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn dot_halves<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], s: [[i32; 2]; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [[_mm256_setzero_si256(); R]; 2];
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 16 + 4c + 4 lie in the 32 at x[r].
                let (xl, xh) = unsafe { (bcast4(x[r].add(4 * c)), bcast4(x[r].add(16 + 4 * c))) };
                acc[0][r] = _mm256_add_epi16(acc[0][r], _mm256_maddubs_epi16(lo, xl));
                acc[1][r] = _mm256_add_epi16(acc[1][r], _mm256_maddubs_epi16(hi, xh));
            }
        }
        // SAFETY: forwarded from the caller.
        let (sc0, sc1, pair) = unsafe {
            (
                Self::scale_pair::<0, 0>(w, b),
                Self::scale_pair::<1, 1>(w, b),
                Self::scale_pair::<0, 1>(w, b),
            )
        };
        std::array::from_fn(|r| {
            // |4 · half sum| <= 4 · 16 · 127 fits i16; with |sc| <= 32 every product and sum
            // below is exact in i32.
            let four = ((4 * s[r][0]) as u16 as u32 | (((4 * s[r][1]) as u16 as u32) << 16)) as i32;
            let off = _mm256_madd_epi16(pair, _mm256_set1_epi32(four));
            let dot = _mm256_add_epi32(_mm256_madd_epi16(acc[0][r], sc0), _mm256_madd_epi16(acc[1][r], sc1));
            _mm256_sub_epi32(dot, off)
        })
    }
}

/// Panel `codes` of a [`Kind::Q3KFour`] layout (`nb` blocks, 8 rows) widened into `out` in
/// the layout [`Q6Six<true>`] reads ([`q6_k_chunks`]): per block 8 chunks of the codes
/// `q + 32` (Q3_K's `q` is -4..=3: `q + 32` is what Q6_K stores for the same `q`), then each
/// pair's scale chunk as it is (the same signed bytes in the same places).
///
/// # Panics
/// If `codes` or `out` is shorter than the panel in its layout.
#[target_feature(enable = "avx2")]
fn widen_q3_k_four(codes: &[u8], nb: usize, out: &mut [u8]) {
    let pairs = nb.div_ceil(2);
    assert!(codes.len() >= 32 * 9 * pairs && out.len() >= 32 * 17 * pairs);
    let (nib, add) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(28));
    for b in 0..nb {
        let ((s0, ssc), (d0, dsc)) = (q3_k_chunks(b), q6_k_chunks(b));
        let chunk = |c: usize| -> __m256i {
            // SAFETY: chunk `c` of the panel lies in `codes` (asserted above).
            unsafe { _mm256_loadu_si256(codes[32 * c..][..32].as_ptr().cast()) }
        };
        let mut put = |c: usize, v: __m256i| {
            // SAFETY: chunk `c` of the widened panel lies in `out` (asserted above).
            unsafe { _mm256_storeu_si256(out[32 * c..][..32].as_mut_ptr().cast(), v) }
        };
        for c in 0..4 {
            // Low nibbles: codes 4c .. 4c + 4; high: 16 + 4c ..; `q + 4` plus 28.
            let v = chunk(s0 + c);
            put(d0 + c, _mm256_add_epi8(_mm256_and_si256(v, nib), add));
            put(
                d0 + 4 + c,
                _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16::<4>(v), nib), add),
            );
        }
        if b % 2 == 1 || b + 1 == nb {
            put(dsc, chunk(ssc));
        }
    }
}

/// The 8 scales of group `g`.
///
/// # Safety
/// AVX2 and F16C are available.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn load_scales(scales: Scales<'_>, g: usize) -> __m256 {
    match scales {
        Scales::F16(s) => {
            let s = &s[g * 8..][..8];
            // SAFETY: `s` has 8 u16 (16 bytes).
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) })
        }
        Scales::F32(s) => {
            let s = &s[g * 8..][..8];
            // SAFETY: `s` has 8 f32.
            unsafe { _mm256_loadu_ps(s.as_ptr()) }
        }
    }
}

/// The 8-row panel kernels for one instruction set: `$rows` (panel `p` against activation
/// rows `row0 .. row0 + R` of `a`: `out[r][j]` is the output of weight row `8p + j` for
/// activation row `row0 + r`) and `$all` (every activation row of `a`, up to 4 at a time,
/// written to `y[8 i + j]`), compiled with `$feat` so that the block dot products of that set
/// inline into them.
macro_rules! panel8_kernels {
    ($rows:ident, $all:ident, $all_in:ident, $feat:literal, $isa:expr) => {
        /// # Safety
        /// The features of the set are available; `p` is a panel of `w`, laid out for its
        /// instruction set; `a` was quantized from rows of `w.k` values and has rows
        /// `row0 .. row0 + R`; `w.kind` matches `D`.
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn $rows<D: BlockDot, const R: usize>(
            w: &Packed,
            p: usize,
            codes: &[u8],
            act: &PackedAct<'_>,
            row0: usize,
        ) -> [[f32; 8]; R] {
            let nb = w.nb;
            assert!(act.a.nb == nb && act.offset == D::OFFSET && w.isa == $isa);
            let scales = w.panel_scales(p);
            let bps = w.kind.blocks_per_scale(nb);
            // Each activation row's codes, scales and block sums, sliced once (and for the
            // affine formats `d_x · Σ x` per block).
            let rows: [_; R] = std::array::from_fn(|r| act.row(row0 + r));
            let dxsx: [&[f32]; R] = std::array::from_fn(|r| act.row_dxsx(row0 + r));
            assert!(
                D::AFFINE == matches!(w.kind, Kind::Affine { .. })
                    && (!D::AFFINE || dxsx.iter().all(|v| v.len() == nb))
            );
            // Q2_K and Q6_K at 6 bits: the sums of each block's halves.
            let halves: [&[[i32; 2]]; R] = std::array::from_fn(|r| act.row_halves(row0 + r));
            assert!(D::MINS == (w.kind == Kind::Q2K) && D::HALVES == matches!(w.kind, Kind::Q6KSix | Kind::Q3KFour));
            assert!(!(D::MINS || D::HALVES) || halves.iter().all(|v| v.len() == nb));
            // `D::chunk` grows with the block, so the last block bounds every block's chunks (and
            // the K-quants' scale chunks).
            assert!(nb == 0 || 32 * (D::chunk(nb - 1) + D::CHUNKS) <= codes.len());
            assert!(!D::KQ || nb == 0 || 32 * (D::kq_chunk(nb - 1) + 1) <= codes.len());
            let cp = codes.as_ptr();
            let mut accf = [_mm256_setzero_ps(); R];
            for g in 0..w.groups {
                // SAFETY: g < groups (the affine formats and Q2_K: slots 2g and 2g + 1 of 2
                // groups); the features are enabled here.
                let (sw, adds) = unsafe {
                    if D::AFFINE || D::MINS {
                        (load_scales(scales, 2 * g), load_scales(scales, 2 * g + 1))
                    } else {
                        (load_scales(scales, g), _mm256_setzero_ps())
                    }
                };
                for b in g * bps..nb.min((g + 1) * bps) {
                    // b < nb: the block's chunks lie inside `codes` (asserted above) and its 32
                    // codes inside each row's codes (nb * 32 long).
                    let wb = cp.wrapping_add(32 * D::chunk(b));
                    // Prefetch the codes 16 blocks ahead, a line per 2 chunks (a hint: any
                    // address is allowed).
                    for c in (0..D::CHUNKS).step_by(2) {
                        _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(32 * (D::CHUNKS * 16 + c)).cast());
                    }
                    let x: [*const i8; R] = std::array::from_fn(|r| rows[r].0.as_ptr().wrapping_add(32 * b));
                    let neg: [i32; R] = if D::OFFSET == 0 {
                        [0; R]
                    } else {
                        // SAFETY: b < nb, and each row's corrections hold nb values (sliced
                        // above).
                        std::array::from_fn(|r| unsafe { rows[r].2.as_ptr().add(b).read() })
                    };
                    // SAFETY: `wb` points at the block's D::CHUNKS chunks and each x[r] at 32
                    // codes (above).
                    let dots = unsafe {
                        if D::HALVES {
                            // b < nb, each row's halves hold nb pairs (asserted above).
                            D::dot_halves::<R>(wb, b, x, std::array::from_fn(|r| halves[r][b]))
                        } else {
                            D::dot::<R>(wb, b, x, neg)
                        }
                    };
                    // The K-quants: the block's scale `d · sc` and the minimum's product
                    // `dmin · m` (its term negated), sc and m from the block's scale chunk.
                    let (sw, adds) = if D::KQ {
                        // SAFETY: the block's scale chunk lies in the panel (asserted above).
                        let s = unsafe { _mm256_loadu_si256(cp.add(32 * D::kq_chunk(b)).cast()) };
                        let s = _mm256_srl_epi32(s, _mm_cvtsi32_si128(16 * (b % 2) as i32));
                        let byte = _mm256_set1_epi32(0xFF);
                        let sc = _mm256_cvtepi32_ps(_mm256_and_si256(s, byte));
                        let m = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32::<8>(s), byte));
                        (_mm256_mul_ps(sw, sc), _mm256_mul_ps(adds, m))
                    } else {
                        (sw, adds)
                    };
                    let msums = if D::MINS {
                        // SAFETY: as `dot`; b < nb, each row's halves hold nb pairs (asserted
                        // above).
                        unsafe { D::mins::<R>(wb, b, std::array::from_fn(|r| halves[r][b])) }
                    } else {
                        [_mm256_setzero_si256(); R]
                    };
                    for r in 0..R {
                        // (s_w · d_x) · isum, then added: the generic kernel's rounding, lane by
                        // lane.
                        // SAFETY: b < nb, and each row's scales hold nb values (sliced above).
                        let d = unsafe { rows[r].1.as_ptr().add(b).read() };
                        let s = _mm256_mul_ps(sw, _mm256_set1_ps(d));
                        accf[r] = _mm256_add_ps(accf[r], _mm256_mul_ps(_mm256_cvtepi32_ps(dots[r]), s));
                        if D::AFFINE {
                            // Then add · (d_x · Σ x), rounded apart: the generic kernel's
                            // second sum.
                            let t = _mm256_mul_ps(adds, _mm256_set1_ps(dxsx[r][b]));
                            // (The K-quants hold `dmin · m`, the term negated: taking it away
                            // rounds as adding the term does.)
                            accf[r] = if D::KQ {
                                _mm256_sub_ps(accf[r], t)
                            } else {
                                _mm256_add_ps(accf[r], t)
                            };
                        }
                        if D::MINS {
                            // Then dmin · (d_x · msum) taken away, rounded apart: the generic
                            // kernel's second sum.
                            let dm = _mm256_mul_ps(_mm256_cvtepi32_ps(msums[r]), _mm256_set1_ps(d));
                            accf[r] = _mm256_sub_ps(accf[r], _mm256_mul_ps(adds, dm));
                        }
                    }
                }
            }
            let mut out = [[0.0f32; 8]; R];
            for (o, acc) in out.iter_mut().zip(accf) {
                // SAFETY: `o` has 8 f32.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
            }
            out
        }

        /// # Safety
        /// The features of the set are available; `p` is a panel of `w` (laid out for its
        /// instruction set); `a` was quantized from rows of `w.k` values; `y.len() >= 8 a.rows`.
        #[target_feature(enable = $feat)]
        unsafe fn $all<D: BlockDot>(w: &Packed, p: usize, a: &PackedAct<'_>, y: &mut [f32]) {
            let m = a.a.rows;
            if D::HALVES && m > 8 {
                // Q6_K at 6 bits and Q3_K in 4 for more than two passes of rows: the panel's
                // codes decoded once, into a buffer of this thread, then every pass reads them
                // as bytes (for one or two passes, decoding in each pass is the faster).
                thread_local! {
                    static WIDE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
                }
                WIDE.with_borrow_mut(|wide| {
                    // Grown once per thread (never cleared: every byte read is written first).
                    let need = 32 * 17 * w.nb.div_ceil(2);
                    if wide.len() < need {
                        wide.resize(need, 0);
                    }
                    let wide = &mut wide[..need];
                    if w.kind == Kind::Q3KFour {
                        widen_q3_k_four(w.panel_codes(p), w.nb, wide);
                    } else {
                        widen_q6_k_six(w.panel_codes(p), w.nb, wide);
                    }
                    // SAFETY: forwarded from the caller; `wide` holds the panel in the
                    // layout `Q6Six<true>` reads (Q3_K's codes as Q6_K's of the same value).
                    unsafe { $all_in::<Q6Six<true>>(w, p, wide, a, y) }
                });
                return;
            }
            // SAFETY: forwarded from the caller.
            unsafe { $all_in::<D>(w, p, w.panel_codes(p), a, y) }
        }

        /// [`$all`] over the panel's codes `codes` (as laid out for `D`).
        ///
        /// # Safety
        /// As `$all`.
        #[target_feature(enable = $feat)]
        unsafe fn $all_in<D: BlockDot>(w: &Packed, p: usize, codes: &[u8], a: &PackedAct<'_>, y: &mut [f32]) {
            let m = a.a.rows;
            let mut i0 = 0;
            while i0 < m {
                let rows = (m - i0).min(4);
                let mut put = |out: &[[f32; 8]]| {
                    for (r, lanes) in out.iter().enumerate() {
                        y[8 * (i0 + r)..][..8].copy_from_slice(lanes);
                    }
                };
                // SAFETY: forwarded from the caller; rows i0 .. i0 + rows of `a` exist.
                unsafe {
                    match rows {
                        4 => put(&$rows::<D, 4>(w, p, codes, a, i0)),
                        3 => put(&$rows::<D, 3>(w, p, codes, a, i0)),
                        2 => put(&$rows::<D, 2>(w, p, codes, a, i0)),
                        _ => put(&$rows::<D, 1>(w, p, codes, a, i0)),
                    }
                }
                i0 += rows;
            }
        }
    };
}

panel8_kernels!(panel_rows, panel_all, panel_all_in, "avx2,fma,f16c", Isa::Avx2);
panel8_kernels!(
    panel_rows_vnni,
    panel_all_vnni,
    panel_all_in_vnni,
    "avx2,fma,f16c,avxvnni",
    Isa::AvxVnni
);

// ---------------------------------------------------------------------------------------
// AVX-VNNI: the same 8-row panels, `vpdpbusd` on 256-bit vectors (unsigned codes times signed
// activations, 4 products summed into each i32 lane without saturation). 8-bit codes are
// flipped to `q + 128` per chunk (`xor 0x80`), every offset removed through `neg` as in the
// AVX-512 kernels; each row keeps two accumulators (even and odd chunks) so that one row is
// not held up by the latency of a single chain.

/// `acc[c % 2][r] += codes · (4 codes of x[r] at `at`)` for every row.
///
/// # Safety
/// AVX2 and AVX-VNNI are available; 4 bytes at `x[r] + at` are readable.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
unsafe fn vnni_step<const R: usize>(
    acc: &mut [[__m256i; R]; 2],
    c: usize,
    codes: __m256i,
    x: [*const i8; R],
    at: usize,
) {
    for r in 0..R {
        // SAFETY: the caller's contract.
        let xb = unsafe { bcast4(x[r].add(at)) };
        acc[c % 2][r] = _mm256_dpbusd_avx_epi32(acc[c % 2][r], codes, xb);
    }
}

/// The accumulators of a block started (`neg` in the first), and summed.
#[target_feature(enable = "avx2")]
#[inline]
fn vnni_start<const R: usize>(neg: [i32; R]) -> [[__m256i; R]; 2] {
    [
        std::array::from_fn(|r| _mm256_set1_epi32(neg[r])),
        [_mm256_setzero_si256(); R],
    ]
}

#[target_feature(enable = "avx2")]
#[inline]
fn vnni_finish<const R: usize>(acc: [[__m256i; R]; 2]) -> [__m256i; R] {
    std::array::from_fn(|r| _mm256_add_epi32(acc[0][r], acc[1][r]))
}

struct Q4Vnni;
impl BlockDot for Q4Vnni {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 8;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = vnni_start(neg);
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                vnni_step(&mut acc, 0, lo, x, 4 * c);
                vnni_step(&mut acc, 1, hi, x, 16 + 4 * c);
            }
        }
        vnni_finish(acc)
    }
}

struct Tq2Vnni;
impl BlockDot for Tq2Vnni {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 1;
    fn chunk(b: usize) -> usize {
        Tq2::chunk(b)
    }
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let mask = _mm256_set1_epi8(3);
        let shift = _mm_cvtsi32_si128(2 * (b % 4) as i32);
        let mut acc = vnni_start(neg);
        for c in 0..8 {
            // SAFETY: the half block has 8 chunks of 32 bytes (the caller's contract).
            let v = unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) };
            let q = _mm256_and_si256(_mm256_srl_epi16(v, shift), mask);
            // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
            unsafe { vnni_step(&mut acc, c, q, x, 4 * c) };
        }
        vnni_finish(acc)
    }
}

struct S8Vnni;
impl BlockDot for S8Vnni {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 128;
    fn chunk(b: usize) -> usize {
        8 * b
    }
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m256i; R] {
        let flip = _mm256_set1_epi8(i8::MIN);
        let mut acc = vnni_start(neg);
        for c in 0..8 {
            // SAFETY: the block has 8 chunks of 32 bytes (the caller's contract).
            let v = _mm256_xor_si256(unsafe { _mm256_loadu_si256(w.add(32 * c).cast()) }, flip);
            // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
            unsafe { vnni_step(&mut acc, c, v, x, 4 * c) };
        }
        vnni_finish(acc)
    }
}

/// Panel `p` of `w` (an 8-row layout) against every row of `act`, written to `y[8 i + j]`;
/// the caller ([`super::panel_dispatch::panel`]) has checked the shapes and that the layout's
/// instruction set runs here.
pub(super) fn panel(w: &Packed, p: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    assert!(y.len() >= 8 * act.a.rows && Isa::available().contains(&w.isa));
    match w.isa {
        // SAFETY: AVX2, FMA and F16C were detected (asserted above); the caller asserted the
        // shapes.
        Isa::Avx2 => unsafe {
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
                Kind::Q6K => panel_all::<Q6>(w, p, act, y),
                Kind::Q6KSix => panel_all::<Q6Six<false>>(w, p, act, y),
                Kind::Q3KFour => panel_all::<Q3>(w, p, act, y),
                Kind::Tq2_0 => panel_all::<Tq2>(w, p, act, y),
                Kind::Q2K => panel_all::<Q2>(w, p, act, y),
                Kind::Q5_0 => panel_all::<U5<false, true>>(w, p, act, y),
                Kind::Q8_0 | Kind::Int8 { .. } => panel_all::<S8>(w, p, act, y),
                Kind::Iq4Nl | Kind::Iq4Xs => panel_all::<Iq4>(w, p, act, y),
                Kind::Nf4 { .. } | Kind::Fp8 { .. } => {
                    unreachable!("NF4 and FP8 have no AVX2 layout (Kind::for_tensor)")
                }
            }
        },
        // SAFETY: AVX2, FMA, F16C and AVX-VNNI were detected (asserted above); the caller
        // asserted the shapes.
        Isa::AvxVnni => unsafe {
            match w.kind {
                Kind::Q4_0 => panel_all_vnni::<Q4Vnni>(w, p, act, y),
                Kind::Tq2_0 => panel_all_vnni::<Tq2Vnni>(w, p, act, y),
                Kind::Q8_0 | Kind::Int8 { .. } => panel_all_vnni::<S8Vnni>(w, p, act, y),
                Kind::Nf4 { .. }
                | Kind::Q5_0
                | Kind::Fp8 { .. }
                | Kind::Affine { .. }
                | Kind::Q6K
                | Kind::Q6KSix
                | Kind::Q3KFour
                | Kind::Q2K
                | Kind::Iq4Nl
                | Kind::Iq4Xs => {
                    unreachable!(
                        "NF4, FP8, Q5_0, Q4_1, Q5_1, Q2_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS have no AVX-VNNI layout (Kind::for_tensor)"
                    )
                }
            }
        },
        Isa::Avx512Vnni | Isa::NeonDot => unreachable!("{:?} layouts run elsewhere", w.isa),
    }
}
