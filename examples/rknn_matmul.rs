//! Offloads a quantized linear layer to the RK3588 NPU and checks it against aihal-cpu.
//!
//! The weights are int8 with one scale per output feature (aihal-quantize `Int8PerChannel`);
//! the NPU multiplies them with the activations quantized to int8 per row and the host
//! applies both scales. The example prints the runtime found, the error against the f32 CPU
//! result (and the bound the activation rounding allows), and the time of each.
//!
//! ```sh
//! # On an RK3588 board with the rknpu2 runtime installed (librknnrt.so):
//! cargo run --release --features rknn --example rknn_matmul
//! # Anywhere else, against the emulator of the runtime's C ABI:
//! cargo build --release -p aihal-rknn-emulator
//! RUST_AI_RKNN_LIB=target/release/libaihal_rknn_emulator.so \
//!     cargo run --release --features rknn --example rknn_matmul
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aihal::core::NpuCoreMask;
use aihal::quantize::{quantize, QuantFormat};
use aihal::rknn::{RknnLibrary, RknnLinear};
use aihal::{Device, GpuDispatchable, Result};
use candle_core::Tensor;

/// Output features, input features, rows of activations.
const N: usize = 512;
const K: usize = 1024;
const M: usize = 8;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, mut seed: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<(T, Duration)> {
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        out = Some(f()?);
        best = best.min(start.elapsed());
    }
    Ok((out.expect("runs > 0"), best))
}

fn run() -> Result<()> {
    let lib = RknnLibrary::load()?;
    println!("RKNN runtime: {} ({})", lib.runtime_info()?, lib.path().display());

    let w = quantize(QuantFormat::Int8PerChannel, &values(N * K, 1), &[N, K])?;
    let x = values(M * K, 2);
    let layer = RknnLinear::with_library(w.clone(), Some(lib))?;
    let xt = Tensor::from_vec(x.clone(), (M, K), &candle_core::Device::Cpu)?;

    let (cpu, cpu_time) = best_of(5, || aihal::cpu::matmul(&x, M, &w))?;
    let npu_device = Device::Rknn {
        core_mask: NpuCoreMask::AUTO,
    };
    // The first call creates the matmul context and uploads W; later calls reuse it.
    let first = Instant::now();
    let d = layer.dispatch_traced(&xt, &npu_device)?;
    let setup = first.elapsed();
    if let Some(why) = &d.fallback {
        println!("note: ran on the CPU: {why}");
    }
    let (npu, npu_time) = best_of(5, || layer.dispatch(&xt, &npu_device))?;
    let npu: Vec<f32> = npu.flatten_all()?.to_vec1()?;

    let (mut max_err, mut max_ref, mut within) = (0f32, 0f32, true);
    let wq = w.data();
    for i in 0..M {
        let amax = x[i * K..(i + 1) * K].iter().fold(0f32, |a, v| a.max(v.abs()));
        for j in 0..N {
            let err = (npu[i * N + j] - cpu[i * N + j]).abs();
            let row_l1: f32 = wq[j * K..(j + 1) * K].iter().map(|&b| f32::from(b as i8).abs()).sum();
            let bound = amax / 127.0 / 2.0 * row_l1 * w.scales()[j];
            within &= err <= bound * 1.001 + 1e-5;
            max_err = max_err.max(err);
            max_ref = max_ref.max(cpu[i * N + j].abs());
        }
    }
    println!(
        "linear layer {M}x{K} · ({N}x{K})ᵀ, int8 weights with per-row scales, ran on {}",
        d.ran_on
    );
    println!(
        "max |npu - cpu| = {max_err:.3e} ({:.3e} of max |y|), within the activation-rounding bound: {within}",
        max_err / max_ref
    );
    println!(
        "cpu (aihal-cpu, exact f32) {:.3} ms, npu {:.3} ms (first call with setup {:.3} ms)",
        cpu_time.as_secs_f64() * 1e3,
        npu_time.as_secs_f64() * 1e3,
        setup.as_secs_f64() * 1e3
    );
    if within {
        Ok(())
    } else {
        Err(aihal::CoreError::invalid_input(
            "the NPU result is outside the expected error bound",
        ))
    }
}
