//! RMSNorm and LayerNorm, rows in parallel.

use aihal_core::Result;
use aihal_reference as reference;

use super::{dot, rows_per_task};
use crate::pool::for_chunks;

/// RMSNorm, as [`reference::rms_norm`].
pub fn rms_norm(x: &[f32], dim: usize, weight: &[f32], eps: f32) -> Result<Vec<f32>> {
    // Validation (and the error messages) are the reference's; an empty input costs nothing.
    reference::rms_norm(&[], dim, weight, eps)?;
    reference::rows_of("rms_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        rms_rows_best(yc, xc, dim, weight, eps);
    });
    Ok(y)
}

/// RMSNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn rms_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        let inv = 1.0 / (dot(xr, xr) / dim as f32 + eps).sqrt();
        for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * g;
        }
    }
}
with_avx2!(rms_rows, rms_rows_avx2, rms_rows_best, (yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], eps: f32));

/// LayerNorm, as [`reference::layer_norm`].
pub fn layer_norm(x: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) -> Result<Vec<f32>> {
    reference::layer_norm(&[], dim, weight, bias, eps)?;
    reference::rows_of("layer_norm", x.len(), dim)?;
    let mut y = vec![0.0f32; x.len()];
    for_chunks(&mut y, x, dim * rows_per_task(dim), |yc, xc| {
        layer_rows_best(yc, xc, dim, weight, bias, eps);
    });
    Ok(y)
}

/// LayerNorm of the rows of `xc` into `yc`.
// Inlined into each build (baseline, AVX2 + FMA): that is how it gets compiled for both.
#[allow(clippy::inline_always)]
#[inline(always)]
pub(super) fn layer_rows(yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    for (yr, xr) in yc.chunks_exact_mut(dim).zip(xc.chunks_exact(dim)) {
        let ones = [1.0f32; 8];
        let sum: f32 = xr.chunks(8).map(|c| dot(c, &ones[..c.len()])).sum();
        let mean = sum / dim as f32;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = v - mean;
        }
        let inv = 1.0 / (dot(yr, yr) / dim as f32 + eps).sqrt();
        for (i, o) in yr.iter_mut().enumerate() {
            *o = *o * inv * weight[i] + bias.map_or(0.0, |b| b[i]);
        }
    }
}
with_avx2!(layer_rows, layer_rows_avx2, layer_rows_best, (
    yc: &mut [f32], xc: &[f32], dim: usize, weight: &[f32], bias: Option<&[f32]>, eps: f32
));
