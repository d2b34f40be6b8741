//! x86_64 kernels over weights packed once ([`crate::PackedWeights`]): the int8-activation
//! path without any per-call decode or repack.
//!
//! # Layout
//!
//! The weight rows are taken in panels of [`PANEL`] = 8 rows (the last panel padded with zero
//! rows). Per block of 32 values, a panel holds its codes as 32-byte chunks in which the
//! 32-bit lane `j` holds 4 consecutive code bytes of row `j`, in the original bit width:
//!
//! | format | chunks per block | chunk `c`, lane `j` | scales per panel |
//! | --- | --- | --- | --- |
//! | Q4_0 | 4 | bytes `4c .. 4c + 4` of row `j`'s `qs`: low nibbles are codes `4c ..`, high nibbles codes `16 + 4c ..` | 8 f16 per block |
//! | Q8_0 | 8 | codes `4c .. 4c + 4` (i8) | 8 f16 per block |
//! | int8 per channel / per block (multiple of 32) | 8 | codes `4c .. 4c + 4`, zero past `K` | 8 f32 per scale block (per channel: one) |
//! | TQ2_0 | 16 per 256 values | bytes `4c .. 4c + 4` of row `j`'s 64 bytes of `qs` (2-bit fields: 4 blocks of 32 in one byte) | 8 f16 per 256 values |
//!
//! The packing moves whole groups of 4 bytes, so it keeps the bit width (4 bits stay 4 bits,
//! 2 bits stay 2) and is exactly reversible ([`Packed::unpack_rows`]). The 8 scales of a
//! panel's block are contiguous, converted by one `vcvtph2ps`.
//!
//! # Arithmetic
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

use std::arch::x86_64::{
    __m256, __m256i, _mm256_add_epi16, _mm256_add_epi32, _mm256_add_ps, _mm256_and_si256, _mm256_cvtepi32_ps,
    _mm256_cvtph_ps, _mm256_loadu_ps, _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_sign_epi8, _mm256_srl_epi16, _mm256_srli_epi16, _mm256_storeu_ps, _mm_cvtsi32_si128, _mm_loadu_si128,
};

use aihal_core::Result;
use aihal_quantize::{QuantFormat, QuantizedTensor};
use rayon::prelude::*;

use super::{ActQ8, PANEL};
use crate::decode::{Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};

/// 32 bytes, aligned for vector loads.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(32))]
pub(crate) struct Chunk(pub(crate) [u8; 32]);

/// The packed code layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Q4_0: 4 chunks per block, f16 scales per block.
    Q4_0,
    /// Q8_0: 8 chunks per block, f16 scales per block.
    Q8_0,
    /// TQ2_0: 16 chunks per 256 values, f16 scales per 256 values.
    Tq2_0,
    /// int8 per channel (`block_size == None`) or per block of a multiple of 32: 8 chunks per
    /// block, f32 scales per scale block.
    Int8 {
        /// Values per scale block, `None` for one scale per row.
        block_size: Option<usize>,
    },
}

impl Kind {
    /// The packed layout for `format` on this CPU, if the AVX2 set runs here and has one.
    pub(crate) fn for_format(format: QuantFormat) -> Option<Self> {
        let kind = match format {
            QuantFormat::Q4_0 => Self::Q4_0,
            QuantFormat::Q8_0 => Self::Q8_0,
            QuantFormat::Tq2_0 => Self::Tq2_0,
            QuantFormat::Int8PerChannel => Self::Int8 { block_size: None },
            QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => Self::Int8 {
                block_size: Some(block_size),
            },
            _ => return None,
        };
        super::x86::detect().map(|_| kind)
    }

    /// A short name of the layout (`avx2-panel8-q4_0`, ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "avx2-panel8-q4_0",
            Self::Q8_0 => "avx2-panel8-q8_0",
            Self::Tq2_0 => "avx2-panel8-tq2_0",
            Self::Int8 { block_size: None } => "avx2-panel8-int8_channel",
            Self::Int8 { .. } => "avx2-panel8-int8_block",
        }
    }

    /// Blocks of 32 sharing one scale.
    fn blocks_per_scale(self, nb: usize) -> usize {
        match self {
            Self::Q4_0 | Self::Q8_0 => 1,
            Self::Tq2_0 => 8,
            Self::Int8 { block_size: None } => nb.max(1),
            Self::Int8 { block_size: Some(b) } => b / 32,
        }
    }
}

/// A weight matrix `[N, K]` packed in panels of [`PANEL`] rows (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Packed {
    pub(crate) kind: Kind,
    pub(crate) format: QuantFormat,
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// Blocks of 32 per row (the last one zero padded for int8 rows with `K % 32 != 0`).
    pub(crate) nb: usize,
    /// Scale groups per row (`ceil(nb / blocks_per_scale)`).
    groups: usize,
    /// Chunks per panel.
    panel_chunks: usize,
    codes: Vec<Chunk>,
    /// f16 bits (Q4_0, Q8_0, TQ2_0), `panels * groups * 8`.
    scales16: Vec<u16>,
    /// f32 scales (int8), `panels * groups * 8`.
    scales32: Vec<f32>,
}

/// Copies 4 bytes of `src` at `from` (zero past its end) into lane `j` of `chunk`.
fn put4(chunk: &mut Chunk, j: usize, src: &[u8], from: usize) {
    let dst = &mut chunk.0[4 * j..4 * j + 4];
    match src.get(from..from + 4) {
        Some(s) => dst.copy_from_slice(s),
        None => {
            for (t, d) in dst.iter_mut().enumerate() {
                *d = src.get(from + t).copied().unwrap_or(0);
            }
        }
    }
}

impl Packed {
    /// Packs `w` (validated by `check_matmul`, rank 2) as `kind`.
    pub(crate) fn pack(w: &QuantizedTensor, kind: Kind) -> Result<Self> {
        let (n, k) = (w.shape()[0], w.shape()[1]);
        let nb = k.div_ceil(32);
        let bps = kind.blocks_per_scale(nb);
        let groups = nb.div_ceil(bps);
        let panels = n.div_ceil(PANEL);
        let panel_chunks = match kind {
            Kind::Q4_0 => 4 * nb,
            Kind::Q8_0 | Kind::Int8 { .. } => 8 * nb,
            Kind::Tq2_0 => 2 * nb,
        };
        let total = panels
            .checked_mul(panel_chunks)
            .filter(|&c| c.checked_mul(32).is_some())
            .ok_or_else(|| aihal_core::CoreError::invalid_input(format!("packing {n} x {k} weights overflows")))?;
        let mut codes = vec![Chunk::default(); total];
        let mut scales16 = Vec::new();
        let mut scales32 = Vec::new();
        match kind {
            Kind::Int8 { .. } => scales32.resize(panels * groups * PANEL, 0.0),
            _ => scales16.resize(panels * groups * PANEL, 0),
        }
        let data = w.data();
        // Codes: whole panels in parallel (each a disjoint slice of `codes`), each chunk
        // written at once from the 8 rows read side by side.
        let row_bytes = match kind {
            Kind::Q4_0 => nb * Q4_0_BLOCK_BYTES,
            Kind::Q8_0 => nb * Q8_0_BLOCK_BYTES,
            Kind::Tq2_0 => nb / 8 * TQ2_0_BLOCK_BYTES,
            Kind::Int8 { .. } => k,
        };
        // Where chunk `c` of a panel starts in each row's bytes.
        let source = |c: usize| match kind {
            Kind::Q4_0 => (c / 4) * Q4_0_BLOCK_BYTES + 2 + 4 * (c % 4),
            Kind::Q8_0 => (c / 8) * Q8_0_BLOCK_BYTES + 2 + 4 * (c % 8),
            Kind::Tq2_0 => (c / 16) * TQ2_0_BLOCK_BYTES + 4 * (c % 16),
            Kind::Int8 { .. } => 4 * c,
        };
        codes
            .par_chunks_mut(panel_chunks.max(1))
            .enumerate()
            .for_each(|(p, pc)| {
                let rows: [&[u8]; PANEL] = std::array::from_fn(|j| {
                    let row = p * PANEL + j;
                    if row < n {
                        &data[row * row_bytes..(row + 1) * row_bytes]
                    } else {
                        &[]
                    }
                });
                for (c, chunk) in pc.iter_mut().enumerate() {
                    let from = source(c);
                    for (j, src) in rows.iter().enumerate() {
                        put4(chunk, j, src, from);
                    }
                }
            });
        // Scales: the 8 rows of a panel's group side by side.
        for row in 0..n {
            let sbase = (row / PANEL) * groups * PANEL + row % PANEL;
            match kind {
                Kind::Q4_0 | Kind::Q8_0 | Kind::Tq2_0 => {
                    let (bytes, at) = match kind {
                        Kind::Q4_0 => (Q4_0_BLOCK_BYTES, 0),
                        Kind::Q8_0 => (Q8_0_BLOCK_BYTES, 0),
                        _ => (TQ2_0_BLOCK_BYTES, 64),
                    };
                    let row_bytes = &data[row * groups * bytes..(row + 1) * groups * bytes];
                    for (g, blk) in row_bytes.chunks_exact(bytes).enumerate() {
                        scales16[sbase + g * PANEL] = u16::from_le_bytes([blk[at], blk[at + 1]]);
                    }
                }
                Kind::Int8 { .. } => {
                    for g in 0..groups {
                        scales32[sbase + g * PANEL] = w.scales()[row * groups + g];
                    }
                }
            }
        }
        Ok(Self {
            kind,
            format: w.format(),
            n,
            k,
            nb,
            groups,
            panel_chunks,
            codes,
            scales16,
            scales32,
        })
    }

    /// Bytes held (codes and scales).
    pub(crate) fn storage_bytes(&self) -> usize {
        self.codes.len() * 32 + self.scales16.len() * 2 + self.scales32.len() * 4
    }

    /// Rows `n0 .. n0 + rows` in the original format, exactly the bytes they were packed from.
    /// `n0` is a multiple of [`PANEL`] and `n0 + rows <= N`; `data` and `scales` are reused
    /// buffers (cleared here).
    pub(crate) fn unpack_rows(
        &self,
        n0: usize,
        rows: usize,
        mut data: Vec<u8>,
        mut scales: Vec<f32>,
    ) -> QuantizedTensor {
        let (nb, k) = (self.nb, self.k);
        data.clear();
        scales.clear();
        for row in n0..n0 + rows {
            let (p, j) = (row / PANEL, row % PANEL);
            let pc = &self.codes[p * self.panel_chunks..(p + 1) * self.panel_chunks];
            let sbase = p * self.groups * PANEL + j;
            let lane = |c: usize| &pc[c].0[4 * j..4 * j + 4];
            match self.kind {
                Kind::Q4_0 | Kind::Q8_0 => {
                    let cpb = if self.kind == Kind::Q4_0 { 4 } else { 8 };
                    for b in 0..nb {
                        data.extend_from_slice(&self.scales16[sbase + b * PANEL].to_le_bytes());
                        for c in 0..cpb {
                            data.extend_from_slice(lane(b * cpb + c));
                        }
                    }
                }
                Kind::Tq2_0 => {
                    for sb in 0..nb / 8 {
                        for c in 0..16 {
                            data.extend_from_slice(lane(sb * 16 + c));
                        }
                        data.extend_from_slice(&self.scales16[sbase + sb * PANEL].to_le_bytes());
                    }
                }
                Kind::Int8 { .. } => {
                    let start = data.len();
                    for c in 0..8 * nb {
                        data.extend_from_slice(lane(c));
                    }
                    data.truncate(start + k);
                    scales.extend((0..self.groups).map(|g| self.scales32[sbase + g * PANEL]));
                }
            }
        }
        QuantizedTensor::from_parts(self.format, vec![rows, k], data, scales)
            .expect("unpacking restores the lengths the layout contract checked at packing")
    }

    /// Every row back in the original format.
    pub(crate) fn unpack(&self) -> QuantizedTensor {
        self.unpack_rows(0, self.n, Vec::new(), Vec::new())
    }
}

// ---------------------------------------------------------------------------------------
// Kernels.

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

struct Q4;
impl BlockDot for Q4 {
    const CHUNKS: usize = 4;
    const OFFSET: i32 = 8;
    fn chunk(b: usize) -> usize {
        4 * b
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

/// Activations quantized for the packed kernels: the [`ActQ8`] rows and, per row and block,
/// `-offset · Σ q` for the layout's unsigned codes (computed once per call, not per panel).
pub(crate) struct PackedAct<'a> {
    a: &'a ActQ8,
    /// The code offset these values were computed for (0: none, `neg` empty).
    offset: i32,
    neg: Vec<i32>,
}

impl<'a> PackedAct<'a> {
    /// `a` prepared for the kernels of `w`.
    pub(crate) fn new(w: &Packed, a: &'a ActQ8) -> Self {
        let offset = match w.kind {
            Kind::Q4_0 => Q4::OFFSET,
            Kind::Tq2_0 => Tq2::OFFSET,
            Kind::Q8_0 | Kind::Int8 { .. } => S8::OFFSET,
        };
        let neg = if offset == 0 {
            Vec::new()
        } else {
            a.sums.iter().map(|&s| -offset * s).collect()
        };
        Self { a, offset, neg }
    }
}

/// Where a kernel reads a panel's scales.
#[derive(Clone, Copy)]
enum Scales<'a> {
    F16(&'a [u16]),
    F32(&'a [f32]),
}

impl Scales<'_> {
    /// The 8 scales of group `g`.
    ///
    /// # Safety
    /// AVX2 and F16C are available.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn load(self, g: usize) -> __m256 {
        match self {
            Self::F16(s) => {
                let s = &s[g * PANEL..][..PANEL];
                // SAFETY: `s` has 8 u16 (16 bytes).
                _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) })
            }
            Self::F32(s) => {
                let s = &s[g * PANEL..][..PANEL];
                // SAFETY: `s` has 8 f32.
                unsafe { _mm256_loadu_ps(s.as_ptr()) }
            }
        }
    }
}

/// Panel `p` against activation rows `row0 .. row0 + R` of `a`: `out[r][j]` is the output of
/// weight row `8p + j` for activation row `row0 + r`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `p` is a panel of `w`; `a` was quantized from rows of
/// `w.k` values and has rows `row0 .. row0 + R`; `w.kind` matches `D`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn panel_rows<D: BlockDot, const R: usize>(
    w: &Packed,
    p: usize,
    act: &PackedAct<'_>,
    row0: usize,
) -> [[f32; PANEL]; R] {
    let (a, nb) = (act.a, w.nb);
    assert!(a.nb == nb && act.offset == D::OFFSET);
    let codes = &w.codes[p * w.panel_chunks..(p + 1) * w.panel_chunks];
    let scales = match w.kind {
        Kind::Int8 { .. } => Scales::F32(&w.scales32[p * w.groups * PANEL..(p + 1) * w.groups * PANEL]),
        _ => Scales::F16(&w.scales16[p * w.groups * PANEL..(p + 1) * w.groups * PANEL]),
    };
    let bps = w.kind.blocks_per_scale(nb);
    // Each activation row's codes, scales and block sums, sliced once.
    let qs: [&[i8]; R] = std::array::from_fn(|r| &a.qs[(row0 + r) * nb * 32..][..nb * 32]);
    let ds: [&[f32]; R] = std::array::from_fn(|r| &a.d[(row0 + r) * nb..][..nb]);
    let ss: [&[i32]; R] = std::array::from_fn(|r| {
        if D::OFFSET == 0 {
            &[][..]
        } else {
            &act.neg[(row0 + r) * nb..][..nb]
        }
    });
    // `D::chunk` grows with the block, so the last block bounds every block's chunks.
    assert!(nb == 0 || D::chunk(nb - 1) + D::CHUNKS <= codes.len());
    let cp = codes.as_ptr().cast::<u8>();
    let mut accf = [_mm256_setzero_ps(); R];
    for g in 0..w.groups {
        // SAFETY: g < groups; the features are enabled here.
        let sw = unsafe { scales.load(g) };
        for b in g * bps..nb.min((g + 1) * bps) {
            // b < nb: the block's chunks lie inside `codes` (asserted above) and its 32 codes
            // inside each row of `qs` (nb * 32 long).
            let wb = cp.wrapping_add(32 * D::chunk(b));
            let x: [*const i8; R] = std::array::from_fn(|r| qs[r].as_ptr().wrapping_add(32 * b));
            let neg: [i32; R] = if D::OFFSET == 0 {
                [0; R]
            } else {
                // SAFETY: b < nb, and each row of `ss` holds nb values (sliced above).
                std::array::from_fn(|r| unsafe { ss[r].as_ptr().add(b).read() })
            };
            // SAFETY: `wb` points at the block's D::CHUNKS chunks and each x[r] at 32 codes
            // (above).
            let dots = unsafe { D::dot::<R>(wb, b, x, neg) };
            for r in 0..R {
                // (s_w · d_x) · isum, then added: the generic kernel's rounding, lane by lane.
                // SAFETY: b < nb, and each row of `ds` holds nb scales (sliced above).
                let d = unsafe { ds[r].as_ptr().add(b).read() };
                let s = _mm256_mul_ps(sw, _mm256_set1_ps(d));
                accf[r] = _mm256_add_ps(accf[r], _mm256_mul_ps(_mm256_cvtepi32_ps(dots[r]), s));
            }
        }
    }
    let mut out = [[0.0f32; PANEL]; R];
    for (o, acc) in out.iter_mut().zip(accf) {
        // SAFETY: `o` has 8 f32.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), acc) };
    }
    out
}

/// Panel `p` against every activation row of `a` (up to 4 at a time; 1 to 3 in one pass),
/// written to `yt[j * a.rows + i]` for `j < cols`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `p` is a panel of `w` with `cols <= PANEL` rows inside
/// the matrix; `a` was quantized from rows of `w.k` values; `yt.len() >= cols * a.rows`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel_all<D: BlockDot>(w: &Packed, p: usize, cols: usize, a: &PackedAct<'_>, yt: &mut [f32]) {
    let m = a.a.rows;
    let mut i0 = 0;
    while i0 < m {
        let rows = (m - i0).min(4);
        let mut put = |out: &[[f32; PANEL]]| {
            for (r, lanes) in out.iter().enumerate() {
                for (j, &v) in lanes.iter().enumerate().take(cols) {
                    yt[j * m + i0 + r] = v;
                }
            }
        };
        // SAFETY: forwarded from the caller; rows i0 .. i0 + rows of `a` exist.
        unsafe {
            match rows {
                4 => put(&panel_rows::<D, 4>(w, p, a, i0)),
                3 => put(&panel_rows::<D, 3>(w, p, a, i0)),
                2 => put(&panel_rows::<D, 2>(w, p, a, i0)),
                _ => put(&panel_rows::<D, 1>(w, p, a, i0)),
            }
        }
        i0 += rows;
    }
}

/// Panel `p` of `w` (`cols` rows inside the matrix) against every row of `a`, written to
/// `yt[j * a.rows + i]`. The same sums and roundings as the generic q8 kernel.
///
/// # Panics
/// If `a` was not quantized from rows of `w.k` values, `p` is not a panel of `w`, `cols`
/// exceeds the panel's rows, or `yt` is shorter than `cols * a.rows`.
pub(crate) fn panel(w: &Packed, p: usize, cols: usize, act: &PackedAct<'_>, yt: &mut [f32]) {
    let a = act.a;
    assert!(
        a.nb == w.nb
            && p < w.n.div_ceil(PANEL)
            && cols <= PANEL
            && p * PANEL + cols <= w.n
            && yt.len() >= cols * a.rows
            && a.sums.len() >= a.rows * a.nb
    );
    assert!(
        super::x86::detect().is_some(),
        "packed weights exist only where AVX2 runs"
    );
    // SAFETY: AVX2, FMA and F16C were detected (checked above; `Packed` is only built when
    // they are); the shapes were asserted above.
    unsafe {
        match w.kind {
            Kind::Q4_0 => panel_all::<Q4>(w, p, cols, act, yt),
            Kind::Tq2_0 => panel_all::<Tq2>(w, p, cols, act, yt),
            Kind::Q8_0 | Kind::Int8 { .. } => panel_all::<S8>(w, p, cols, act, yt),
        }
    }
}
