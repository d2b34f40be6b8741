//! Scalar decoding of the packed layout contract (`aihal_quantize::format`), shared by the
//! reference ops and the generic kernels.
//!
//! Everything here reads a [`QuantizedTensor`] whose lengths its constructor has already
//! checked; [`check_matmul`] checks the rest (rank, K, the activation length).

use aihal_core::{CoreError, Result};
use aihal_quantize::{QuantFormat, QuantizedTensor};
use half::f16;

/// The 16 NormalFloat4 levels, indexed by the 4-bit code: aihal-quantize's code book, so the
/// kernels and the quantizer can never disagree.
pub(crate) use aihal_quantize::nf4::NF4_CODE as NF4_LEVELS;

/// The NF4 levels on the int8 grid of the int8-activation path: `round(127 * level)`, so a
/// weight of code `c` in a block with absmax `a` counts as `NF4_I8[c] * (a / 127)`. Each
/// entry is within 0.47 of `127 * level`: each weight moves by at most 0.0037 of its block's
/// absmax, against up to 0.152 for the NF4 rounding itself.
pub(crate) const NF4_I8: [i8; 16] = {
    let mut t = [0i8; 16];
    let mut i = 0;
    while i < 16 {
        // In range: every level is in [-1, 1].
        t[i] = (127.0 * NF4_LEVELS[i]).round() as i8;
        i += 1;
    }
    t
};

/// FP8 decode tables (every byte's value), shared with aihal-quantize's codecs.
use aihal_quantize::fp8::{E4M3_TABLE as E4M3_LUT, E5M2_TABLE as E5M2_LUT};

/// Reads the little-endian f16 at `bytes[0..2]` as f32.
#[inline]
pub(crate) fn f16_at(bytes: &[u8]) -> f32 {
    f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// Bytes per 32-value block of Q4_0 and Q8_0, and per 256-value block of TQ2_0.
pub(crate) const Q4_0_BLOCK_BYTES: usize = 18;
pub(crate) const Q8_0_BLOCK_BYTES: usize = 34;
pub(crate) const TQ2_0_BLOCK_BYTES: usize = 66;

/// The `(N, K)` of a weight matrix, after checking that it is rank 2, that its format is one
/// this crate knows, and that `x` holds `m` rows of `K` values.
pub(crate) fn check_matmul(x_len: usize, m: usize, w: &QuantizedTensor) -> Result<(usize, usize)> {
    let [n, k] = *w.shape() else {
        return Err(CoreError::invalid_input(format!(
            "matmul weight must have rank 2 ([N, K]), got shape {:?}",
            w.shape()
        )));
    };
    check_format(w.format())?;
    let want = m
        .checked_mul(k)
        .ok_or_else(|| CoreError::invalid_input(format!("matmul activations: {m} rows of {k} values overflow")))?;
    if x_len != want {
        return Err(CoreError::shape_mismatch(
            format!("matmul activations x ([M = {m}, K = {k}] row-major)"),
            [want],
            [x_len],
        ));
    }
    Ok((n, k))
}

/// `Unsupported` for a format added to `QuantFormat` after this crate was written.
pub(crate) fn check_format(format: QuantFormat) -> Result<()> {
    match format {
        QuantFormat::Nf4 { .. }
        | QuantFormat::Q4_0
        | QuantFormat::Q8_0
        | QuantFormat::Tq2_0
        | QuantFormat::Ternary
        | QuantFormat::Int8PerChannel
        | QuantFormat::Int8PerBlock { .. }
        | QuantFormat::Fp8E4M3 { .. }
        | QuantFormat::Fp8E5M2 { .. } => Ok(()),
        other => Err(CoreError::unsupported("aihal-cpu matmul", other)),
    }
}

/// Decodes values `k0 .. k0 + out.len()` of row `n` of the `[N, K]` weight `w` into `out`,
/// exactly as the layout contract defines them (`scale * code` in f32).
///
/// The caller has validated `w` with [`check_matmul`] and keeps `k0 + out.len() <= K`,
/// `n < N`.
pub(crate) fn decode_row_into(w: &QuantizedTensor, n: usize, k0: usize, out: &mut [f32]) {
    let k = w.row_len();
    let data = w.data();
    let scales = w.scales();
    match w.format() {
        QuantFormat::Nf4 { block_size, .. } => {
            for (i, o) in out.iter_mut().enumerate() {
                let flat = n * k + k0 + i;
                let byte = data[flat / 2];
                let code = if flat.is_multiple_of(2) { byte >> 4 } else { byte & 0xF };
                *o = NF4_LEVELS[code as usize] * scales[flat / block_size];
            }
        }
        QuantFormat::Q4_0 => {
            let row = &data[n * (k / 32) * Q4_0_BLOCK_BYTES..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                let blk = &row[(kk / 32) * Q4_0_BLOCK_BYTES..];
                let j = kk % 32;
                let q = if j < 16 { blk[2 + j] & 0xF } else { blk[2 + j - 16] >> 4 };
                *o = f16_at(blk) * (f32::from(q) - 8.0);
            }
        }
        QuantFormat::Q8_0 => {
            let row = &data[n * (k / 32) * Q8_0_BLOCK_BYTES..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                let blk = &row[(kk / 32) * Q8_0_BLOCK_BYTES..];
                *o = f16_at(blk) * f32::from(blk[2 + kk % 32] as i8);
            }
        }
        QuantFormat::Tq2_0 => {
            let row = &data[n * (k / 256) * TQ2_0_BLOCK_BYTES..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                let blk = &row[(kk / 256) * TQ2_0_BLOCK_BYTES..];
                let r = kk % 256;
                let (h, l, j) = (r / 128, (r % 128) / 32, r % 32);
                let q = (blk[32 * h + j] >> (2 * l)) & 3;
                *o = f16_at(&blk[64..]) * (f32::from(q) - 1.0);
            }
        }
        QuantFormat::Ternary => {
            let scale = scales[0];
            for (i, o) in out.iter_mut().enumerate() {
                let flat = n * k + k0 + i;
                let q = (data[flat / 4] >> (2 * (flat % 4))) & 3;
                *o = scale * (f32::from(q) - 1.0);
            }
        }
        QuantFormat::Int8PerChannel => {
            let scale = scales[n];
            let row = &data[n * k + k0..];
            for (o, &b) in out.iter_mut().zip(row) {
                *o = scale * f32::from(b as i8);
            }
        }
        QuantFormat::Int8PerBlock { block_size } => {
            let row_scales = &scales[n * k.div_ceil(block_size)..];
            let row = &data[n * k..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                *o = row_scales[kk / block_size] * f32::from(row[kk] as i8);
            }
        }
        QuantFormat::Fp8E4M3 { block_size } => decode_fp8(&E4M3_LUT, block_size, w, n, k0, out),
        QuantFormat::Fp8E5M2 { block_size } => decode_fp8(&E5M2_LUT, block_size, w, n, k0, out),
        // `check_matmul` has rejected every other format.
        _ => out.fill(f32::NAN),
    }
}

fn decode_fp8(lut: &[f32; 256], block_size: Option<usize>, w: &QuantizedTensor, n: usize, k0: usize, out: &mut [f32]) {
    let k = w.row_len();
    let row = &w.data()[n * k..];
    let scales = w.scales();
    match block_size {
        None => {
            let scale = scales[0];
            for (i, o) in out.iter_mut().enumerate() {
                *o = lut[row[k0 + i] as usize] * scale;
            }
        }
        Some(b) => {
            let row_scales = &scales[n * k.div_ceil(b)..];
            for (i, o) in out.iter_mut().enumerate() {
                let kk = k0 + i;
                *o = lut[row[kk] as usize] * row_scales[kk / b];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_tables_match_the_format_definitions() {
        // E4M3fn: 0x38 = 1.0, 0x7E = 448 (largest finite), 0x01 = 2^-9, 0x7F = NaN.
        assert_eq!(E4M3_LUT[0x38], 1.0);
        assert_eq!(E4M3_LUT[0x7E], 448.0);
        assert_eq!(E4M3_LUT[0xFE], -448.0);
        assert_eq!(E4M3_LUT[0x01], 2f32.powi(-9));
        assert_eq!(E4M3_LUT[0x08], 2f32.powi(-6));
        assert!(E4M3_LUT[0x7F].is_nan() && E4M3_LUT[0xFF].is_nan());
        assert!(E4M3_LUT[0x80] == 0.0 && E4M3_LUT[0x80].is_sign_negative());
        // E5M2: 0x3C = 1.0, 0x7B = 57344, 0x7C = inf, 0x7D = NaN, 0x01 = 2^-16.
        assert_eq!(E5M2_LUT[0x3C], 1.0);
        assert_eq!(E5M2_LUT[0x7B], 57344.0);
        assert_eq!(E5M2_LUT[0x7C], f32::INFINITY);
        assert_eq!(E5M2_LUT[0xFC], f32::NEG_INFINITY);
        assert!(E5M2_LUT[0x7D].is_nan());
        assert_eq!(E5M2_LUT[0x01], 2f32.powi(-16));
        assert_eq!(E5M2_LUT[0x3D], 1.25);
    }

    #[test]
    fn nf4_levels_are_sorted_and_span_minus_one_to_one() {
        assert!(NF4_LEVELS.windows(2).all(|p| p[0] < p[1]));
        assert_eq!((NF4_LEVELS[0], NF4_LEVELS[7], NF4_LEVELS[15]), (-1.0, 0.0, 1.0));
    }

    #[test]
    fn nf4_int8_levels_round_the_code_book() {
        assert_eq!(
            NF4_I8,
            [-127, -88, -67, -50, -36, -23, -12, 0, 10, 20, 31, 43, 56, 71, 92, 127]
        );
        for (&q, &l) in NF4_I8.iter().zip(&NF4_LEVELS) {
            assert!((f32::from(q) - 127.0 * l).abs() <= 0.47, "{q} vs {l}");
        }
    }

    #[test]
    fn decodes_hand_packed_blocks() {
        // Q4_0: d = 0.5, byte j low nibble = value j, high nibble = value j + 16.
        let mut blk = vec![0u8; 18];
        blk[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        blk[2] = 0x3F; // value 0: q = 15 -> 3.5; value 16: q = 3 -> -2.5
        let w = QuantizedTensor::from_parts(QuantFormat::Q4_0, vec![1, 32], blk, vec![]).unwrap();
        let mut out = [0.0; 32];
        decode_row_into(&w, 0, 0, &mut out);
        assert_eq!((out[0], out[16], out[1]), (3.5, -2.5, -4.0));

        // TQ2_0: value 128h + 32l + j lives in byte 32h + j, bits 2l.
        let mut blk = vec![0x55u8; 66]; // every code 1 -> 0.0
        blk[64..].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        blk[32 + 5] = 0b0001_1001; // h = 1, j = 5: l = 0 -> q 1, l = 1 -> q 2, l = 2 -> q 1, l = 3 -> q 0
        let w = QuantizedTensor::from_parts(QuantFormat::Tq2_0, vec![1, 256], blk, vec![]).unwrap();
        let mut out = [0.0; 256];
        decode_row_into(&w, 0, 0, &mut out);
        assert_eq!(out[128 + 5], 0.0);
        assert_eq!(out[128 + 32 + 5], 2.0);
        assert_eq!(out[128 + 96 + 5], -2.0);
        assert_eq!(out.iter().filter(|v| **v != 0.0).count(), 2);

        // NF4 runs over the flattened tensor: first value in the high nibble.
        let f = QuantFormat::Nf4 {
            block_size: 32,
            double_quant: false,
        };
        let w = QuantizedTensor::from_parts(f, vec![3, 11], vec![0xF0; 17], vec![2.0, 4.0]).unwrap();
        let mut row = [0.0; 11];
        decode_row_into(&w, 2, 0, &mut row); // flat 22..33: block 0 up to 31, block 1 at 32
        assert_eq!(row[0], 2.0); // flat 22: high nibble 15 -> 1.0 * 2
        assert_eq!(row[1], -2.0); // flat 23: low nibble 0 -> -1.0 * 2
        assert_eq!(row[10], 4.0); // flat 32: high nibble, block 1
    }
}
