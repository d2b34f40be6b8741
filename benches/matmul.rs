//! Criterion benches of aihal-cpu's quantized matmul against candle's `QMatMul` on the same
//! Q4_0 / Q8_0 weights (one 4096 x 4096 matrix: these figures are cache-resident for Q4_0;
//! `examples/bench_matmul.rs` measures DRAM-bound figures with a rotating working set). The
//! `packed` ids run `matmul_packed` over `PackedWeights` built once, before timing.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

mod common;

use std::hint::black_box;

use aihal_cpu::{matmul_into, matmul_packed_into, Activations, MatmulOptions, PackedWeights};
use aihal_quantize::{quantize, QuantFormat};
use candle_core::quantized::QMatMul;
use candle_core::{Device, Module, Tensor};
use common::data;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let (n, k) = (4096, 4096);
    let w = data(n * k, 1);
    let mut group = c.benchmark_group("matmul_4096x4096");
    group.sample_size(20);
    for format in [QuantFormat::Q4_0, QuantFormat::Q8_0] {
        let q = quantize(format, &w, &[n, k]).expect("quantize");
        let packed = PackedWeights::new(&q).expect("pack");
        let candle = QMatMul::from_qtensor(q.to_qtensor().expect("ggml format")).expect("qmatmul");
        for m in [1usize, 32] {
            let x = data(m * k, 2);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).expect("tensor");
            let mut y = vec![0.0f32; m * n];
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            group.bench_with_input(BenchmarkId::new(format!("cpu/aihal/{format}"), m), &m, |b, &m| {
                b.iter(|| {
                    matmul_into(Activations::F32(black_box(&x)), m, &q, MatmulOptions::default(), &mut y)
                        .expect("matmul");
                    black_box(&y);
                });
            });
            group.bench_with_input(
                BenchmarkId::new(format!("cpu/aihal/{format}/packed"), m),
                &m,
                |b, &m| {
                    b.iter(|| {
                        matmul_packed_into(
                            Activations::F32(black_box(&x)),
                            m,
                            &packed,
                            MatmulOptions::default(),
                            &mut y,
                        )
                        .expect("matmul");
                        black_box(&y);
                    });
                },
            );
            group.bench_with_input(BenchmarkId::new(format!("cpu/candle/{format}"), m), &m, |b, _| {
                b.iter(|| black_box(candle.forward(black_box(&xt)).expect("forward")));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
