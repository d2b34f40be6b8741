//! What routing costs: a trivial op called directly, through `GpuDispatchable::dispatch`
//! (CPU device, and a GPU device that falls back to the CPU), and device selection with
//! cached and fresh probes; and the op set's executor (placement, record, tracing span)
//! against the CPU provider's prepared op called directly, on sizes where the routing, not
//! the work, is measured.
//!
//! `cargo bench --bench dispatch`
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;

use aihal::core::{refresh_probes, CoreError};
use aihal::{Device, DeviceConfig, GpuDispatchable, Result};
use criterion::{criterion_group, criterion_main, Criterion};

/// Sums 16 floats: small enough that the routing, not the work, is measured.
struct Sum16;

impl GpuDispatchable for Sum16 {
    type Input = [f32; 16];
    type Output = f32;
    fn name(&self) -> &'static str {
        "sum16"
    }
    fn dispatch_gpu(&self, _: &[f32; 16], _: &Device) -> Result<f32> {
        Err(CoreError::not_implemented("sum16 on the GPU"))
    }
    fn dispatch_cpu(&self, x: &[f32; 16]) -> Result<f32> {
        Ok(x.iter().sum())
    }
    fn gpu_available(&self) -> bool {
        true
    }
}

fn bench(c: &mut Criterion) {
    let x: [f32; 16] = std::array::from_fn(|i| i as f32 * 0.5);
    let config = DeviceConfig::new().force_cpu(true);
    let mut g = c.benchmark_group("dispatch");
    g.bench_function("direct_call", |b| {
        b.iter(|| Sum16.dispatch_cpu(black_box(&x)));
    });
    g.bench_function("dispatch_on_cpu", |b| {
        b.iter(|| Sum16.dispatch(black_box(&x), black_box(&Device::Cpu)));
    });
    g.bench_function("dispatch_traced_on_cpu", |b| {
        b.iter(|| Sum16.dispatch_traced(black_box(&x), black_box(&Device::Cpu)));
    });
    // The fallback path: the GPU route answers NotImplemented, the CPU route runs, and the
    // (already printed) warning is looked up in the warn-once set.
    g.bench_function("dispatch_with_cpu_fallback", |b| {
        b.iter(|| Sum16.dispatch(black_box(&x), black_box(&Device::Cuda { ordinal: 0 })));
    });
    g.bench_function("get_device_cached_probes", |b| {
        b.iter(|| aihal::get_device(black_box(&config)));
    });
    g.bench_function("get_device_fresh_probes", |b| {
        b.iter(|| {
            refresh_probes();
            aihal::get_device(black_box(&DeviceConfig::new().strict(false)))
        });
    });
    g.finish();
}

fn op_set(c: &mut Criterion) {
    use aihal::ops::{Call, OpSpec, Provider};
    use aihal::quantize::{quantize, QuantFormat};
    use aihal::{Add, Executor, Linear, LinearPrecision, Tensor};

    let cpu = aihal::cpu::CpuProvider;
    let exec = Executor::builder()
        .provider(std::sync::Arc::new(cpu))
        .build()
        .expect("a CPU executor");
    let a = Tensor::from_vec((0..16).map(|i| i as f32).collect(), &[16]).expect("a tensor");
    let mut g = c.benchmark_group("op_set");

    let add_direct = cpu.prepare(&OpSpec::Add).expect("add on the CPU");
    let add = Add::new(&exec).expect("add");
    g.bench_function("add16_provider_direct", |b| {
        b.iter(|| add_direct.run(Call::Binary(black_box(&a), black_box(&a))));
    });
    g.bench_function("add16_through_executor", |b| {
        b.iter(|| add.forward(black_box(&a), black_box(&a)));
    });

    let (n, k) = (16, 64);
    let w = quantize(QuantFormat::Q8_0, &vec![0.25f32; n * k], &[n, k]).expect("a weight");
    let x = Tensor::from_vec(vec![0.5; k], &[1, k]).expect("a tensor");
    let spec = OpSpec::Linear {
        weight: &w,
        bias: None,
        precision: LinearPrecision::default(),
    };
    let linear_direct = cpu.prepare(&spec).expect("linear on the CPU");
    let linear = Linear::new(&exec, &w, None).expect("linear");
    g.bench_function("linear_q8_0_16x64_provider_direct", |b| {
        b.iter(|| linear_direct.run(Call::Unary(black_box(&x))));
    });
    g.bench_function("linear_q8_0_16x64_through_executor", |b| {
        b.iter(|| linear.forward(black_box(&x)));
    });
    g.finish();
}

criterion_group!(benches, bench, op_set);
criterion_main!(benches);
