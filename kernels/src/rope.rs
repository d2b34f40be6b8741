//! Rotary position embedding, with its sine and cosine tables kept on the device.

use aihal_core::{CoreError, Result};
use aihal_reference::RopeStyle;
use cubecl::prelude::*;

use crate::launch::{cube_index, Context, DeviceBuffer};
use crate::ops::{elementwise_launch, rows_of, u32_of};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn rope_kernel<F: Float>(
    x: &Array<F>,
    sin: &Array<f32>,
    cos: &Array<f32>,
    y: &mut Array<F>,
    pairs: u32,
    tokens: u32,
    pos0: u32,
    n_heads: u32,
    head_dim: u32,
    #[comptime] interleaved: bool,
) {
    // One unit per rotated pair: pair p is (row r = sequence * tokens + token, head h, index i).
    let p = cube_index() * CUBE_DIM as usize + UNIT_POS as usize;
    if p < pairs as usize {
        let d = head_dim as usize;
        let half = d / 2;
        let heads = n_heads as usize;
        let i = p % half;
        let h = (p / half) % heads;
        let r = p / (half * heads);
        let pos = pos0 as usize + r % tokens as usize;
        let base = (r * heads + h) * d;
        let mut ia = base + i;
        let mut ib = base + i + half;
        if interleaved {
            ia = base + 2 * i;
            ib = base + 2 * i + 1;
        }
        let a = f32::cast_from(x[ia]);
        let b = f32::cast_from(x[ib]);
        let sn = sin[pos * half + i];
        let cs = cos[pos * half + i];
        y[ia] = F::cast_from(a * cs - b * sn);
        y[ib] = F::cast_from(a * sn + b * cs);
    }
}

/// The sine and cosine tables of rotary embedding for positions `0..positions`, on a device:
/// row `p` holds, for each pair `i < head_dim / 2`, the angle `p * theta^(-2i/head_dim)`
/// computed in f64 and rounded to f32 (`aihal_reference::rope_angle`, so the rotation
/// matches the reference's to the last multiply).
///
/// Upload one per `(head_dim, theta)` and share it by every layer and every call.
pub struct RopeTables<R: Runtime> {
    sin: DeviceBuffer<R, f32>,
    cos: DeviceBuffer<R, f32>,
    positions: usize,
    head_dim: usize,
    theta: f32,
}

impl<R: Runtime> std::fmt::Debug for RopeTables<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RopeTables")
            .field("positions", &self.positions)
            .field("head_dim", &self.head_dim)
            .field("theta", &self.theta)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> RopeTables<R> {
    /// Computes the tables for positions `0..positions` and uploads them.
    ///
    /// Errors: `InvalidInput` for an odd or zero `head_dim` or a `theta` that is not finite
    /// and positive; `OutOfMemory` when a table passes the device's largest buffer.
    pub fn new(ctx: &Context<R>, positions: usize, head_dim: usize, theta: f32) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(CoreError::invalid_input(format!(
                "rope: head_dim must be even and positive, got {head_dim}"
            )));
        }
        if !(theta.is_finite() && theta > 0.0) {
            return Err(CoreError::invalid_input(format!(
                "rope: theta must be finite and > 0, got {theta}"
            )));
        }
        let half = head_dim / 2;
        let len = positions
            .checked_mul(half)
            .ok_or_else(|| CoreError::invalid_input(format!("rope: {positions} positions overflow")))?;
        u32_of("rope table", len)?;
        let mut sin = Vec::with_capacity(len);
        let mut cos = Vec::with_capacity(len);
        for p in 0..positions {
            for i in 0..half {
                let (s, c) = aihal_reference::rope_angle(p as f64, i, head_dim, theta);
                sin.push(s);
                cos.push(c);
            }
        }
        Ok(Self {
            sin: ctx.upload(&sin)?,
            cos: ctx.upload(&cos)?,
            positions,
            head_dim,
            theta,
        })
    }

    /// The positions the tables cover (`0..positions`).
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// The head size they were computed for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The frequency base.
    pub fn theta(&self) -> f32 {
        self.theta
    }
}

/// Rotary position embedding of `x` laid out `[sequences, tokens, n_heads, head_dim]` (any
/// number of sequences, each of `tokens` tokens), token `s` of each sequence at position
/// `pos0 + s`, pairs chosen by `style`; writes `y` (same length as `x`).
///
/// Errors: `InvalidInput` when `x` is not a whole number of such sequences, or the tables
/// were made for another head size or do not reach position `pos0 + tokens - 1`.
#[allow(clippy::too_many_arguments)]
pub fn rope<R: Runtime, F: Float + CubeElement>(
    ctx: &Context<R>,
    x: &DeviceBuffer<R, F>,
    n_heads: usize,
    head_dim: usize,
    tokens: usize,
    pos0: usize,
    tables: &RopeTables<R>,
    style: RopeStyle,
    y: &DeviceBuffer<R, F>,
) -> Result<()> {
    ctx.require::<F>("rope")?;
    if head_dim != tables.head_dim {
        return Err(CoreError::invalid_input(format!(
            "rope: tables for head_dim {} used with head_dim {head_dim}",
            tables.head_dim
        )));
    }
    rows_of("rope", x.len(), n_heads * head_dim * tokens.max(1))?;
    let end = pos0.saturating_add(tokens);
    if end > tables.positions {
        return Err(CoreError::invalid_input(format!(
            "rope: positions {pos0}..{end} pass the tables' {} positions",
            tables.positions
        )));
    }
    y.expect_len("rope output", x.len())?;
    let pairs = x.len() / 2;
    let (count, units) = elementwise_launch(ctx, pairs)?;
    let (pairs, tokens, pos0, heads, hd) = (
        u32_of("rope", pairs)?,
        u32_of("rope", tokens.max(1))?,
        u32_of("rope", pos0)?,
        u32_of("rope", n_heads)?,
        u32_of("rope", head_dim)?,
    );
    ctx.launch("rope", || {
        rope_kernel::launch::<F, R>(
            ctx.client(),
            count,
            CubeDim::new_1d(units),
            x.arg(),
            tables.sin.arg(),
            tables.cos.arg(),
            y.arg(),
            pairs,
            tokens,
            pos0,
            heads,
            hd,
            style == RopeStyle::Interleaved,
        );
    })
}
