//! `QuantLinear` as a candle module and as a dispatchable op.
#![allow(clippy::float_cmp)]

use aihal_core::CoreError;
use aihal_cpu::{ActivationPrecision, QuantLinear};
use aihal_quantize::QuantFormat;
use aihal_reference as reference;
use candle_core::{DType, Module, Tensor};

fn setup() -> (Tensor, Tensor, Tensor) {
    let cpu = candle_core::Device::Cpu;
    let w = Tensor::randn(0f32, 0.5, (48, 96), &cpu).unwrap();
    let b = Tensor::randn(0f32, 0.5, 48, &cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 96), &cpu).unwrap();
    (w, b, x)
}

#[test]
fn forward_matches_the_reference_plus_bias_in_every_dtype() {
    let (w, b, x) = setup();
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Fp8E4M3 { block_size: None },
    ] {
        let layer = QuantLinear::from_tensor(&w, Some(&b), format)
            .unwrap()
            .with_activations(ActivationPrecision::F32);
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut want = reference::matmul(&xs, 6, layer.weight()).unwrap();
        let bias = b.to_vec1::<f32>().unwrap();
        for row in want.chunks_mut(48) {
            for (v, bv) in row.iter_mut().zip(&bias) {
                *v += bv;
            }
        }
        let y = layer.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3, 48]);
        assert_eq!(y.dtype(), DType::F32);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, r) in got.iter().zip(&want) {
            assert!((g - r).abs() < 1e-4, "{format}: {g} vs {r}");
        }
        // f16 and bf16 in, the same dtype out, close to the f32 result.
        for dtype in [DType::F16, DType::BF16] {
            let y = layer.forward(&x.to_dtype(dtype).unwrap()).unwrap();
            assert_eq!(y.dtype(), dtype);
            let got = y
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() < 0.05 * (1.0 + r.abs()), "{format} {dtype:?}: {g} vs {r}");
            }
        }
    }
}

#[test]
fn int8_activations_stay_close_to_the_f32_path() {
    let (w, _, x) = setup();
    let layer = QuantLinear::from_tensor(&w, None, QuantFormat::Q8_0).unwrap();
    let fast = layer
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let exact = layer
        .clone()
        .with_activations(ActivationPrecision::F32)
        .forward(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let num: f32 = fast.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f32 = exact.iter().map(|a| a * a).sum();
    assert!((num / den).sqrt() < 0.02, "relative RMS {}", (num / den).sqrt());
}

#[test]
fn bad_inputs_are_errors() {
    let (w, b, _) = setup();
    let layer = QuantLinear::from_tensor(&w, Some(&b), QuantFormat::Q8_0).unwrap();
    let x = Tensor::zeros((2, 95), DType::F32, &candle_core::Device::Cpu).unwrap();
    let e = layer.forward_tensor(&x).unwrap_err();
    assert!(
        matches!(
            e,
            CoreError::DimensionMismatch {
                expected: 96,
                actual: 95,
                ..
            }
        ),
        "{e}"
    );
    assert!(layer.forward(&x).is_err());
    let xi = Tensor::zeros((2, 96), DType::U32, &candle_core::Device::Cpu).unwrap();
    assert!(matches!(
        layer.forward_tensor(&xi).unwrap_err(),
        CoreError::Unsupported { .. }
    ));
    let short_bias = vec![0.0; 47];
    let e = QuantLinear::new(layer.weight().clone(), Some(short_bias)).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e}");
}
