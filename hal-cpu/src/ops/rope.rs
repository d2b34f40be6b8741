//! Rotary position embedding, tokens in parallel.

use aihal_core::Result;
use aihal_reference::{self as reference, RopeStyle};
use rayon::prelude::*;

/// Rotary embedding, as [`reference::rope`]: the sine/cosine table is computed once per
/// position, tokens in parallel.
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    reference::rope(&[], n_heads, head_dim, pos0, theta, style)?;
    let row = n_heads * head_dim;
    reference::rows_of("rope", x.len(), row.max(1))?;
    let half = head_dim / 2;
    let mut y = x.to_vec();
    y.par_chunks_mut(row.max(1)).enumerate().for_each(|(s, yr)| {
        let pos = (pos0 + s) as f64;
        let table: Vec<(f32, f32)> = (0..half)
            .map(|i| reference::rope_angle(pos, i, head_dim, theta))
            .collect();
        for head in yr.chunks_exact_mut(head_dim) {
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
    });
    Ok(y)
}
