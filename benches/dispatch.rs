//! What routing costs: a trivial op called directly, through `GpuDispatchable::dispatch`
//! (CPU device, and a GPU device that falls back to the CPU), and device selection with
//! cached and fresh probes.
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

criterion_group!(benches, bench);
criterion_main!(benches);
