//! Scalar decoding of the layout contract ([`format`](crate::format)): one row of a
//! `[N, K]` weight matrix back to f32, exactly as the contract defines each value
//! (`scale * code`, rounded to f32).
//!
//! This is the one place outside the quantizers that reads every format's bytes; the scalar
//! reference (`aihal-reference`) and the CPU backend's generic kernels decode through it.
//!
//! ```
//! use aihal_quantize::{decode, QuantFormat, QuantizedTensor};
//! // One Q8_0 row of 32 values: d = 0.5 (f16 0x3800), codes 0, 1, 2, ...
//! let mut block = vec![0x00, 0x38];
//! block.extend(0u8..32);
//! let w = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![1, 32], block, vec![])?;
//! let mut row = [0.0f32; 4];
//! decode::decode_row_into(&w, 0, 2, &mut row)?;
//! assert_eq!(row, [1.0, 1.5, 2.0, 2.5]);
//! # Ok::<(), aihal_core::CoreError>(())
//! ```

use aihal_core::{CoreError, Result};

use crate::QuantizedTensor;

/// Decodes values `k0 .. k0 + out.len()` of row `n` of the `[N, K]` weight `w` into `out`,
/// exactly as the layout contract defines them (`scale * code` in f32).
///
/// Every [`QuantFormat`](crate::QuantFormat) decodes (each format's decoder is in its
/// module of `formats/`).
///
/// Errors: `InvalidInput` when `w` is not rank 2 or the range `n`, `k0 .. k0 + out.len()`
/// lies outside it.
pub fn decode_row_into(w: &QuantizedTensor, n: usize, k0: usize, out: &mut [f32]) -> Result<()> {
    let [rows, k] = *w.shape() else {
        return Err(CoreError::invalid_input(format!(
            "decoding a weight row needs a rank-2 [N, K] tensor, got shape {:?}",
            w.shape()
        )));
    };
    if n >= rows || k0.checked_add(out.len()).is_none_or(|end| end > k) {
        return Err(CoreError::invalid_input(format!(
            "row {n}, values {k0}..{} lie outside the [{rows}, {k}] weight",
            k0.saturating_add(out.len())
        )));
    }
    crate::formats::decode_range(w, n, k0, out)
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // decoded values are exact by definition
mod tests {
    use super::*;
    use crate::fp8::{E4M3_TABLE as E4M3_LUT, E5M2_TABLE as E5M2_LUT};
    use crate::nf4::NF4_CODE as NF4_LEVELS;
    use crate::QuantFormat;
    use half::f16;

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
    fn decodes_hand_packed_blocks() {
        // Q4_0: d = 0.5, byte j low nibble = value j, high nibble = value j + 16.
        let mut blk = vec![0u8; 18];
        blk[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        blk[2] = 0x3F; // value 0: q = 15 -> 3.5; value 16: q = 3 -> -2.5
        let w = QuantizedTensor::from_parts(QuantFormat::Q4_0, vec![1, 32], blk, vec![]).unwrap();
        let mut out = [0.0; 32];
        decode_row_into(&w, 0, 0, &mut out).unwrap();
        assert_eq!((out[0], out[16], out[1]), (3.5, -2.5, -4.0));

        // TQ2_0: value 128h + 32l + j lives in byte 32h + j, bits 2l.
        let mut blk = vec![0x55u8; 66]; // every code 1 -> 0.0
        blk[64..].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        blk[32 + 5] = 0b0001_1001; // h = 1, j = 5: l = 0 -> q 1, l = 1 -> q 2, l = 2 -> q 1, l = 3 -> q 0
        let w = QuantizedTensor::from_parts(QuantFormat::Tq2_0, vec![1, 256], blk, vec![]).unwrap();
        let mut out = [0.0; 256];
        decode_row_into(&w, 0, 0, &mut out).unwrap();
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
        decode_row_into(&w, 2, 0, &mut row).unwrap(); // flat 22..33: block 0 up to 31, block 1 at 32
        assert_eq!(row[0], 2.0); // flat 22: high nibble 15 -> 1.0 * 2
        assert_eq!(row[1], -2.0); // flat 23: low nibble 0 -> -1.0 * 2
        assert_eq!(row[10], 4.0); // flat 32: high nibble, block 1
    }
}
