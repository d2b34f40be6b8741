use super::*;
use aihal_core::CoreError;
use aihal_quantize::QuantFormat;
use half::f16;

fn q8_row(d: f32, codes: &[i8]) -> Vec<u8> {
    let mut v = f16::from_f32(d).to_le_bytes().to_vec();
    v.extend(codes.iter().map(|&c| c as u8));
    v
}

#[test]
fn matmul_matches_a_hand_computed_product() {
    // W = [[1, 2, .., 32] * 0.5, [-1] * 32 * 0.25], x = [[1] * 32, [0, 1, 0, 1, ...]]
    let codes0: Vec<i8> = (1..=32).collect();
    let mut data = q8_row(0.5, &codes0);
    data.extend(q8_row(0.25, &[-1; 32]));
    let w = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![2, 32], data, vec![]).unwrap();
    let mut x = vec![1.0f32; 32];
    x.extend((0..32).map(|i| (i % 2) as f32));
    let y = matmul(&x, 2, &w).unwrap();
    let even_codes: f32 = (1..=32).filter(|c| c % 2 == 0).sum::<i32>() as f32;
    assert_eq!(y, [0.5 * 528.0, -8.0, 0.5 * even_codes, -4.0]);
}

#[test]
fn int8_per_block_uses_the_scale_of_each_block_including_a_partial_last_one() {
    let f = QuantFormat::Int8PerBlock { block_size: 4 };
    let w = QuantizedTensor::from_parts(f, vec![1, 6], vec![1, 1, 1, 1, 1, 0xFF], vec![2.0, 10.0]).unwrap();
    let y = matmul(&[1.0; 6], 1, &w).unwrap();
    assert_eq!(y, [8.0 + 10.0 - 10.0]);
}

#[test]
fn matmul_rejects_bad_shapes_with_clear_errors() {
    let w = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![2, 3], vec![0; 6], vec![1.0; 2]).unwrap();
    let e = matmul(&[0.0; 5], 2, &w).unwrap_err();
    assert!(
        matches!(e, CoreError::ShapeMismatch { ref expected, .. } if expected == &[6]),
        "{e}"
    );
    let w3 = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![1, 2, 3], vec![0; 6], vec![1.0; 2]).unwrap();
    let e = matmul(&[0.0; 3], 1, &w3).unwrap_err();
    assert!(e.to_string().contains("rank 2"), "{e}");
    assert!(matmul(&[], 0, &w).unwrap().is_empty());
}

#[test]
fn fp8_nan_and_inf_weights_propagate() {
    let w = QuantizedTensor::from_parts(
        QuantFormat::Fp8E5M2 { block_size: None },
        vec![2, 2],
        vec![0x3C, 0x7C, 0x3C, 0x7D],
        vec![1.0],
    )
    .unwrap();
    let y = matmul(&[1.0, 1.0], 1, &w).unwrap();
    assert_eq!(y[0], f32::INFINITY);
    assert!(y[1].is_nan());
}

#[test]
fn rms_norm_and_layer_norm_normalise_rows() {
    let y = rms_norm(&[3.0, 4.0, 0.0, 0.0], 2, &[1.0, 2.0], 0.0).unwrap();
    let r = (12.5f32).sqrt();
    assert_eq!(&y[..2], &[3.0 / r, 8.0 / r]);
    // An all-zero row stays zero when eps > 0 (with eps = 0 it is 0 * inf = NaN, as IEEE says).
    let y = rms_norm(&[0.0, 0.0], 2, &[1.0, 1.0], 1e-6).unwrap();
    assert_eq!(y, [0.0, 0.0]);

    let y = layer_norm(&[1.0, 3.0], 2, &[1.0, 1.0], Some(&[0.5, 0.5]), 0.0).unwrap();
    assert_eq!(y, [-0.5, 1.5]);
    assert!(rms_norm(&[1.0; 4], 3, &[1.0; 3], 1e-6).is_err());
    assert!(rms_norm(&[1.0; 4], 2, &[1.0; 3], 1e-6).is_err());
    assert!(layer_norm(&[1.0; 4], 2, &[1.0; 2], None, f32::NAN).is_err());
}

#[test]
fn softmax_is_safe_for_large_masked_and_nan_rows() {
    let y = softmax(&[1000.0, 1000.0, f32::NEG_INFINITY, 0.0], 4).unwrap();
    assert_eq!(y, [0.5, 0.5, 0.0, 0.5 * (-1000.0f32).exp()]);
    let y = softmax(&[f32::NEG_INFINITY; 3], 3).unwrap();
    assert_eq!(y, [0.0; 3]);
    let y = softmax(&[1.0, f32::NAN, 2.0], 3).unwrap();
    assert!(y.iter().all(|v| v.is_nan()));
    let y = softmax(&[1.0, 2.0, 3.0], 3).unwrap();
    assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(y[0] < y[1] && y[1] < y[2]);
}

#[test]
fn activations_match_known_values() {
    let s = silu(&[0.0, 1.0, -20.0]);
    assert_eq!(s[0], 0.0);
    assert!((s[1] - 0.731_058_6).abs() < 1e-6);
    assert!(s[2].abs() < 1e-7);
    let g = gelu(&[0.0, 1.0, -1.0, 10.0]);
    assert_eq!(g[0], 0.0);
    assert!((g[1] - 0.841_192).abs() < 1e-5, "{}", g[1]);
    assert!((g[2] + 0.158_808).abs() < 1e-5, "{}", g[2]);
    assert!((g[3] - 10.0).abs() < 1e-5);
}

#[test]
fn rope_rotates_pairs_by_position_times_frequency() {
    // head_dim 2: one pair with frequency 1, so position p turns by p radians.
    let y = rope(&[1.0, 0.0, 1.0, 0.0], 1, 2, 0, 10_000.0, RopeStyle::Half).unwrap();
    assert_eq!(&y[..2], &[1.0, 0.0]);
    assert_eq!(&y[2..], &[1f64.cos() as f32, 1f64.sin() as f32]);
    // head_dim 4: Half pairs (0, 2) and (1, 3); Interleaved pairs (0, 1) and (2, 3).
    let x = [1.0, 2.0, 3.0, 4.0];
    let h = rope(&x, 1, 4, 1, 1.0, RopeStyle::Half).unwrap();
    let (s, c) = (1f64.sin() as f32, 1f64.cos() as f32);
    assert_eq!(h, [c - 3.0 * s, 2.0 * c - 4.0 * s, s + 3.0 * c, 2.0 * s + 4.0 * c]);
    let i = rope(&x, 1, 4, 1, 1.0, RopeStyle::Interleaved).unwrap();
    assert_eq!(i, [c - 2.0 * s, s + 2.0 * c, 3.0 * c - 4.0 * s, 3.0 * s + 4.0 * c]);
    assert!(rope(&x, 1, 3, 0, 1.0, RopeStyle::Half).is_err());
    assert!(rope(&x, 1, 4, 0, 0.0, RopeStyle::Half).is_err());
}

#[test]
fn attention_is_causal_and_maps_query_heads_to_kv_groups() {
    let shape = AttentionShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 2,
    };
    // Two cached tokens; one query row per head, both heads read kv head 0.
    let k = [1.0, 0.0, 1.0, 0.0]; // equal keys -> uniform weights
    let v = [2.0, 4.0, 6.0, 8.0];
    let q = [1.0, 1.0, -3.0, 0.5];
    let y = attention(&q, &k, &v, 2, shape, None).unwrap();
    assert_eq!(y, [4.0, 6.0, 4.0, 6.0]);
    // Two query rows: the first sees only position 0.
    let q2 = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
    let y = attention(&q2, &k, &v, 2, shape, None).unwrap();
    assert_eq!(&y[..4], &[2.0, 4.0, 2.0, 4.0]);
    assert_eq!(&y[4..], &[4.0, 6.0, 4.0, 6.0]);
    // Errors: kv heads not dividing, caches too short, more queries than keys.
    let bad = AttentionShape { n_kv_heads: 3, ..shape };
    assert!(attention(&q, &k, &v, 2, bad, None).is_err());
    assert!(attention(&q, &k[..2], &v, 2, shape, None).is_err());
    assert!(attention(&q2, &k[..2], &v[..2], 1, shape, None).is_err());
}

#[test]
fn erf_matches_known_values() {
    // Values of erf from its series to 16 digits.
    for (x, want) in [
        (0.0, 0.0),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
        (-1.0, -0.842_700_792_949_714_9),
    ] {
        assert!((erf(x) - want).abs() < 1e-15, "erf({x}) = {} not {want}", erf(x));
    }
    assert_eq!(erf(10.0), 1.0);
    assert!(erf(f64::NAN).is_nan());
    // Continuous where the series hands over to the continued fraction.
    assert!((erf(3.0 - 1e-12) - erf(3.0)).abs() < 1e-12);
}

#[test]
fn gated_activations_and_erf_gelu() {
    let g = [-2.0f32, 0.0, 1.0, 3.0];
    let u = [1.0f32, 5.0, 2.0, -1.0];
    let sw = gated(&g, &u, GateActivation::Silu).unwrap();
    let want: Vec<f32> = silu(&g).iter().zip(&u).map(|(a, b)| a * b).collect();
    assert_eq!(sw, want);
    let ge = gelu_erf(&[1.0, -1.0, 0.0]);
    // 0.5 * (1 + erf(1/sqrt 2)) = 0.841_344_746...
    assert_eq!(ge, [0.841_344_8, -0.158_655_26, 0.0]);
    assert!(gated(&g, &u[..3], GateActivation::GeluErf).is_err());
}

#[test]
fn embedding_reads_the_ids_rows_and_rejects_out_of_range_ids() {
    let mut data = q8_row(1.0, &[1; 32]);
    data.extend(q8_row(0.5, &[-2; 32]));
    let table = QuantizedTensor::from_parts(QuantFormat::Q8_0, vec![2, 32], data, vec![]).unwrap();
    let e = embedding(&[1, 0, 1], &table).unwrap();
    assert_eq!(e.len(), 96);
    assert_eq!((e[0], e[32], e[64]), (-1.0, 1.0, -1.0));
    let err = embedding(&[0, 2], &table).unwrap_err().to_string();
    assert!(err.contains("token id 2 at index 1"), "{err}");
}

#[test]
fn attention_masks_pick_the_documented_key_ranges() {
    assert_eq!(AttentionMask::Causal.visible(1, 2, 5), 0..5);
    assert_eq!(AttentionMask::Causal.visible(0, 2, 5), 0..4);
    assert_eq!(AttentionMask::SlidingWindow(2).visible(0, 2, 5), 2..4);
    assert_eq!(AttentionMask::SlidingWindow(10).visible(0, 1, 3), 0..3);
    assert_eq!(AttentionMask::Padded { valid: 3 }.visible(4, 5, 5), 0..3);
    assert!(AttentionMask::SlidingWindow(0).check(4).is_err());
    assert!(AttentionMask::Padded { valid: 5 }.check(4).is_err());

    // One head, d = 1: with a window of 1 each query sees only its own value.
    let shape = AttentionShape {
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 1,
    };
    let (q, k, v) = ([1.0f32, 1.0, 1.0], [0.0f32, 0.0, 0.0], [10.0f32, 20.0, 30.0]);
    let local = attention_masked(&q, &k, &v, 3, shape, None, AttentionMask::SlidingWindow(1)).unwrap();
    assert_eq!(local, [10.0, 20.0, 30.0]);
    // Equal scores: the mean of what is visible.
    let causal = attention_masked(&q, &k, &v, 3, shape, None, AttentionMask::Causal).unwrap();
    assert_eq!(causal, [10.0, 15.0, 20.0]);
    let padded = attention_masked(&q, &k, &v, 3, shape, None, AttentionMask::Padded { valid: 2 }).unwrap();
    assert_eq!(padded, [15.0, 15.0, 15.0]);
}
