//! Proves the CPU-fallback announcements are printed exactly once per process.
//!
//! Each scenario runs this test binary again as a child process (selected by
//! `AIHAL_WARN_ONCE_CHILD`) with a controlled environment, and counts the warning lines the
//! child wrote to stderr. A custom harness (`harness = false`) so the child is a plain
//! program and no test in this file is a no-op.

use std::process::Command;

use aihal_core::{env, select_device, warn_if_cpu, Device, DeviceConfig};

const CHILD: &str = "AIHAL_WARN_ONCE_CHILD";
const FALLBACK_LINE: &str = "aihal: running on the CPU because";
const CRATE_LINE: &str = "aihal-test-crate: running on the CPU";

/// The child: select a device several times and call `warn_if_cpu` repeatedly.
fn child() -> i32 {
    let config = match DeviceConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return 2;
        }
    };
    for _ in 0..3 {
        match select_device(&config) {
            Ok(s) => assert_eq!(s.device, Device::Cpu, "no backend is registered in this test"),
            Err(e) => {
                eprintln!("selection error: {e}");
                return 3;
            }
        }
        warn_if_cpu(&Device::Cpu, "aihal-test-crate");
    }
    0
}

struct Outcome {
    code: i32,
    fallback_lines: usize,
    crate_lines: usize,
    stderr: String,
}

fn run_child(vars: &[(&str, &str)]) -> Outcome {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.env(CHILD, "1");
    for name in env::ALL {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test process");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Outcome {
        code: out.status.code().unwrap_or(-1),
        fallback_lines: stderr.lines().filter(|l| l.contains(FALLBACK_LINE)).count(),
        crate_lines: stderr.lines().filter(|l| l.contains(CRATE_LINE)).count(),
        stderr,
    }
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        std::process::exit(child());
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

    let o = run_child(&[]);
    check(
        "unrequested_fallback_warns_exactly_once",
        o.code == 0 && o.fallback_lines == 1 && o.crate_lines == 1,
        &o.stderr,
    );
    check(
        "fallback_warning_says_why_and_how_to_silence_it",
        o.stderr.contains("cuda: not compiled in") && o.stderr.contains("RUST_AI_FORCE_CPU=1"),
        &o.stderr,
    );

    for var in env::FORCE_CPU {
        let o = run_child(&[(var, "1")]);
        check(
            &format!("forced_cpu_via_{var}_prints_no_warning"),
            o.code == 0 && o.fallback_lines == 0 && o.crate_lines == 0,
            &o.stderr,
        );
    }

    let o = run_child(&[("RUST_AI_DEVICE", "cpu")]);
    check(
        "explicit_cpu_request_prints_no_warning",
        o.code == 0 && o.fallback_lines == 0 && o.crate_lines == 0,
        &o.stderr,
    );

    let o = run_child(&[("RUST_AI_STRICT_DEVICE", "1")]);
    check(
        "strict_mode_fails_instead_of_warning",
        o.code == 3 && o.fallback_lines == 0 && o.stderr.contains("strict"),
        &o.stderr,
    );

    let o = run_child(&[("RUST_AI_DEVICE", "gpu")]);
    check(
        "malformed_device_variable_is_an_error_naming_it",
        o.code == 2 && o.stderr.contains("RUST_AI_DEVICE") && o.stderr.contains("accepted forms"),
        &o.stderr,
    );

    println!("\n{passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
