//! Byte compatibility with llama.cpp's reference quantizers, checked against candle-core's
//! implementation of `quantize_row_q4_0` / `quantize_row_q8_0`, and GGUF reading through
//! candle's reader.
#![allow(clippy::float_cmp)] // exact values are the point

mod common;

use std::io::Cursor;

use aihal_quantize::{dequantize, quantize, read_gguf_tensor, QuantFormat, QuantizedTensor};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use common::Rng;

/// Random data with the cases that decide rounding: exact halves, ties for the largest
/// magnitude, all-zero blocks, one huge outlier, tiny values.
fn tricky(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.normals(n);
    for (b, block) in x.chunks_mut(32).enumerate() {
        match b % 6 {
            0 => block.fill(0.0),
            1 => {
                // Integers and halves: rounding ties under d = 1 (Q8_0 amax 127).
                for (j, v) in block.iter_mut().enumerate() {
                    *v = (j as f32 - 16.0) * 0.5;
                }
                block[31] = 127.0;
            }
            2 => {
                block[3] = 8.0;
                block[7] = -8.0; // equal magnitudes: the first one sets Q4_0's sign
            }
            3 => block[5] = 1e4,
            4 => block.iter_mut().for_each(|v| *v *= 1e-6),
            _ => {}
        }
    }
    x
}

#[test]
fn q4_0_and_q8_0_bytes_match_candle() {
    let mut rng = Rng::new(10);
    for (rows, cols) in [(1, 32), (7, 64), (128, 512)] {
        let x = tricky(&mut rng, rows * cols);
        let t = Tensor::from_vec(x.clone(), (rows, cols), &Device::Cpu).unwrap();
        for (format, dtype) in [
            (QuantFormat::Q4_0, GgmlDType::Q4_0),
            (QuantFormat::Q8_0, GgmlDType::Q8_0),
        ] {
            let ours = quantize(format, &x, &[rows, cols]).unwrap();
            let theirs = QTensor::quantize(&t, dtype).unwrap();
            assert_eq!(ours.data(), &*theirs.data().unwrap(), "{format} {rows}x{cols}");
            // And the values both sides decode are identical.
            let ours_y = dequantize(&ours).unwrap();
            let theirs_y = theirs
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(ours_y, theirs_y, "{format}");
        }
    }
}

#[test]
fn qtensor_conversion_keeps_bytes() {
    let mut rng = Rng::new(11);
    let x = rng.normals(4 * 64);
    let t = Tensor::from_vec(x, (1, 256), &Device::Cpu).unwrap();
    for dtype in [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        let q = QTensor::quantize(&t, dtype).unwrap();
        let ours = QuantizedTensor::from_qtensor(&q).unwrap();
        assert_eq!(ours.shape(), &[1, 256]);
        assert_eq!(ours.data(), &*q.data().unwrap());
        let back = ours.to_qtensor().unwrap();
        assert_eq!(&*back.data().unwrap(), ours.data());
        assert_eq!(back.dtype(), dtype);
    }
    // A GGML type we do not take is a clear error.
    let t = Tensor::zeros((1, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, GgmlDType::Q8K).unwrap();
    let err = QuantizedTensor::from_qtensor(&q).unwrap_err();
    assert!(err.to_string().contains("Q8K"), "{err}");
}

fn gguf_bytes(tensors: &[(&str, &QTensor)]) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &[], tensors).unwrap();
    buf.into_inner()
}

#[test]
fn gguf_tensors_load_without_requantization() {
    let mut rng = Rng::new(12);
    let x = rng.normals(8 * 96);
    let t = Tensor::from_vec(x, (8, 96), &Device::Cpu).unwrap();
    let q4 = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
    let q8 = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let f32t = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    let bytes = gguf_bytes(&[("w4", &q4), ("w8", &q8), ("wf", &f32t)]);
    let mut r = Cursor::new(&bytes);
    let content = gguf_file::Content::read(&mut r).unwrap();
    let w4 = read_gguf_tensor(&content, &mut r, "w4").unwrap();
    assert_eq!(w4.format(), QuantFormat::Q4_0);
    assert_eq!(w4.shape(), &[8, 96]);
    assert_eq!(w4.data(), &*q4.data().unwrap());
    let w8 = read_gguf_tensor(&content, &mut r, "w8").unwrap();
    assert_eq!(w8.data(), &*q8.data().unwrap());
    assert!(
        read_gguf_tensor(&content, &mut r, "wf").is_err(),
        "f32 is not a quantized format"
    );
    assert!(read_gguf_tensor(&content, &mut r, "nope")
        .unwrap_err()
        .to_string()
        .contains("nope"));

    // A file cut short inside the tensor data is an error, not a panic.
    let cut = &bytes[..bytes.len() - 40];
    let mut r = Cursor::new(cut);
    let content = gguf_file::Content::read(&mut r).unwrap();
    assert!(
        read_gguf_tensor(&content, &mut r, "wf").is_err(),
        "f32 is refused first"
    );
    // Cut inside the Q8_0 tensor (the second one) instead.
    let w8_end = bytes.len() - f32t.storage_size_in_bytes();
    let mut r = Cursor::new(&bytes[..w8_end - 100]); // past the padding, into the blocks
    let content = gguf_file::Content::read(&mut r).unwrap();
    let err = read_gguf_tensor(&content, &mut r, "w8").unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
    let mut r = Cursor::new(cut);
    let err = read_gguf_tensor(&content, &mut r, "w8");
    assert!(err.is_ok(), "a tensor before the cut still reads: {err:?}");
}
