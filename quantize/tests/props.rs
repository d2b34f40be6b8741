//! Property tests for every format: round trips within the format's bound on random shapes
//! and values (all-zero blocks, one huge outlier, subnormals), pack/unpack idempotence, and
//! serialization round trips. Case counts are kept modest so the suite stays fast in debug.

mod common;

use aihal_quantize::io::{from_safetensors_bytes, to_safetensors_bytes};
use aihal_quantize::{dequantize, quantize, QuantFormat, QuantizedTensor};
use common::{all_formats, check_bound, check_ternary, Rng};
use proptest::prelude::*;

/// The granularity a format's rows must have.
fn row_unit(format: QuantFormat) -> usize {
    aihal_quantize::ggml::block_layout(format).map_or(1, |(values, _)| values)
}

#[derive(Clone, Copy, Debug)]
enum Special {
    None,
    ZeroBlock,
    Outlier,
    Subnormals,
}

fn values(n: usize, seed: u64, scale: f32, special: Special) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut x: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
    match special {
        Special::None => {}
        Special::ZeroBlock => x.iter_mut().take(300).for_each(|v| *v = 0.0),
        // Large, but within every GGML format's f16 scale range (TQ2_0 stores amax itself).
        Special::Outlier => {
            let i = (seed as usize) % n;
            x[i] = if seed.is_multiple_of(2) { 6.0e4 } else { -6.0e4 };
        }
        Special::Subnormals => x.iter_mut().step_by(3).for_each(|v| *v *= 1e-40),
    }
    x
}

fn case() -> impl Strategy<Value = (QuantFormat, Vec<usize>, u64, f32, Special)> {
    (
        0..all_formats().len(),
        1usize..4,
        1usize..5,
        0usize..70,
        any::<u64>(),
        -8i32..6, // scales 2^-16..2^10: values stay inside the GGML f16 scale range
        prop_oneof![
            Just(Special::None),
            Just(Special::ZeroBlock),
            Just(Special::Outlier),
            Just(Special::Subnormals)
        ],
    )
        .prop_map(|(fi, rows, units, extra, seed, exp, special)| {
            let format = all_formats()[fi];
            let unit = row_unit(format);
            let cols = if unit == 1 { units * 37 + extra } else { units * unit };
            (format, vec![rows, cols], seed, 2f32.powi(exp * 2), special)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn round_trip_within_bound((format, shape, seed, scale, special) in case()) {
        let n = shape.iter().product();
        let x = values(n, seed, scale, special);
        let q = quantize(format, &x, &shape).unwrap();
        let y = dequantize(&q).unwrap();
        let r = if format == QuantFormat::Ternary {
            check_ternary(&x, &y, q.scales()[0])
        } else {
            check_bound(format, &shape, &x, &y, q.scales())
        };
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }

    #[test]
    fn requantizing_dequantized_values_gives_the_same_codes((format, shape, seed, _scale, _special) in case(), exp in -4i32..4) {
        // The K and IQ4 formats fit their scales; re-fitting decoded values may
        // settle on other scales, so the property holds for the direct-scale formats only.
        prop_assume!(!matches!(
            format,
            QuantFormat::Q2K
                | QuantFormat::Q3K
                | QuantFormat::Q4K
                | QuantFormat::Q5K
                | QuantFormat::Q6K
                | QuantFormat::Iq4Nl
                | QuantFormat::Iq4Xs
        ));
        // Scales well inside f16's normal range, so no block scale is lost.
        let n = shape.iter().product();
        let x = values(n, seed, 2f32.powi(exp), Special::None);
        let q = quantize(format, &x, &shape).unwrap();
        let y = dequantize(&q).unwrap();
        let q2 = quantize(format, &y, &shape).unwrap();
        prop_assert_eq!(q.data(), q2.data(), "{}", format);
        let double_quant = matches!(format, QuantFormat::Nf4 { double_quant: true, .. });
        if format != QuantFormat::Ternary && !double_quant {
            // Ternary's absmean scale changes when recomputed from three levels, and a
            // double-quantized absmax goes through 8 bits again; their codes do not change.
            let y2 = dequantize(&q2).unwrap();
            let amax = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in y.iter().zip(&y2) {
                prop_assert!((a - b).abs() <= 1e-5 * amax, "{}: {} vs {}", format, a, b);
            }
        }
    }

    #[test]
    fn parts_and_files_round_trip((format, shape, seed, scale, special) in case()) {
        let n = shape.iter().product();
        let q = quantize(format, &values(n, seed, scale, special), &shape).unwrap();
        let bytes = to_safetensors_bytes(&[("t", &q)]).unwrap();
        let back = from_safetensors_bytes(&bytes).unwrap();
        prop_assert_eq!(&back["t"], &q);
        if q.nested().is_none() {
            let (f, s, d, sc) = q.clone().into_parts();
            prop_assert_eq!(QuantizedTensor::from_parts(f, s, d, sc).unwrap(), q);
        }
    }
}
