//! x86_64 panel kernels: the int8-activation path for M > 1, shaped as a small GEMM.
//!
//! A panel is [`PANEL`] = 8 weight rows repacked per block of 32 values into 8 vectors of 32
//! bytes; vector `g` holds codes `4g .. 4g + 4` of each of the 8 rows, one row per 32-bit lane,
//! stored unsigned (`code + offset`: 8 for Q4_0, 1 for TQ2_0). For each activation row, 4
//! activation codes are broadcast to every lane and multiplied into the 8 rows at once
//! (`vpmaddubsw` + `vpmaddwd`; unsigned codes below 16 cannot saturate it), so a lane
//! ends a block holding the whole integer dot product of one weight row; the accumulator
//! starts at `-offset * Σ q` of the activation block, which removes the offset exactly.
//! 8-bit codes (Q8_0, int8, and NF4's int8 levels) would saturate `vpmaddubsw` with an offset
//! of 128, so their panels hold `|code|` and the signed codes, and the broadcast activations
//! take the sign of each weight (`vpsignb`) before the multiply, one instruction more per
//! product. One conversion, one multiply by the activation scale and one FMA with the 8
//! weight scales per block then scale 8 outputs at a time. The panel is decoded once and
//! reused by every activation row; each activation load is reused by 8 weight rows.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_add_epi8, _mm256_cvtepi32_ps, _mm256_fmadd_ps, _mm256_loadu_ps,
    _mm256_loadu_si256, _mm256_madd_epi16, _mm256_maddubs_epi16, _mm256_mul_ps, _mm256_permute2x128_si256,
    _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_set1_ps, _mm256_setzero_ps, _mm256_setzero_si256,
    _mm256_sign_epi8, _mm256_storeu_ps, _mm256_storeu_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64,
    _mm256_unpacklo_epi32, _mm256_unpacklo_epi64,
};

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::act::ROW_PAD;
use super::x86::{int8_row, nf4_row, q4_0_row, q8_0_row, tq2_row, Int8Row, Row};
use super::{generic, ActQ8, Panel, PanelFn, MAX_ROWS, PANEL};

/// The AVX2 panel kernels: unsigned panels for formats whose codes plus offset stay below
/// 16, so that `vpmaddubsw` cannot saturate (2 · 15 · 127 < 2^15); signed panels for the 8-bit
/// codes (Q8_0, int8) and for NF4's int8 levels ([`NF4_I8`](crate::kernels::codes::NF4_I8)).
pub(crate) fn panel_avx2(format: QuantFormat) -> Option<PanelFn> {
    match format {
        QuantFormat::Q4_0 => Some(avx2_q4_0),
        QuantFormat::Tq2_0 => Some(avx2_tq2_0),
        QuantFormat::Q8_0 => Some(avx2_q8_0),
        QuantFormat::Int8PerChannel => Some(avx2_int8),
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => Some(avx2_int8),
        QuantFormat::Nf4 { block_size, .. } if block_size.is_multiple_of(32) => Some(avx2_nf4),
        _ => None,
    }
}

/// Transposes 8 vectors of 8 32-bit lanes: lane `g` of input `j` becomes lane `j` of output `g`.
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(v: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
    let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
    let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
    let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
    let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256(u0, u4, 0x20),
        _mm256_permute2x128_si256(u1, u5, 0x20),
        _mm256_permute2x128_si256(u2, u6, 0x20),
        _mm256_permute2x128_si256(u3, u7, 0x20),
        _mm256_permute2x128_si256(u0, u4, 0x31),
        _mm256_permute2x128_si256(u1, u5, 0x31),
        _mm256_permute2x128_si256(u2, u6, 0x31),
        _mm256_permute2x128_si256(u3, u7, 0x31),
    ]
}

/// Repacks up to [`PANEL`] weight rows (`None` past the matrix: scale 0) into `buf`, `nb`
/// blocks of 32 each; `tail` gives the zero-padded partial last block of a row, if it has one.
///
/// # Safety
/// AVX2 and F16C are available; every row has `nb` blocks counting its tail.
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack<T: Row, const SIGNED: bool>(
    rows: &[Option<T>; PANEL],
    tail: impl Fn(&T) -> Option<([u8; 32], f32)>,
    nb: usize,
    offset: u8,
    buf: &mut Panel,
) {
    let stride = block_bytes::<SIGNED>();
    buf.codes.clear();
    buf.codes.resize(nb * stride, 0);
    buf.scales.clear();
    buf.scales.resize(nb * PANEL, 0.0);
    let tails: [Option<([u8; 32], f32)>; PANEL] = std::array::from_fn(|j| rows[j].as_ref().and_then(&tail));
    let off = _mm256_set1_epi8(i8::from_ne_bytes([offset]));
    for b in 0..nb {
        let mut v = [off; PANEL];
        for (j, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            let (q, s) = if b < row.full_blocks() {
                // SAFETY: b < full_blocks(); the features are enabled on this function.
                unsafe { row.codes(b) }
            } else if let Some((pad, s)) = &tails[j] {
                // SAFETY: `pad` has 32 bytes.
                (unsafe { _mm256_loadu_si256(pad.as_ptr().cast()) }, *s)
            } else {
                (_mm256_setzero_si256(), 0.0)
            };
            v[j] = _mm256_add_epi8(q, off);
            buf.scales[b * PANEL + j] = s;
        }
        let dst = &mut buf.codes[b * stride..(b + 1) * stride];
        let abs = if SIGNED { v.map(|q| _mm256_sign_epi8(q, q)) } else { v };
        for (g, t) in transpose8(abs).into_iter().enumerate() {
            // SAFETY: bytes 32g .. 32g + 32 lie inside `dst` (g < 8).
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(32 * g).cast(), t) };
        }
        if SIGNED {
            for (g, t) in transpose8(v).into_iter().enumerate() {
                // SAFETY: bytes 256 + 32g .. 256 + 32g + 32 lie inside `dst` (g < 8, SIGNED).
                unsafe { _mm256_storeu_si256(dst.as_mut_ptr().add(32 * (PANEL + g)).cast(), t) };
            }
        }
    }
}

/// Bytes per block of a packed panel: the unsigned codes, and for signed panels the signed
/// codes after them.
const fn block_bytes<const SIGNED: bool>() -> usize {
    if SIGNED {
        64 * PANEL
    } else {
        32 * PANEL
    }
}

/// `acc + Σ_{4 bytes} w · x` per 32-bit lane, `w` unsigned, `x` signed, no pair of products
/// beyond ±2^15 (no `vpmaddubsw` saturation): `w < 16`, or `w = |code| <= 128` with
/// `|x| <= 127` (`2 · 128 · 127 < 2^15`).
#[target_feature(enable = "avx2")]
#[inline]
fn dot_avx2(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
}

/// Every activation row of `a` against the panel in `buf`, written to
/// `yt[j * a.rows + i]` for `j < cols`.
///
/// # Safety
/// AVX2, FMA and F16C are available; `buf` was packed for `a.nb` blocks with `offset`
/// and `SIGNED`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn compute<const SIGNED: bool>(buf: &Panel, offset: i32, a: &ActQ8, cols: usize, yt: &mut [f32]) {
    let stride = block_bytes::<SIGNED>();
    let (nb, m) = (a.nb, a.rows);
    let padded = m.next_multiple_of(ROW_PAD);
    assert!(
        buf.codes.len() >= nb * stride
            && buf.scales.len() >= nb * PANEL
            && a.qs.len() >= padded * nb * 32
            && a.d.len() >= padded * nb
            && a.sums.len() >= padded * nb
            && cols <= PANEL
            && yt.len() >= cols * m
    );
    let mut i0 = 0;
    while i0 < m {
        let mut accf = [_mm256_setzero_ps(); ROW_PAD];
        for b in 0..nb {
            let mut acc0: [__m256i; ROW_PAD] =
                std::array::from_fn(|r| _mm256_set1_epi32(-offset * a.sums[(i0 + r) * nb + b]));
            let mut acc1 = [_mm256_setzero_si256(); ROW_PAD];
            let wp = buf.codes[b * stride..].as_ptr();
            let xp: [*const i8; ROW_PAD] = std::array::from_fn(|r| a.qs[((i0 + r) * nb + b) * 32..].as_ptr());
            for g in (0..8).step_by(2) {
                // SAFETY: the panel block has 8 (16 when SIGNED) vectors of 32 bytes (asserted).
                let (w0, w1, s0, s1) = unsafe {
                    let s = if SIGNED { 32 * PANEL } else { 0 };
                    (
                        _mm256_loadu_si256(wp.add(32 * g).cast()),
                        _mm256_loadu_si256(wp.add(32 * g + 32).cast()),
                        _mm256_loadu_si256(wp.add(s + 32 * g).cast()),
                        _mm256_loadu_si256(wp.add(s + 32 * g + 32).cast()),
                    )
                };
                for r in 0..ROW_PAD {
                    // SAFETY: bytes 4g .. 4g + 8 of block b of row i0 + r are inside
                    // `a.qs` (rows are padded to ROW_PAD, asserted above).
                    let (x0, x1) = unsafe {
                        (
                            _mm256_set1_epi32(xp[r].add(4 * g).cast::<i32>().read_unaligned()),
                            _mm256_set1_epi32(xp[r].add(4 * g + 4).cast::<i32>().read_unaligned()),
                        )
                    };
                    // Signed panels: |w| against x carrying w's sign.
                    let (x0, x1) = if SIGNED {
                        (_mm256_sign_epi8(x0, s0), _mm256_sign_epi8(x1, s1))
                    } else {
                        (x0, x1)
                    };
                    acc0[r] = dot_avx2(acc0[r], w0, x0);
                    acc1[r] = dot_avx2(acc1[r], w1, x1);
                }
            }
            // SAFETY: the panel has PANEL scales per block (asserted above).
            let sc = unsafe { _mm256_loadu_ps(buf.scales[b * PANEL..].as_ptr()) };
            for r in 0..ROW_PAD {
                // `dx · isum` first, then the weight scales: it stays normal for tiny
                // (subnormal) activations, where `dw · dx` could underflow.
                let dot = _mm256_cvtepi32_ps(_mm256_add_epi32(acc0[r], acc1[r]));
                let dot = _mm256_mul_ps(dot, _mm256_set1_ps(a.d[(i0 + r) * nb + b]));
                accf[r] = _mm256_fmadd_ps(dot, sc, accf[r]);
            }
        }
        for (r, acc) in accf.iter().enumerate().take(m - i0) {
            let mut lanes = [0.0f32; PANEL];
            // SAFETY: `lanes` has 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *acc) };
            for (j, &v) in lanes.iter().enumerate().take(cols) {
                yt[j * m + i0 + r] = v;
            }
        }
        i0 += ROW_PAD;
    }
}

/// The rows `n0 .. n0 + cols` of `w` as `Row`s, `None` past `cols`.
fn rows<'a, T: Row>(n0: usize, cols: usize, row: impl Fn(usize) -> T + 'a) -> [Option<T>; PANEL] {
    std::array::from_fn(|j| (j < cols).then(|| row(n0 + j)))
}

fn no_tail<T>(_: &T) -> Option<([u8; 32], f32)> {
    None
}

macro_rules! entry {
    ($name:ident, $row:ident, $tail:expr, $offset:literal, $signed:literal) => {
        /// # Safety
        /// See [`PanelFn`].
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name(w: &QuantizedTensor, n0: usize, cols: usize, a: &ActQ8, buf: &mut Panel, yt: &mut [f32]) {
            let rows = rows(n0, cols, |n| $row(w, n));
            // SAFETY: forwarded from the caller (the PanelFn contract); rows of `w` have
            // `a.nb` blocks since `a` was quantized from rows of `w.row_len()` values.
            unsafe {
                pack::<_, $signed>(&rows, $tail, a.nb, $offset, buf);
                compute::<$signed>(buf, i32::from($offset), a, cols, yt);
            }
        }
    };
}

entry!(avx2_q4_0, q4_0_row, no_tail, 8, false);
entry!(avx2_tq2_0, tq2_row, no_tail, 1, false);
entry!(avx2_q8_0, q8_0_row, no_tail, 0, true);
entry!(avx2_int8, int8_row, Int8Row::tail, 0, true);

/// NF4 as a signed panel: each code packed as its int8 level, the scale `absmax` per block of
/// 32, each output divided by 127 at the end (the arithmetic of [`generic::q8_nf4`]). Rows that start inside a block of 32
/// (`K % 32 != 0`, where a block of 32 may straddle two absmax blocks) take the scalar
/// definition, a weight row at a time.
///
/// # Safety
/// See [`PanelFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_nf4(w: &QuantizedTensor, n0: usize, cols: usize, a: &ActQ8, buf: &mut Panel, yt: &mut [f32]) {
    if !w.row_len().is_multiple_of(32) {
        let m = a.rows;
        for j in 0..cols {
            let mut i0 = 0;
            while i0 < m {
                let rows = MAX_ROWS.min(m - i0);
                generic::q8_nf4(w, n0 + j, a, i0, rows, &mut yt[j * m + i0..j * m + i0 + rows]);
                i0 += rows;
            }
        }
        return;
    }
    // Every row of an NF4 tensor with K % 32 == 0 has its view (None only past `cols`).
    let rows: [Option<_>; PANEL] = std::array::from_fn(|j| if j < cols { nf4_row(w, n0 + j) } else { None });
    // SAFETY: forwarded from the caller (the PanelFn contract); rows of `w` have `a.nb`
    // blocks since `a` was quantized from rows of `w.row_len()` values.
    unsafe {
        pack::<_, true>(&rows, no_tail, a.nb, 0, buf);
        compute::<true>(buf, 0, a, cols, yt);
    }
    for v in &mut yt[..cols * a.rows] {
        *v /= 127.0;
    }
}
