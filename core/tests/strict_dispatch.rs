//! Proves op dispatch follows the process's strict setting: `RUST_AI_STRICT_DEVICE`, read
//! once, and `set_strict`, which overrides it.
//!
//! Each scenario runs this test binary again as a child process (selected by
//! `AIHAL_STRICT_CHILD`) with a controlled environment, because the setting is process-wide
//! and read once. A custom harness (`harness = false`), as in `warn_once.rs`.

use std::process::Command;

use aihal_core::{env, set_strict, strict_mode, CoreError, Device, GpuDispatchable, Result};

const CHILD: &str = "AIHAL_STRICT_CHILD";
const WARNING: &str = "aihal: sum4 ran on the CPU";

/// Sums 4 floats; its GPU route is not implemented, so a GPU device falls back.
struct Sum4;

impl GpuDispatchable for Sum4 {
    type Input = [f32; 4];
    type Output = f32;
    fn name(&self) -> &'static str {
        "sum4"
    }
    fn dispatch_gpu(&self, _: &[f32; 4], _: &Device) -> Result<f32> {
        Err(CoreError::not_implemented("sum4 on the GPU"))
    }
    fn dispatch_cpu(&self, x: &[f32; 4]) -> Result<f32> {
        Ok(x.iter().sum())
    }
    fn gpu_available(&self) -> bool {
        true
    }
}

/// The child: optionally override the setting, then dispatch on the CPU and on a GPU and
/// print one line per outcome.
fn child(mode: &str) {
    match mode {
        "set-strict" => set_strict(true),
        "set-lenient" => set_strict(false),
        _ => {}
    }
    let x = [1.0, 2.0, 3.0, 4.0];
    let describe = |r: Result<aihal_core::Dispatched<f32>>| match r {
        Ok(d) => format!("ran on {}", d.ran_on),
        Err(e @ CoreError::DeviceNotAvailable { .. }) => format!("unavailable: {e}"),
        Err(e @ CoreError::InvalidConfig(_)) => format!("invalid config: {e}"),
        Err(e) => format!("other error: {e}"),
    };
    println!("cpu: {}", describe(Sum4.dispatch_traced(&x, &Device::Cpu)));
    for _ in 0..2 {
        println!(
            "gpu: {}",
            describe(Sum4.dispatch_traced(&x, &Device::Cuda { ordinal: 0 }))
        );
    }
    println!("strict_mode: {:?}", strict_mode().map_err(|e| e.to_string()));
}

struct Outcome {
    stdout: String,
    warnings: usize,
    detail: String,
}

fn run_child(mode: &str, vars: &[(&str, &str)]) -> Outcome {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD, mode);
    for name in env::ALL {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Outcome {
        warnings: stderr.lines().filter(|l| l.contains(WARNING)).count(),
        detail: format!("exit: {:?}\nstdout:\n{stdout}stderr:\n{stderr}", out.status.code()),
        stdout,
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }

    let mut failed = Vec::new();
    let mut passed = 0;
    let mut check = |name: &str, ok: bool, detail: &str| {
        if ok {
            passed += 1;
            println!("test {name} ... ok");
        } else {
            println!("test {name} ... FAILED\n{detail}");
            failed.push(name.to_owned());
        }
    };
    let fell_back = |o: &Outcome| o.stdout.matches("gpu: ran on cpu").count() == 2 && o.warnings == 1;
    let refused = |o: &Outcome| {
        o.stdout.matches("gpu: unavailable: device cuda:0 is not available: sum4 would fall back to the CPU, which strict mode forbids: not implemented: sum4 on the GPU (asked for cuda:0)").count() == 2
            && o.warnings == 0
    };

    let o = run_child("env", &[]);
    check(
        "without_the_variable_ops_fall_back_with_one_warning",
        o.stdout.contains("cpu: ran on cpu") && fell_back(&o) && o.stdout.contains("strict_mode: Ok(false)"),
        &o.detail,
    );

    let o = run_child("env", &[("RUST_AI_STRICT_DEVICE", "1")]);
    check(
        "the_variable_makes_a_fallback_an_error_naming_op_device_and_reason",
        o.stdout.contains("cpu: ran on cpu") && refused(&o) && o.stdout.contains("strict_mode: Ok(true)"),
        &o.detail,
    );

    let o = run_child("env", &[("RUST_AI_STRICT_DEVICE", "off")]);
    check("a_false_value_is_lenient", fell_back(&o), &o.detail);

    let o = run_child("set-lenient", &[("RUST_AI_STRICT_DEVICE", "1")]);
    check("set_strict_false_overrides_the_variable", fell_back(&o), &o.detail);

    let o = run_child("set-strict", &[]);
    check("set_strict_true_without_the_variable_is_strict", refused(&o), &o.detail);

    let o = run_child("env", &[("RUST_AI_STRICT_DEVICE", "maybe")]);
    check(
        "a_malformed_variable_is_an_error_naming_it_when_a_fallback_would_happen",
        o.stdout.contains("cpu: ran on cpu")
            && o.stdout.matches("gpu: invalid config:").count() == 2
            && o.stdout.contains("RUST_AI_STRICT_DEVICE=\\\"maybe\\\"")
            && o.warnings == 0,
        &o.detail,
    );

    let o = run_child("env", &[("RUST_AI_DEVICE", "gpu")]);
    check(
        "a_malformed_unrelated_variable_does_not_stop_ops",
        fell_back(&o) && o.stdout.contains("strict_mode: Ok(false)"),
        &o.detail,
    );

    println!("\n{passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
