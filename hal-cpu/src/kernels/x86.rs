//! x86_64 kernels: AVX2 + FMA + F16C (every x86 CPU since Haswell / Zen 1).
//!
//! Weights are decoded 32 at a time in registers: integer codes for the q8 path
//! (`vpmaddubsw` on |w| and sign-adjusted activations, as ggml does), or f32 vectors for the
//! exact path, used for up to `MAX_ROWS` activation rows before the next block is read. On the
//! exact path each value is rounded as the format's decoder rounds it (`d · q`, Q4_1's
//! `d · q + m`, the K-quants' `(d · sc) · q - dmin · m`), so only the order of the sums differs
//! from the reference; formats without such a decoder here take [`ChunkedRow`]'s.

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _mm256_add_ps, _mm256_and_si256, _mm256_blendv_ps, _mm256_castps256_ps128,
    _mm256_castsi128_si256, _mm256_castsi256_ps, _mm256_castsi256_si128, _mm256_cmpeq_epi32, _mm256_cmpeq_epi8,
    _mm256_cmpgt_epi32, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_cvtepu8_epi16, _mm256_cvtepu8_epi32,
    _mm256_extractf128_ps, _mm256_extracti128_si256, _mm256_fmadd_ps, _mm256_inserti128_si256, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_or_si256,
    _mm256_permutevar8x32_ps, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps,
    _mm256_set_epi64x, _mm256_setzero_ps, _mm256_shuffle_epi8, _mm256_sign_epi8, _mm256_slli_epi16, _mm256_slli_epi32,
    _mm256_srl_epi16, _mm256_srli_epi16, _mm256_srli_epi32, _mm256_sub_epi8, _mm_add_ps, _mm_add_ss, _mm_and_si128,
    _mm_cvtph_ps, _mm_cvtsi32_si128, _mm_cvtss_f32, _mm_loadl_epi64, _mm_loadu_si128, _mm_movehl_ps, _mm_set1_epi8,
    _mm_shuffle_ps, _mm_srli_epi16, _mm_srli_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
};

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{ActQ8, ExactFn, Q8Fn, MAX_ROWS};
use crate::kernels::codes::{
    block_row, decode_row_into, q4_1_term, q4_k_term, ChunkedRow, NF4_I8, NF4_LEVELS, Q4_0_BLOCK_BYTES,
    Q4_1_BLOCK_BYTES, Q4_K_BLOCK_BYTES, Q5_0_BLOCK_BYTES, Q6_K_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES,
};
use crate::kernels::generic::q4_k_scale_min;

/// The exact row kernel of this set for a format (the chunked decode where none reads it in
/// registers).
pub(super) fn exact_for(format: QuantFormat) -> ExactFn {
    match format {
        QuantFormat::Q8_0 => exact_q8_0,
        QuantFormat::Q4_0 => exact_q4_0,
        QuantFormat::Q5_0 => exact_q5_0,
        QuantFormat::Q4_1 => exact_q4_1,
        QuantFormat::Q4K => exact_q4_k,
        QuantFormat::Q6K => exact_q6_k,
        QuantFormat::Int8PerChannel => exact_int8_channel,
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => exact_int8_block,
        QuantFormat::Tq2_0 => exact_tq2_0,
        QuantFormat::Nf4 { .. } => exact_nf4,
        QuantFormat::Fp8E4M3 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => exact_e4m3,
        QuantFormat::Fp8E5M2 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => exact_e5m2,
        _ => exact_chunked,
    }
}

/// The int8-activation row kernel of this set for a format, where it has one.
pub(super) fn q8_for(format: QuantFormat) -> Option<Q8Fn> {
    match format {
        QuantFormat::Q8_0 => Some(q8_q8_0),
        QuantFormat::Q4_0 => Some(q8_q4_0),
        QuantFormat::Tq2_0 => Some(q8_tq2_0),
        QuantFormat::Int8PerChannel => Some(q8_int8_channel),
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => Some(q8_int8_block),
        QuantFormat::Nf4 { block_size, .. } if block_size.is_multiple_of(32) => Some(q8_nf4),
        QuantFormat::Q4_1 => Some(q8_q4_1),
        QuantFormat::Q5_0 => Some(q8_q5_0),
        QuantFormat::Q4K => Some(q8_q4_k),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Weight rows as blocks of 32 values.

/// One weight row read 32 values at a time.
pub(super) trait Row {
    /// Blocks of 32 that lie entirely inside the row.
    fn full_blocks(&self) -> usize;
    /// Codes of full block `b` as 32 i8 lanes, and the block's scale.
    ///
    /// # Safety
    /// AVX2 and F16C are available and `b < full_blocks()`.
    unsafe fn codes(&self, b: usize) -> (__m256i, f32);
}

/// Reads the f16 scale at `p` with F16C.
///
/// # Safety
/// F16C is available and `p` points at 2 readable bytes.
#[target_feature(enable = "f16c")]
#[inline]
pub(super) unsafe fn f16_scale(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes at `p`.
    let bits = unsafe { p.cast::<u16>().read_unaligned() };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

pub(super) struct Q8_0Row<'a>(&'a [u8]);
impl Row for Q8_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q8_0_BLOCK_BYTES
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[b * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
        // SAFETY: `blk` has 34 bytes: the f16 scale then 32 codes.
        unsafe { (_mm256_loadu_si256(blk.as_ptr().add(2).cast()), f16_scale(blk.as_ptr())) }
    }
}

pub(super) struct Q4_0Row<'a>(&'a [u8]);
impl Row for Q4_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_0_BLOCK_BYTES
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[b * Q4_0_BLOCK_BYTES..][..Q4_0_BLOCK_BYTES];
        // SAFETY: `blk` has 18 bytes: the f16 scale then 16 bytes of nibbles.
        let (v, d) = unsafe { (_mm_loadu_si128(blk.as_ptr().add(2).cast()), f16_scale(blk.as_ptr())) };
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        let q = _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
        (_mm256_sub_epi8(q, _mm256_set1_epi8(8)), d)
    }
}

/// An int8 row with one scale per row (`block == 0`) or per `block` values (a multiple of 32).
pub(super) struct Int8Row<'a> {
    codes: &'a [u8],
    scales: &'a [f32],
    blocks_per_scale: usize,
}
impl Row for Int8Row<'_> {
    fn full_blocks(&self) -> usize {
        self.codes.len() / 32
    }
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let c = &self.codes[b * 32..][..32];
        let s = self.scales[b.checked_div(self.blocks_per_scale).unwrap_or(0)];
        // SAFETY: `c` has 32 bytes.
        (unsafe { _mm256_loadu_si256(c.as_ptr().cast()) }, s)
    }
}

impl Int8Row<'_> {
    /// The codes of the partial last block, zero padded, and its scale.
    pub(super) fn tail(&self) -> Option<([u8; 32], f32)> {
        let full = self.full_blocks();
        let rest = &self.codes[full * 32..];
        if rest.is_empty() {
            return None;
        }
        let mut pad = [0u8; 32];
        pad[..rest.len()].copy_from_slice(rest);
        let s = self.scales[full.checked_div(self.blocks_per_scale).unwrap_or(0)];
        Some((pad, s))
    }
}

pub(super) fn int8_row(w: &QuantizedTensor, n: usize) -> Int8Row<'_> {
    let k = w.row_len();
    let codes = &w.data()[n * k..(n + 1) * k];
    match w.format() {
        QuantFormat::Int8PerBlock { block_size } => {
            let nbs = k.div_ceil(block_size);
            Int8Row {
                codes,
                scales: &w.scales()[n * nbs..(n + 1) * nbs],
                blocks_per_scale: block_size / 32,
            }
        }
        _ => Int8Row {
            codes,
            // Empty when K = 0 (no scales are stored then, and none is read).
            scales: w.scales().get(n..=n).unwrap_or_default(),
            blocks_per_scale: 0,
        },
    }
}

pub(super) fn q8_0_row(w: &QuantizedTensor, n: usize) -> Q8_0Row<'_> {
    Q8_0Row(block_row(w, n))
}

pub(super) fn q4_0_row(w: &QuantizedTensor, n: usize) -> Q4_0Row<'_> {
    Q4_0Row(block_row(w, n))
}

pub(super) fn q5_0_row(w: &QuantizedTensor, n: usize) -> Q5_0Row<'_> {
    Q5_0Row(block_row(w, n))
}

/// An affine format on the f32 path: `scale · q` per value from `codes`, then the block's
/// additive term `term(row, b)` added (Q4_1's `m`; Q4_K's `-(dmin · m)`, whose addition rounds
/// as the decoder's subtraction of `dmin · m`): the decoder's two roundings.
pub(super) struct AffineF32<'a, T: Row> {
    codes: T,
    row: &'a [u8],
    term: fn(&[u8], usize) -> f32,
}
pub(super) fn q4_1_f32(w: &QuantizedTensor, n: usize) -> AffineF32<'_, Q4_1Row<'_>> {
    let row = block_row(w, n);
    AffineF32 {
        codes: Q4_1Row(row),
        row,
        term: q4_1_term,
    }
}
pub(super) fn q4_k_f32(w: &QuantizedTensor, n: usize) -> AffineF32<'_, Q4KRow<'_>> {
    let row = block_row(w, n);
    AffineF32 {
        codes: Q4KRow(row),
        row,
        term: q4_k_term,
    }
}
impl<T: Row> F32Row for AffineF32<'_, T> {
    fn full_blocks(&self) -> usize {
        self.codes.full_blocks()
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        // SAFETY: b < full_blocks() (the caller's contract).
        let (q, d) = unsafe { self.codes.codes(b) };
        let t = _mm256_set1_ps((self.term)(self.row, b));
        widen_codes(q, d).map(|v| _mm256_add_ps(v, t))
    }
}

/// Q6_K on the f32 path: block `b` is sub-blocks `2 (b % 8)` and `2 (b % 8) + 1` of 16 values,
/// each value `(d · sc) · (q - 32)`, the roundings of the format's decoder. Super-block:
/// `ql` (128 bytes of low nibbles), `qh` (64 bytes of high pairs), 16 i8 scales, f16 `d`
/// (ggml-common.h `block_q6_K`).
pub(super) struct Q6KF32<'a>(&'a [u8]);
pub(super) fn q6_k_f32(w: &QuantizedTensor, n: usize) -> Q6KF32<'_> {
    Q6KF32(block_row(w, n))
}
impl F32Row for Q6KF32<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q6_K_BLOCK_BYTES * 8
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        let blk = &self.0[b / 8 * Q6_K_BLOCK_BYTES..][..Q6_K_BLOCK_BYTES];
        // Half `h` of the super-block (128 values), its 32-value part `t`: the low nibbles
        // (t < 2) or high ones of `ql[64 h + 32 (t % 2)..]`, bits `2 t` of `qh[32 h..]`.
        let (h, t) = (b % 8 / 4, b % 4);
        let ql = &blk[64 * h + 32 * (t % 2)..][..32];
        let qh = &blk[128 + 32 * h..][..32];
        // SAFETY: `ql` and `qh` have 32 bytes; `blk` has its f16 d at bytes 208..210.
        let (ql, qh, d) = unsafe {
            (
                _mm256_loadu_si256(ql.as_ptr().cast()),
                _mm256_loadu_si256(qh.as_ptr().cast()),
                f16_scale(blk[208..].as_ptr()),
            )
        };
        let nib = _mm256_set1_epi8(0x0F);
        let lo = if t < 2 {
            _mm256_and_si256(ql, nib)
        } else {
            _mm256_and_si256(_mm256_srli_epi16(ql, 4), nib)
        };
        let pair = _mm256_and_si256(
            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * t as i32)),
            _mm256_set1_epi8(3),
        );
        // Each byte's pair is at most 3: shifted by 4 within its 16-bit lane it stays in its byte.
        let q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(pair, 4)), _mm256_set1_epi8(32));
        let sc = |i: usize| d * f32::from(blk[192 + 8 * h + 2 * t + i] as i8);
        let (s0, s1) = (_mm256_set1_ps(sc(0)), _mm256_set1_ps(sc(1)));
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256(q, 1);
        let f = |v: __m128i, s: __m256| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s);
        [
            f(lo, s0),
            f(_mm_srli_si128(lo, 8), s0),
            f(hi, s1),
            f(_mm_srli_si128(hi, 8), s1),
        ]
    }
}

/// The 32 nibbles of 16 bytes as 32 u8 lanes (0..=15): byte `i`'s low nibble in lane `i`, its
/// high nibble in lane `16 + i` (the order of ggml's 4-bit blocks).
#[target_feature(enable = "avx2")]
#[inline]
fn nibbles(v: __m128i) -> __m256i {
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1)
}

/// Q4_1 rows: the codes as stored (0..=15) with the block's `d`; the block minimum `m` is added
/// apart ([`q8_q4_1`]). Block: f16 d, f16 m, 16 bytes of nibbles (ggml-common.h `block_q4_1`).
pub(super) struct Q4_1Row<'a>(&'a [u8]);
impl Row for Q4_1Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_1_BLOCK_BYTES
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[b * Q4_1_BLOCK_BYTES..][..Q4_1_BLOCK_BYTES];
        // SAFETY: `blk` has 20 bytes: d, m, then 16 bytes of nibbles.
        let (v, d) = unsafe { (_mm_loadu_si128(blk.as_ptr().add(4).cast()), f16_scale(blk.as_ptr())) };
        (nibbles(v), d)
    }
}

/// Q5_0 rows: codes `q - 16` (-16..=15) with the block's `d`. Block: f16 d, the 32 fifth bits
/// as a little-endian u32 (value `j`'s in bit `j`), 16 bytes of low nibbles in Q4_0's order
/// (ggml-common.h `block_q5_0`).
pub(super) struct Q5_0Row<'a>(&'a [u8]);
impl Row for Q5_0Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q5_0_BLOCK_BYTES
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[b * Q5_0_BLOCK_BYTES..][..Q5_0_BLOCK_BYTES];
        // SAFETY: `blk` has 22 bytes: d, 4 bytes of fifth bits, 16 bytes of nibbles.
        let (v, d) = unsafe { (_mm_loadu_si128(blk.as_ptr().add(6).cast()), f16_scale(blk.as_ptr())) };
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        // Lane `i` takes byte `i / 8` of the bits and tests bit `i % 8` of it.
        let bytes = _mm256_shuffle_epi8(
            _mm256_set1_epi32(qh as i32),
            _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0),
        );
        let bit = bit_of_lane();
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        let fifth = _mm256_and_si256(set, _mm256_set1_epi8(0x10));
        (
            _mm256_sub_epi8(_mm256_or_si256(nibbles(v), fifth), _mm256_set1_epi8(16)),
            d,
        )
    }
}

/// `1 << (i % 8)` in byte lane `i`.
#[target_feature(enable = "avx2")]
#[inline]
fn bit_of_lane() -> __m256i {
    let b = 0x8040_2010_0804_0201u64 as i64;
    _mm256_set_epi64x(b, b, b, b)
}

/// Q4_K rows: the codes of sub-block `b % 8` of super-block `b / 8` (0..=15, the low nibbles
/// of 32 bytes for even sub-blocks, the high ones for odd) with the scale `d * sc`; the
/// minimum `-(dmin * m)` is added apart ([`q8_q4_k`]). See `generic::affine_block`.
pub(super) struct Q4KRow<'a>(&'a [u8]);
impl Row for Q4KRow<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / Q4_K_BLOCK_BYTES * 8
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[b / 8 * Q4_K_BLOCK_BYTES..][..Q4_K_BLOCK_BYTES];
        let g = b % 8;
        let (sc, _) = q4_k_scale_min(&blk[4..16], g);
        let q = &blk[16 + 32 * (g / 2)..][..32];
        // SAFETY: `q` has 32 bytes; `blk` starts with the f16 d.
        let (v, d) = unsafe { (_mm256_loadu_si256(q.as_ptr().cast()), f16_scale(blk.as_ptr())) };
        let v = if g.is_multiple_of(2) {
            v
        } else {
            _mm256_srli_epi16(v, 4)
        };
        (_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), d * f32::from(sc))
    }
}

// ---------------------------------------------------------------------------------------
// The q8 path.

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// `Σ_j w[j] * x[j]` over 32 i8 lanes as 8 i32 lanes. `x` must not hold -128 (activation
/// codes are in -127..=127), so negating it by the sign of `w` cannot overflow.
#[target_feature(enable = "avx2")]
#[inline]
fn idot(aw: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let sx = _mm256_sign_epi8(x, w);
    // |w| <= 128 and |x| <= 127: each pair sum is at most 2 * 128 * 127 < i16::MAX.
    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
}

/// The integer sums `p` times the activation scale `dx`, before the weight scale: `dx · isum`
/// stays a normal float when `dx` is tiny (subnormal activations), where `dw · dx` could
/// underflow and lose every bit of precision.
#[target_feature(enable = "avx2")]
#[inline]
fn scaled(p: __m256i, dx: f32) -> __m256 {
    _mm256_mul_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dx))
}

/// # Safety
/// AVX2, FMA and F16C are available, `a` holds rows `row0 .. row0 + R` of `row`'s length,
/// `out.len() >= R`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q8_rows<const R: usize>(
    row: &impl Row,
    tail: Option<([u8; 32], f32)>,
    a: &ActQ8,
    row0: usize,
    out: &mut [f32],
) {
    let nb = a.nb;
    let qs = &a.qs[row0 * nb * 32..(row0 + R) * nb * 32];
    let ds = &a.d[row0 * nb..(row0 + R) * nb];
    let full = row.full_blocks();
    assert!(full <= nb && full + usize::from(tail.is_some()) <= nb);
    // Two chains of FMAs per row (even and odd blocks), so that one row (M = 1) is not held
    // up by the latency of a single chain; the same for every R, so a row's sums do not
    // depend on how many rows share the kernel call.
    let mut even = [_mm256_setzero_ps(); R];
    let mut odd = [_mm256_setzero_ps(); R];
    for b in 0..full {
        // SAFETY: b < full_blocks(); the features are enabled on this function.
        let (w, dw) = unsafe { row.codes(b) };
        let aw = _mm256_sign_epi8(w, w);
        let dw = _mm256_set1_ps(dw);
        let chains = if b % 2 == 0 { &mut even } else { &mut odd };
        for (r, acc) in chains.iter_mut().enumerate() {
            // SAFETY: block b of row r lies inside `qs` (b < nb, r < R).
            let x = unsafe { _mm256_loadu_si256(qs.as_ptr().add((r * nb + b) * 32).cast()) };
            let p = idot(aw, w, x);
            *acc = _mm256_fmadd_ps(scaled(p, ds[r * nb + b]), dw, *acc);
        }
    }
    let mut acc = even;
    for (a, o) in acc.iter_mut().zip(odd) {
        *a = _mm256_add_ps(*a, o);
    }
    if let Some((pad, dw)) = tail {
        // SAFETY: `pad` has 32 bytes.
        let w = unsafe { _mm256_loadu_si256(pad.as_ptr().cast()) };
        let aw = _mm256_sign_epi8(w, w);
        let dw = _mm256_set1_ps(dw);
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: block `full` of row r lies inside `qs` (full < nb, r < R).
            let x = unsafe { _mm256_loadu_si256(qs.as_ptr().add((r * nb + full) * 32).cast()) };
            let p = idot(aw, w, x);
            *acc = _mm256_fmadd_ps(scaled(p, ds[r * nb + full]), dw, *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum(acc);
    }
}

/// Dispatches on the row count.
///
/// # Safety
/// As [`q8_rows`] with `R = rows`, `1 <= rows <= MAX_ROWS`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_any(row: &impl Row, tail: Option<([u8; 32], f32)>, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            4 => q8_rows::<4>(row, tail, a, row0, out),
            3 => q8_rows::<3>(row, tail, a, row0, out),
            2 => q8_rows::<2>(row, tail, a, row0, out),
            _ => q8_rows::<1>(row, tail, a, row0, out),
        }
    }
}

const _: () = assert!(MAX_ROWS == 4);

/// # Safety
/// See [`Q8Fn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_q8_0(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&q8_0_row(w, n), None, a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_q4_0(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&q4_0_row(w, n), None, a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_int8_channel(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let row = int8_row(w, n);
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&row, row.tail(), a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`]; the block size is a multiple of 32 (checked by `q8_for`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_int8_block(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let row = int8_row(w, n);
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&row, row.tail(), a, row0, rows, out) }
}

/// `out[r] += Σ_b add(b) · (dx_b · sx_b)` for the activation rows `row0 ..`: the minimum term
/// of Q4_1 and Q4_K, with `sx` the exact sum of a block's activation codes.
fn add_minimums(add: impl Fn(usize) -> f32, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    for (r, o) in out.iter_mut().enumerate().take(rows) {
        let i = row0 + r;
        let (d, sums) = (&a.d[i * nb..(i + 1) * nb], &a.sums[i * nb..(i + 1) * nb]);
        let mut s = 0.0f32;
        for b in 0..nb {
            s += add(b) * (d[b] * sums[b] as f32);
        }
        *o += s;
    }
}

/// # Safety
/// See [`Q8Fn`]; `w` is Q4_1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_q4_1(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let row = block_row(w, n);
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&Q4_1Row(row), None, a, row0, rows, out) };
    add_minimums(|b| q4_1_term(row, b), a, row0, rows, out);
}

/// # Safety
/// See [`Q8Fn`]; `w` is Q5_0.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_q5_0(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let row = q5_0_row(w, n);
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&row, None, a, row0, rows, out) }
}

/// # Safety
/// See [`Q8Fn`]; `w` is Q4_K.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_q4_k(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let row = block_row(w, n);
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&Q4KRow(row), None, a, row0, rows, out) };
    add_minimums(|b| q4_k_term(row, b), a, row0, rows, out);
}

// ---------------------------------------------------------------------------------------
// The exact path.

/// Decodes one block of 32 values to f32 (scale applied) as 4 vectors of 8.
pub(super) trait F32Row {
    /// Blocks of 32 that lie entirely inside the row.
    fn full_blocks(&self) -> usize;
    /// Values `32b .. 32b + 32` of the row.
    ///
    /// # Safety
    /// AVX2, FMA and F16C are available and `b < full_blocks()`.
    unsafe fn values(&self, b: usize) -> [__m256; 4];
}

/// 32 i8 codes times `scale` as 4 f32 vectors.
#[target_feature(enable = "avx2")]
#[inline]
fn widen_codes(q: __m256i, scale: f32) -> [__m256; 4] {
    let s = _mm256_set1_ps(scale);
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256(q, 1);
    let f = |v: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s);
    [f(lo), f(_mm_srli_si128(lo, 8)), f(hi), f(_mm_srli_si128(hi, 8))]
}

/// Any integer-code row, widened.
pub(super) struct Widen<'a, T: Row>(pub(super) &'a T);
impl<T: Row> F32Row for Widen<'_, T> {
    fn full_blocks(&self) -> usize {
        self.0.full_blocks()
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        // SAFETY: forwarded from the caller.
        let (q, d) = unsafe { self.0.codes(b) };
        widen_codes(q, d)
    }
}

/// `out[r] = Σ_k x[r][k] * w[k]`: full blocks in registers, the rest (`k >= 32 * full`) by
/// the scalar decode of the layout contract.
///
/// # Safety
/// AVX2, FMA and F16C are available; `x` holds `R` rows of `K = w.row_len()`; `n < N`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn exact_rows<const R: usize>(row: &impl F32Row, w: &QuantizedTensor, n: usize, x: &[f32], out: &mut [f32]) {
    let k = w.row_len();
    let x = &x[..R * k];
    let full = row.full_blocks();
    assert!(full * 32 <= k);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..full {
        // SAFETY: b < full_blocks().
        let v = unsafe { row.values(b) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let p = x[r * k + 32 * b..][..32].as_ptr();
            // SAFETY: the 32 values at `p` are inside row r of `x` (32 * (b + 1) <= k).
            unsafe {
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p), v[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), v[1], acc[1]);
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(16)), v[2], acc[0]);
                acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(24)), v[3], acc[1]);
            }
        }
    }
    let tail = k - full * 32;
    let mut buf = [0.0f32; 32];
    if tail > 0 {
        decode_row_into(w, n, full * 32, &mut buf[..tail]);
    }
    for (r, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
        let mut s = hsum(_mm256_add_ps(acc[0], acc[1]));
        for (&p, &q) in x[r * k + full * 32..(r + 1) * k].iter().zip(&buf[..tail]) {
            s += p * q;
        }
        *o = s;
    }
}

/// # Safety
/// As [`exact_rows`] with `R = rows`, `1 <= rows <= MAX_ROWS`, `out.len() >= rows`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_any(row: &impl F32Row, w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            4 => exact_rows::<4>(row, w, n, x, out),
            3 => exact_rows::<3>(row, w, n, x, out),
            2 => exact_rows::<2>(row, w, n, x, out),
            _ => exact_rows::<1>(row, w, n, x, out),
        }
    }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q8_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&q8_0_row(w, n)), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q4_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&q4_0_row(w, n)), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is Q5_0.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q5_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&q5_0_row(w, n)), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is Q4_1.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q4_1(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&q4_1_f32(w, n), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is Q4_K.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q4_k(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&q4_k_f32(w, n), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; `w` is Q6_K.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_q6_k(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&q6_k_f32(w, n), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_int8_channel(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&int8_row(w, n)), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; the block size is a multiple of 32 (checked by `exact_for`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_int8_block(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&int8_row(w, n)), w, n, x, rows, out) }
}

/// A TQ2_0 row: 256-value blocks, group `g` of 32 values in 2-bit field `g % 4` of bytes
/// `32 * (g / 4) ..`, code `q - 1`.
pub(super) struct Tq2Row<'a>(&'a [u8]);
impl Row for Tq2Row<'_> {
    fn full_blocks(&self) -> usize {
        self.0.len() / TQ2_0_BLOCK_BYTES * 8
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let blk = &self.0[(b / 8) * TQ2_0_BLOCK_BYTES..][..TQ2_0_BLOCK_BYTES];
        let g = b % 8;
        // SAFETY: the 32 bytes at 32 * (g / 4) and the f16 at 64 are inside `blk`.
        let (v, d) = unsafe {
            (
                _mm256_loadu_si256(blk.as_ptr().add(32 * (g / 4)).cast()),
                f16_scale(blk.as_ptr().add(64)),
            )
        };
        let shift = _mm_cvtsi32_si128(2 * (g % 4) as i32);
        let q = _mm256_and_si256(std::arch::x86_64::_mm256_srl_epi16(v, shift), _mm256_set1_epi8(3));
        (_mm256_sub_epi8(q, _mm256_set1_epi8(1)), d)
    }
}

pub(super) fn tq2_row(w: &QuantizedTensor, n: usize) -> Tq2Row<'_> {
    Tq2Row(block_row(w, n))
}

/// # Safety
/// See [`Q8Fn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_tq2_0(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the Q8Fn contract).
    unsafe { q8_any(&tq2_row(w, n), None, a, row0, rows, out) }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_tq2_0(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Widen(&tq2_row(w, n)), w, n, x, rows, out) }
}

/// An NF4 row whose start is 32-aligned in the flattened tensor (`K % 32 == 0`), so each group
/// of 32 lies inside one absmax block (block sizes are powers of two ≥ 32).
pub(super) struct Nf4Row<'a> {
    bytes: &'a [u8],
    scales: &'a [f32],
    first: usize,
    /// log2 of the block size (a power of two).
    block_shift: u32,
}
impl F32Row for Nf4Row<'_> {
    fn full_blocks(&self) -> usize {
        <Self as Row>::full_blocks(self)
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        let src = &self.bytes[16 * b..][..16];
        // SAFETY: `src` has 16 bytes.
        let v = unsafe { _mm_loadu_si128(src.as_ptr().cast()) };
        let m = _mm_set1_epi8(0x0F);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
        let lo = _mm_and_si128(v, m);
        // Element 2i is the high nibble of byte i, element 2i + 1 the low one.
        let e0 = _mm_unpacklo_epi8(hi, lo);
        let e1 = _mm_unpackhi_epi8(hi, lo);
        // SAFETY: NF4_LEVELS has 16 values: two loads of 8.
        let (l0, l1) = unsafe {
            (
                _mm256_loadu_ps(NF4_LEVELS.as_ptr()),
                _mm256_loadu_ps(NF4_LEVELS.as_ptr().add(8)),
            )
        };
        let s = _mm256_set1_ps(self.scales[(self.first + 32 * b) >> self.block_shift]);
        let look = |c: __m128i| {
            let idx = _mm256_cvtepu8_epi32(c);
            let a = _mm256_permutevar8x32_ps(l0, idx);
            let z = _mm256_permutevar8x32_ps(l1, idx);
            let sel = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
            _mm256_mul_ps(_mm256_blendv_ps(a, z, sel), s)
        };
        [
            look(e0),
            look(_mm_srli_si128(e0, 8)),
            look(e1),
            look(_mm_srli_si128(e1, 8)),
        ]
    }
}

/// [`NF4_I8`] in both 128-bit lanes, for `vpshufb`.
static NF4_I8_X2: [i8; 32] = {
    let mut t = [0i8; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = NF4_I8[i % 16];
        i += 1;
    }
    t
};

/// The int8-activation view of an NF4 row: codes as their [`NF4_I8`] levels, the scale
/// `absmax` (the caller divides each output by 127 once, as
/// [`generic::q8_nf4`](super::generic::q8_nf4) does).
impl Row for Nf4Row<'_> {
    fn full_blocks(&self) -> usize {
        self.bytes.len() / 16
    }
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn codes(&self, b: usize) -> (__m256i, f32) {
        let src = &self.bytes[16 * b..][..16];
        // SAFETY: `src` has 16 bytes; NF4_I8_X2 has 32.
        let (v, table) = unsafe {
            (
                _mm_loadu_si128(src.as_ptr().cast()),
                _mm256_loadu_si256(NF4_I8_X2.as_ptr().cast()),
            )
        };
        // Byte i widened to 16 bits: its high nibble (value 2i) goes to the low byte, its low
        // nibble (value 2i + 1) to the high byte, so the 32 bytes are the codes in order.
        let x = _mm256_cvtepu8_epi16(v);
        let idx = _mm256_and_si256(
            _mm256_or_si256(_mm256_srli_epi16(x, 4), _mm256_slli_epi16(x, 8)),
            _mm256_set1_epi16(0x0F0F),
        );
        let s = self.scales[(self.first + 32 * b) >> self.block_shift];
        (_mm256_shuffle_epi8(table, idx), s)
    }
}

/// # Safety
/// See [`Q8Fn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_nf4(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    match nf4_row(w, n) {
        Some(row) => {
            // SAFETY: forwarded from the caller (the Q8Fn contract).
            unsafe { q8_any(&row, None, a, row0, rows, out) };
            for o in &mut out[..rows] {
                *o /= 127.0;
            }
        }
        // Rows that start inside a block of 32 (K % 32 != 0): the scalar definition.
        None => super::generic::q8_nf4(w, n, a, row0, rows, out),
    }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_nf4(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    match nf4_row(w, n) {
        // SAFETY: forwarded from the caller (the ExactFn contract).
        Some(row) => unsafe { exact_any(&row, w, n, x, rows, out) },
        // SAFETY: forwarded from the caller (the ExactFn contract).
        None => unsafe { exact_chunked(w, n, x, rows, out) },
    }
}

/// Row `n` of an NF4 tensor whose rows are 32-aligned (`K % 32 == 0`), else `None`.
pub(super) fn nf4_row(w: &QuantizedTensor, n: usize) -> Option<Nf4Row<'_>> {
    let k = w.row_len();
    let QuantFormat::Nf4 { block_size, .. } = w.format() else {
        return None;
    };
    k.is_multiple_of(32).then(|| Nf4Row {
        bytes: &w.data()[n * k / 2..(n + 1) * k / 2],
        scales: w.scales(),
        first: n * k,
        block_shift: block_size.trailing_zeros(),
    })
}

/// An FP8 row with its scales, one per tensor (`per == 0`) or per `per` groups of 32.
pub(super) struct Fp8Row<'a, const E5M2: bool> {
    bytes: &'a [u8],
    scales: &'a [f32],
    per: usize,
}
impl<const E5M2: bool> F32Row for Fp8Row<'_, E5M2> {
    fn full_blocks(&self) -> usize {
        self.bytes.len() / 32
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        let src = &self.bytes[32 * b..][..32];
        let s = _mm256_set1_ps(self.scales[b.checked_div(self.per).unwrap_or(0)]);
        let decode = |i: usize| {
            // SAFETY: bytes 8i .. 8i + 8 are inside `src` (i < 4).
            let v = _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(src.as_ptr().add(8 * i).cast()) });
            let mag = _mm256_and_si256(v, _mm256_set1_epi32(0x7F));
            let sign = _mm256_slli_epi32(_mm256_srli_epi32(v, 7), 31);
            // The magnitude bits placed under the f32 exponent, then rebiased by a multiply:
            // exact for normals and subnormals alike.
            let (f, special, special_bits) = if E5M2 {
                let f = _mm256_mul_ps(
                    _mm256_castsi256_ps(_mm256_slli_epi32(mag, 21)),
                    _mm256_set1_ps(2f32.powi(112)),
                );
                let special = _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7B));
                let bits = _mm256_or_si256(
                    _mm256_set1_epi32(0x7F80_0000),
                    _mm256_slli_epi32(_mm256_and_si256(v, _mm256_set1_epi32(3)), 21),
                );
                (f, special, bits)
            } else {
                let f = _mm256_mul_ps(
                    _mm256_castsi256_ps(_mm256_slli_epi32(mag, 20)),
                    _mm256_set1_ps(2f32.powi(120)),
                );
                let special = _mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7F));
                (f, special, _mm256_set1_epi32(0x7FC0_0000))
            };
            let f = _mm256_blendv_ps(f, _mm256_castsi256_ps(special_bits), _mm256_castsi256_ps(special));
            let f = _mm256_castsi256_ps(_mm256_or_si256(std::arch::x86_64::_mm256_castps_si256(f), sign));
            _mm256_mul_ps(f, s)
        };
        [decode(0), decode(1), decode(2), decode(3)]
    }
}

pub(super) fn fp8_row<const E5M2: bool>(w: &QuantizedTensor, n: usize, block_size: Option<usize>) -> Fp8Row<'_, E5M2> {
    let k = w.row_len();
    let bytes = &w.data()[n * k..(n + 1) * k];
    match block_size {
        Some(b) => {
            let nbs = k.div_ceil(b);
            Fp8Row {
                bytes,
                scales: &w.scales()[n * nbs..(n + 1) * nbs],
                per: b / 32,
            }
        }
        None => Fp8Row {
            bytes,
            scales: w.scales(),
            per: 0,
        },
    }
}

/// # Safety
/// See [`ExactFn`]; the block size is `None` or a multiple of 32 (checked by `exact_for`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_e4m3(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let QuantFormat::Fp8E4M3 { block_size } = w.format() else {
        return;
    };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&fp8_row::<false>(w, n, block_size), w, n, x, rows, out) }
}

/// # Safety
/// See [`ExactFn`]; the block size is `None` or a multiple of 32 (checked by `exact_for`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_e5m2(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let QuantFormat::Fp8E5M2 { block_size } = w.format() else {
        return;
    };
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&fp8_row::<true>(w, n, block_size), w, n, x, rows, out) }
}

/// Any format: the scalar decode ([`ChunkedRow`], 256 values per call), then AVX2 dot
/// products.
pub(super) struct Chunked<'a>(pub(super) ChunkedRow<'a>);
impl F32Row for Chunked<'_> {
    fn full_blocks(&self) -> usize {
        self.0.full_blocks()
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn values(&self, b: usize) -> [__m256; 4] {
        let buf = self.0.block(b);
        // SAFETY: `buf` has 32 values.
        unsafe {
            let p = buf.as_ptr();
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        }
    }
}

/// # Safety
/// See [`ExactFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exact_chunked(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    // SAFETY: forwarded from the caller (the ExactFn contract).
    unsafe { exact_any(&Chunked(ChunkedRow::new(w, n)), w, n, x, rows, out) }
}
