//! The integer formats (Q4_0, Q8_0, TQ2_0, int8, NF4) on int8 activations: `vpdpbusd` over
//! 16-row panels, bit-identical to the generic q8 kernels (see the module above).

use std::arch::x86_64::{
    __m512, __m512i, _mm256_loadu_si256, _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512, _mm512_cvtepi32_ps,
    _mm512_cvtph_ps, _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_mullo_epi32,
    _mm512_or_si512, _mm512_set1_epi32, _mm512_set1_epi8, _mm512_set1_ps, _mm512_setzero_si512, _mm512_shuffle_epi8,
    _mm512_sll_epi32, _mm512_slli_epi32, _mm512_sra_epi32, _mm512_srai_epi32, _mm512_srl_epi32, _mm512_srli_epi16,
    _mm512_srli_epi32, _mm512_storeu_ps, _mm512_sub_ps, _mm512_xor_si512, _mm_cvtsi32_si128, _mm_prefetch, _MM_HINT_T0,
};

use super::super::panels::{affine_chunks, q2_k_chunks, q6_k_chunks, ActGroup, Isa, Kind, Packed, PackedAct, Scales};
use super::{block_ranges, ScaleWalk, PREFETCH_BYTES, ROWS};
use crate::kernels::codes::{IQ4_LEVELS, NF4_I8};

/// One block of 32 values of a 16-row panel against `R` activation rows: the 16 lanes'
/// integer dot products, offset removed.
trait Dot {
    /// Chunks [`Dot::dot`] reads from where [`Dot::chunk`] places a block.
    const CHUNKS: usize;
    /// The block's share of the panel's code bytes, in 64-byte lines (TQ2_0's 4 blocks share
    /// 8 chunks): the lines prefetched per block.
    const LINES: usize;
    /// What is added to each code before the multiplication (removed through `neg`).
    const OFFSET: i32;
    /// The chunk the block's codes start at, relative to the panel, for block `b`.
    fn chunk(b: usize) -> usize;
    /// # Safety
    /// AVX-512 F/BW and VNNI are available; `w` points at the block's chunks (as
    /// [`Dot::chunk`] places them, 64 bytes each, and for Q6_K its scale chunk), each `x[r]`
    /// at 32 readable activation codes in -127..=127; `neg[r]` is `-OFFSET` times the sum of
    /// those codes (with [`Dot::HALVES`], of the first 16, and `neg2[r]` of the last 16).
    unsafe fn dot<const R: usize>(
        w: *const u8,
        b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        neg2: [i32; R],
    ) -> [__m512i; R];
    /// [`Dot::dot`] for the same block of `P` panels at once, `w[q]` pointing at panel `q`'s
    /// chunks: by default one panel after the other.
    ///
    /// # Safety
    /// As [`Dot::dot`], for each `w[q]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dots<const R: usize, const P: usize>(
        w: [*const u8; P],
        b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        neg2: [i32; R],
    ) -> [[__m512i; R]; P] {
        // (Loops, not closures: a closure does not inherit the target features, and its calls
        // would not be inlined.)
        let mut out = [[_mm512_setzero_si512(); R]; P];
        for q in 0..P {
            // SAFETY: the caller's contract, panel by panel.
            out[q] = unsafe { Self::dot::<R>(w[q], b, x, neg, neg2) };
        }
        out
    }
    /// Whether the format rounds as the generic NF4 kernel does: `acc + s_w · (d_x · isum)`
    /// per block and the sum divided by 127 at the end (the levels are `127 ×` the code
    /// book's), instead of `acc + (s_w · d_x) · isum`.
    const NF4: bool = false;
    /// Whether the format is affine (Q4_1, Q4_K: values `scale · code + add`): each block
    /// also adds `add · (d_x · Σ x)` after `(s_w · d_x) · isum`, as
    /// [`generic::q8_affine`](crate::kernels::generic::q8_affine) does, and the panel's
    /// scales hold two slots per block (scales, then additive terms).
    const AFFINE: bool = false;
    /// With `AFFINE` or `MINS`: whether the scales are f16 bits (every affine layout and
    /// Q2_K's), else f32. A constant, so that the block loop holds one kind of load and no
    /// branch on the scales' type.
    const F16_SCALES: bool = false;
    /// With `AFFINE`: the K-quants (Q4_K, Q5_K), whose scale slots hold each super-block's `d`
    /// and `dmin` and whose sub-block scale and minimum are bytes of the chunk
    /// [`Dot::kq_chunk`]: a block's scale is `d · sc` and its term `-(dmin · m)`, formed in
    /// registers as [`generic::affine_block`](crate::kernels::generic::affine_block) forms
    /// them.
    const KQ: bool = false;
    /// With `KQ`: the chunk holding block `b`'s sub-block scale and minimum (bytes
    /// `2 (b % 2)` and `2 (b % 2) + 1` of each lane), relative to the panel.
    fn kq_chunk(_b: usize) -> usize {
        0
    }
    /// Whether the block's two halves of 16 codes carry their own offset corrections (Q6_K:
    /// `neg` and `neg2`).
    const HALVES: bool = false;
    /// Whether the format has minimums per half block (Q2_K: values `d · sc · q - dmin · m`):
    /// `neg` and `neg2` are then the sums of the halves' activation codes, not corrections,
    /// the scales hold two f16 slots per 256 values (`d`, `dmin`), and each block also takes
    /// away `dmin · (d_x · msum)`, `msum` from [`Dot::mins`], as
    /// [`generic::q8_q2_k`](crate::kernels::generic::q8_q2_k) does.
    const MINS: bool = false;
    /// With `MINS`: per row, `m_0 · s_0[r] + m_1 · s_1[r]` in each lane (the block's two
    /// minimums times the sums of the halves' activation codes).
    ///
    /// # Safety
    /// As [`Dot::dot`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn mins<const R: usize>(_w: *const u8, _b: usize, _s0: [i32; R], _s1: [i32; R]) -> [__m512i; R] {
        [_mm512_setzero_si512(); R]
    }
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

/// Accumulates `codes · x[r] (4 codes at `at`)` for every row into accumulator `c % 2`.
///
/// # Safety
/// As [`Dot::dot`], and `at + 4 <= 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn step<const R: usize>(acc: &mut [[__m512i; R]; 2], c: usize, codes: __m512i, x: [*const i8; R], at: usize) {
    let slot = c % 2;
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

/// The block sums: both accumulators added.
#[target_feature(enable = "avx512f")]
#[inline]
fn finish<const R: usize>(acc: [[__m512i; R]; 2]) -> [__m512i; R] {
    std::array::from_fn(|r| _mm512_add_epi32(acc[0][r], acc[1][r]))
}

/// Q4_0's nibble order: 4 chunks per block, low nibbles codes `4c ..`, high nibbles codes
/// `16 + 4c ..`. The high nibbles are not shifted down: `v & 0xF0` is 16 times the code, still
/// an unsigned byte, and its accumulator (exact multiples of 16) is shifted down once per
/// block, which saves one instruction per chunk.
///
/// With `AFFINE` the same nibbles are the unsigned codes of Q4_1 and Q4_K (no offset; their
/// minimum is added per block, see [`Dot::AFFINE`]), with `K` in Q4_K's layout ([`Dot::KQ`]).
struct Q4<const AFFINE: bool, const K: bool = false>;
impl<const AFFINE: bool, const K: bool> Dot for Q4<AFFINE, K> {
    const CHUNKS: usize = if K { 8 } else { 4 };
    const LINES: usize = if K { 5 } else { 4 };
    const OFFSET: i32 = if AFFINE { 0 } else { 8 };
    const AFFINE: bool = AFFINE;
    const F16_SCALES: bool = true;
    const KQ: bool = K;
    fn chunk(b: usize) -> usize {
        affine_chunks(false, K, b).0
    }
    fn kq_chunk(b: usize) -> usize {
        affine_chunks(false, K, b).1
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        _b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        _neg2: [i32; R],
    ) -> [__m512i; R] {
        let lo = _mm512_set1_epi8(0x0F);
        let hi = _mm512_set1_epi8(0xF0u8 as i8);
        let mut acc = start(neg);
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                step(&mut acc, 0, _mm512_and_si512(v, lo), x, 4 * c);
                step(&mut acc, 1, _mm512_and_si512(v, hi), x, 16 + 4 * c);
            }
        }
        std::array::from_fn(|r| _mm512_add_epi32(acc[0][r], _mm512_srai_epi32::<4>(acc[1][r])))
    }
}

/// Q5_1 and (with `K`) Q5_K: per block, 4 chunks of the codes' low
/// nibbles in Q4_0's order and a chunk of their fifth bits
/// ([`five_bits`](super::super::panels::five_bits)), each code rebuilt as an unsigned byte
/// (the nibble, and its fifth bit shifted to bit 4) and multiplied as it is (no offset); the
/// minimum is added per block (see [`Dot::AFFINE`]). With `SYM`, Q5_0 in the same chunks:
/// not affine, its offset of 16 removed through `neg` as Q4_0's 8 is.
struct U5<const K: bool, const SYM: bool = false>;
impl<const K: bool, const SYM: bool> Dot for U5<K, SYM> {
    const CHUNKS: usize = if K { 9 } else { 5 };
    const LINES: usize = if K { 6 } else { 5 };
    const OFFSET: i32 = if SYM { 16 } else { 0 };
    const AFFINE: bool = !SYM;
    const F16_SCALES: bool = true;
    const KQ: bool = K;
    fn chunk(b: usize) -> usize {
        affine_chunks(true, K, b).0
    }
    fn kq_chunk(b: usize) -> usize {
        affine_chunks(true, K, b).1
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        _b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        _neg2: [i32; R],
    ) -> [__m512i; R] {
        let nib = _mm512_set1_epi8(0x0F);
        let five = _mm512_set1_epi8(0x10);
        // SAFETY: the block has 5 chunks of 64 bytes (the caller's contract).
        let h = unsafe { _mm512_loadu_si512(w.add(64 * 4).cast()) };
        let mut acc = start(neg);
        for c in 0..4 {
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            // Bit c of each byte of `h` to bit 4 (the low nibbles' codes), and bit c + 4.
            let lo5 = _mm512_and_si512(_mm512_sll_epi32(h, _mm_cvtsi32_si128(4 - c as i32)), five);
            let hi5 = _mm512_and_si512(_mm512_srl_epi32(h, _mm_cvtsi32_si128(c as i32)), five);
            let lo = _mm512_or_si512(_mm512_and_si512(v, nib), lo5);
            let hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(v), nib), hi5);
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                step(&mut acc, 0, lo, x, 4 * c);
                step(&mut acc, 1, hi, x, 16 + 4 * c);
            }
        }
        finish(acc)
    }
}

/// NF4, or with `IQ4` IQ4_NL (codes in Q4_0's nibble order): each code looked up in the code
/// book's int8 levels plus 128, then as Q4_0 without the scaled high nibbles. With `VBMI`,
/// one `vpermb` over a 64-byte table (the 16 levels 4 times) looks up the low nibbles
/// straight from the codes and the high ones after a 16-bit shift, whatever the bits above
/// the nibble; without it, `vpshufb` needs the nibbles masked first. IQ4_NL's levels are its
/// values (`d` times a level), so it rounds as the other formats do ([`Dot::NF4`] false).
struct Nf4<const VBMI: bool, const IQ4: bool = false>;
impl<const VBMI: bool, const IQ4: bool> Dot for Nf4<VBMI, IQ4> {
    const CHUNKS: usize = 4;
    const LINES: usize = 4;
    const OFFSET: i32 = 128;
    const NF4: bool = !IQ4;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        _b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        _neg2: [i32; R],
    ) -> [__m512i; R] {
        let mask = _mm512_set1_epi8(0x0F);
        let table = if IQ4 { &IQ4_U8X4 } else { &NF4_U8X4 };
        // SAFETY: the table has 64 bytes.
        let lut = unsafe { _mm512_loadu_si512(table.as_ptr().cast()) };
        let mut acc = start(neg);
        for c in 0..4 {
            // SAFETY: the block has 4 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            let shifted = _mm512_srli_epi16::<4>(v);
            let (lo, hi) = if VBMI {
                // SAFETY: `VBMI` is only set where AVX-512 VBMI was detected (see `panel`).
                unsafe { (vpermb(v, lut), vpermb(shifted, lut)) }
            } else {
                (
                    _mm512_shuffle_epi8(lut, _mm512_and_si512(v, mask)),
                    _mm512_shuffle_epi8(lut, _mm512_and_si512(shifted, mask)),
                )
            };
            // SAFETY: codes 4c .. 4c + 4 and 16 + 4c .. 20 + 4c lie in the 32 at x[r].
            unsafe {
                step(&mut acc, 0, lo, x, 4 * c);
                step(&mut acc, 1, hi, x, 16 + 4 * c);
            }
        }
        finish(acc)
    }
}

/// `t[i & 63]` for every byte `i` of `idx` (`vpermb`), in inline assembly so that the kernels
/// around it need not be compiled for VBMI (CPUs with VNNI but without VBMI run them too).
///
/// # Safety
/// The CPU has AVX-512 VBMI.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn vpermb(idx: __m512i, t: __m512i) -> __m512i {
    let out: __m512i;
    // SAFETY: the caller guarantees VBMI; the instruction reads and writes registers only.
    unsafe {
        std::arch::asm!(
            "vpermb {o}, {i}, {t}",
            o = lateout(zmm_reg) out,
            i = in(zmm_reg) idx,
            t = in(zmm_reg) t,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

/// A code book's 16 int8 levels plus 128, as unsigned bytes, 4 times (one copy per 128-bit
/// lane for `vpshufb`, and every index `i & 63` for `vpermb`).
const fn u8x4(levels: &[i8; 16]) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (levels[i % 16] as i16 + 128) as u8;
        i += 1;
    }
    t
}

/// NF4's int8 levels ([`NF4_I8`]) as [`u8x4`] lays them out.
static NF4_U8X4: [u8; 64] = u8x4(&NF4_I8);

/// IQ4_NL's levels ([`IQ4_LEVELS`]) as [`u8x4`] lays them out.
static IQ4_U8X4: [u8; 64] = u8x4(&IQ4_LEVELS);

/// TQ2_0: per block of 32, 8 chunks of the 32 bytes that hold it, 2-bit fields at bit
/// `f = 2 (b % 4)`. The fields are masked in place, not shifted down: `v & (3 << f)` is
/// `2^f` times the code, still an unsigned byte, and the block's sum (exact multiples of
/// `2^f`) is shifted down once.
struct Tq2;
impl Dot for Tq2 {
    const CHUNKS: usize = 8;
    const LINES: usize = 2;
    const OFFSET: i32 = 1;
    fn chunk(b: usize) -> usize {
        16 * (b / 8) + 8 * ((b % 8) / 4)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        _neg2: [i32; R],
    ) -> [__m512i; R] {
        let f = 2 * (b % 4);
        let mask = _mm512_set1_epi8((3u8 << f) as i8);
        let mut acc = start([0; R]);
        for c in 0..8 {
            // SAFETY: the half block has 8 chunks of 64 bytes (the caller's contract).
            let v = unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) };
            // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
            unsafe { step(&mut acc, c, _mm512_and_si512(v, mask), x, 4 * c) };
        }
        let shift = _mm_cvtsi32_si128(f as i32);
        let sums = finish(acc);
        std::array::from_fn(|r| _mm512_add_epi32(_mm512_sra_epi32(sums[r], shift), _mm512_set1_epi32(neg[r])))
    }
}

/// 8-bit signed codes (Q8_0, int8), flipped to `q + 128` on the fly. Past 6 activation rows,
/// two panels share each activation broadcast ([`Dot::dots`]), which halves the broadcasts
/// and the loop's bookkeeping per `vpdpbusd`: 2 to 9 % faster at M = 128 on 4096 x 4096
/// (Q8_0, hot, 6 of 6 alternating runs against one panel per pass on the Zen 5 VM).
///
/// What bounds these kernels is the f32 scaling of each block's sums, not the loads. In a
/// one-off loop on the Zen 5 VM (not kept in the benches) of this one's `vpdpbusd`s, loads
/// and broadcasts, 8.6 G `vpdpbusd`/s ran per core; adding the scaling as done here (per row
/// and panel a `vcvtdq2ps`, two `vmulps` for `(s_w · d_x) · isum`, which share the multiplier
/// ports, and a `vaddps`), 6.2 G; with the product and the sum fused (`vmulps` + `vfmadd`),
/// 6.8 G. In this kernel the fused form was only 1 to 3 % faster, not worth the bit-identity
/// with the generic kernel.
struct S8;
impl Dot for S8 {
    const CHUNKS: usize = 8;
    const LINES: usize = 8;
    const OFFSET: i32 = 128;
    fn chunk(b: usize) -> usize {
        8 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        neg2: [i32; R],
    ) -> [__m512i; R] {
        // SAFETY: the caller's contract.
        let [sums] = unsafe { Self::dots::<R, 1>([w], b, x, neg, neg2) };
        sums
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dots<const R: usize, const P: usize>(
        w: [*const u8; P],
        _b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        _neg2: [i32; R],
    ) -> [[__m512i; R]; P] {
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut acc: [[[__m512i; R]; 2]; P] = [start(neg); P];
        for c in 0..8 {
            // One panel keeps two chains per row (the latency of `vpdpbusd`); two panels have
            // as many chains with one each, and the registers for the second panel's.
            let slot = if P == 1 { c % 2 } else { 0 };
            let mut v = [flip; P];
            for q in 0..P {
                // SAFETY: each panel's block has 8 chunks of 64 bytes (the caller's contract).
                v[q] = _mm512_xor_si512(unsafe { _mm512_loadu_si512(w[q].add(64 * c).cast()) }, flip);
            }
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = unsafe { bcast4(x[r].add(4 * c)) };
                for q in 0..P {
                    acc[q][slot][r] = _mm512_dpbusd_epi32(acc[q][slot][r], v[q], xb);
                }
            }
        }
        let mut sums = [[flip; R]; P];
        for q in 0..P {
            sums[q] = finish(acc[q]);
        }
        sums
    }
}

/// Q6_K: 8-bit codes `q - 32` flipped to `q + 96` on the fly as [`S8`]'s, each half of 16
/// codes (chunks 0..4 and 4..8) in its own accumulator started at its own offset correction,
/// then `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 (`vpmulld`; at most
/// 2 · 128 · 16 · 32 · 127 in magnitude), the sub-block scales sign-extended from the pair's
/// scale chunk ([`q6_k_chunks`]): the arithmetic of
/// [`generic::q8_sub16`](crate::kernels::generic::q8_sub16).
struct Q6;
impl Dot for Q6 {
    const CHUNKS: usize = 8;
    const LINES: usize = 9;
    const OFFSET: i32 = 128;
    const HALVES: bool = true;
    fn chunk(b: usize) -> usize {
        q6_k_chunks(b).0
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        b: usize,
        x: [*const i8; R],
        neg: [i32; R],
        neg2: [i32; R],
    ) -> [__m512i; R] {
        let flip = _mm512_set1_epi8(i8::MIN);
        let mut acc: [[__m512i; R]; 2] = [
            std::array::from_fn(|r| _mm512_set1_epi32(neg[r])),
            std::array::from_fn(|r| _mm512_set1_epi32(neg2[r])),
        ];
        for c in 0..8 {
            // SAFETY: the block has 8 chunks of 64 bytes (the caller's contract).
            let v = _mm512_xor_si512(unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) }, flip);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = unsafe { bcast4(x[r].add(4 * c)) };
                acc[c / 4][r] = _mm512_dpbusd_epi32(acc[c / 4][r], v, xb);
            }
        }
        // The scale chunk follows the odd block's codes, and the even block's 8 chunks later.
        let (c0, sc) = q6_k_chunks(b);
        // SAFETY: the pair's scale chunk lies in the panel (the caller's contract).
        let s = unsafe { _mm512_loadu_si512(w.add(64 * (sc - c0)).cast()) };
        // Bytes 2 (b % 2) and 2 (b % 2) + 1 of each lane, sign-extended.
        let (sc0, sc1) = if b.is_multiple_of(2) {
            (
                _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(s)),
                _mm512_srai_epi32::<24>(_mm512_slli_epi32::<16>(s)),
            )
        } else {
            (
                _mm512_srai_epi32::<24>(_mm512_slli_epi32::<8>(s)),
                _mm512_srai_epi32::<24>(s),
            )
        };
        std::array::from_fn(|r| {
            _mm512_add_epi32(_mm512_mullo_epi32(acc[0][r], sc0), _mm512_mullo_epi32(acc[1][r], sc1))
        })
    }
}

/// Q2_K: 2-bit codes in TQ2_0's arrangement ([`q2_k_chunks`]), masked in place as [`Tq2`]'s,
/// each half of 16 codes (chunks 0..4 and 4..8) in its own accumulator, then
/// `isum = sc_0 · half_0 + sc_1 · half_1` exactly in i32 with the 4-bit scales of the block's
/// scale chunk, and from the same chunk's high nibbles the minimums ([`Dot::mins`]): the
/// arithmetic of [`generic::q8_q2_k`](crate::kernels::generic::q8_q2_k). `CHUNKS` reaches the
/// scale chunk from the last block of a super-block; `LINES` is 3 for the 2.5 lines a block
/// takes (prefetching runs a little further ahead, never behind).
struct Q2;
impl Q2 {
    /// The block's scale chunk, shifted so that its half-block bytes are the low 16 bits of
    /// each lane.
    ///
    /// # Safety
    /// As [`Dot::dot`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn scale_bytes(w: *const u8, b: usize) -> __m512i {
        let (c0, sc) = q2_k_chunks(b);
        // SAFETY: the super-block's scale chunks lie in the panel (the caller's contract).
        let s = unsafe { _mm512_loadu_si512(w.add(64 * (sc - c0)).cast()) };
        _mm512_srl_epi32(s, _mm_cvtsi32_si128(16 * (b % 2) as i32))
    }
}
impl Dot for Q2 {
    const CHUNKS: usize = 12;
    const LINES: usize = 3;
    const OFFSET: i32 = 0;
    const MINS: bool = true;
    const F16_SCALES: bool = true;
    fn chunk(b: usize) -> usize {
        q2_k_chunks(b).0
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(
        w: *const u8,
        b: usize,
        x: [*const i8; R],
        _neg: [i32; R],
        _neg2: [i32; R],
    ) -> [__m512i; R] {
        let f = 2 * (b % 4);
        let mask = _mm512_set1_epi8((3u8 << f) as i8);
        let mut acc = [[_mm512_setzero_si512(); R]; 2];
        for c in 0..8 {
            // SAFETY: the quarter has 8 chunks of 64 bytes (the caller's contract).
            let v = _mm512_and_si512(unsafe { _mm512_loadu_si512(w.add(64 * c).cast()) }, mask);
            for r in 0..R {
                // SAFETY: codes 4c .. 4c + 4 lie in the 32 at x[r].
                let xb = unsafe { bcast4(x[r].add(4 * c)) };
                acc[c / 4][r] = _mm512_dpbusd_epi32(acc[c / 4][r], v, xb);
            }
        }
        // SAFETY: forwarded from the caller.
        let s = unsafe { Self::scale_bytes(w, b) };
        let nib = _mm512_set1_epi32(0xF);
        let (sc0, sc1) = (
            _mm512_and_si512(s, nib),
            _mm512_and_si512(_mm512_srli_epi32::<8>(s), nib),
        );
        let shift = _mm_cvtsi32_si128(f as i32);
        std::array::from_fn(|r| {
            let (h0, h1) = (_mm512_sra_epi32(acc[0][r], shift), _mm512_sra_epi32(acc[1][r], shift));
            _mm512_add_epi32(_mm512_mullo_epi32(h0, sc0), _mm512_mullo_epi32(h1, sc1))
        })
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn mins<const R: usize>(w: *const u8, b: usize, s0: [i32; R], s1: [i32; R]) -> [__m512i; R] {
        // SAFETY: forwarded from the caller.
        let s = unsafe { Self::scale_bytes(w, b) };
        let nib = _mm512_set1_epi32(0xF);
        let (m0, m1) = (
            _mm512_and_si512(_mm512_srli_epi32::<4>(s), nib),
            _mm512_and_si512(_mm512_srli_epi32::<12>(s), nib),
        );
        std::array::from_fn(|r| {
            _mm512_add_epi32(
                _mm512_mullo_epi32(m0, _mm512_set1_epi32(s0[r])),
                _mm512_mullo_epi32(m1, _mm512_set1_epi32(s1[r])),
            )
        })
    }
}

/// Blocks `b0 .. b1` of panels `p .. p + P` against the `R` activation rows of `grp`, added
/// to `acc[16 (P r + q) + j]`, the running sum of weight row `16 (p + q) + j` for activation
/// row `grp.row0 + r` (blocks are added in order, so splitting the blocks into ranges, or
/// pairing panels, rounds exactly as one pass over one panel does).
///
/// # Safety
/// AVX-512 F/BW and VNNI are available; `p .. p + P` are panels of `w`, laid out for
/// [`Isa::Avx512Vnni`]; `grp` is a group of `R` rows of activations prepared for `w`;
/// `w.kind` matches `D`; `b0 <= b1 <= w.nb`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn panel_rows<D: Dot, const R: usize, const P: usize>(
    w: &Packed,
    p: usize,
    act: &PackedAct<'_>,
    grp: &ActGroup,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    let nb = w.nb;
    assert!(act.a.nb == nb && act.offset == D::OFFSET && w.isa == Isa::Avx512Vnni);
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * P * ROWS && grp.rows == R);
    assert!(grp.qs.len() == R * nb * 32 && grp.d.len() == R * nb && grp.neg.len() == R * nb);
    assert!(D::HALVES == (w.kind == Kind::Q6K) && (!D::HALVES || grp.neg2.len() == R * nb));
    assert!(D::MINS == (w.kind == Kind::Q2K) && (!D::MINS || grp.neg2.len() == R * nb));
    assert!(D::AFFINE == matches!(w.kind, Kind::Affine { .. }) && (!D::AFFINE || grp.dxsx.len() == R * nb));
    let codes: [&[u8]; P] = std::array::from_fn(|q| w.panel_codes(p + q));
    let scales: [Scales<'_>; P] = std::array::from_fn(|q| w.panel_scales(p + q));
    let bps = w.kind.blocks_per_scale(nb);
    let (qp, dp, np) = (grp.qs.as_ptr(), grp.d.as_ptr(), grp.neg.as_ptr());
    // `D::chunk` grows with the block, so the last block bounds every block's chunks (the
    // panels are equally long).
    assert!(b1 == 0 || 64 * (D::chunk(b1 - 1) + D::CHUNKS) <= codes[0].len());
    // Q6_K's scale chunks: the last block's bounds every block's.
    assert!(!D::HALVES || b1 == 0 || 64 * (q6_k_chunks(b1 - 1).1 + 1) <= codes[0].len());
    // The affine formats' scales: two slots of 16 per block (the K-quants: per 256 values), of
    // the type `D` reads.
    let affine_slots = 2 * ROWS * if D::KQ { nb.div_ceil(8) } else { nb };
    assert!(
        !D::AFFINE
            || scales.iter().all(|s| match s {
                Scales::F16(s) => D::F16_SCALES && s.len() >= affine_slots,
                Scales::F32(s) => !D::F16_SCALES && s.len() >= affine_slots,
            })
    );
    // The K-quants' scale chunks: the last block's bounds every block's.
    assert!(!D::KQ || b1 == 0 || 64 * (D::kq_chunk(b1 - 1) + 1) <= codes[0].len());
    // Q2_K's: two f16 slots of 16 per 256 values.
    assert!(
        !D::MINS
            || (D::F16_SCALES
                && scales
                    .iter()
                    .all(|s| matches!(s, Scales::F16(s) if s.len() >= 2 * ROWS * nb.div_ceil(8))))
    );
    let (n2p, sxp) = (grp.neg2.as_ptr(), grp.dxsx.as_ptr());
    let cp = codes.map(<[u8]>::as_ptr);
    let mut accf = [[_mm512_set1_ps(0.0); P]; R];
    for (r, row) in accf.iter_mut().enumerate() {
        for (q, a) in row.iter_mut().enumerate() {
            // SAFETY: acc holds R * P runs of 16 f32 (asserted above).
            *a = unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * (P * r + q))) };
        }
    }
    if b0 == b1 {
        return;
    }
    // SAFETY: b0 < b1 <= nb, so every group the walk reads is below `groups`.
    let mut walk = unsafe { ScaleWalk::new(scales, bps, b0, b1) };
    // The scales are a second stream (a ninth of Q4_0's bytes): prefetched as far ahead, in
    // blocks, as the codes. (At the 35 to 45 GB/s this machine read while it was measured,
    // every 4-bit and 8-bit format was at the floor with or without it.)
    let sp = scales.map(|s| match s {
        Scales::F16(s) => s.as_ptr().cast::<u8>(),
        Scales::F32(s) => s.as_ptr().cast::<u8>(),
    });
    let group_bytes = match scales[0] {
        Scales::F16(_) => 2 * ROWS,
        Scales::F32(_) => 4 * ROWS,
    };
    let two_slots = D::AFFINE || D::MINS;
    let scales_ahead = PREFETCH_BYTES / (64 * D::LINES) / bps * group_bytes * if two_slots { 2 } else { 1 };
    for b in b0..b1 {
        // The affine formats: the block's scales and additive terms, slots 2b and 2b + 1;
        // Q2_K and the K-quants: their super-block's `d` and `dmin`, slots 2g and 2g + 1.
        let slot = if D::MINS || D::KQ { 2 * (b / 8) } else { 2 * b };
        let (sw, sg) = if two_slots {
            let mut sw = [_mm512_set1_ps(0.0); P];
            for q in 0..P {
                // SAFETY: slot + 1 < the slots of 16 of the type D reads (asserted above).
                sw[q] = unsafe { affine_slot::<D>(sp[q], slot) };
            }
            (sw, slot)
        } else {
            // SAFETY: the blocks are visited in order, from b0, below b1.
            (unsafe { walk.at(b) }, walk.g)
        };
        // b < nb: the block's chunks lie inside each panel's codes (asserted above) and its
        // 32 codes inside each row's codes (nb * 32 long).
        let wb = cp.map(|c| c.wrapping_add(64 * D::chunk(b)));
        // Prefetch the codes PREFETCH_BYTES ahead, each line once, and the scales (hints: any
        // address is allowed).
        for q in 0..P {
            for l in 0..D::LINES {
                _mm_prefetch::<_MM_HINT_T0>(cp[q].wrapping_add(64 * (D::LINES * b + l) + PREFETCH_BYTES).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(sp[q].wrapping_add(sg * group_bytes + scales_ahead).cast());
        }
        // The group's block b: R rows of 32 codes, then R scales and corrections (interleaved).
        let x: [*const i8; R] = std::array::from_fn(|r| qp.wrapping_add(32 * (R * b + r)));
        // SAFETY: R * b + r < R * nb = grp.neg.len() (asserted above).
        let neg: [i32; R] = std::array::from_fn(|r| unsafe { np.add(R * b + r).read() });
        let neg2: [i32; R] = if D::HALVES || D::MINS {
            // SAFETY: R * b + r < R * nb = grp.neg2.len() (asserted above).
            std::array::from_fn(|r| unsafe { n2p.add(R * b + r).read() })
        } else {
            [0; R]
        };
        // SAFETY: each `wb[q]` points at the block's D::CHUNKS chunks (and Q6_K's scale
        // chunk) and each x[r] at 32 codes (above).
        let dots = unsafe { D::dots::<R, P>(wb, b, x, neg, neg2) };
        let adds = if two_slots {
            let mut adds = [_mm512_set1_ps(0.0); P];
            for q in 0..P {
                // SAFETY: as the scales above.
                adds[q] = unsafe { affine_slot::<D>(sp[q], slot + 1) };
            }
            adds
        } else {
            [_mm512_set1_ps(0.0); P]
        };
        // The K-quants: the block's scale `d · sc` and the minimum's product `dmin · m` (its
        // term negated), sc and m from the block's scale chunk.
        let (sw, adds) = if D::KQ {
            let (mut sw, mut adds) = (sw, adds);
            for q in 0..P {
                // SAFETY: the block's scale chunk lies in the panel (asserted above).
                let s = unsafe { _mm512_loadu_si512(cp[q].add(64 * D::kq_chunk(b)).cast()) };
                let s = _mm512_srl_epi32(s, _mm_cvtsi32_si128(16 * (b % 2) as i32));
                let byte = _mm512_set1_epi32(0xFF);
                let sc = _mm512_cvtepi32_ps(_mm512_and_si512(s, byte));
                let m = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32::<8>(s), byte));
                sw[q] = _mm512_mul_ps(sw[q], sc);
                adds[q] = _mm512_mul_ps(adds[q], m);
            }
            (sw, adds)
        } else {
            (sw, adds)
        };
        let mut msums = [[_mm512_setzero_si512(); R]; P];
        if D::MINS {
            for q in 0..P {
                // SAFETY: as `dots`; `neg` and `neg2` are the halves' sums for Q2_K.
                msums[q] = unsafe { D::mins::<R>(wb[q], b, neg, neg2) };
            }
        }
        for r in 0..R {
            // (s_w · d_x) · isum, then added: the generic kernel's rounding, lane by lane.
            // SAFETY: R * b + r < R * nb = grp.d.len() (asserted above).
            let d = _mm512_set1_ps(unsafe { dp.add(R * b + r).read() });
            for q in 0..P {
                let isum = _mm512_cvtepi32_ps(dots[q][r]);
                let term = if D::NF4 {
                    _mm512_mul_ps(sw[q], _mm512_mul_ps(d, isum))
                } else {
                    _mm512_mul_ps(isum, _mm512_mul_ps(sw[q], d))
                };
                accf[r][q] = _mm512_add_ps(accf[r][q], term);
                if D::AFFINE {
                    // Then add · (d_x · Σ x), rounded apart: the generic kernel's second sum.
                    // SAFETY: R * b + r < R * nb = grp.dxsx.len() (asserted above).
                    let dxsx = _mm512_set1_ps(unsafe { sxp.add(R * b + r).read() });
                    let t = _mm512_mul_ps(adds[q], dxsx);
                    // (The K-quants hold `dmin · m`, the term negated: taking it away rounds as
                    // adding the term does.)
                    accf[r][q] = if D::KQ {
                        _mm512_sub_ps(accf[r][q], t)
                    } else {
                        _mm512_add_ps(accf[r][q], t)
                    };
                }
                if D::MINS {
                    // Then dmin · (d_x · msum) taken away, rounded apart: the generic kernel's
                    // second sum.
                    let dm = _mm512_mul_ps(_mm512_cvtepi32_ps(msums[q][r]), d);
                    accf[r][q] = _mm512_sub_ps(accf[r][q], _mm512_mul_ps(adds[q], dm));
                }
            }
        }
    }
    // (Indexed loops: a flattening iterator over the registers went through memory.)
    for (r, row) in accf.iter().enumerate() {
        for (q, a) in row.iter().enumerate() {
            // SAFETY: acc holds R * P runs of 16 f32 (asserted above).
            unsafe { _mm512_storeu_ps(acc.as_mut_ptr().add(ROWS * (P * r + q)), *a) };
        }
    }
}

/// Slot `slot` (16 values) of an affine panel's scales at `s`, f16 or f32 as `D` says.
///
/// # Safety
/// AVX-512 F is available; `s` points at the panel's scales, of the type `D` reads, which
/// hold more than `slot` slots of 16.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn affine_slot<D: Dot>(s: *const u8, slot: usize) -> __m512 {
    if D::F16_SCALES {
        // SAFETY: the caller's contract: 16 u16 at slot `slot`.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(s.add(2 * ROWS * slot).cast())) }
    } else {
        // SAFETY: the caller's contract: 16 f32 at slot `slot`.
        unsafe { _mm512_loadu_ps(s.add(4 * ROWS * slot).cast()) }
    }
}

/// Panels `p .. p + P` against every activation row (in the groups of [`row_groups`], over
/// the ranges of [`block_ranges`]), written to `y[16 (P i + q) + j]`.
///
/// # Safety
/// As [`panel_rows`] for every row of `act`; `y.len() >= 16 * P * m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn panel_all<D: Dot, const P: usize>(w: &Packed, p: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    let m = act.a.rows;
    let acc = &mut y[..m * P * ROWS];
    acc.fill(0.0);
    for range in block_ranges::<P>(m, w.nb) {
        for grp in &act.groups {
            let a = &mut acc[grp.row0 * P * ROWS..];
            // SAFETY: forwarded from the caller; the group's rows exist and `a` holds as many
            // accumulators.
            unsafe {
                match grp.rows {
                    6 => panel_rows::<D, 6, P>(w, p, act, grp, range, a),
                    4 => panel_rows::<D, 4, P>(w, p, act, grp, range, a),
                    3 => panel_rows::<D, 3, P>(w, p, act, grp, range, a),
                    2 => panel_rows::<D, 2, P>(w, p, act, grp, range, a),
                    _ => panel_rows::<D, 1, P>(w, p, act, grp, range, a),
                }
            }
        }
    }
    if D::NF4 {
        for v in acc.iter_mut() {
            *v /= 127.0;
        }
    }
}

/// Panels one call of [`panel`] covers for `m` activation rows: two for the 8-bit kernels past
/// 6 rows (they share each activation broadcast, see [`S8`]), else one. (At M <= 6 the
/// codes are read once from memory, and one panel's two chains per row hide more latency.)
pub(crate) fn panels_per_call(kind: Kind, m: usize) -> usize {
    match kind {
        Kind::Q8_0 | Kind::Int8 { .. } if m > 6 => 2,
        _ => 1,
    }
}

/// Call `u` over `w` ([`panels_per_call`] panels from `u` times as many) against every row of
/// `act`, written to `y[16 (span i + q) + j]`, zero for panels past the matrix; the caller
/// ([`super::panel_dispatch::panel`]) has checked the shapes and that `w` is laid out for
/// [`Isa::Avx512Vnni`] on a CPU that runs it.
pub(crate) fn panel(w: &Packed, u: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    panel_with(w, u, act, y, crate::kernels::cpu().avx512_vbmi);
}

/// [`panel`], using AVX-512 VBMI where `vbmi` says so (the tests run both).
fn panel_with(w: &Packed, u: usize, act: &PackedAct<'_>, y: &mut [f32], vbmi: bool) {
    let m = act.a.rows;
    let span = panels_per_call(w.kind, m);
    let (p, panels) = (u * span, w.n.div_ceil(ROWS));
    assert!(w.isa == Isa::Avx512Vnni && crate::kernels::cpu().avx512_vnni && y.len() >= span * ROWS * m && p < panels);
    assert!(!vbmi || crate::kernels::cpu().avx512_vbmi);
    // SAFETY: AVX-512 F/BW and VNNI were detected, the panels exist and `y` holds 16 outputs
    // per panel and activation row (asserted above); the caller asserted the shapes and the
    // activations' preparation.
    unsafe {
        match w.kind {
            Kind::Q4_0 => panel_all::<Q4<false>, 1>(w, p, act, y),
            Kind::Affine {
                five: false,
                k_quant: false,
            } => panel_all::<Q4<true, false>, 1>(w, p, act, y),
            Kind::Affine {
                five: false,
                k_quant: true,
            } => panel_all::<Q4<true, true>, 1>(w, p, act, y),
            Kind::Affine {
                five: true,
                k_quant: false,
            } => panel_all::<U5<false>, 1>(w, p, act, y),
            Kind::Affine {
                five: true,
                k_quant: true,
            } => panel_all::<U5<true>, 1>(w, p, act, y),
            Kind::Q6K => panel_all::<Q6, 1>(w, p, act, y),
            Kind::Tq2_0 => panel_all::<Tq2, 1>(w, p, act, y),
            Kind::Q2K => panel_all::<Q2, 1>(w, p, act, y),
            Kind::Q5_0 => panel_all::<U5<false, true>, 1>(w, p, act, y),
            Kind::Q8_0 | Kind::Int8 { .. } if span == 1 => panel_all::<S8, 1>(w, p, act, y),
            Kind::Q8_0 | Kind::Int8 { .. } if p + 1 < panels => panel_all::<S8, 2>(w, p, act, y),
            Kind::Q8_0 | Kind::Int8 { .. } => {
                // An odd last panel: alone, spread to the pair's layout.
                let mut one = vec![0.0f32; ROWS * m];
                panel_all::<S8, 1>(w, p, act, &mut one);
                for (dst, src) in y.chunks_exact_mut(2 * ROWS).zip(one.chunks_exact(ROWS)) {
                    dst[..ROWS].copy_from_slice(src);
                    dst[ROWS..].fill(0.0);
                }
            }
            Kind::Nf4 { .. } if vbmi => panel_all::<Nf4<true>, 1>(w, p, act, y),
            Kind::Nf4 { .. } => panel_all::<Nf4<false>, 1>(w, p, act, y),
            Kind::Iq4Nl | Kind::Iq4Xs if vbmi => panel_all::<Nf4<true, true>, 1>(w, p, act, y),
            Kind::Iq4Nl | Kind::Iq4Xs => panel_all::<Nf4<false, true>, 1>(w, p, act, y),
            Kind::Fp8 { .. } => unreachable!("FP8 runs fp8_panel, on f32 activations"),
            Kind::Q6KSix | Kind::Q3KFour => unreachable!("{:?} is an AVX2 layout (Kind::for_tensor)", w.kind),
        }
    }
}

/// The checks of the code book look-ups (NF4's and IQ4_NL's), run by `tests/isa.rs` (reported as ignored
/// where the CPU lacks AVX-512 VNNI, or VBMI for `vpermb`).
#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks {
    use aihal_quantize::{quantize, QuantFormat};

    use crate::kernels::panels::{Isa, Kind, Packed, PackedAct};
    use crate::kernels::ActQ8;

    /// The `vpshufb` look-up of NF4 and IQ4_NL gives finite sums panel by panel for every
    /// pass size, and where `vbmi` (the CPU must have AVX-512 VBMI) the `vpermb` one gives the
    /// same bits.
    pub(crate) fn nf4_lookups_agree(vbmi: bool) {
        assert!(crate::kernels::cpu().avx512_vnni, "this CPU has no AVX-512 VNNI");
        assert!(
            !vbmi || crate::kernels::cpu().avx512_vbmi,
            "this CPU has no AVX-512 VBMI"
        );
        let (n, k) = (40, 320);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0).powi(3))
            .collect();
        let nf4 = QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        };
        for (format, m) in [nf4, QuantFormat::Iq4Nl]
            .into_iter()
            .flat_map(|f| [1, 2, 3, 4, 6, 9].map(|m| (f, m)))
        {
            let q = quantize(format, &w, &[n, k]).unwrap();
            let kind = Kind::for_tensor(&q, Isa::Avx512Vnni).unwrap();
            let packed = Packed::pack(&q, kind, Isa::Avx512Vnni, true).unwrap();
            let x: Vec<f32> = (0..m * k).map(|i| (i * 31 % 97) as f32 / 48.0 - 1.0).collect();
            let a = ActQ8::quantize(&x, m, k);
            let act = PackedAct::new(&packed, &a);
            for p in 0..n.div_ceil(16) {
                let mut masked = vec![f32::NAN; 16 * m];
                super::panel_with(&packed, p, &act, &mut masked, false);
                assert!(masked.iter().all(|v| v.is_finite()), "{format} m={m} panel {p}");
                if vbmi {
                    let mut permuted = vec![f32::NAN; 16 * m];
                    super::panel_with(&packed, p, &act, &mut permuted, true);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&masked), bits(&permuted), "{format} m={m} panel {p}");
                }
            }
        }
    }
}
