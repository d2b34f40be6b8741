//! Rotary position embedding, tokens in parallel on `crate::pool`.

use aihal_core::Result;
use aihal_reference::{self as reference, RopeStyle};

/// Rotary embedding, as [`reference::rope`]: the sine/cosine table is computed once per
/// position, a few tokens per task on `crate::pool` (one token, a decode step, runs on the
/// calling thread).
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    reference::rope(&[], n_heads, head_dim, pos0, theta, style)?;
    let row = (n_heads * head_dim).max(1);
    reference::rows_of("rope", x.len(), row)?;
    let mut y = x.to_vec();
    let per_task = (y.len() / row).div_ceil(2 * crate::pool::threads()).max(1);
    crate::pool::run_tasks(y.chunks_mut(per_task * row).collect(), |c, yc: &mut [f32]| {
        for (r, yr) in yc.chunks_mut(row).enumerate() {
            rotate(yr, pos0 + c * per_task + r, head_dim, theta, style);
        }
    });
    Ok(y)
}

/// One token's heads `yr`, rotated for position `pos`.
fn rotate(yr: &mut [f32], pos: usize, head_dim: usize, theta: f32, style: RopeStyle) {
    let half = head_dim / 2;
    let table: Vec<(f32, f32)> = (0..half)
        .map(|i| reference::rope_angle(pos as f64, i, head_dim, theta))
        .collect();
    for head in yr.chunks_exact_mut(head_dim.max(1)) {
        for (i, &(sin, cos)) in table.iter().enumerate() {
            let (ia, ib) = match style {
                RopeStyle::Half => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (a, b) = (head[ia], head[ib]);
            head[ia] = a * cos - b * sin;
            head[ib] = a * sin + b * cos;
        }
    }
}
