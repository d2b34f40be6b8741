//! Cube-wide reductions: a shared-memory tree everywhere, plane (warp / subgroup)
//! operations where the device has them.

// Cube code: `is_multiple_of` has no device expansion.
#![allow(clippy::manual_is_multiple_of)]

use cubecl::prelude::*;

/// The sum of `value` over every unit of the cube, returned to every unit.
///
/// `plane` is the device's fixed plane size when plane operations are available (it must
/// divide the cube size), else 0; `CUBE_DIM` must be a power of two. `smem` holds at least
/// `CUBE_DIM` values and may be reused once this returns.
#[cube]
pub(crate) fn cube_sum(smem: &mut SharedMemory<f32>, value: f32, #[comptime] plane: u32) -> f32 {
    let unit = UNIT_POS as usize;
    if plane > 0 {
        let partial = plane_sum(value);
        if UNIT_POS % plane == 0 {
            smem[unit / plane as usize] = partial;
        }
        sync_cube();
        let planes = (CUBE_DIM / plane) as usize;
        let mut total = 0.0f32;
        for p in 0..planes {
            total += smem[p];
        }
        sync_cube();
        total
    } else {
        smem[unit] = value;
        sync_cube();
        let mut stride = CUBE_DIM / 2;
        while stride > 0 {
            if UNIT_POS < stride {
                let other = smem[unit + stride as usize];
                smem[unit] += other;
            }
            sync_cube();
            stride /= 2;
        }
        let total = smem[0];
        sync_cube();
        total
    }
}

/// The maximum of `value` over every unit of the cube, returned to every unit (same
/// requirements as [`cube_sum`]).
#[cube]
pub(crate) fn cube_max(smem: &mut SharedMemory<f32>, value: f32, #[comptime] plane: u32) -> f32 {
    let unit = UNIT_POS as usize;
    if plane > 0 {
        let partial = plane_max(value);
        if UNIT_POS % plane == 0 {
            smem[unit / plane as usize] = partial;
        }
        sync_cube();
        let planes = (CUBE_DIM / plane) as usize;
        let mut total = smem[0];
        for p in 1..planes {
            total = f32::max(total, smem[p]);
        }
        sync_cube();
        total
    } else {
        smem[unit] = value;
        sync_cube();
        let mut stride = CUBE_DIM / 2;
        while stride > 0 {
            if UNIT_POS < stride {
                let other = smem[unit + stride as usize];
                smem[unit] = f32::max(smem[unit], other);
            }
            sync_cube();
            stride /= 2;
        }
        let total = smem[0];
        sync_cube();
        total
    }
}
