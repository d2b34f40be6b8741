//! The slice and tensor entry points: dtypes, shapes and errors.
#![allow(clippy::float_cmp)]

use aihal_core::CoreError;
use aihal_cpu::{matmul_into, matmul_tensor, matmul_with, Activations, MatmulOptions};
use aihal_quantize::{quantize, QuantFormat};
use aihal_reference as reference;
use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

fn weights() -> aihal_quantize::QuantizedTensor {
    let w: Vec<f32> = (0..24 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    quantize(QuantFormat::Q8_0, &w, &[24, 64]).unwrap()
}

#[test]
fn half_precision_activations_are_widened_exactly() {
    let w = weights();
    let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 13 % 29) as f32 / 7.0) - 2.0).collect();
    // Values that f16 and bf16 hold exactly give the f32 result exactly.
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let xr: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let xbr: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
    let opt = MatmulOptions::exact();
    assert_eq!(
        matmul_with(Activations::F16(&xh), 3, &w, opt).unwrap(),
        matmul_with(Activations::F32(&xr), 3, &w, opt).unwrap()
    );
    assert_eq!(
        matmul_with(Activations::Bf16(&xb), 3, &w, opt).unwrap(),
        matmul_with(Activations::F32(&xbr), 3, &w, opt).unwrap()
    );
}

#[test]
fn tensor_entry_point_keeps_leading_dims_and_honours_the_output_dtype() {
    let w = weights();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64), &Device::Cpu).unwrap();
    let y = matmul_tensor(&x, &w, MatmulOptions::exact()).unwrap();
    assert_eq!((y.dims(), y.dtype()), (&[2, 3, 24][..], DType::F32));
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = reference::matmul(&xs, 6, &w).unwrap();
    for (g, r) in y.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().zip(&want) {
        assert!((g - r).abs() < 1e-4, "{g} vs {r}");
    }
    let opt = MatmulOptions {
        output: Some(DType::BF16),
        ..MatmulOptions::default()
    };
    let y = matmul_tensor(&x.to_dtype(DType::F16).unwrap(), &w, opt).unwrap();
    assert_eq!(y.dtype(), DType::BF16);
    let bad = MatmulOptions {
        output: Some(DType::U8),
        ..MatmulOptions::default()
    };
    assert!(matches!(
        matmul_tensor(&x, &w, bad).unwrap_err(),
        CoreError::Unsupported { .. }
    ));
    let wrong_k = Tensor::zeros((2, 63), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        matmul_tensor(&wrong_k, &w, MatmulOptions::default()).unwrap_err(),
        CoreError::ShapeMismatch { .. }
    ));
}

#[test]
fn output_buffer_of_the_wrong_length_is_an_error_and_left_untouched() {
    let w = weights();
    let x = vec![1.0f32; 64];
    let mut out = vec![7.0f32; 23];
    let e = matmul_into(Activations::F32(&x), 1, &w, MatmulOptions::default(), &mut out).unwrap_err();
    assert!(matches!(e, CoreError::ShapeMismatch { .. }), "{e}");
    assert!(out.iter().all(|&v| v == 7.0));
}
