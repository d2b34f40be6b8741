//! The main job in one file: choose a device from the environment, show what was probed,
//! quantize a weight matrix and run a quantized linear layer (`aihal::Linear`) wherever the
//! executor places it, checking the result against an f32 matmul, then print what ran where.
//!
//! ```sh
//! cargo run --release --example quickstart
//! RUST_AI_FORCE_CPU=1 cargo run --release --example quickstart   # the CPU, by choice
//! RUST_AI_DEVICE=cuda cargo run --release --example quickstart   # CUDA or an error
//! ```

use std::process::ExitCode;
use std::time::Instant;

use aihal::core::SelectionReason;
use aihal::quantize::{quantize, QuantFormat};
use aihal::{DeviceConfig, Linear, Result};
use candle_core::Tensor;

/// Output features, input features, and rows of activations (a small prompt).
const N: usize = 1024;
const K: usize = 2048;
const M: usize = 4;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let config = DeviceConfig::from_env()?;

    println!("aihal quickstart\n\nBackends probed:\n{}\n", aihal::probe_report());
    let selection = aihal::select_device(&config)?;
    println!("Device: {}", selection.device);
    match &selection.reason {
        SelectionReason::CpuIntended => {
            println!("You chose the CPU (RUST_AI_FORCE_CPU or RUST_AI_DEVICE=cpu), so no accelerator was tried.");
        }
        reason => println!("Why: {reason}"),
    }
    let exec = aihal::executor()?;
    let providers: Vec<String> = exec.providers().iter().map(|p| p.name()).collect();
    println!(
        "Ops placed on: {} (providers, in order: {})\n",
        exec.device(),
        providers.join(", ")
    );

    // A weight matrix with the spread of a trained layer, and a few rows of activations.
    let weights = normal_values(N * K, 0x5eed, 0.02);
    let activations = normal_values(M * K, 0xacdc, 1.0);
    let cpu = candle_core::Device::Cpu;
    let x = Tensor::from_vec(activations.clone(), (M, K), &cpu)?;
    let xa = aihal::Tensor::from_vec(activations, &[M, K])?;
    let w = Tensor::from_vec(weights.clone(), (N, K), &cpu)?;
    let exact = x.matmul(&w.t()?)?;

    println!("y = x · Wᵀ with x [{M}, {K}] f32 and W [{N}, {K}]:");
    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>14} {:>8}",
        "format", "bits/w", "quantize", "matmul", "rel. error", "ran on"
    );
    for format in [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Int8PerChannel,
    ] {
        let t0 = Instant::now();
        let q = quantize(format, &weights, &[N, K])?;
        let quantize_time = t0.elapsed();
        let bits = q.bits_per_weight();
        let layer = Linear::new(&exec, &q, None)?;

        let t1 = Instant::now();
        let out = layer.forward_traced(&xa)?;
        let matmul_time = t1.elapsed();

        let err = relative_rms_error(&out.output.to_candle()?, &exact)?;
        println!(
            "{:<22} {bits:>8.2} {:>10.1}ms {:>8.2}ms {err:>14.2e} {:>8}",
            format.to_string(),
            quantize_time.as_secs_f64() * 1e3,
            matmul_time.as_secs_f64() * 1e3,
            out.ran_on.to_string(),
        );
        if let Some(why) = out.fallback {
            println!("    (fell back: {why})");
        }
    }
    println!("\nWhat ran where:\n{}", exec.report());
    Ok(())
}

/// `‖a − b‖ / ‖b‖` over all elements.
fn relative_rms_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let diff = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
    let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()?;
    Ok((f64::from(diff) / f64::from(norm)).sqrt())
}

/// Deterministic N(0, std²) values (xorshift + Box–Muller), so every run checks the same data.
fn normal_values(n: usize, seed: u64, std: f32) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u1, u2) = (uniform(), uniform());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            z as f32 * std
        })
        .collect()
}
