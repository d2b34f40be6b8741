//! The same greedy generation on two devices: SmolLM2-135M-Instruct Q4_1 and Gemma 3 270M
//! Q4_K_M (`.testdata/gguf`) load once on a strict executor over the CPU provider alone and once
//! on a strict executor over the CubeCL provider alone on a Vulkan adapter (lavapipe on CI: the
//! first hardware adapter if there is one, else the first), and generate the same greedy
//! tokens. The Vulkan executor holds no other provider and is strict, so no op can fall back to
//! the CPU; its report is checked too: every op ran on the Vulkan device, none anywhere else,
//! attention included (for Gemma 3 the local layers' sliding-window kind as well as the global
//! layers' causal one: the window, 512 positions, is longer than these few positions, so both
//! mask the same here).
//!
//! Gemma 3's embedding table (262144 x 640 in Q8_0, 178 MB) is larger than one storage buffer
//! may be on lavapipe (wgpu's 128 MiB); the model reads it in parts of at most 32 MiB, each its
//! own embedding and output op, so every part fits and runs on the device.
//!
//! Both models are loaded with `LinearPrecision::F32`. The CubeCL provider multiplies every
//! linear layer with f32 activations whatever precision a layer asks for (f32 activations meet
//! both precisions' bounds, see `CubeProvider`'s documentation), while the CPU provider's
//! default rounds activations to 8 bits per block first; that rounding moves SmolLM2's logits
//! by about 1 over 30 layers (`models/tests/llama_smollm2.rs`), far more than f32 sums taken in
//! another order. With F32 on both, the two devices compute the same products of the stored
//! weights and differ only by f32 rounding, so their greedy tokens are the same unless two
//! logits lie within that rounding of each other. Should the tokens part, the failure message
//! gives the CPU's gap between the two tokens at that step and the largest logit difference
//! between the devices there (a gap within that difference is a near-tie, not a wrong kernel).
//!
//! 4 tokens per model, so that a debug build (the one `.ci/run` makes for this step) runs both
//! trials in a minute or two on 2 cores. Observed: SmolLM2 `[351, 253, 2365, 6354]`, Gemma 3
//! `[38167, 1024, 506, 31770]` on both devices, and the same for 8 tokens (SmolLM2's continue
//! `7012, 30, 198, 198`, Gemma 3's `4799, 236761, 108, 818`).
//!
//! Run by `.ci/run` with `--features kernels,rknn`. Without a Vulkan adapter the trials are
//! ignored with the reason, or fail under `AIHAL_REQUIRE_VULKAN=1`; without a model file they
//! are ignored, or fail under `AIHAL_REQUIRE_TESTDATA=1`.

mod common;

use std::path::Path;
use std::sync::Arc;

use aihal::models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use aihal::ops::{OpKind, Provider};
use aihal::{Executor, LinearPrecision};
use common::{gguf_path, required};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// A model file and the greedy generation compared on it.
struct Case {
    name: &'static str,
    file: &'static str,
    prompt: &'static [u32],
    tokens: usize,
}

const CASES: [Case; 2] = [
    Case {
        name: "smollm2_q4_1_greedy_tokens_are_the_same_on_the_cpu_and_on_vulkan",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        // `The quick brown fox` (`The`, `Ġquick`, `Ġbrown`, `Ġfox`), the first prompt of
        // models/tests/llama_smollm2.rs.
        prompt: &[504, 2365, 6354, 16438],
        tokens: 4,
    },
    Case {
        name: "gemma3_q4_k_m_greedy_tokens_are_the_same_on_the_cpu_and_on_vulkan",
        file: "gemma-3-270m-q4_k_m.gguf",
        // `<bos>The quick brown fox`, the first prompt of models/tests/llama_gemma3.rs.
        prompt: &[2, 818, 3823, 8864, 37423],
        tokens: 4,
    },
];

/// The Vulkan provider (the first hardware adapter, else the first, lavapipe on CI), or why
/// there is none.
fn vulkan() -> Result<Arc<dyn Provider>, String> {
    let mut all = aihal::kernels::wgpu_providers();
    if all.is_empty() {
        return Err("no Vulkan adapter found (install mesa-vulkan-drivers for lavapipe)".into());
    }
    let pick = all.iter().position(|p| !p.is_software()).unwrap_or(0);
    Ok(Arc::new(all.swap_remove(pick)))
}

/// A strict executor over `provider` alone, its device named (a software device is used only
/// when named).
fn executor(provider: Arc<dyn Provider>) -> Arc<Executor> {
    let device = provider.device();
    Executor::builder()
        .provider(provider)
        .device(device)
        .strict(true)
        .build()
        .unwrap()
}

fn load(exec: &Arc<Executor>, path: &Path) -> LlamaModel {
    let options = LlamaOptions {
        precision: LinearPrecision::F32,
        ..LlamaOptions::default()
    };
    LlamaModel::load(exec, path, options).unwrap()
}

fn greedy(what: &str, model: &LlamaModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let t = std::time::Instant::now();
    let options = GenerateOptions {
        max_tokens: n,
        ..GenerateOptions::default()
    };
    let out = generate(model, prompt, &options, |_| Ok(())).unwrap();
    eprintln!("{what}: {n} greedy tokens in {:.2?}: {:?}", t.elapsed(), out.tokens);
    assert_eq!(out.stop, StopReason::MaxTokens, "{what}");
    out.tokens
}

/// The last position's logits after `context`.
fn logits(model: &LlamaModel, context: &[u32]) -> Vec<f32> {
    let mut state = model.new_state(Some(context.len() + 1)).unwrap();
    model.forward(context, &mut state).unwrap()
}

fn compare(case: &Case, vulkan: Arc<dyn Provider>) {
    let path = gguf_path(case.file);
    let device = vulkan.device();
    let cpu = load(&executor(Arc::new(aihal::cpu::CpuProvider)), &path);
    let gpu_exec = executor(vulkan);
    let gpu = load(&gpu_exec, &path);
    let on_cpu = greedy(&format!("{} on the CPU", case.file), &cpu, case.prompt, case.tokens);
    let on_gpu = greedy(&format!("{} on {device}", case.file), &gpu, case.prompt, case.tokens);

    let report = gpu_exec.report();
    eprintln!("{report}");
    assert!(!report.rows.is_empty(), "nothing recorded on {device}");
    assert!(report.fallbacks.is_empty(), "fallbacks on {device}:\n{report}");
    for row in &report.rows {
        assert!(
            row.device == device,
            "{} ran on {}:\n{report}",
            row.op.name(),
            row.device
        );
    }
    for op in [OpKind::Embedding, OpKind::Linear, OpKind::Attention] {
        assert!(report.calls(op, device) > 0, "no {} on {device}:\n{report}", op.name());
    }

    if let Some(j) = on_cpu.iter().zip(&on_gpu).position(|(a, b)| a != b) {
        let context: Vec<u32> = case.prompt.iter().chain(&on_cpu[..j]).copied().collect();
        let (c, g) = (logits(&cpu, &context), logits(&gpu, &context));
        let (a, b) = (on_cpu[j] as usize, on_gpu[j] as usize);
        let diff = c.iter().zip(&g).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        panic!(
            "{}: the devices part at token {j}: CPU {on_cpu:?}, {device} {on_gpu:?}; logits of {a} and {b}: \
             CPU {} and {} (gap {}), {device} {} and {}; largest logit difference between the devices {diff}",
            case.file,
            c[a],
            c[b],
            c[a] - c[b],
            g[a],
            g[b]
        );
    }
}

fn main() {
    let args = Arguments::from_args();
    let device = vulkan();
    if let Err(why) = &device {
        eprintln!(
            "generate_devices: {why}: the trials {}",
            if required("AIHAL_REQUIRE_VULKAN") {
                "FAIL (AIHAL_REQUIRE_VULKAN=1)"
            } else {
                "are ignored"
            }
        );
    }
    let device = device.map(|p| (p.device(), p));
    let trials = CASES
        .iter()
        .map(|case| {
            let device = device.clone();
            Trial::ignorable_test(case.name, move || {
                let provider = match device {
                    Ok((_, p)) => p,
                    Err(why) if required("AIHAL_REQUIRE_VULKAN") => {
                        return Err(Failed::from(format!("AIHAL_REQUIRE_VULKAN=1 but {why}")))
                    }
                    Err(why) => {
                        return Ok(Completion::ignored_with(format!(
                            "{why}; AIHAL_REQUIRE_VULKAN=1 makes this a failure"
                        )))
                    }
                };
                let path = gguf_path(case.file);
                if !path.exists() {
                    let why = format!(
                        "GGUF test file {} not found: `bash .ci/run` fetches it (or point AIHAL_GGUF_DIR at a \
                         directory holding {})",
                        path.display(),
                        case.file
                    );
                    return if required("AIHAL_REQUIRE_TESTDATA") {
                        Err(Failed::from(format!("AIHAL_REQUIRE_TESTDATA=1 but {why}")))
                    } else {
                        Ok(Completion::ignored_with(format!(
                            "{why}; AIHAL_REQUIRE_TESTDATA=1 makes this a failure"
                        )))
                    };
                }
                compare(case, provider);
                Ok(Completion::Completed)
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}
