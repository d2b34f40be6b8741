//! The scalar kernel set. The exact kernels give the same bits as
//! [`reference::matmul`](aihal_reference::matmul); the q8 kernels define the int8-activation
//! arithmetic the SIMD q8 kernels are tested against.

use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{ActQ8, ExactFn, Kernels, Q8Fn};
use crate::kernels::codes::{decode_row_into, f16_at, NF4_I8, Q4_0_BLOCK_BYTES, Q8_0_BLOCK_BYTES, TQ2_0_BLOCK_BYTES};

pub(crate) static KERNELS: Kernels = Kernels {
    name: "generic",
    exact: |_| exact as ExactFn,
    q8: q8_for,
    panel: |_| None,
    exact_panel: |_| None,
};

/// Values decoded per step: a stack buffer, never a whole row or matrix.
const CHUNK: usize = 256;

/// The exact kernel for every format: decode `CHUNK` values of the row into a stack buffer,
/// accumulate each activation row in increasing `k` (the reference order, no FMA). Slice
/// lengths are checked by indexing.
pub(crate) fn exact(w: &QuantizedTensor, n: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let k = w.row_len();
    let mut buf = [0.0f32; CHUNK];
    let mut acc = [0.0f32; super::MAX_ROWS];
    let mut k0 = 0;
    while k0 < k {
        let len = CHUNK.min(k - k0);
        let wv = &mut buf[..len];
        decode_row_into(w, n, k0, wv);
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            let xr = &x[r * k + k0..r * k + k0 + len];
            for (&p, &q) in xr.iter().zip(wv.iter()) {
                *a += p * q;
            }
        }
        k0 += len;
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of a format, if it has integer codes in blocks of 32.
pub(crate) fn q8_for(format: QuantFormat) -> Option<Q8Fn> {
    match format {
        QuantFormat::Nf4 { .. } if has_q8(format) => Some(q8_nf4 as Q8Fn),
        _ => has_q8(format).then_some(q8 as Q8Fn),
    }
}

/// Whether `format` has an int8-activation path.
pub(crate) fn has_q8(format: QuantFormat) -> bool {
    match format {
        QuantFormat::Q8_0 | QuantFormat::Q4_0 | QuantFormat::Tq2_0 | QuantFormat::Int8PerChannel => true,
        // NF4 block sizes are powers of two from 32 (validated by aihal-quantize).
        QuantFormat::Int8PerBlock { block_size } | QuantFormat::Nf4 { block_size, .. } => block_size.is_multiple_of(32),
        _ => false,
    }
}

/// The integer codes of block `b` (32 values, zero past the end of the row) of row `n`, and
/// the block's weight scale.
pub(crate) fn weight_block(w: &QuantizedTensor, n: usize, b: usize) -> ([i8; 32], f32) {
    let k = w.row_len();
    let data = w.data();
    let mut codes = [0i8; 32];
    let scale = match w.format() {
        QuantFormat::Q8_0 => {
            let blk = &data[(n * (k / 32) + b) * Q8_0_BLOCK_BYTES..][..Q8_0_BLOCK_BYTES];
            for (c, &q) in codes.iter_mut().zip(&blk[2..]) {
                *c = q as i8;
            }
            f16_at(blk)
        }
        QuantFormat::Q4_0 => {
            let blk = &data[(n * (k / 32) + b) * Q4_0_BLOCK_BYTES..][..Q4_0_BLOCK_BYTES];
            for j in 0..16 {
                codes[j] = (blk[2 + j] & 0xF) as i8 - 8;
                codes[j + 16] = (blk[2 + j] >> 4) as i8 - 8;
            }
            f16_at(blk)
        }
        QuantFormat::Tq2_0 => {
            let blk = &data[(n * (k / 256) + b / 8) * TQ2_0_BLOCK_BYTES..][..TQ2_0_BLOCK_BYTES];
            let g = b % 8;
            for (j, c) in codes.iter_mut().enumerate() {
                *c = ((blk[32 * (g / 4) + j] >> (2 * (g % 4))) & 3) as i8 - 1;
            }
            f16_at(&blk[64..])
        }
        QuantFormat::Int8PerChannel | QuantFormat::Int8PerBlock { .. } => {
            let start = b * 32;
            let end = (start + 32).min(k);
            for (c, &q) in codes.iter_mut().zip(&data[n * k + start..n * k + end]) {
                *c = q as i8;
            }
            match w.format() {
                QuantFormat::Int8PerBlock { block_size } => w.scales()[n * k.div_ceil(block_size) + start / block_size],
                _ => w.scales()[n],
            }
        }
        _ => f32::NAN,
    };
    (codes, scale)
}

/// `out[r] = Σ_b (ws_b * dx_b) * isum_b` in increasing `b`, `isum_b` the exact integer dot
/// product of block `b`. Slice lengths are checked by indexing.
fn q8(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let nb = a.nb;
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let (codes, ws) = weight_block(w, n, b);
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            let i = row0 + r;
            let q = &a.qs[(i * nb + b) * 32..][..32];
            let isum: i32 = codes.iter().zip(q).map(|(&c, &v)| i32::from(c) * i32::from(v)).sum();
            *acc += ws * a.d[i * nb + b] * isum as f32;
        }
    }
    out[..rows].copy_from_slice(&acc[..rows]);
}

/// The int8-activation kernel of NF4, the definition the SIMD kernels follow: each code `c`
/// counts as the integer level [`NF4_I8`]`[c]` (`round(127 * level)`), each run of values that
/// shares an absmax block and a block of 32 activations gives an exact integer dot product
/// `isum`, and `out[r] = (Σ absmax * (d_x * isum)) / 127`, summed in increasing `k`. `d_x *
/// isum` comes first because `absmax * d_x` can underflow for subnormal activations where
/// `d_x * isum` stays normal; the division by 127 comes last, once per output (the sum is 127
/// times the result, so it overflows only for results beyond `f32::MAX / 127`).
///
/// NF4 blocks run over the flattened tensor and hold at least 32 values (a power of two), so
/// when `K % 32 == 0` each block of 32 lies in one absmax block; otherwise a block of 32 may
/// straddle two, and is summed in two runs. Values past `K` count as zero. Slice lengths are
/// checked by indexing.
pub(crate) fn q8_nf4(w: &QuantizedTensor, n: usize, a: &ActQ8, row0: usize, rows: usize, out: &mut [f32]) {
    let QuantFormat::Nf4 { block_size, .. } = w.format() else {
        out[..rows].fill(f32::NAN);
        return;
    };
    let k = w.row_len();
    let (data, scales, nb) = (w.data(), w.scales(), a.nb);
    let mut acc = [0.0f32; super::MAX_ROWS];
    for b in 0..nb {
        let start = n * k + 32 * b;
        let end = n * k + (32 * b + 32).min(k);
        let mut s = start;
        while s < end {
            let blk = s / block_size;
            let e = end.min((blk + 1) * block_size);
            let ws = scales[blk];
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let i = row0 + r;
                let q = &a.qs[(i * nb + b) * 32..][..32];
                let isum: i32 = (s..e)
                    .map(|flat| {
                        let byte = data[flat / 2];
                        let code = if flat.is_multiple_of(2) { byte >> 4 } else { byte & 0xF };
                        i32::from(NF4_I8[usize::from(code)]) * i32::from(q[flat - start])
                    })
                    .sum();
                *acc += ws * (a.d[i * nb + b] * isum as f32);
            }
            s = e;
        }
    }
    for (o, acc) in out.iter_mut().zip(&acc).take(rows) {
        *o = acc / 127.0;
    }
}
