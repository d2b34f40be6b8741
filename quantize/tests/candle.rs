//! The `Quantize` / `Dequantize` scheme on candle tensors.
#![allow(clippy::float_cmp)] // exact values are the point

mod common;

use aihal_core::{CoreError, DType, Dequantize, Device, Quantize};
use aihal_quantize::{dequantize, quantize, NonFinitePolicy, QuantFormat, Quantizer};
use candle_core::Tensor;
use common::{all_formats, Rng};

#[test]
fn scheme_matches_the_slice_functions() {
    let mut rng = Rng::new(30);
    let x = rng.normals(4 * 256);
    let t = Tensor::from_vec(x.clone(), (2, 2, 256), &candle_core::Device::Cpu).unwrap();
    for format in all_formats() {
        let scheme = Quantizer::new(format);
        let q = scheme.quantize(&t, &Device::Cpu).unwrap();
        assert_eq!(q, quantize(format, &x, &[2, 2, 256]).unwrap(), "{format}");
        let back = scheme.dequantize(&q, &Device::Cpu).unwrap();
        assert_eq!(back.dims(), &[2, 2, 256]);
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            dequantize(&q).unwrap()
        );
        let buf = q.to_buffer().unwrap();
        assert_eq!(buf.shape(), &[2, 2, 256]);
        assert_eq!(buf.dtype(), DType::F32);
        assert_eq!(q.data_buffer().unwrap().bytes(), q.data());
    }
}

#[test]
fn half_precision_inputs_are_widened() {
    let mut rng = Rng::new(31);
    let x = rng.normals(64);
    let t = Tensor::from_vec(x, (2, 32), &candle_core::Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::BF16)
        .unwrap();
    let widened = t
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let q = Quantizer::new(QuantFormat::Q8_0).quantize(&t, &Device::Cpu).unwrap();
    assert_eq!(q, quantize(QuantFormat::Q8_0, &widened, &[2, 32]).unwrap());
}

#[test]
fn scheme_errors_and_policy() {
    let t = Tensor::new(&[[1.0f32, f32::NAN, 2.0, f32::INFINITY]], &candle_core::Device::Cpu).unwrap();
    let err = Quantizer::new(QuantFormat::Int8PerChannel)
        .quantize(&t, &Device::Cpu)
        .unwrap_err();
    assert!(err.to_string().contains("index 1"), "{err}");
    let q = Quantizer::new(QuantFormat::Int8PerChannel)
        .with_nonfinite(NonFinitePolicy::Sanitize)
        .quantize(&t, &Device::Cpu)
        .unwrap();
    // NaN -> 0, +inf -> the largest finite magnitude (2.0).
    let y = dequantize(&q).unwrap();
    assert_eq!(&y[1..], &[0.0, 2.0, 2.0]);
    assert!((y[0] - 1.0).abs() <= 1.0 / 127.0);
    let err = Quantizer::nf4(false).dequantize(&q, &Device::Cpu).unwrap_err();
    assert!(matches!(err, CoreError::InvalidInput(_)), "{err}");
}
