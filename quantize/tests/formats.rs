//! Slice-level behaviour of every format: bounds, exact bytes of hand-worked blocks, and
//! errors on bad input.
#![allow(clippy::float_cmp)] // exact values are the point

mod common;

use aihal_core::CoreError;
use aihal_quantize::{
    dequantize, dequantize_into, fp8, nf4::NF4_CODE, quantize, quantize_with, NonFinitePolicy, QuantFormat,
};
use common::{all_formats, check_bound, check_ternary, Rng};

#[test]
fn every_format_round_trips_within_its_bound_on_normal_data() {
    let mut rng = Rng::new(1);
    // Large enough to take the parallel path (2^15 elements), plus a small sequential one.
    for shape in [vec![96, 512], vec![3, 256]] {
        let n: usize = shape.iter().product();
        let x = rng.normals(n);
        for format in all_formats() {
            let q = quantize(format, &x, &shape).unwrap();
            assert_eq!(q.numel(), n);
            let y = dequantize(&q).unwrap();
            if format == QuantFormat::Ternary {
                check_ternary(&x, &y, q.scales()[0]).unwrap();
            } else {
                check_bound(format, &shape, &x, &y, q.scales()).unwrap();
            }
            // A second quantization of the dequantized values changes nothing for the
            // formats whose levels are fixed by the scale (idempotence of pack/unpack).
            let mut again = vec![0.0; n];
            dequantize_into(&q, &mut again).unwrap();
            assert_eq!(y, again, "{format}: dequantize and dequantize_into agree");
        }
    }
}

#[test]
fn parallel_and_sequential_paths_agree() {
    // The same rows quantized alone (sequential) and inside a large tensor (parallel).
    let mut rng = Rng::new(2);
    let x = rng.normals(128 * 512);
    for format in all_formats() {
        if matches!(
            format,
            QuantFormat::Ternary
                | QuantFormat::Fp8E4M3 { block_size: None }
                | QuantFormat::Fp8E5M2 { block_size: None }
        ) {
            continue; // one scale per tensor: a slice has a different scale
        }
        if let QuantFormat::Nf4 { double_quant: true, .. } = format {
            continue; // the nested offset is the mean over the whole tensor
        }
        let big = quantize(format, &x, &[128, 512]).unwrap();
        let small = quantize(format, &x[..512], &[1, 512]).unwrap();
        assert_eq!(&big.data()[..small.data().len()], small.data(), "{format}");
        assert_eq!(&big.scales()[..small.scales().len()], small.scales(), "{format}");
        let yb = dequantize(&big).unwrap();
        let ys = dequantize(&small).unwrap();
        assert_eq!(&yb[..512], &ys[..], "{format}");
    }
}

#[test]
fn q8_0_block_bytes_by_hand() {
    // amax 127 gives d = 1 exactly; values round half away from zero.
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = -2.5;
    x[2] = 2.5;
    x[3] = -0.4;
    let q = quantize(QuantFormat::Q8_0, &x, &[32]).unwrap();
    let b = q.data();
    assert_eq!(&b[..2], &half::f16::from_f32(1.0).to_le_bytes());
    assert_eq!(b[2] as i8, 127);
    assert_eq!(b[3] as i8, -3);
    assert_eq!(b[4] as i8, 3);
    assert_eq!(b[5] as i8, 0);
    assert!(b[6..].iter().all(|&v| v == 0));
}

#[test]
fn q4_0_block_bytes_by_hand() {
    // The signed max is -8, so d = 1 and q = trunc(x + 8.5), value j in the low nibble of
    // byte j and value j+16 in its high nibble.
    let mut x = [0.0f32; 32];
    x[0] = -8.0;
    x[1] = 7.0;
    x[16] = 3.0;
    x[17] = -1.6;
    let q = quantize(QuantFormat::Q4_0, &x, &[32]).unwrap();
    let b = q.data();
    assert_eq!(&b[..2], &half::f16::from_f32(1.0).to_le_bytes());
    assert_eq!(b[2], 11 << 4);
    assert_eq!(b[3], 15 | (6 << 4));
    assert_eq!(b[4], 8 | (8 << 4));
    let y = dequantize(&q).unwrap();
    assert_eq!((y[0], y[1], y[16], y[17]), (-8.0, 7.0, 3.0, -2.0));
}

#[test]
fn tq2_0_block_bytes_by_hand() {
    let mut x = [0.0f32; 256];
    x[0] = 2.0; // q = 2 at (h 0, l 0, j 0)
    x[32] = -2.0; // q = 0 at (h 0, l 1, j 0)
    x[129] = 1.0; // 0.5 rounds away from zero: q = 2 at (h 1, l 0, j 1)
    let q = quantize(QuantFormat::Tq2_0, &x, &[256]).unwrap();
    let b = q.data();
    assert_eq!(b.len(), 66);
    assert_eq!(b[0], 0b0101_0010);
    assert_eq!(b[33], 0b0101_0110);
    assert_eq!(b[1], 0b0101_0101);
    assert_eq!(&b[64..], &half::f16::from_f32(2.0).to_le_bytes());
    let y = dequantize(&q).unwrap();
    assert_eq!((y[0], y[32], y[129], y[2]), (2.0, -2.0, 2.0, 0.0));
}

#[test]
fn nf4_codes_and_nibble_order_by_hand() {
    let block = 32;
    let mut x = vec![0.0f32; 35];
    x[0] = -2.0; // code 0
    x[1] = 2.0; // absmax: code 15
    x[2] = 0.5; // normalized 0.25: nearest 0.2461, code 10
    x[33] = 1.0; // second (partial) block, absmax 1: code 15 in the high nibble of byte 16
    x[34] = -0.1; // second block: normalized -0.1, code 6, alone in the high nibble of byte 17
    let q = quantize(
        QuantFormat::Nf4 {
            block_size: block,
            double_quant: false,
        },
        &x,
        &[35],
    )
    .unwrap();
    assert_eq!(q.scales(), &[2.0, 1.0]);
    let b = q.data();
    assert_eq!(b.len(), 18);
    assert_eq!(b[0], 0x0F);
    assert_eq!(b[1], 0xA7);
    assert_eq!(b[16], 0x7F);
    assert_eq!(
        b[17], 0x67,
        "an odd tail is padded with the code of 0.0, as bitsandbytes pads it"
    );
    let y = dequantize(&q).unwrap();
    assert_eq!(y[2], NF4_CODE[10] * 2.0);
    assert_eq!(y[34], NF4_CODE[6]);
    // An all-zero block stays exactly zero.
    let z = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        &[0.0; 128],
        &[128],
    )
    .unwrap();
    assert!(dequantize(&z).unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn nf4_double_quant_keeps_8_bit_absmax() {
    let mut rng = Rng::new(3);
    let x = rng.normals(64 * 600);
    let f = QuantFormat::Nf4 {
        block_size: 64,
        double_quant: true,
    };
    let q = quantize(f, &x, &[600, 64]).unwrap();
    let n = q.nested().expect("double quantization keeps the nested absmax");
    assert_eq!(n.codes.len(), 600);
    assert_eq!(n.scales.len(), 3);
    assert_eq!(n.block_size, 256);
    // The decoded absmax (the scales) is what the codes, nested scales and offset give.
    for (i, &s) in q.scales().iter().enumerate() {
        assert_eq!(s, n.code[usize::from(n.codes[i])] * n.scales[i / 256] + n.offset);
    }
    // Storage: 4 bits per weight + 8 bits per 64 + nested scales: about 4.127 bits.
    let bpw = q.bits_per_weight();
    assert!((4.12..4.14).contains(&bpw), "{bpw}");
}

#[test]
fn int8_and_fp8_by_hand() {
    let x = [1.0f32, -0.5, 0.25, 0.0, 10.0, -20.0];
    let q = quantize(QuantFormat::Int8PerChannel, &x, &[2, 3]).unwrap();
    assert_eq!(q.scales(), &[1.0 / 127.0, 20.0 / 127.0]);
    assert_eq!(q.data(), &[127, (-64i8) as u8, 32, 0, 64, (-127i8) as u8]);

    let q = quantize(QuantFormat::Int8PerBlock { block_size: 2 }, &x, &[2, 3]).unwrap();
    assert_eq!(q.scales().len(), 4);
    assert_eq!(q.scales()[1], 0.25 / 127.0);

    let q = quantize(QuantFormat::Fp8E4M3 { block_size: None }, &x, &[2, 3]).unwrap();
    assert_eq!(q.scales(), &[20.0 / 448.0]);
    assert_eq!(q.data()[5], 0xFE, "the absmax maps to -448");
    assert_eq!(q.data()[3], 0x00);
    let y = dequantize(&q).unwrap();
    assert_eq!(fp8::e4m3_to_f32(q.data()[4]) * q.scales()[0], y[4]);
}

#[test]
fn ternary_by_hand() {
    // mean |x| = 0.5; x / 0.5 = [2, -1, 0.5, -0.5] -> [1, -1, 0, 0] (halves to even)
    let x = [1.0f32, -0.5, 0.25, -0.25, 0.3];
    let q = quantize(QuantFormat::Ternary, &x[..4], &[4]).unwrap();
    assert_eq!(q.scales(), &[0.5]);
    let y = dequantize(&q).unwrap();
    assert_eq!(y, [0.5, -0.5, 0.0, 0.0]);
    assert_eq!(q.data(), &[0b01_01_00_10]);
    // Five values: the second byte holds one code in its low bits.
    let q = quantize(QuantFormat::Ternary, &x, &[5]).unwrap();
    assert_eq!(q.data().len(), 2);
    assert_eq!(q.data()[1], 0b10, "0.3 / 0.46 rounds to 1, code 2");
    // All zeros: the scale is clamped at TERNARY_EPS and everything stays zero.
    let q = quantize(QuantFormat::Ternary, &[0.0; 5], &[5]).unwrap();
    assert_eq!(q.scales(), &[aihal_quantize::TERNARY_EPS]);
    assert_eq!(dequantize(&q).unwrap(), [0.0; 5]);
}

#[test]
fn non_finite_input_is_an_error_naming_the_index() {
    for format in all_formats() {
        let shape = [2, 256];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut x = vec![0.5f32; 512];
            x[300] = bad;
            x[400] = bad;
            let err = quantize(format, &x, &shape).unwrap_err();
            assert!(matches!(err, CoreError::InvalidInput(_)), "{format}");
            assert!(err.to_string().contains("index 300"), "{format}: {err}");
            let q = quantize_with(format, &x, &shape, NonFinitePolicy::Sanitize).unwrap();
            let y = dequantize(&q).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{format}");
        }
    }
}

#[test]
fn bad_shapes_and_lengths_are_errors() {
    let x = vec![1.0f32; 64];
    for format in all_formats() {
        let err = quantize(format, &x, &[2, 33]).unwrap_err();
        if aihal_quantize::ggml::block_layout(format).is_some() {
            assert!(matches!(err, CoreError::InvalidInput(_)), "{format}: {err}");
        } else {
            assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format}: {err}");
        }
        let q = quantize_with(format, &vec![1.0; 512], &[2, 256], NonFinitePolicy::Reject).unwrap();
        let mut short = vec![0.0; 511];
        let err = dequantize_into(&q, &mut short).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format}");
        assert!(short.iter().all(|&v| v == 0.0), "output untouched on error");
    }
    assert!(
        quantize(QuantFormat::Q4_0, &x, &[2, 32, 1]).is_err(),
        "row of 1 is not a multiple of 32"
    );
}

#[test]
fn f16_scale_overflow_is_an_error() {
    let mut x = vec![1.0f32; 64];
    x[40] = 1e7;
    let err = quantize(QuantFormat::Q8_0, &x, &[64]).unwrap_err();
    assert!(err.to_string().contains("block 1"), "{err}");
    assert!(quantize(QuantFormat::Q4_0, &x, &[64]).is_err());
    assert!(quantize(QuantFormat::Int8PerChannel, &x, &[64]).is_ok());
}

#[test]
fn edge_shapes() {
    for format in all_formats() {
        let q = quantize(format, &[], &[0, 256]).unwrap();
        assert_eq!(dequantize(&q).unwrap(), Vec::<f32>::new(), "{format}");
    }
    // A scalar and odd sizes for the flat formats.
    for format in [
        QuantFormat::Ternary,
        QuantFormat::Int8PerChannel,
        QuantFormat::Fp8E5M2 { block_size: Some(2) },
    ] {
        let q = quantize(format, &[0.75], &[]).unwrap();
        let y = dequantize(&q).unwrap();
        assert_eq!(y.len(), 1);
        assert!((y[0] - 0.75).abs() < 0.1, "{format}: {}", y[0]);
    }
}
