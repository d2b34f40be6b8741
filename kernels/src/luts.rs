//! Code books the kernels index: the NF4 values and the 256 values of each FP8 byte.

/// The 16 NF4 values (QLoRA, Appendix E; bitsandbytes' table), code 0 to 15.
pub(crate) const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Decodes an FP8 byte with `man_bits` mantissa bits and exponent `bias`; `finite_only`
/// selects the E4M3 "fn" variant (only S.1111.111 is NaN, no infinities).
fn fp8_to_f32(byte: u8, man_bits: u32, bias: i32, finite_only: bool) -> f32 {
    let exp_bits = 7 - man_bits;
    let sign = if byte & 0x80 == 0 { 1.0 } else { -1.0 };
    let exp = i32::from((byte >> man_bits) & ((1 << exp_bits) - 1));
    let man = u32::from(byte) & ((1 << man_bits) - 1);
    let exp_max = (1 << exp_bits) - 1;
    let scale = f32::from(1u16 << man_bits);
    if finite_only {
        if exp == exp_max && man == (1 << man_bits) - 1 {
            return f32::NAN;
        }
    } else if exp == exp_max {
        return if man == 0 { sign * f32::INFINITY } else { f32::NAN };
    }
    let magnitude = if exp == 0 {
        man as f32 / scale * 2f32.powi(1 - bias)
    } else {
        (1.0 + man as f32 / scale) * 2f32.powi(exp - bias)
    };
    sign * magnitude
}

/// The value of every E4M3 (fn) byte.
pub(crate) fn e4m3_lut() -> Vec<f32> {
    (0..=255u8).map(|b| fp8_to_f32(b, 3, 7, true)).collect()
}

/// The value of every E5M2 byte.
pub(crate) fn e5m2_lut() -> Vec<f32> {
    (0..=255u8).map(|b| fp8_to_f32(b, 2, 15, false)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_tables_hold_the_known_extremes() {
        let e4 = e4m3_lut();
        assert_eq!(e4[0x7E], 448.0);
        assert_eq!(e4[0x01], 2f32.powi(-9));
        assert_eq!(e4[0x38], 1.0);
        assert_eq!(e4[0xB8], -1.0);
        assert!(e4[0x7F].is_nan() && e4[0xFF].is_nan());
        let e5 = e5m2_lut();
        assert_eq!(e5[0x7B], 57344.0);
        assert_eq!(e5[0x01], 2f32.powi(-16));
        assert_eq!(e5[0x3C], 1.0);
        assert_eq!(e5[0x7C], f32::INFINITY);
        assert!(e5[0x7D].is_nan());
    }
}
