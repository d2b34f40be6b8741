//! Rotary position embedding, tokens in parallel on `crate::pool`.

use std::sync::{Arc, Mutex, PoisonError};

use aihal_core::Result;
use aihal_reference::{self as reference, RopeStyle};

/// Rotary embedding, as [`reference::rope`]: the sine/cosine table is computed once per
/// position, a few tokens per task on `crate::pool` (one token, a decode step, runs on the
/// calling thread).
pub fn rope(x: &[f32], n_heads: usize, head_dim: usize, pos0: usize, theta: f32, style: RopeStyle) -> Result<Vec<f32>> {
    Rotary::new(head_dim, theta, style).apply(x, n_heads, pos0)
}

/// One rotary embedding's fixed parts, prepared once: the frequency of each pair of values
/// (what [`reference::rope_angle`] raises `theta` to, the same f64), and the sine/cosine
/// table of the last single position rotated, which the next single-token call at that
/// position reuses (a decode step rotates the queries and keys of every layer at one position).
pub(crate) struct Rotary {
    head_dim: usize,
    theta: f32,
    style: RopeStyle,
    freqs: Vec<f64>,
    last: Mutex<Option<(usize, Table)>>,
}

/// `(sin, cos)` of every pair of values at one position.
type Table = Arc<[(f32, f32)]>;

impl Rotary {
    pub(crate) fn new(head_dim: usize, theta: f32, style: RopeStyle) -> Self {
        let freqs = (0..head_dim / 2)
            .map(|i| f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        Self {
            head_dim,
            theta,
            style,
            freqs,
            last: Mutex::new(None),
        }
    }

    /// `(sin, cos)` of every pair at position `pos`: [`reference::rope_angle`]'s values, bit
    /// for bit (the same f64 frequency, product and `sin_cos`).
    fn table(&self, pos: usize) -> Vec<(f32, f32)> {
        self.freqs
            .iter()
            .map(|&f| {
                let (s, c) = (pos as f64 * f).sin_cos();
                (s as f32, c as f32)
            })
            .collect()
    }

    /// The table of `pos`, from the last call's when it was at the same position.
    fn table_cached(&self, pos: usize) -> Table {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((p, t)) if *p == pos => Arc::clone(t),
            _ => {
                let t: Table = self.table(pos).into();
                *last = Some((pos, Arc::clone(&t)));
                t
            }
        }
    }

    /// Rows of `n_heads` heads from position `pos0` on, rotated (see [`rope`]).
    pub(crate) fn apply(&self, x: &[f32], n_heads: usize, pos0: usize) -> Result<Vec<f32>> {
        let (head_dim, style) = (self.head_dim, self.style);
        reference::rope(&[], n_heads, head_dim, pos0, self.theta, style)?;
        let row = (n_heads * head_dim).max(1);
        reference::rows_of("rope", x.len(), row)?;
        let mut y = x.to_vec();
        if y.len() == row {
            rotate(&mut y, &self.table_cached(pos0), head_dim, style);
            return Ok(y);
        }
        let per_task = (y.len() / row).div_ceil(2 * crate::pool::threads()).max(1);
        crate::pool::run_tasks(y.chunks_mut(per_task * row).collect(), |c, yc: &mut [f32]| {
            for (r, yr) in yc.chunks_mut(row).enumerate() {
                rotate(yr, &self.table(pos0 + c * per_task + r), head_dim, style);
            }
        });
        Ok(y)
    }
}

/// One token's heads `yr`, rotated by `table` (its position's `(sin, cos)` per pair).
fn rotate(yr: &mut [f32], table: &[(f32, f32)], head_dim: usize, style: RopeStyle) {
    let half = head_dim / 2;
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
