//! A whole model with its linear layers on the NPU: SmolLM2-135M-Instruct Q4_1
//! (`.testdata/gguf`) loaded on the executor a user gets by asking for the NPU
//! (`DeviceRequest::Rknn`), here over the emulator of the NPU runtime (`RUST_AI_RKNN_LIB`
//! points the process at it, as a user would at `librknnrt.so`).
//!
//! The NPU provider runs linear layers only (its int8 matrix product); every other op falls
//! back to the CPU provider, once per op kind, with the reason in the record. Checked:
//!
//! - every linear call ran on the NPU (the 210 layers' and the output projection, at every
//!   forward) and nothing else did; every other op ran on the CPU;
//! - the first step's logits, against the exact f32 path on the CPU: the NPU converts each Q4_1
//!   weight row to int8 with one scale per row and rounds the activations to int8 with one
//!   scale per row, where the CPU's default keeps the weights as stored and rounds the
//!   activations per block of 32. SmolLM2's activations have outlier channels, so one scale per
//!   row costs much more: observed |logits - exact| / |exact| (L2) 0.62 on the NPU against 0.12
//!   for the CPU's default. Held to 0.8: logits unrelated to the exact ones of the same norm are
//!   about 1.4 away;
//! - 4 greedy tokens, the same as the exact f32 path's on the CPU (`[351, 253, 2365, 6354]`,
//!   also candle-transformers' in `models/tests/llama_smollm2.rs`). The exact path's gap between
//!   its first and second token at each step is printed (observed 2.4, 1.2, 0.29, 1.9): the
//!   third is narrow, so a change in the NPU route's rounding may part the tokens there, and
//!   the printed gaps say whether that is what happened. The arithmetic is deterministic, so
//!   the result does not vary between runs.
//!
//! Run by `.ci/run` with `--features kernels,rknn` (a debug build: about half a minute).
//! Without the model file the trial is ignored with the reason, or fails under
//! `AIHAL_REQUIRE_TESTDATA=1`.

mod common;

use std::path::Path;
use std::sync::Arc;

use aihal::core::{DeviceConfig, DeviceRequest};
use aihal::models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, StopReason};
use aihal::ops::OpKind;
use aihal::{Device, Executor, LinearPrecision};
use common::{gguf_path, required};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// `The quick brown fox`, the first prompt of models/tests/llama_smollm2.rs.
const PROMPT: &[u32] = &[504, 2365, 6354, 16438];
const TOKENS: usize = 4;

fn load(exec: &Arc<Executor>, path: &Path, precision: LinearPrecision) -> LlamaModel {
    let options = LlamaOptions {
        precision,
        ..LlamaOptions::default()
    };
    LlamaModel::load(exec, path, options).unwrap()
}

fn first_step(model: &LlamaModel) -> Vec<f32> {
    let mut state = model.new_state(Some(PROMPT.len() + 1)).unwrap();
    model.forward(PROMPT, &mut state).unwrap()
}

fn greedy(what: &str, model: &LlamaModel) -> Vec<u32> {
    let t = std::time::Instant::now();
    let options = GenerateOptions {
        max_tokens: TOKENS,
        ..GenerateOptions::default()
    };
    let out = generate(model, PROMPT, &options, |_| Ok(())).unwrap();
    eprintln!(
        "{what}: {TOKENS} greedy tokens in {:.2?}: {:?}",
        t.elapsed(),
        out.tokens
    );
    assert_eq!(out.stop, StopReason::MaxTokens, "{what}");
    out.tokens
}

/// `|a - b| / |b|` in the L2 norm.
fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (d / n).sqrt()
}

/// The largest logit's id, and its gap to the second largest.
fn top(logits: &[f32]) -> (u32, f32) {
    let (mut id, mut first, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v > first {
            (id, second, first) = (i, first, v);
        } else if v > second {
            second = v;
        }
    }
    (id as u32, first - second)
}

fn check(path: &Path) {
    let cpu_exec = Executor::builder()
        .provider(Arc::new(aihal::cpu::CpuProvider))
        .device(Device::Cpu)
        .strict(true)
        .build()
        .unwrap();
    let exact = load(&cpu_exec, path, LinearPrecision::F32);
    let rounded = load(&cpu_exec, path, LinearPrecision::default());

    let config = DeviceConfig::new().device(DeviceRequest::Rknn { core_mask: None });
    let npu_exec = aihal::build_executor(&config).expect("an executor on the NPU (the emulator)");
    let npu_device = npu_exec.device();
    assert!(matches!(npu_device, Device::Rknn { .. }), "{npu_device}");
    let npu = load(&npu_exec, path, LinearPrecision::default());

    let want = first_step(&exact);
    let (cpu_err, npu_err) = (
        relative_error(&first_step(&rounded), &want),
        relative_error(&first_step(&npu), &want),
    );
    eprintln!(
        "first step, |logits - exact f32| / |exact f32| (L2): NPU {npu_err}, the CPU's 8-bit activations {cpu_err}"
    );
    // Logits unrelated to the exact ones (a wrong kernel, a misplaced tensor) of the same norm
    // would be about sqrt(2) of it away.
    assert!(
        npu_err <= 0.8,
        "the NPU's logits are {npu_err} of the exact path's from it"
    );

    let tokens = greedy(&format!("{FILE} on {npu_device}"), &npu);
    // The exact path's greedy tokens, and its gap between the first and the second logit at
    // each step.
    let mut state = exact.new_state(Some(PROMPT.len() + TOKENS)).unwrap();
    let mut logits = exact.forward(PROMPT, &mut state).unwrap();
    let mut reference = Vec::with_capacity(TOKENS);
    let mut gaps = Vec::with_capacity(TOKENS);
    for _ in 0..TOKENS {
        let (id, gap) = top(&logits);
        reference.push(id);
        gaps.push(gap);
        if reference.len() < TOKENS {
            logits = exact.forward(&[id], &mut state).unwrap();
        }
    }
    eprintln!("the exact path on the CPU: {reference:?}, top gaps {gaps:?}");
    assert_eq!(tokens, reference, "the NPU's greedy tokens against the exact path's");

    let report = npu_exec.report();
    eprintln!("{report}");
    let linear_npu = report.calls(OpKind::Linear, npu_device);
    // 7 linear layers in each of 30 blocks, and the output projection, per forward; the
    // first-step forward and the greedy run's 4 forwards.
    assert_eq!(linear_npu, (7 * 30 + 1) * (1 + TOKENS as u64), "{report}");
    assert_eq!(report.calls(OpKind::Linear, Device::Cpu), 0, "{report}");
    for row in &report.rows {
        assert!(
            (row.op == OpKind::Linear) == (row.device == npu_device),
            "{} ran on {}:\n{report}",
            row.op.name(),
            row.device
        );
    }
    for fallback in &report.fallbacks {
        assert_ne!(fallback.op, OpKind::Linear, "{fallback:?}");
    }
}

fn main() {
    let args = Arguments::from_args();
    // Before anything loads the runtime: this binary's one trial runs on the emulator.
    let emulator = aihal_rknn_emulator::library_path().expect("cargo builds the emulator's library for this test");
    std::env::set_var("RUST_AI_RKNN_LIB", &emulator);
    let trial = Trial::ignorable_test(
        "smollm2_q4_1_linear_layers_on_the_npu_give_the_exact_path_s_tokens",
        || {
            let path = gguf_path(FILE);
            if !path.exists() {
                let why = format!(
                    "GGUF test file {} not found: `bash .ci/run` fetches it (or point AIHAL_GGUF_DIR at a directory \
                 holding {FILE})",
                    path.display()
                );
                return if required("AIHAL_REQUIRE_TESTDATA") {
                    Err(Failed::from(format!("AIHAL_REQUIRE_TESTDATA=1 but {why}")))
                } else {
                    Ok(Completion::ignored_with(format!(
                        "{why}; AIHAL_REQUIRE_TESTDATA=1 makes this a failure"
                    )))
                };
            }
            check(&path);
            Ok(Completion::Completed)
        },
    );
    libtest_mimic::run(&args, vec![trial]).exit()
}
