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
//! to [`generic`](super::generic)'s q8 kernels.
//!
//! Up to 6 activation rows share one pass over a panel, each row with two integer
//! accumulators, so that even a single row at M = 1 is not held up by the latency of one
//! chain of `vpdpbusd`. The rows of a pass are interleaved block by block once per call
//! ([`ActGroup`]), so a pass reads one stream of activations through one pointer. With more
//! than 6 rows, the passes cover 64 blocks at a time, so that the panel's codes for those
//! blocks stay in L1/L2 while every group of rows passes over them, and the 8-bit kernels
//! take two panels per pass (32 blocks at a time), one accumulator per row and panel.

use std::arch::x86_64::{
    __m512, __m512i, _mm256_loadu_si256, _mm512_add_epi32, _mm512_add_ps, _mm512_and_si512, _mm512_cvtepi32_ps,
    _mm512_cvtph_ps, _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps, _mm512_set1_epi32,
    _mm512_set1_epi8, _mm512_set1_ps, _mm512_setzero_si512, _mm512_shuffle_epi8, _mm512_sra_epi32, _mm512_srai_epi32,
    _mm512_srli_epi16, _mm512_storeu_ps, _mm512_xor_si512, _mm_cvtsi32_si128, _mm_prefetch, _MM_HINT_T0,
};

use super::panels::{row_groups, ActGroup, Isa, Kind, Packed, PackedAct, Scales};
use crate::kernels::codes::NF4_I8;

/// Weight rows per panel: one per i32 lane of a 512-bit vector.
const ROWS: usize = 16;

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
    /// [`Dot::chunk`] places them, 64 bytes each), each `x[r]` at 32 readable activation codes
    /// in -127..=127; `neg[r]` is `-OFFSET` times the sum of those codes.
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R];
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
    ) -> [[__m512i; R]; P] {
        // (Loops, not closures: a closure does not inherit the target features, and its calls
        // would not be inlined.)
        let mut out = [[_mm512_setzero_si512(); R]; P];
        for q in 0..P {
            // SAFETY: the caller's contract, panel by panel.
            out[q] = unsafe { Self::dot::<R>(w[q], b, x, neg) };
        }
        out
    }
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
struct Q4;
impl Dot for Q4 {
    const CHUNKS: usize = 4;
    const LINES: usize = 4;
    const OFFSET: i32 = 8;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
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

/// NF4 (codes in Q4_0's nibble order): each code looked up in the code book's int8 levels
/// plus 128, then as Q4_0 without the scaled high nibbles. With `VBMI`, one `vpermb` over a
/// 64-byte table (the 16 levels 4 times) looks up the low nibbles straight from the codes and
/// the high ones after a 16-bit shift, whatever the bits above the nibble; without it,
/// `vpshufb` needs the nibbles masked first.
struct Nf4<const VBMI: bool>;
impl<const VBMI: bool> Dot for Nf4<VBMI> {
    const CHUNKS: usize = 4;
    const LINES: usize = 4;
    const OFFSET: i32 = 128;
    const NF4: bool = true;
    fn chunk(b: usize) -> usize {
        4 * b
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dot<const R: usize>(w: *const u8, _b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        let mask = _mm512_set1_epi8(0x0F);
        // SAFETY: NF4_U8X4 has 64 bytes.
        let lut = unsafe { _mm512_loadu_si512(NF4_U8X4.as_ptr().cast()) };
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

/// The NF4 code book's int8 levels ([`NF4_I8`]) plus 128, as unsigned bytes, 4 times (one
/// copy per 128-bit lane for `vpshufb`, and every index `i & 63` for `vpermb`).
static NF4_U8X4: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (NF4_I8[i % 16] as i16 + 128) as u8;
        i += 1;
    }
    t
};

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
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
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
    unsafe fn dot<const R: usize>(w: *const u8, b: usize, x: [*const i8; R], neg: [i32; R]) -> [__m512i; R] {
        // SAFETY: the caller's contract.
        let [sums] = unsafe { Self::dots::<R, 1>([w], b, x, neg) };
        sums
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn dots<const R: usize, const P: usize>(
        w: [*const u8; P],
        _b: usize,
        x: [*const i8; R],
        neg: [i32; R],
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
    let codes: [&[u8]; P] = std::array::from_fn(|q| w.panel_codes(p + q));
    let scales: [Scales<'_>; P] = std::array::from_fn(|q| w.panel_scales(p + q));
    let bps = w.kind.blocks_per_scale(nb);
    let (qp, dp, np) = (grp.qs.as_ptr(), grp.d.as_ptr(), grp.neg.as_ptr());
    // `D::chunk` grows with the block, so the last block bounds every block's chunks (the
    // panels are equally long).
    assert!(b1 == 0 || 64 * (D::chunk(b1 - 1) + D::CHUNKS) <= codes[0].len());
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
    let scales_ahead = PREFETCH_BYTES / (64 * D::LINES) / bps * group_bytes;
    for b in b0..b1 {
        // SAFETY: the blocks are visited in order, from b0, below b1.
        let sw = unsafe { walk.at(b) };
        // b < nb: the block's chunks lie inside each panel's codes (asserted above) and its
        // 32 codes inside each row's codes (nb * 32 long).
        let wb = cp.map(|c| c.wrapping_add(64 * D::chunk(b)));
        // Prefetch the codes PREFETCH_BYTES ahead, each line once, and the scales (hints: any
        // address is allowed).
        for q in 0..P {
            for l in 0..D::LINES {
                _mm_prefetch::<_MM_HINT_T0>(cp[q].wrapping_add(64 * (D::LINES * b + l) + PREFETCH_BYTES).cast());
            }
            _mm_prefetch::<_MM_HINT_T0>(sp[q].wrapping_add(walk.g * group_bytes + scales_ahead).cast());
        }
        // The group's block b: R rows of 32 codes, then R scales and corrections (interleaved).
        let x: [*const i8; R] = std::array::from_fn(|r| qp.wrapping_add(32 * (R * b + r)));
        // SAFETY: R * b + r < R * nb = grp.neg.len() (asserted above).
        let neg: [i32; R] = std::array::from_fn(|r| unsafe { np.add(R * b + r).read() });
        // SAFETY: each `wb[q]` points at the block's D::CHUNKS chunks and each x[r] at 32
        // codes (above).
        let dots = unsafe { D::dots::<R, P>(wb, b, x, neg) };
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
pub(super) fn panels_per_call(kind: Kind, m: usize) -> usize {
    match kind {
        Kind::Q8_0 | Kind::Int8 { .. } if m > 6 => 2,
        _ => 1,
    }
}

/// Call `u` over `w` ([`panels_per_call`] panels from `u` times as many) against every row of
/// `act`, written to `y[16 (span i + q) + j]`, zero for panels past the matrix; the caller
/// ([`super::panels::panel`]) has checked the shapes and that `w` is laid out for
/// [`Isa::Avx512Vnni`] on a CPU that runs it.
pub(super) fn panel(w: &Packed, u: usize, act: &PackedAct<'_>, y: &mut [f32]) {
    panel_with(w, u, act, y, super::x86::avx512_vbmi());
}

/// [`panel`], using AVX-512 VBMI where `vbmi` says so (the tests run both).
fn panel_with(w: &Packed, u: usize, act: &PackedAct<'_>, y: &mut [f32], vbmi: bool) {
    let m = act.a.rows;
    let span = panels_per_call(w.kind, m);
    let (p, panels) = (u * span, w.n.div_ceil(ROWS));
    assert!(w.isa == Isa::Avx512Vnni && super::x86::avx512_vnni() && y.len() >= span * ROWS * m && p < panels);
    assert!(!vbmi || super::x86::avx512_vbmi());
    // SAFETY: AVX-512 F/BW and VNNI were detected, the panels exist and `y` holds 16 outputs
    // per panel and activation row (asserted above); the caller asserted the shapes and the
    // activations' preparation.
    unsafe {
        match w.kind {
            Kind::Q4_0 => panel_all::<Q4, 1>(w, p, act, y),
            Kind::Tq2_0 => panel_all::<Tq2, 1>(w, p, act, y),
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
            Kind::Fp8 { .. } => unreachable!("FP8 runs fp8_panel, on f32 activations"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// FP8 on the exact path: the codes decoded to f32 in registers, f32 activations, FMA.

/// Byte `T` of every 32-bit lane of `v` (FP8 codes) as f32 values times the lanes' scales.
///
/// The code's magnitude bits are placed under the f32 exponent and rebiased by a multiply
/// (`2^120` for E4M3, `2^112` for E5M2), which is exact for normal and subnormal codes alike;
/// with `SPECIAL`, NaN codes (and E5M2's infinities) are decoded too. The value is then
/// multiplied by the scale: the decode of the layout contract, `value(code) · scale`, rounded
/// once.
#[target_feature(enable = "avx512f")]
#[inline]
fn fp8_values<const T: u32, const E5M2: bool, const SPECIAL: bool>(v: __m512i, scale: __m512) -> __m512 {
    use std::arch::x86_64::{
        _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cmpeq_epi32_mask, _mm512_cmpgt_epi32_mask,
        _mm512_mask_blend_ps, _mm512_or_si512, _mm512_slli_epi32, _mm512_srli_epi32,
    };
    // The code in bits 24..32: the sign where f32 keeps it.
    let top = match T {
        0 => _mm512_slli_epi32::<24>(v),
        1 => _mm512_slli_epi32::<16>(v),
        2 => _mm512_slli_epi32::<8>(v),
        _ => v,
    };
    let sign = _mm512_and_si512(top, _mm512_set1_epi32(i32::MIN));
    let mag = _mm512_srli_epi32::<24>(_mm512_and_si512(top, _mm512_set1_epi32(0x7F00_0000)));
    let f = if E5M2 {
        _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32::<21>(mag)),
            _mm512_set1_ps(f32::from_bits((127 + 112) << 23)),
        )
    } else {
        _mm512_mul_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32::<20>(mag)),
            _mm512_set1_ps(f32::from_bits((127 + 120) << 23)),
        )
    };
    let f = if SPECIAL {
        if E5M2 {
            // 0x7C: infinity; 0x7D..=0x7F: NaN (the mantissa kept, quiet).
            let special = _mm512_cmpgt_epi32_mask(mag, _mm512_set1_epi32(0x7B));
            let bits = _mm512_or_si512(
                _mm512_set1_epi32(0x7F80_0000),
                _mm512_slli_epi32::<21>(_mm512_and_si512(mag, _mm512_set1_epi32(3))),
            );
            _mm512_mask_blend_ps(special, f, _mm512_castsi512_ps(bits))
        } else {
            // 0x7F: NaN (E4M3 has no infinities).
            let special = _mm512_cmpeq_epi32_mask(mag, _mm512_set1_epi32(0x7F));
            _mm512_mask_blend_ps(special, f, _mm512_castsi512_ps(_mm512_set1_epi32(0x7FC0_0000)))
        }
    } else {
        f
    };
    let f = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(f), sign));
    _mm512_mul_ps(f, scale)
}

/// Blocks `b0 .. b1` of FP8 panel `p` against the f32 activation rows `row0 .. row0 + R` of
/// `x` (rows of `stride >= 32 * b1` values), added to `acc[16 r + j]`. Each row keeps two
/// accumulators (the even and the odd codes of a lane), so that one row is not held up by
/// the latency of a single FMA chain, and sums them into its total every [`K_BLOCKS`] blocks:
/// a row's result does not depend on how many rows share its pass, nor on the ranges
/// `b0 .. b1` the blocks are passed in, as long as they start at multiples of [`K_BLOCKS`].
///
/// # Safety
/// AVX-512 F is available; `p` is a panel of `w`, an FP8 layout for [`Isa::Avx512Vnni`] of
/// the format `E5M2` names; `x` holds rows `row0 .. row0 + R` of `stride` values with
/// `stride >= 32 * b1`; `b0 <= b1 <= w.nb`; `acc.len() >= 16 R`.
#[target_feature(enable = "avx512f,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn fp8_rows<const E5M2: bool, const SPECIAL: bool, const R: usize>(
    w: &Packed,
    p: usize,
    x: &[f32],
    stride: usize,
    row0: usize,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_setzero_ps};
    let nb = w.nb;
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * ROWS && x.len() >= (row0 + R) * stride && stride >= 32 * b1);
    let codes = w.panel_codes(p);
    assert!(codes.len() >= 64 * 8 * b1);
    let scales = w.panel_scales(p);
    let bps = w.kind.blocks_per_scale(nb);
    let xs: [*const f32; R] = std::array::from_fn(|r| x[(row0 + r) * stride..].as_ptr());
    if b0 == b1 {
        return;
    }
    let mut sum = [_mm512_setzero_ps(); R];
    for (r, s) in sum.iter_mut().enumerate() {
        // SAFETY: acc holds R rows of 16 f32 (asserted above).
        *s = unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * r)) };
    }
    let mut a = [[_mm512_setzero_ps(); R]; 2];
    let cp = codes.as_ptr();
    // SAFETY: b0 < b1 <= nb, so every group the walk reads is below `groups`.
    let mut walk = unsafe { ScaleWalk::new([scales], bps, b0, b1) };
    for b in b0..b1 {
        // SAFETY: the blocks are visited in order, from b0, below b1.
        let [sw] = unsafe { walk.at(b) };
        for c in 0..8 {
            // SAFETY: chunk 8b + c of the panel lies inside `codes` (b < b1, asserted).
            let v = unsafe { _mm512_loadu_si512(cp.add(64 * (8 * b + c)).cast()) };
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * (8 * (b + PREFETCH) + c)).cast());
            let wv = [
                fp8_values::<0, E5M2, SPECIAL>(v, sw),
                fp8_values::<1, E5M2, SPECIAL>(v, sw),
                fp8_values::<2, E5M2, SPECIAL>(v, sw),
                fp8_values::<3, E5M2, SPECIAL>(v, sw),
            ];
            for (t, wt) in wv.into_iter().enumerate() {
                for r in 0..R {
                    // SAFETY: value 32b + 4c + t < 32 b1 <= stride lies in row row0 + r.
                    let xv = unsafe { xs[r].add(32 * b + 4 * c + t).read() };
                    a[t % 2][r] = _mm512_fmadd_ps(wt, _mm512_set1_ps(xv), a[t % 2][r]);
                }
            }
        }
        // Each run of K_BLOCKS blocks is summed on its own and added: the same additions
        // whether the caller passes over the blocks at once or K_BLOCKS at a time.
        let end = b + 1;
        if end.is_multiple_of(K_BLOCKS) || end == b1 {
            for r in 0..R {
                sum[r] = _mm512_add_ps(sum[r], _mm512_add_ps(a[0][r], a[1][r]));
                a[0][r] = _mm512_setzero_ps();
                a[1][r] = _mm512_setzero_ps();
            }
        }
    }
    for (r, o) in acc.chunks_exact_mut(ROWS).take(R).enumerate() {
        // SAFETY: `o` holds 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), sum[r]) };
    }
}

/// FP8 panel `p` against every f32 activation row of `x` (`m` rows of `stride` values, zero
/// past `K` up to `32 nb`), written to `y[16 i + j]`: 6 rows at a time, then 4, then the last
/// 1 to 3, in passes of [`K_BLOCKS`] blocks when there are more than 6 rows.
///
/// # Safety
/// AVX-512 F and FMA are available; as [`fp8_rows`] for every row; `y.len() >= 16 m`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn fp8_all<const E5M2: bool, const SPECIAL: bool>(
    w: &Packed,
    p: usize,
    x: &[f32],
    stride: usize,
    m: usize,
    y: &mut [f32],
) {
    let acc = &mut y[..m * ROWS];
    acc.fill(0.0);
    for range in block_ranges::<1>(m, w.nb) {
        for (i0, rows) in row_groups(m) {
            let a = &mut acc[i0 * ROWS..];
            // SAFETY: forwarded from the caller; rows i0 .. i0 + rows exist and `a` holds
            // as many accumulators.
            unsafe {
                match rows {
                    6 => fp8_rows::<E5M2, SPECIAL, 6>(w, p, x, stride, i0, range, a),
                    4 => fp8_rows::<E5M2, SPECIAL, 4>(w, p, x, stride, i0, range, a),
                    3 => fp8_rows::<E5M2, SPECIAL, 3>(w, p, x, stride, i0, range, a),
                    2 => fp8_rows::<E5M2, SPECIAL, 2>(w, p, x, stride, i0, range, a),
                    _ => fp8_rows::<E5M2, SPECIAL, 1>(w, p, x, stride, i0, range, a),
                }
            }
        }
    }
}

/// FP8 panel `p` of `w` against the `m` f32 activation rows of `x` (rows of `stride >= 32 nb`
/// values, zero past `K`), written to `y[16 i + j]`.
///
/// # Panics
/// If `w` is not an FP8 layout for AVX-512 on a CPU that runs it, `p` is not one of its
/// panels, or `x` / `y` are shorter than said.
pub(crate) fn fp8_panel(w: &Packed, p: usize, x: &[f32], stride: usize, m: usize, y: &mut [f32]) {
    let Kind::Fp8 { e5m2, .. } = w.kind else {
        panic!("fp8_panel on a {:?} layout", w.kind);
    };
    assert!(w.isa == Isa::Avx512Vnni && super::x86::avx512_vnni());
    assert!(p < w.n.div_ceil(ROWS) && stride >= 32 * w.nb && x.len() >= m * stride && y.len() >= ROWS * m);
    // SAFETY: AVX-512 F and FMA were detected, and the shapes asserted, above.
    unsafe {
        match (e5m2, w.fp8_special) {
            (false, false) => fp8_all::<false, false>(w, p, x, stride, m, y),
            (false, true) => fp8_all::<false, true>(w, p, x, stride, m, y),
            (true, false) => fp8_all::<true, false>(w, p, x, stride, m, y),
            (true, true) => fp8_all::<true, true>(w, p, x, stride, m, y),
        }
    }
}

// ---------------------------------------------------------------------------------------
// FP8 on bf16 activations (AVX-512 BF16): the codes looked up as bf16, `vdpbf16ps`.
//
// Every FP8 value (E4M3 and E5M2, subnormals, infinities and NaN included) is a bf16 value
// exactly, and the product of two bf16 values is an f32 exactly, so `vdpbf16ps` computes the
// products of the codes' values and bf16 activations without rounding and adds them in f32;
// the scale multiplies each group's sum. The only rounding besides the f32 additions is the
// activations' own, to bf16. `vdpbf16ps` flushes subnormal inputs and results to zero, so
// activation rows with a value it would mistreat (subnormal or tiny, or so large that a
// product could overflow before the scale brings it back, or not finite) take the f32 kernel
// ([`Bf16Act::exact_rows`]).

/// The bf16 bits of the value of FP8 codes `0 .. 128` (the magnitudes; bit 7 is the sign), as
/// four vectors of 32 words (codes `32 t ..`).
fn fp8_bf16_table(e5m2: bool) -> &'static [[u16; 32]; 4] {
    use std::sync::OnceLock;
    fn build(values: &[f32; 256]) -> [[u16; 32]; 4] {
        std::array::from_fn(|t| {
            std::array::from_fn(|i| {
                let bits = values[32 * t + i].to_bits();
                // FP8 values have at most 3 significand bits: their low 16 bits are zero.
                debug_assert_eq!(bits & 0xFFFF, 0, "code {}", 32 * t + i);
                (bits >> 16) as u16
            })
        })
    }
    static E4M3: OnceLock<[[u16; 32]; 4]> = OnceLock::new();
    static E5M2: OnceLock<[[u16; 32]; 4]> = OnceLock::new();
    if e5m2 {
        E5M2.get_or_init(|| build(&aihal_quantize::fp8::E5M2_TABLE))
    } else {
        E4M3.get_or_init(|| build(&aihal_quantize::fp8::E4M3_TABLE))
    }
}

/// The bf16 value of each 16-bit lane's FP8 code (bits 0..8, the bits above zero), looked up
/// in `t` ([`fp8_bf16_table`]): two 64-entry permutes for the 128 magnitudes, the sign put
/// back from bit 7.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn bf16_of_codes(idx: __m512i, t: &[__m512i; 4]) -> __m512i {
    use std::arch::x86_64::{
        _mm512_mask_blend_epi16, _mm512_permutex2var_epi16, _mm512_set1_epi16, _mm512_slli_epi16,
        _mm512_ternarylogic_epi32, _mm512_test_epi16_mask,
    };
    let low = _mm512_permutex2var_epi16(t[0], idx, t[1]);
    let high = _mm512_permutex2var_epi16(t[2], idx, t[3]);
    let v = _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(0x40)), low, high);
    // v | (idx << 8) & 0x8000: the code's bit 7 is the sign bit of the bf16 word.
    _mm512_ternarylogic_epi32::<0xF8>(v, _mm512_slli_epi16::<8>(idx), _mm512_set1_epi16(i16::MIN))
}

/// Activation rows for [`fp8_bf16_panel`]: rounded to bf16 (to nearest, ties to even), zero
/// padded to whole blocks, and reordered within each group of 4 values as `x0 x2 x1 x3`, so
/// that the 32-bit pairs `(x0, x2)` and `(x1, x3)` meet the even and odd code bytes of a lane.
pub(crate) struct Bf16Act {
    /// `m` rows of `stride` bf16 values, two per word (the first in the low half).
    xb: Vec<u32>,
    stride: usize,
    m: usize,
    /// Rows the bf16 kernel must not take: a value not finite, above `2^64` or below `2^-64`
    /// in magnitude (and not zero). The caller runs the f32 kernel on them.
    pub(crate) exact_rows: Vec<bool>,
}

impl Bf16Act {
    /// The rows as stored (`m` rows of `stride` words).
    #[cfg(any(test, feature = "test-internals"))]
    pub(crate) fn bits(&self) -> Vec<u16> {
        self.xb.iter().flat_map(|&p| [p as u16, (p >> 16) as u16]).collect()
    }

    /// `x`: `m` rows of `k` values; `stride`: `32 nb >= k`.
    ///
    /// # Panics
    /// If the CPU has no AVX-512 BF16, `x` is shorter than `m k`, or `stride < k` or is not a
    /// multiple of 32.
    pub(crate) fn new(x: &[f32], m: usize, k: usize, stride: usize) -> Self {
        assert!(super::x86::avx512_bf16() && x.len() >= m * k && stride >= k && stride.is_multiple_of(32));
        let (big, tiny) = (2.0f32.powi(64), 2.0f32.powi(-64));
        let exact_rows: Vec<bool> = (0..m)
            .map(|i| {
                !x[i * k..(i + 1) * k].iter().all(|v| {
                    let a = v.abs();
                    a <= big && (a >= tiny || a == 0.0)
                })
            })
            .collect();
        let mut xb = vec![0u32; m * stride / 2];
        for (i, row) in xb.chunks_exact_mut(stride / 2).enumerate() {
            if !exact_rows[i] {
                // SAFETY: AVX-512 F/BW and BF16 were asserted above; `row` holds `stride >= k`
                // values, in pairs.
                unsafe { bf16_row(&x[i * k..(i + 1) * k], row) };
            }
        }
        Self {
            xb,
            stride,
            m,
            exact_rows,
        }
    }
}

/// `x` rounded to bf16 into the pairs of `out` (`2 out.len() >= x.len()`, a multiple of 32;
/// the rest left as it is), each group of 4 reordered `x0 x2 x1 x3`.
///
/// # Safety
/// AVX-512 F/BW and BF16 are available.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn bf16_row(x: &[f32], out: &mut [u32]) {
    use std::arch::x86_64::{
        _mm512_cvtne2ps_pbh, _mm512_maskz_loadu_ps, _mm512_permutexvar_epi16, _mm512_storeu_si512,
    };
    assert!(2 * out.len() >= x.len().next_multiple_of(32) && out.len().is_multiple_of(16));
    let order: [i16; 32] = std::array::from_fn(|i| (i - i % 4 + [0, 2, 1, 3][i % 4]) as i16);
    // SAFETY: `[i16; 32]` and `__m512i` have the same size, any bits are valid.
    let order: __m512i = unsafe { std::mem::transmute(order) };
    for (c, o) in x.chunks(32).zip(out.chunks_exact_mut(16)) {
        let lanes = |from: usize| -> u16 {
            let n = c.len().saturating_sub(from).min(16);
            ((1u32 << n) - 1) as u16
        };
        // SAFETY: the masked loads read only the `c.len()` values of the chunk (the mask
        // covers the values present); the store writes the 16 pairs of `o`.
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lanes(0), c.as_ptr());
            let hi = _mm512_maskz_loadu_ps(lanes(16), c.as_ptr().wrapping_add(16));
            // Words 0..16 from `lo`, 16..32 from `hi`.
            let b: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(o.as_mut_ptr().cast(), _mm512_permutexvar_epi16(order, b));
        }
    }
}

/// Blocks `b0 .. b1` of FP8 panel `p` against the bf16 activation rows `row0 .. row0 + R` of
/// `a`, added to `acc[16 r + j]`. Each row keeps two bf16 accumulators (even and odd code
/// bytes), added and scaled into `acc` at the end of each scale group and at each multiple of
/// [`K_BLOCKS`], so the result of a row does not depend on how many rows share its pass.
///
/// # Safety
/// AVX-512 F/BW, BF16 and FMA are available; `p` is a panel of `w`, an FP8 layout for
/// [`Isa::Avx512Vnni`]; `a` has rows `row0 .. row0 + R` of `a.stride >= 32 b1` values;
/// `b0 <= b1 <= w.nb`, `b0` a multiple of [`K_BLOCKS`] and `b1` one too or `w.nb`;
/// `acc.len() >= 16 R`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
#[inline]
unsafe fn fp8_bf16_rows<const R: usize>(
    w: &Packed,
    p: usize,
    t: &[__m512i; 4],
    a: &Bf16Act,
    row0: usize,
    (b0, b1): (usize, usize),
    acc: &mut [f32],
) {
    use std::arch::x86_64::{__m512bh, _mm512_dpbf16_ps, _mm512_fmadd_ps, _mm512_set1_epi16, _mm512_setzero_ps};
    let nb = w.nb;
    let stride = a.stride;
    assert!(b0 <= b1 && b1 <= nb && acc.len() >= R * ROWS && row0 + R <= a.m && stride >= 32 * b1);
    if b0 == b1 {
        return;
    }
    let codes = w.panel_codes(p);
    assert!(codes.len() >= 64 * 8 * b1);
    let bps = w.kind.blocks_per_scale(nb);
    let xs: [*const u32; R] = std::array::from_fn(|r| a.xb[(row0 + r) * stride / 2..].as_ptr());
    let mut sum = [_mm512_setzero_ps(); R];
    for (r, s) in sum.iter_mut().enumerate() {
        // SAFETY: acc holds R rows of 16 f32 (asserted above).
        *s = unsafe { _mm512_loadu_ps(acc.as_ptr().add(ROWS * r)) };
    }
    let mut even = [_mm512_setzero_ps(); R];
    let mut odd = [_mm512_setzero_ps(); R];
    let cp = codes.as_ptr();
    let low_byte = _mm512_set1_epi16(0xFF);
    // SAFETY: b0 < b1 <= nb, so every group the walk reads is below `groups`.
    let mut walk = unsafe { ScaleWalk::new([w.panel_scales(p)], bps, b0, b1) };
    for b in b0..b1 {
        // SAFETY: the blocks are visited in order, from b0, below b1.
        let [sw] = unsafe { walk.at(b) };
        for c in 0..8 {
            // SAFETY: chunk 8b + c of the panel lies inside `codes` (b < b1, asserted).
            let v = unsafe { _mm512_loadu_si512(cp.add(64 * (8 * b + c)).cast()) };
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64 * (8 * (b + PREFETCH) + c)).cast());
            // SAFETY: `__m512i` and `__m512bh` are 64-byte vectors, any bits valid.
            let we: __m512bh = unsafe { std::mem::transmute(bf16_of_codes(_mm512_and_si512(v, low_byte), t)) };
            // SAFETY: as above.
            let wo: __m512bh = unsafe { std::mem::transmute(bf16_of_codes(_mm512_srli_epi16::<8>(v), t)) };
            for r in 0..R {
                // SAFETY: values 32b + 4c .. + 4 < 32 b1 <= stride (pairs 16b + 2c and the
                // next) lie in row row0 + r; the vector types are as above.
                let (xe, xo) = unsafe {
                    let q = xs[r].add(16 * b + 2 * c);
                    (
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(q.read() as i32)),
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(q.add(1).read() as i32)),
                    )
                };
                even[r] = _mm512_dpbf16_ps(even[r], we, xe);
                odd[r] = _mm512_dpbf16_ps(odd[r], wo, xo);
            }
        }
        let end = b + 1;
        if end.is_multiple_of(bps) || end.is_multiple_of(K_BLOCKS) || end == nb {
            for r in 0..R {
                sum[r] = _mm512_fmadd_ps(_mm512_add_ps(even[r], odd[r]), sw, sum[r]);
                even[r] = _mm512_setzero_ps();
                odd[r] = _mm512_setzero_ps();
            }
        }
    }
    for (r, o) in acc.chunks_exact_mut(ROWS).take(R).enumerate() {
        // SAFETY: `o` holds 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), sum[r]) };
    }
}

/// FP8 panel `p` of `w` against every bf16 activation row of `a`, written to `y[16 i + j]`
/// (rows of [`Bf16Act::exact_rows`] included, with meaningless values the caller replaces):
/// 6 rows at a time, then 4, then the last 1 to 3, in passes of [`K_BLOCKS`] blocks when there
/// are more than 6 rows.
///
/// # Panics
/// If `w` is not an FP8 layout for AVX-512 on a CPU with AVX-512 BF16 and FMA, `p` is not one
/// of its panels, `a` was not made for `w` (`stride = 32 nb`), or `y` is shorter than `16 m`.
pub(crate) fn fp8_bf16_panel(w: &Packed, p: usize, a: &Bf16Act, y: &mut [f32]) {
    assert!(
        matches!(w.kind, Kind::Fp8 { .. }),
        "fp8_bf16_panel on a {:?} layout",
        w.kind
    );
    let Kind::Fp8 { e5m2, .. } = w.kind else { unreachable!() };
    assert!(w.isa == Isa::Avx512Vnni && super::x86::avx512_bf16());
    let m = a.m;
    assert!(p < w.n.div_ceil(ROWS) && a.stride == 32 * w.nb && y.len() >= ROWS * m);
    // SAFETY: AVX-512 F/BW, BF16 and FMA were detected, and the shapes asserted, above.
    unsafe { fp8_bf16_all(w, p, fp8_bf16_table(e5m2), a, &mut y[..m * ROWS]) }
}

/// # Safety
/// As [`fp8_bf16_panel`] after its checks; `acc.len() == 16 a.m`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
unsafe fn fp8_bf16_all(w: &Packed, p: usize, table: &[[u16; 32]; 4], a: &Bf16Act, acc: &mut [f32]) {
    // SAFETY: `[u16; 32]` and `__m512i` have the same size, any bits are valid.
    let t: [__m512i; 4] = unsafe { std::mem::transmute(*table) };
    acc.fill(0.0);
    let m = a.m;
    for range in block_ranges::<1>(m, w.nb) {
        for (i0, rows) in row_groups(m) {
            let part = &mut acc[i0 * ROWS..];
            // SAFETY: forwarded from the caller; rows i0 .. i0 + rows exist and `part` holds
            // as many accumulators; `range` starts at a multiple of K_BLOCKS and ends at one or
            // at nb.
            unsafe {
                match rows {
                    6 => fp8_bf16_rows::<6>(w, p, &t, a, i0, range, part),
                    4 => fp8_bf16_rows::<4>(w, p, &t, a, i0, range, part),
                    3 => fp8_bf16_rows::<3>(w, p, &t, a, i0, range, part),
                    2 => fp8_bf16_rows::<2>(w, p, &t, a, i0, range, part),
                    _ => fp8_bf16_rows::<1>(w, p, &t, a, i0, range, part),
                }
            }
        }
    }
}

/// The checks of NF4's two code book look-ups, run by `tests/isa.rs` (reported as ignored
/// where the CPU lacks AVX-512 VNNI, or VBMI for `vpermb`).
#[cfg(any(test, feature = "test-internals"))]
pub(crate) mod checks {
    use aihal_quantize::{quantize, QuantFormat};

    use super::super::panels::{Isa, Kind, Packed, PackedAct};
    use super::super::ActQ8;

    /// NF4's `vpshufb` look-up gives finite sums panel by panel for every pass size, and where
    /// `vbmi` (the CPU must have AVX-512 VBMI) the `vpermb` one gives the same bits.
    pub(crate) fn nf4_lookups_agree(vbmi: bool) {
        assert!(super::super::x86::avx512_vnni(), "this CPU has no AVX-512 VNNI");
        assert!(
            !vbmi || super::super::x86::avx512_vbmi(),
            "this CPU has no AVX-512 VBMI"
        );
        let (n, k) = (40, 320);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 2003) as f32 / 1001.5 - 1.0).powi(3))
            .collect();
        let format = QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        };
        let q = quantize(format, &w, &[n, k]).unwrap();
        let kind = Kind::for_tensor(&q, Isa::Avx512Vnni).unwrap();
        let packed = Packed::pack(&q, kind, Isa::Avx512Vnni, true).unwrap();
        for m in [1, 2, 3, 4, 6, 9] {
            let x: Vec<f32> = (0..m * k).map(|i| (i * 31 % 97) as f32 / 48.0 - 1.0).collect();
            let a = ActQ8::quantize(&x, m, k);
            let act = PackedAct::new(&packed, &a);
            for p in 0..n.div_ceil(16) {
                let mut masked = vec![f32::NAN; 16 * m];
                super::panel_with(&packed, p, &act, &mut masked, false);
                assert!(masked.iter().all(|v| v.is_finite()), "m={m} panel {p}");
                if vbmi {
                    let mut permuted = vec![f32::NAN; 16 * m];
                    super::panel_with(&packed, p, &act, &mut permuted, true);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&masked), bits(&permuted), "m={m} panel {p}");
                }
            }
        }
    }
}
