//! x86_64 exact panel kernels: the f32-activation path for M > 1, shaped as a small GEMM.
//!
//! [`EXACT_PANEL`] = 16 weight rows are decoded once to f32 and stored k-major (value `k` of
//! the 16 rows side by side, one row per lane of two vectors), then the activation rows stream
//! over the panel 6 at a time: per `k`, two panel loads and 6 broadcasts of `x[i][k]` feed 12
//! FMAs (12 accumulators, 6 × 16 outputs, in registers). The decode, the expensive part for
//! 4-bit and FP8 formats, is paid once per 16 weight rows instead of once per activation row
//! group; each output accumulates in increasing `k` with one FMA per value.

use std::arch::x86_64::{
    __m256, _mm256_castpd_ps, _mm256_castps_pd, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_permute2f128_ps,
    _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_unpackhi_pd, _mm256_unpackhi_ps, _mm256_unpacklo_pd,
    _mm256_unpacklo_ps,
};

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::x86::{
    fp8_row, int8_row, nf4_row, q4_0_row, q4_1_f32, q4_k_f32, q5_0_row, q6_k_f32, q8_0_row, tq2_row, Chunked, F32Row,
    Widen,
};
use super::{ExactPanelFn, Panel, EXACT_PANEL, PANEL};
use crate::kernels::codes::{decode_row_into, ChunkedRow};

/// The exact panel kernel of every format (formats without an in-register decoder go through
/// the scalar decoder, 256 values per call, still once per panel).
#[allow(clippy::unnecessary_wraps)] // the table's signature: other sets lack some formats
pub(crate) fn exact_panel_avx2(format: QuantFormat) -> Option<ExactPanelFn> {
    Some(match format {
        QuantFormat::Q4_0 => fp_q4_0,
        QuantFormat::Q8_0 => fp_q8_0,
        QuantFormat::Q5_0 => fp_q5_0,
        QuantFormat::Q4_1 => fp_q4_1,
        QuantFormat::Q4K => fp_q4_k,
        QuantFormat::Q6K => fp_q6_k,
        QuantFormat::Tq2_0 => fp_tq2_0,
        QuantFormat::Int8PerChannel => fp_int8,
        QuantFormat::Int8PerBlock { block_size } if block_size.is_multiple_of(32) => fp_int8,
        QuantFormat::Nf4 { .. } => fp_nf4,
        QuantFormat::Fp8E4M3 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => fp_e4m3,
        QuantFormat::Fp8E5M2 { block_size } if block_size.is_none_or(|b| b.is_multiple_of(32)) => fp_e5m2,
        _ => fp_chunked,
    })
}

/// Transposes 8 vectors of 8 f32: lane `e` of input `j` becomes lane `j` of output `e`.
#[target_feature(enable = "avx2")]
#[inline]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    let lo = |a: __m256, b: __m256| _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
    let hi = |a: __m256, b: __m256| _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)));
    let (u0, u1, u2, u3) = (lo(t0, t2), hi(t0, t2), lo(t1, t3), hi(t1, t3));
    let (u4, u5, u6, u7) = (lo(t4, t6), hi(t4, t6), lo(t5, t7), hi(t5, t7));
    [
        _mm256_permute2f128_ps(u0, u4, 0x20),
        _mm256_permute2f128_ps(u1, u5, 0x20),
        _mm256_permute2f128_ps(u2, u6, 0x20),
        _mm256_permute2f128_ps(u3, u7, 0x20),
        _mm256_permute2f128_ps(u0, u4, 0x31),
        _mm256_permute2f128_ps(u1, u5, 0x31),
        _mm256_permute2f128_ps(u2, u6, 0x31),
        _mm256_permute2f128_ps(u3, u7, 0x31),
    ]
}

/// Decodes rows `n0 .. n0 + cols` of `w` into `buf.values` (`K * EXACT_PANEL` f32, k-major,
/// zero lanes past `cols`): full blocks of 32 with `rows`, the rest with the scalar decoder.
///
/// # Safety
/// AVX2, FMA and F16C are available; `rows[j]` is row `n0 + j` of `w` for `j < cols`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<T: F32Row>(
    rows: &[Option<T>; EXACT_PANEL],
    w: &QuantizedTensor,
    n0: usize,
    cols: usize,
    buf: &mut Panel,
) {
    const W: usize = EXACT_PANEL;
    let k = w.row_len();
    buf.values.clear();
    buf.values.resize(k * W, 0.0);
    let full = rows[0].as_ref().map_or(0, F32Row::full_blocks);
    assert!(full * 32 <= k && rows.iter().flatten().all(|r| r.full_blocks() == full));
    for b in 0..full {
        for (h, half) in rows.chunks_exact(PANEL).enumerate() {
            let mut v = [[_mm256_setzero_ps(); 4]; PANEL];
            for (vj, row) in v.iter_mut().zip(half) {
                if let Some(row) = row {
                    // SAFETY: b < full_blocks(); the features are enabled on this function.
                    *vj = unsafe { row.values(b) };
                }
            }
            for q in 0..4 {
                let t = transpose8(v.map(|vj| vj[q]));
                let dst = &mut buf.values[(32 * b + 8 * q) * W..(32 * b + 8 * q + 8) * W];
                for (e, te) in t.into_iter().enumerate() {
                    // SAFETY: values W e + 8h .. W e + 8h + 8 lie inside `dst` (e < 8, h < 2).
                    unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(W * e + PANEL * h), te) };
                }
            }
        }
    }
    let tail = k - full * 32;
    if tail > 0 {
        let mut vals = [0.0f32; 32];
        for j in 0..cols {
            decode_row_into(w, n0 + j, full * 32, &mut vals[..tail]);
            for (t, &v) in vals[..tail].iter().enumerate() {
                buf.values[(full * 32 + t) * W + j] = v;
            }
        }
    }
}

/// `yt[j * m + i0 + r] = Σ_k x[r][k] * panel[k][j]` for `r < R`, `j < cols`.
///
/// # Safety
/// AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn rows_times_panel<const R: usize>(
    panel: &[f32],
    x: &[f32],
    k: usize,
    cols: usize,
    m: usize,
    i0: usize,
    yt: &mut [f32],
) {
    const W: usize = EXACT_PANEL;
    assert!(panel.len() >= k * W && x.len() >= R * k);
    let (p, xp) = (panel.as_ptr(), x.as_ptr());
    let mut a0 = [_mm256_setzero_ps(); R];
    let mut a1 = [_mm256_setzero_ps(); R];
    for kk in 0..k {
        // SAFETY: kk < k: the panel has k * W values and x has R rows of k (asserted).
        unsafe {
            let (p0, p1) = (_mm256_loadu_ps(p.add(kk * W)), _mm256_loadu_ps(p.add(kk * W + PANEL)));
            for (r, (a0, a1)) in a0.iter_mut().zip(&mut a1).enumerate() {
                let xv = _mm256_set1_ps(*xp.add(r * k + kk));
                *a0 = _mm256_fmadd_ps(xv, p0, *a0);
                *a1 = _mm256_fmadd_ps(xv, p1, *a1);
            }
        }
    }
    for (r, (a0, a1)) in a0.into_iter().zip(a1).enumerate() {
        let mut lanes = [0.0f32; W];
        // SAFETY: `lanes` has 16 f32.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), a0);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(PANEL), a1);
        }
        for (j, &v) in lanes.iter().enumerate().take(cols) {
            yt[j * m + i0 + r] = v;
        }
    }
}

/// Packs the panel, then runs every activation row over it, 6 at a time.
///
/// # Safety
/// As [`pack`]; `x` holds `m` rows of `K`, `yt.len() >= cols * m`.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn run<T: F32Row>(
    rows: &[Option<T>; EXACT_PANEL],
    w: &QuantizedTensor,
    n0: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    buf: &mut Panel,
    yt: &mut [f32],
) {
    let k = w.row_len();
    // SAFETY: forwarded from the caller.
    unsafe { pack(rows, w, n0, cols, buf) };
    let mut i0 = 0;
    while i0 < m {
        let r = (m - i0).min(6);
        let xs = &x[i0 * k..(i0 + r) * k];
        // SAFETY: the features are enabled on this function.
        unsafe {
            match r {
                6 => rows_times_panel::<6>(&buf.values, xs, k, cols, m, i0, yt),
                5 => rows_times_panel::<5>(&buf.values, xs, k, cols, m, i0, yt),
                4 => rows_times_panel::<4>(&buf.values, xs, k, cols, m, i0, yt),
                3 => rows_times_panel::<3>(&buf.values, xs, k, cols, m, i0, yt),
                2 => rows_times_panel::<2>(&buf.values, xs, k, cols, m, i0, yt),
                _ => rows_times_panel::<1>(&buf.values, xs, k, cols, m, i0, yt),
            }
        }
        i0 += r;
    }
}

/// The rows `n0 .. n0 + cols` of `w`, `None` past `cols`.
fn rows<T>(n0: usize, cols: usize, row: impl Fn(usize) -> T) -> [Option<T>; EXACT_PANEL] {
    std::array::from_fn(|j| (j < cols).then(|| row(n0 + j)))
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident, |$w:ident, $n:ident| $row:expr, wide) => {
        $(#[$doc])*
        /// # Safety
        /// See [`ExactPanelFn`].
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name($w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]) {
            let base = rows(n0, cols, |$n| $row);
            let wide = base.each_ref().map(|r| r.as_ref().map(Widen));
            // SAFETY: forwarded from the caller (the ExactPanelFn contract).
            unsafe { run(&wide, $w, n0, cols, x, m, buf, yt) }
        }
    };
    ($(#[$doc:meta])* $name:ident, |$w:ident, $n:ident| $row:expr) => {
        $(#[$doc])*
        /// # Safety
        /// See [`ExactPanelFn`].
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name($w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]) {
            let rows = rows(n0, cols, |$n| $row);
            // SAFETY: forwarded from the caller (the ExactPanelFn contract).
            unsafe { run(&rows, $w, n0, cols, x, m, buf, yt) }
        }
    };
}

entry!(fp_q4_0, |w, n| q4_0_row(w, n), wide);
entry!(fp_q8_0, |w, n| q8_0_row(w, n), wide);
entry!(fp_tq2_0, |w, n| tq2_row(w, n), wide);
entry!(fp_int8, |w, n| int8_row(w, n), wide);
entry!(fp_q5_0, |w, n| q5_0_row(w, n), wide);
entry!(fp_q4_1, |w, n| q4_1_f32(w, n));
entry!(fp_q4_k, |w, n| q4_k_f32(w, n));
entry!(fp_q6_k, |w, n| q6_k_f32(w, n));
entry!(fp_chunked, |w, n| Chunked(ChunkedRow::new(w, n)));

/// # Safety
/// See [`ExactPanelFn`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp_nf4(w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]) {
    if w.row_len().is_multiple_of(32) {
        let rows = rows(n0, cols, |n| nf4_row(w, n));
        if rows.iter().flatten().all(Option::is_some) {
            let rows = rows.map(Option::flatten);
            // SAFETY: forwarded from the caller (the ExactPanelFn contract).
            return unsafe { run(&rows, w, n0, cols, x, m, buf, yt) };
        }
    }
    // SAFETY: forwarded from the caller (the ExactPanelFn contract).
    unsafe { fp_chunked(w, n0, cols, x, m, buf, yt) }
}

/// # Safety
/// See [`ExactPanelFn`]; the block size is `None` or a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp_e4m3(w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]) {
    let QuantFormat::Fp8E4M3 { block_size } = w.format() else {
        return;
    };
    let rows = rows(n0, cols, |n| fp8_row::<false>(w, n, block_size));
    // SAFETY: forwarded from the caller (the ExactPanelFn contract).
    unsafe { run(&rows, w, n0, cols, x, m, buf, yt) }
}

/// # Safety
/// See [`ExactPanelFn`]; the block size is `None` or a multiple of 32.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp_e5m2(w: &QuantizedTensor, n0: usize, cols: usize, x: &[f32], m: usize, buf: &mut Panel, yt: &mut [f32]) {
    let QuantFormat::Fp8E5M2 { block_size } = w.format() else {
        return;
    };
    let rows = rows(n0, cols, |n| fp8_row::<true>(w, n, block_size));
    // SAFETY: forwarded from the caller (the ExactPanelFn contract).
    unsafe { run(&rows, w, n0, cols, x, m, buf, yt) }
}
