//! Quantize and dequantize throughput of every aihal-quantize format, with candle's GGML
//! `QTensor::quantize` / `QTensor::dequantize` for the block types candle has (Q4_0, Q8_0,
//! Q4_1, Q5_0, Q4_K, Q6_K) in the same run.
//!
//! ```text
//! cargo bench --bench quantize
//! ```
//!
//! Dequantization throughput is reported as bytes of f32 output per second.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;

use aihal_quantize::{dequantize, dequantize_into, quantize, QuantFormat};
use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ8_0, GgmlType};
use candle_core::quantized::QTensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn normals(n: usize) -> Vec<f32> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos()) as f32)
        .collect()
}

fn formats() -> Vec<QuantFormat> {
    vec![
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        QuantFormat::Tq2_0,
        QuantFormat::Ternary,
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 128 },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(128) },
    ]
}

fn id(format: QuantFormat) -> String {
    format.to_string().replace([' ', ',', '(', ')'], "_")
}

fn bench_dequantize(c: &mut Criterion) {
    let x = normals(ROWS * COLS);
    let mut g = c.benchmark_group(format!("dequantize_{ROWS}x{COLS}"));
    g.sample_size(10);
    g.throughput(Throughput::Bytes((ROWS * COLS * 4) as u64));
    let mut out = vec![0.0f32; ROWS * COLS];
    for format in formats() {
        let q = quantize(format, &x, &[ROWS, COLS]).unwrap();
        g.bench_function(BenchmarkId::new("aihal", id(format)), |b| {
            b.iter(|| black_box(dequantize(black_box(&q)).unwrap()));
        });
        // Decoders alone, into a buffer allocated once (no page faults in the loop).
        let expected = dequantize(&q).unwrap();
        dequantize_into(&q, &mut out).unwrap();
        assert_eq!(out, expected);
        g.bench_function(BenchmarkId::new("aihal_into", id(format)), |b| {
            b.iter(|| dequantize_into(black_box(&q), black_box(&mut out)).unwrap());
        });
        // Same bytes on both sides: candle's tensor holds our bytes (its own K quantizers
        // differ from llama.cpp's reference, so its bytes would not be ours).
        let Ok(theirs) = q.to_qtensor() else {
            continue;
        };
        g.bench_function(BenchmarkId::new("candle", id(format)), |b| {
            b.iter(|| black_box(theirs.dequantize(&candle_core::Device::Cpu).unwrap()));
        });
        match format {
            QuantFormat::Q4_0 => candle_into::<BlockQ4_0>(&mut g, &x, &mut out, &expected, id(format)),
            QuantFormat::Q8_0 => candle_into::<BlockQ8_0>(&mut g, &x, &mut out, &expected, id(format)),
            _ => {}
        }
    }
    // The floor: a plain copy of the same amount of f32 (read + write).
    let src = vec![1.0f32; ROWS * COLS];
    let mut dst = vec![0.0f32; ROWS * COLS];
    g.bench_function("copy_f32", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    g.finish();
}

/// candle's block decoder (`GgmlType::to_float`, what `QTensor::dequantize` runs) into a
/// preallocated buffer.
fn candle_into<T: GgmlType + Clone>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    x: &[f32],
    out: &mut [f32],
    expected: &[f32],
    id: String,
) {
    let mut blocks = vec![T::zeros(); x.len() / T::BLCK_SIZE];
    T::from_float(x, &mut blocks);
    T::to_float(&blocks, out);
    assert_eq!(out, expected, "candle decodes the same values");
    g.bench_function(BenchmarkId::new("candle_into", id), |b| {
        b.iter(|| T::to_float(black_box(&blocks), black_box(&mut *out)));
    });
}

fn bench_quantize(c: &mut Criterion) {
    let (rows, cols) = (1024, COLS);
    let x = normals(rows * cols);
    let t = candle_core::Tensor::from_vec(x.clone(), (rows, cols), &candle_core::Device::Cpu).unwrap();
    let mut g = c.benchmark_group(format!("quantize_{rows}x{cols}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for format in formats() {
        g.bench_function(BenchmarkId::new("aihal", id(format)), |b| {
            b.iter(|| black_box(quantize(format, black_box(&x), &[rows, cols]).unwrap()));
        });
        let Ok(dtype) = quantize(format, &x[..cols], &[1, cols]).and_then(|q| Ok(q.to_qtensor()?.dtype())) else {
            continue;
        };
        g.bench_function(BenchmarkId::new("candle", id(format)), |b| {
            b.iter(|| black_box(QTensor::quantize(black_box(&t), dtype).unwrap()));
        });
    }
    g.finish();
}

criterion_group!(benches, bench_dequantize, bench_quantize);
criterion_main!(benches);
