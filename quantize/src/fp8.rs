//! FP8 byte codecs: E4M3 (the finite-only "fn" variant of the OCP FP8 specification) and
//! E5M2.
//!
//! Encoding rounds to nearest, ties to even, and saturates: a magnitude beyond the largest
//! finite value (including ±infinity) becomes ± that value (448 for E4M3, 57344 for E5M2),
//! as CUDA's `__NV_SATFINITE` conversion does. NaN encodes as the format's canonical NaN
//! (`0x7F` for E4M3, `0x7E` for E5M2) with the input's sign.
//!
//! Decoding is exact: every FP8 value is representable in f32.

use std::sync::LazyLock;

/// The largest finite E4M3 value.
pub const E4M3_MAX: f32 = 448.0;
/// The largest finite E5M2 value.
pub const E5M2_MAX: f32 = 57344.0;

/// Parameters of a small binary float format.
struct Spec {
    mantissa_bits: u32,
    bias: i32,
    /// The magnitude code of the largest finite value.
    max_code: u8,
    /// The magnitude code of NaN.
    nan_code: u8,
}

const E4M3: Spec = Spec {
    mantissa_bits: 3,
    bias: 7,
    max_code: 0x7E,
    nan_code: 0x7F,
};

const E5M2: Spec = Spec {
    mantissa_bits: 2,
    bias: 15,
    max_code: 0x7B,
    nan_code: 0x7E,
};

/// `2^e` as an f32, for `e` in the normal range.
fn pow2(e: i32) -> f32 {
    debug_assert!((-126..=127).contains(&e));
    f32::from_bits(((e + 127) as u32) << 23)
}

/// Rounds `0 <= z < 2^22` to the nearest integer, ties to even: adding and subtracting 2^23
/// in f32 (whose rounding is to nearest even) leaves no fraction bits. No libm call, so
/// loops around it vectorize.
#[inline]
fn round_even_small(z: f32) -> u32 {
    const MAGIC: f32 = 8_388_608.0; // 2^23
    ((z + MAGIC) - MAGIC) as u32
}

fn encode(x: f32, spec: &Spec) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | spec.nan_code;
    }
    let a = x.abs();
    if a == 0.0 {
        return sign;
    }
    let m = spec.mantissa_bits;
    let min_normal_exp = 1 - spec.bias;
    let bits = a.to_bits();
    let exp = ((bits >> 23) & 0xFF) as i32 - 127;
    // Beyond twice the largest finite exponent everything saturates (this also covers inf).
    let max_exp = i32::from(spec.max_code >> m) - spec.bias;
    if exp > max_exp + 1 {
        return sign | spec.max_code;
    }
    let code = if exp < min_normal_exp {
        // Subnormal in the target (f32 subnormals land here too): multiples of the quantum.
        // Dividing by a power of two is exact, so only the final rounding rounds.
        // q == 2^m carries into the smallest normal, which has the same bits.
        round_even_small(a / pow2(min_normal_exp - m as i32))
    } else {
        let q = round_even_small(a / pow2(exp - m as i32)); // in 2^m..=2^(m+1)
                                                            // A carry out of the mantissa (q == 2^(m+1)) bumps the exponent field by one.
        (((exp + spec.bias) as u32) << m) + (q - (1 << m))
    };
    sign | code.min(u32::from(spec.max_code)) as u8
}

fn decode(b: u8, spec: &Spec, has_inf: bool) -> f32 {
    let sign = if b & 0x80 == 0 { 1.0 } else { -1.0 };
    let mag = b & 0x7F;
    let m = spec.mantissa_bits;
    let exp_field = i32::from(mag >> m);
    let mant = f32::from(mag & ((1 << m) - 1));
    if mag > spec.max_code {
        return if has_inf && mag == spec.max_code + 1 {
            sign * f32::INFINITY
        } else {
            f32::NAN
        };
    }
    let frac = mant / (1u32 << m) as f32;
    if exp_field == 0 {
        sign * frac * pow2(1 - spec.bias)
    } else {
        sign * (1.0 + frac) * pow2(exp_field - spec.bias)
    }
}

/// Decodes an E4M3 ("fn": no infinities, NaN at `0x7F`/`0xFF`) byte.
pub fn e4m3_to_f32(b: u8) -> f32 {
    E4M3_TABLE[usize::from(b)]
}

/// Encodes an f32 as E4M3 (round to nearest even, saturating to ±448).
pub fn f32_to_e4m3(x: f32) -> u8 {
    encode(x, &E4M3)
}

/// Decodes an E5M2 byte (IEEE-like: infinities at `0x7C`/`0xFC`, NaN above).
pub fn e5m2_to_f32(b: u8) -> f32 {
    E5M2_TABLE[usize::from(b)]
}

/// Encodes an f32 as E5M2 (round to nearest even, saturating to ±57344).
pub fn f32_to_e5m2(x: f32) -> u8 {
    encode(x, &E5M2)
}

/// All 256 E4M3 values, indexed by byte: the decode table kernels use (NaN at `0x7F`/`0xFF`).
pub static E4M3_TABLE: LazyLock<[f32; 256]> = LazyLock::new(|| std::array::from_fn(|b| decode(b as u8, &E4M3, false)));

/// All 256 E5M2 values, indexed by byte: the decode table kernels use (±inf at `0x7C`/`0xFC`,
/// NaN above).
pub static E5M2_TABLE: LazyLock<[f32; 256]> = LazyLock::new(|| std::array::from_fn(|b| decode(b as u8, &E5M2, true)));

#[cfg(test)]
mod tests {
    #![allow(clippy::float_cmp)] // exact values are the point
    use super::*;

    #[test]
    fn known_values_decode() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
        assert!(e4m3_to_f32(0x7F).is_nan() && e4m3_to_f32(0xFF).is_nan());
        assert_eq!(e5m2_to_f32(0x3C), 1.0);
        assert_eq!(e5m2_to_f32(0x7B), 57344.0);
        assert_eq!(e5m2_to_f32(0x01), 2f32.powi(-16));
        assert_eq!(e5m2_to_f32(0x7C), f32::INFINITY);
        assert_eq!(e5m2_to_f32(0xFC), f32::NEG_INFINITY);
        assert!(e5m2_to_f32(0x7D).is_nan());
    }

    #[test]
    fn every_finite_code_round_trips() {
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if v.is_finite() {
                let back = f32_to_e4m3(v);
                // -0 and +0 are distinct codes and both round-trip.
                assert_eq!(back, b, "e4m3 {b:#04x} = {v}");
            }
            let v = e5m2_to_f32(b);
            if v.is_finite() {
                assert_eq!(f32_to_e5m2(v), b, "e5m2 {b:#04x} = {v}");
            }
        }
    }

    /// Brute force: the nearest representable value, ties to the even code.
    fn nearest(x: f32, table: &[f32; 256]) -> f32 {
        let mut best = (f32::INFINITY, 0u8);
        for b in 0..=255u8 {
            let v = table[usize::from(b)];
            if !v.is_finite() {
                continue;
            }
            let d = (v - x).abs();
            if d < best.0 || (d == best.0 && b % 2 == 0 && v.is_sign_negative() == x.is_sign_negative()) {
                best = (d, b);
            }
        }
        table[usize::from(best.1)]
    }

    #[test]
    fn encoding_is_nearest_even_on_midpoints_and_random_values() {
        // Midpoints between neighbouring codes round to the even mantissa.
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1.0625)), 1.0); // between 1.0 (even) and 1.125
        assert_eq!(e4m3_to_f32(f32_to_e4m3(1.1875)), 1.25); // between 1.125 and 1.25 (even)
        assert_eq!(e5m2_to_f32(f32_to_e5m2(1.125)), 1.0);
        assert_eq!(e5m2_to_f32(f32_to_e5m2(1.375)), 1.5);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mag = f32::from_bits((state >> 40) as u32 & 0x007F_FFFF | 0x3F80_0000) - 1.0; // [0,1)
            let exp = ((state >> 8) % 40) as i32 - 24;
            let x = mag * 2f32.powi(exp) * if state & 1 == 0 { 1.0 } else { -1.0 };
            let x = x.clamp(-E4M3_MAX, E4M3_MAX);
            assert_eq!(e4m3_to_f32(f32_to_e4m3(x)), nearest(x, &E4M3_TABLE), "e4m3 {x}");
            assert_eq!(e5m2_to_f32(f32_to_e5m2(x)), nearest(x, &E5M2_TABLE), "e5m2 {x}");
        }
    }

    #[test]
    fn out_of_range_saturates_and_nan_stays_nan() {
        for x in [449.0, 464.0, 1e6, f32::MAX, f32::INFINITY] {
            assert_eq!(f32_to_e4m3(x), 0x7E, "{x}");
            assert_eq!(f32_to_e4m3(-x), 0xFE, "{x}");
        }
        for x in [57345.0, 61440.0, 1e9, f32::INFINITY] {
            assert_eq!(f32_to_e5m2(x), 0x7B, "{x}");
            assert_eq!(f32_to_e5m2(-x), 0xFB, "{x}");
        }
        assert!(e4m3_to_f32(f32_to_e4m3(f32::NAN)).is_nan());
        assert!(e5m2_to_f32(f32_to_e5m2(f32::NAN)).is_nan());
        // Far below the smallest subnormal: zero with the sign kept.
        assert_eq!(f32_to_e4m3(1e-30), 0x00);
        assert_eq!(f32_to_e4m3(-1e-30), 0x80);
        assert_eq!(f32_to_e4m3(f32::from_bits(1)), 0x00);
    }
}
