//! AVX-512 VNNI kernels over weights packed in panels of 16 rows ([`Isa::Avx512Vnni`]).
//!
//! The layout is the one [`super::x86_packed`] documents, with 16 rows per panel: a chunk is
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
//! to [`generic`](super::generic)'s q8 kernels.
//!
//! Up to 8 activation rows share one pass over a panel. For up to 4 rows, each row keeps two
//! integer accumulators (even and odd chunks), so that a single row at M = 1 is not held up by
//! the latency of one chain of `vpdpbusd`.

use std::arch::x86_64::{
    __m512, __m512i, _mm256_loadu_si256, _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512, _mm512_broadcast_i32x4,
    _mm512_cvtepi32_ps, _mm512_cvtph_ps, _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps,
    _mm512_set1_epi32, _mm512_set1_epi8, _mm512_set1_ps, _mm512_setzero_si512, _mm512_shuffle_epi8, _mm512_srl_epi16,
    _mm512_srli_epi16, _mm512_storeu_ps, _mm512_xor_si512, _mm_cvtsi32_si128, _mm_loadu_si128, _mm_prefetch,
    _MM_HINT_T0,
};

use super::x86_packed::{Isa, Kind, Packed, PackedAct, Scales};
use crate::decode::NF4_I8;

/// Weight rows per panel: one per i32 lane of a 512-bit vector.
const ROWS: usize = 16;

/// One block of 32 values of a 16-row panel against `R` activation rows: the 16 lanes'
/// integer dot products, offset removed.
trait Dot {
    /// Chunks [`Dot::dot`] reads from where [`Dot::chunk`] places a block.
    const CHUNKS: usize;
    /// What is added to each code before the multiplication (removed through `neg`).
    const OFFSET: i32;
    /// The chunk the block's codes start at, relative to the panel, for block `b`.
    fn chunk(b: usize) -> usize;
    /// # Safety
    /// AVX-512 F/BW and VNNI are available; `w` points at the block's chunks (as
    /// [`Dot::chunk`] places them, 64 bytes each), each `x[r]` at 32 readable activation codes
    /// in -127..=127; `neg[r]` is `-OFFSET` times the sum of those codes.
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R];
    /// Whether the format rounds as the generic NF4 kernel does: `acc + s_w · (d_x · isum)`
    /// per block and the sum divided by 127 at the end (the levels are `127 ×` the code
    /// book's), instead of `acc + (s_w · d_x) · isum`.
    const NF4: bool = false;
}

/// Broadcasts the 4 activation codes at `p` to every 32-bit lane.
///
/// # Safety
/// 4 bytes at `p` are readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn bcast4(p: *const i8) -> __m512i {
    // SAFETY: the caller guarantees 4 readable bytes.
    _mm512_set1_epi32(unsafe { p.cast::<i32>().read_unaligned() })
}

/// Whether `R` rows keep two accumulators each (see the module docs).
const fn split(r: usize) -> bool {
    r <= 6
}

/// Accumulates `codes · x[r] (4 codes at `at`)` for every row into the accumulator of chunk
/// parity `c`.
///
/// # Safety
/// As [`Dot::dot`], and `at + 4 <= 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn step<const R: usize>(acc: &mut [[__m512i; R]; 2], c: usize, codes: __m512i, x: [*const i8; R], at: usize) {
    let slot = if split(R) { c % 2 } else { 0 };
    for r in 0..R {
        // SAFETY: `at + 4 <= 32` codes lie at x[r] (the caller's contract).
        let xb = unsafe { bcast4(x[r].add(at)) };
        acc[slot][r] = _mm512_dpbusd_epi32(acc[slot][r], codes, xb);
    }
}

/// The accumulators started for a block: `neg` in the first, zero in the second.
#[target_feature(enable = "avx512f")]
#[inline]
fn start<const R: usize>(neg: [i32; R]) -> [[__m512i; R]; 2] {
    [
        std::array::from_fn(|r| _mm512_set1_epi32(neg[r])),
        [_mm512_setzero_si512(); R],
    ]
}

/// The block sums: both accumulators added where there are two.
#[target_feature(enable = "avx512f")]
#[inline]
fn finish<const R: usize>(acc: [[__m512i; R]; 2]) -> [__m512i; R] {
    if split(R) {
        std::array::from_fn(|r| _mm512_add_epi32(acc[0][r], acc[1][r]))
    } else {
        acc[0]
    }
}

/// Q4_0: 4 chunks per block, low nibbles codes `4c ..`, high nibbles codes `16 + 4c ..`.
struct Q4;
impl Dot for Q4 {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 8;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = start(neg);
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            let lo = _mm512_and_si512(v, mask);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                step(&mut acc, 0, lo, x, 4 * c);
                step(&mut acc, 1, hi, x, 16 + 4 * c);
            }
        }
        finish(acc)
    }
}

/// NF4 (codes in Q4_0's nibble order): each code looked up in the code book's int8 levels
/// plus 128 (`vpshufb`), then as Q4_0.
struct Nf4;
impl Dot for Nf4 {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 128;
    const NF4: bool = true;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        let mask = _mm512_set1_epi8(0x0F);
        // SAFETY: NF4_U8 has 16 bytes, broadcast to each 128-bit lane.
        let lut = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(NF4_U8.as_ptr().cast()) });
        let mut acc = start(neg);
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            let lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(v, mask));
            let hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask));
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                step(&mut acc, 0, lo, x, 4 * c);
                step(&mut acc, 1, hi, x, 16 + 4 * c);
            }
        }
        finish(acc)
    }
}

/// The NF4 code book's int8 levels ([`NF4_I8`]) plus 128, as unsigned bytes.
const NF4_U8: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (NF4_I8[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// TQ2_0: per block of 32, 8 chunks of the 32 bytes that hold it, 2-bit fields at bit
/// `2 (b % 4)`.
struct Tq2;
impl Dot for Tq2 {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 1;
    fn chunk(b: usize) -> usize {
        16 * (b / 8) + 8 * ((b % 8) / 4)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        let mask = _mm512_set1_epi8(3);
        let shift = _mm_cvtsi32_si128(2 * (b % 4) as i32);
        let mut acc = start(neg);
        for c in 0..8 {
            // SAFETY: the half block has 8 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            let q = _mm512_and_si512(_mm512_srl_epi16(v, shift), mask);
            // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
            unsafe { step(&mut acc, c, q, x, 4 * c) };
        }
        finish(acc)
    }
}

/// 8-bit signed codes (Q8_0, int8), flipped to `q + 128` on the fly.
struct S8;
impl Dot for S8 {
    const CHUNKS: usize = 8;
    const OFFSET: i32 = 128;
    fn chunk(b: usize) -> usize {
        8 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut acc = start(neg);
        for c in 0..8 {
            // SAFETY: the block has 8 chunks of 64 bytes (the caller's contract).
            let v = _mm512_xor_si512(unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) }, flip);
            // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
            unsafe { step(&mut acc, c, v, x, 4 * c) };
        }
        finish(acc)
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

/// Blocks `b0 .. b1` of panel `p` against activation rows `row0 .. row0 + R` of `act`, added
/// to `acc[16 r + j]`, the running sum of weight row `16p + j` for activation row `row0 + r`
/// (blocks are added in order, so splitting the blocks into ranges rounds exactly as one pass
/// does).
///
/// # Safety
/// AVX-512 F/BW and VNNI are available; `p` is a panel of `w`, laid out for
/// [`Isa::Avx512Vnni`]; `act` was quantized from rows of `w.k` values, prepared for `w`, and
/// has rows `row0 .. row0 + R`; `w.kind` matches `D`; `b0 <= b1 <= w.nb`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn panel_rows<D: Dot, const R: usize>(
    w: &Packed,
    p: usize,
    act: &PackedAct<'_>,
    row0: usize,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    let nb = w.nb;
    assert!(act.a.nb == nb && act.offset == D::OFFSET && w.isa == Isa::Avx512Vnni);
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * ROWS);
    let codes = w.panel_codes(p);
    let scales = w.panel_scales(p);
    let bps = w.kind.blocks_per_scale(nb);
    // Each activation row's codes, scales and offset corrections, sliced once.
    let rows: [_; R] = std::array::from_fn(|r| act.row(row0 + r));
    // `D::chunk` grows with the block, so the last block bounds every block's chunks.
    assert!(b1 == 0 || 64 * (D::chunk(b1 - 1) + D::CHUNKS) <= codes.len());
    let cp = codes.as_ptr();
    // SAFETY: acc holds R rows of 16 f32 (asserted above).
    let mut accf: [__m512; R] = std::array::from_fn(|r| unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * r)) });
    for g in b0 / bps..b1.div_ceil(bps) {
        // SAFETY: g < groups; the features are enabled here.
        let sw = unsafe { load_scales(scales, g) };
        for b in b0.max(g * bps)..b1.min((g + 1) * bps) {
            // b < nb: the block's chunks lie inside `codes` (asserted above) and its 32 codes
            // inside each row's codes (nb * 32 long).
            let wb = cp.wrapping_add(64 * D::chunk(b));
            // Prefetch the codes 8 blocks ahead (a hint: any address is allowed).
            for c in 0..D::CHUNKS {
                _mm_prefetch::<_MM_HINT_T0>(wb.wrapping_add(64 * (D::CHUNKS * PREFETCH + c)).cast());
            }
            let x: [*const i8; R] = std::array::from_fn(|r| rows[r].0.as_ptr().wrapping_add(32 * b));
            // SAFETY: b < nb, and each row's corrections hold nb values (every layout here has an
            // offset, so they were computed; sliced above).
            let neg: [i32; R] = std::array::from_fn(|r| unsafe { rows[r].2.as_ptr().add(b).read() });
            // SAFETY: `wb` points at the block's D::CHUNKS chunks and each x[r] at 32 codes
            // (above).
            let dots = unsafe { D::dot::<R>(wb, b, x, neg) };
            for r in 0..R {
                // (s_w · d_x) · isum, then added: the generic kernel's rounding, lane by lane.
                // SAFETY: b < nb, and each row's scales hold nb values (sliced above).
                let d = unsafe { rows[r].1.as_ptr().add(b).read() };
                let isum = _mm512_cvtepi32_ps(dots[r]);
                let term = if D::NF4 {
                    _mm512_mul_ps(sw, _mm512_mul_ps(_mm512_set1_ps(d), isum))
                } else {
                    _mm512_mul_ps(isum, _mm512_mul_ps(sw, _mm512_set1_ps(d)))
                };
                accf[r] = _mm512_add_ps(accf[r], term);
            }
        }
    }
    for (o, a) in acc.chunks_exact_mut(ROWS).zip(accf) {
        // SAFETY: `o` has 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
}

/// Blocks ahead the codes are prefetched.
const PREFETCH: usize = 8;

/// Blocks per pass when more than 8 activation rows share a panel: the panel's codes for
/// these blocks (4 to 8 KiB) stay in L1 while every group of rows passes over them.
const K_BLOCKS: usize = 64;

/// Panel `p` against every activation row (8 at a time, then 4, then the last 1 to 3; in
/// passes of [`K_BLOCKS`] blocks when there are more than 8 rows), written to
/// `y[16 i + j]`.
///
/// # Safety
/// As [`panel_rows`] for every row of `act`; `y.len() >= 16 * m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn panel_all<D: Dot>(w: &Packed, p: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    let m = act.a.rows;
    let acc = &mut y[..m * ROWS];
    acc.fill(0.0);
    let nb = w.nb;
    let step = if m > 6 { K_BLOCKS } else { nb.max(1) };
    let mut b0 = 0;
    while b0 < nb {
        let range = (b0, nb.min(b0 + step));
        let mut i0 = 0;
        while i0 < m {
            let left = m - i0;
            let a = &mut acc[i0 * ROWS..];
            // SAFETY: forwarded from the caller; rows i0 .. i0 + (rows taken) of `act` exist,
            // and `a` holds as many accumulators.
            let taken = unsafe {
                match left {
                    6.. => {
                        panel_rows::<D, 6>(w, p, act, i0, range, a);
                        6
                    }
                    4..=5 => {
                        panel_rows::<D, 4>(w, p, act, i0, range, a);
                        4
                    }
                    3 => {
                        panel_rows::<D, 3>(w, p, act, i0, range, a);
                        3
                    }
                    2 => {
                        panel_rows::<D, 2>(w, p, act, i0, range, a);
                        2
                    }
                    _ => {
                        panel_rows::<D, 1>(w, p, act, i0, range, a);
                        1
                    }
                }
            };
            i0 += taken;
        }
        b0 = range.1;
    }
    if D::NF4 {
        for v in acc.iter_mut() {
            *v /= 127.0;
        }
    }
}

/// Panel `p` of `w` against every row of `act`; the caller ([`super::x86_packed::panel`])
/// has checked the shapes and that `w` is laid out for [`Isa::Avx512Vnni`] on a CPU that
/// runs it.
pub(super) fn panel(w: &Packed, p: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    assert!(w.isa == Isa::Avx512Vnni && super::x86::avx512_vnni() && y.len() >= ROWS * act.a.rows);
    // SAFETY: AVX-512 F/BW and VNNI were detected and `y` holds 16 outputs per activation row
    // (asserted above); the caller asserted the shapes, the panel and the activations'
    // preparation.
    unsafe {
        match w.kind {
            Kind::Q4_0 => panel_all::<Q4>(w, p, act, y),
            Kind::Tq2_0 => panel_all::<Tq2>(w, p, act, y),
            Kind::Q8_0 | Kind::Int8 { .. } => panel_all::<S8>(w, p, act, y),
            Kind::Nf4 { .. } => panel_all::<Nf4>(w, p, act, y),
        }
    }
}
