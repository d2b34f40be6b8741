//! The CubeCL kernels and their execution provider on whatever runtime is present: CUDA
//! device 0 when built with `cuda` and the driver and a GPU exist, else the first Vulkan
//! adapter. On lavapipe (the CPU-emulated Vulkan driver of CI) the numbers say nothing about
//! GPU speed: they only show that the benchmarks run.
//!
//! Groups: `dequantize` (GB/s of f32 written; Q4_0, Q8_0, NF4 and the other GGUF block
//! formats), `matmul` (the kernel: GEMV M = 1 and GEMM M = 32; Q4_0, Q8_0 and the other GGUF
//! block formats), `provider` (a `Linear` through the executor on a device-resident input, as a
//! model calls it, and the provider's activation upload and download), `attention`, and
//! with `cuda`, `transfer` (candle ↔ CubeCL for 1 MB to 256 MB, GB/s).
//! Every timed call waits for the device before the clock stops.
//!
//! `cargo bench --features kernels --bench kernels` (Vulkan), `--features cuda` (CUDA too).
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::sync::Arc;
use std::time::Duration;

use aihal::kernels::cubecl::prelude::Runtime;
use aihal::kernels::cubecl::wgpu::WgpuRuntime;
use aihal::kernels::{self, wgpu_adapters, wgpu_provider, CubeProvider, DeviceQuantized};
use aihal::ops::{Executor, Linear, Provider, Shape};
use aihal::reference::AttentionShape;
use aihal_quantize::{quantize, QuantFormat};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed)
                .rotate_left(13);
            (h % 2001) as f32 / 1000.0 - 1.0 + 1e-3
        })
        .collect()
}

fn run<R: Runtime>(c: &mut Criterion, provider: &Arc<CubeProvider<R>>, device: &str) {
    let ctx = provider.context().clone();
    let ctx = &ctx;
    let q4 = quantize(QuantFormat::Q4_0, &values(1024 * 1024, 1), &[1024, 1024]).expect("quantize");
    let q8 = quantize(QuantFormat::Q8_0, &values(1024 * 1024, 2), &[1024, 1024]).expect("quantize");
    let nf4 = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        &values(1024 * 1024, 3),
        &[1024, 1024],
    )
    .expect("quantize");
    // The other GGUF block formats, read as stored (lavapipe's times are no GPU speed claim).
    let gguf: Vec<_> = [
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
    ]
    .into_iter()
    .zip(11..)
    .map(|(f, seed)| quantize(f, &values(1024 * 1024, seed), &[1024, 1024]).expect("quantize"))
    .collect();

    let mut g = c.benchmark_group(format!("dequantize/{device}"));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes(4 * 1024 * 1024));
    for w in [&q4, &q8, &nf4].into_iter().chain(&gguf) {
        let dq = DeviceQuantized::upload(ctx, w).expect("upload");
        let out = ctx.alloc::<f32>(w.numel()).expect("alloc");
        g.bench_function(BenchmarkId::new(w.format().name(), "1024x1024"), |b| {
            b.iter(|| {
                kernels::dequantize_into::<R, f32>(ctx, &dq, &out).expect("dequantize");
                ctx.sync().expect("sync");
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("matmul/{device}"));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for w in [&q4, &q8].into_iter().chain(&gguf) {
        let dq = DeviceQuantized::upload(ctx, w).expect("upload");
        for m in [1usize, 32] {
            let x = ctx.upload(&values(m * 1024, 7)).expect("upload");
            let y = ctx.alloc::<f32>(m * 1024).expect("alloc");
            g.throughput(Throughput::Elements((2 * m * 1024 * 1024) as u64));
            g.bench_function(BenchmarkId::new(w.format().name(), format!("m{m}_1024x1024")), |b| {
                b.iter(|| {
                    kernels::quant_matmul_into::<R, f32>(ctx, &x, m, &dq, &y).expect("matmul");
                    ctx.sync().expect("sync");
                });
            });
        }
    }
    g.finish();

    // The provider as a model uses it: the op placed by an executor, its input already on
    // the device, its output left there.
    let dynamic: Arc<dyn Provider> = Arc::clone(provider) as Arc<dyn Provider>;
    let exec = Executor::builder()
        .provider(dynamic)
        .device(provider.device())
        .strict(true)
        .build()
        .expect("executor");
    let mut g = c.benchmark_group(format!("provider/{device}"));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let layer = Linear::new(&exec, &q4, None).expect("linear");
    for m in [1usize, 32] {
        let x = provider
            .upload(&values(m * 1024, 7), Shape::new(&[m, 1024]).expect("shape"))
            .expect("upload");
        g.throughput(Throughput::Elements((2 * m * 1024 * 1024) as u64));
        g.bench_function(BenchmarkId::new("linear_q4_0", format!("m{m}_1024x1024")), |b| {
            b.iter(|| {
                let y = layer.forward(&x).expect("linear");
                ctx.sync().expect("sync");
                y
            });
        });
    }
    let act = values(1 << 20, 5);
    let shape = Shape::new(&[1 << 20]).expect("shape");
    g.throughput(Throughput::Bytes(4 << 20));
    g.bench_function(BenchmarkId::new("upload", "4MB"), |b| {
        b.iter(|| {
            let t = provider.upload(&act, shape).expect("upload");
            ctx.sync().expect("sync");
            t
        });
    });
    let on_device = provider.upload(&act, shape).expect("upload");
    g.bench_function(BenchmarkId::new("download", "4MB"), |b| {
        b.iter(|| on_device.to_vec().expect("download"));
    });
    g.finish();

    let mut g = c.benchmark_group(format!("attention/{device}"));
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let shape = AttentionShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 64,
    };
    let kv_len = 512;
    let kv = ctx.upload(&values(kv_len * 2 * 64, 9)).expect("upload");
    for q_len in [1usize, 64] {
        let q = ctx.upload(&values(q_len * 8 * 64, 8)).expect("upload");
        let out = ctx.alloc::<f32>(q_len * 8 * 64).expect("alloc");
        g.bench_function(BenchmarkId::new("gqa_8x2x64_kv512", format!("q{q_len}")), |b| {
            b.iter(|| {
                kernels::attention::<R, f32>(ctx, &q, &kv, &kv, kv_len, shape, None, &out).expect("attention");
                ctx.sync().expect("sync");
            });
        });
    }
    g.finish();

    #[cfg(feature = "cuda")]
    transfers(c, ctx, device);
}

/// candle ↔ CubeCL through aihal-cuda's interop (built with `cuda` only).
#[cfg(feature = "cuda")]
fn transfers<R: Runtime>(c: &mut Criterion, ctx: &aihal::kernels::Context<R>, device: &str) {
    use aihal::cuda::{candle_to_cubecl_handle, cubecl_to_candle_tensor};
    use std::hint::black_box;

    let mut g = c.benchmark_group(format!("transfer/{device}"));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for mb in [1usize, 16, 64, 256] {
        if (mb << 20) as u64 > ctx.limits().max_buffer_bytes {
            eprintln!(
                "note: {device} holds at most {} bytes in one buffer; skipping the {mb} MB transfer",
                ctx.limits().max_buffer_bytes
            );
            continue;
        }
        let n = mb * (1 << 20) / 4;
        let t = candle_core::Tensor::from_vec(values(n, 5), n, &candle_core::Device::Cpu).expect("tensor");
        g.throughput(Throughput::Bytes((mb << 20) as u64));
        g.bench_function(BenchmarkId::new("candle_to_cubecl", format!("{mb}MB")), |b| {
            b.iter(|| {
                let d = candle_to_cubecl_handle(ctx, black_box(&t)).expect("upload");
                ctx.sync().expect("sync");
                d
            });
        });
        let on_device = candle_to_cubecl_handle(ctx, &t).expect("upload");
        g.bench_function(BenchmarkId::new("cubecl_to_candle", format!("{mb}MB")), |b| {
            b.iter(|| {
                cubecl_to_candle_tensor(ctx, black_box(&on_device), &candle_core::Device::Cpu).expect("download")
            });
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    #[cfg(feature = "cuda")]
    if let Ok(p) = aihal::cuda::cuda_provider(0) {
        run::<aihal::cuda::CudaRuntime>(c, &Arc::new(p), "cuda0");
        return;
    }
    let Some(adapter) = wgpu_adapters().into_iter().next() else {
        eprintln!("no CUDA device and no Vulkan adapter: nothing to benchmark");
        return;
    };
    if adapter.software {
        eprintln!(
            "note: benchmarking on {}, a software Vulkan driver running on the CPU; these numbers do not describe GPU performance",
            adapter.name
        );
    }
    let provider: CubeProvider<WgpuRuntime> = wgpu_provider(adapter.index).expect("open the Vulkan adapter");
    let label = if adapter.software { "lavapipe" } else { "wgpu" };
    run::<WgpuRuntime>(c, &Arc::new(provider), label);
}

criterion_group!(benches, bench);
criterion_main!(benches);
