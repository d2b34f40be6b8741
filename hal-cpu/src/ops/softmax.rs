//! Softmax over rows, in parallel; one row's softmax is also attention's.

use aihal_core::Result;
use aihal_reference as reference;

use super::exp::{exp8, exp_lanes};
use super::rows_per_task;
#[cfg(target_arch = "x86_64")]
use super::{wide, wide512};
use crate::pool::for_chunks;

/// Softmax over rows, as [`reference::softmax`] (rows in parallel, `exp8` for `exp`).
pub fn softmax(x: &[f32], dim: usize) -> Result<Vec<f32>> {
    reference::rows_of("softmax", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        softmax_rows_best(yc, xc, dim);
    });
    Ok(y)
}

/// Softmax of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn softmax_rows(yc: &mut [f32], xc: &[f32], dim: usize) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        softmax_row(xr, yr);
    }
}

/// [`softmax_rows`] built for AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) fn softmax_rows_avx2(yc: &mut [f32], xc: &[f32], dim: usize) {
    softmax_rows(yc, xc, dim);
}

/// [`softmax_rows`] built for AVX-512, its exponentials 16 at a time (the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn softmax_rows_avx512(yc: &mut [f32], xc: &[f32], dim: usize) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        softmax_row_lanes::<16>(xr, yr);
    }
}

/// The widest build of [`softmax_rows`] the CPU runs.
fn softmax_rows_best(yc: &mut [f32], xc: &[f32], dim: usize) {
    #[cfg(target_arch = "x86_64")]
    if wide512() {
        // SAFETY: AVX-512 F, AVX2 and FMA were detected (`wide512`).
        return unsafe { softmax_rows_avx512(yc, xc, dim) };
    }
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: AVX2 and FMA were detected (`wide`).
        return unsafe { softmax_rows_avx2(yc, xc, dim) };
    }
    softmax_rows(yc, xc, dim);
}

/// One softmax row into `y` (as long as `row`), with the reference's semantics: the row's
/// maximum subtracted, a row of `-inf` (all masked) all zeros, a NaN or `+inf` in the row a
/// row of NaN. The sum is taken in 8 lanes, then the lanes in order.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn softmax_row(row: &[f32], y: &mut [f32]) {
    softmax_row_lanes::<8>(row, y);
}

/// [`softmax_row`] with its exponentials taken `E` (8 or 16) at a time. The sum stays in 8
/// lanes, each lane adding its values in the order of the row whatever `E` is (a chunk of 16
/// adds its first 8 values, then its last 8), so every `E` gives the same bits.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
fn softmax_row_lanes<const E: usize>(row: &[f32], y: &mut [f32]) {
    let (max, sum) = shifted_exp_lanes::<E>(row, y);
    if max == f32::NEG_INFINITY {
        return;
    }
    // A NaN in the row, or a `+inf` (`inf - inf`), made the sum NaN: the row is NaN.
    if sum.is_nan() {
        y.fill(f32::NAN);
        return;
    }
    let inv = 1.0 / sum;
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// `y[j] = exp(row[j] - max)` and their sum, the unnormalized half of a softmax row; returns
/// `(max, sum)`. The maximum ignores NaN; a row of `-inf` (all masked) gives `max = -inf`
/// and `y` all zeros (all NaN, and a NaN sum, if the row has a NaN); a NaN or `+inf` in the
/// row makes the sum NaN. The sum is taken in 8 lanes, then the lanes in order, the
/// exponentials `E` (8 or 16) at a time with the same bits for either.
// Inlined into each build: that is how it gets compiled for each.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn shifted_exp_lanes<const E: usize>(row: &[f32], y: &mut [f32]) -> (f32, f32) {
    // The maximum ignoring NaN (a comparison with NaN is false); NaN is caught below.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let (rc, rr) = row.split_at(row.len() / 8 * 8);
    for c in rc.chunks_exact(8) {
        for l in 0..8 {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    let max = lanes
        .iter()
        .chain(rr)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if max == f32::NEG_INFINITY {
        let fill = if row.iter().any(|v| v.is_nan()) { f32::NAN } else { 0.0 };
        y.fill(fill);
        return (max, fill);
    }
    // `exp(v - max)` and its sum in 8 lanes; the padding `-inf` of a partial chunk gives 0.
    let mut acc = [0.0f32; 8];
    let (yc, yr) = y.split_at_mut(rc.len());
    let wide = if E == 16 { rc.len() / 16 * 16 } else { 0 };
    let (yw, yc) = yc.split_at_mut(wide);
    let (rw, rc) = rc.split_at(wide);
    for (o, c) in yw.chunks_exact_mut(16).zip(rw.chunks_exact(16)) {
        let mut d = [0.0f32; 16];
        for l in 0..16 {
            d[l] = c[l] - max;
        }
        let e = exp_lanes(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        for l in 0..8 {
            acc[l] += e[8 + l];
        }
        o.copy_from_slice(&e);
    }
    for (o, c) in yc.chunks_exact_mut(8).zip(rc.chunks_exact(8)) {
        let mut d = [0.0f32; 8];
        for l in 0..8 {
            d[l] = c[l] - max;
        }
        let e = exp8(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        o.copy_from_slice(&e);
    }
    if !rr.is_empty() {
        let mut d = [f32::NEG_INFINITY; 8];
        for (d, &v) in d.iter_mut().zip(rr) {
            *d = v - max;
        }
        let e = exp8(d);
        for l in 0..8 {
            acc[l] += e[l];
        }
        yr.copy_from_slice(&e[..rr.len()]);
    }
    (max, acc.iter().sum::<f32>())
}
