//! Measures this machine for fastest-measured-first placement: every compiled-in provider runs
//! each default probe (linear layers in Q4_0 and Q8_0, RMSNorm, softmax, SiLU, attention, at
//! every row class) against the reference first, then the ones that passed are timed; the
//! transfers between providers are timed too. Writes the table where `aihal::executor()`
//! reads it and prints it.
//!
//! ```sh
//! cargo run --release --example calibrate                      # hardware providers
//! cargo run --release --features kernels --example calibrate -- --software   # lavapipe too
//! cargo run --release --example calibrate -- --out table.toml   # somewhere else
//! ```
//!
//! Software devices (lavapipe) are measured only with `--software`, and never placed
//! automatically even then: only when named with `RUST_AI_DEVICE`.

use std::process::ExitCode;
use std::time::Instant;

use aihal::ops::calibrate::{calibrate, default_probes, CalibrateOptions};
use aihal::{CoreError, Result};

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
    let mut out = aihal::dispatch_table_path();
    let mut options = CalibrateOptions::default();
    // As OS strings: the path after --out may be any bytes.
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--software") => options.include_software = true,
            Some("--out") => out = args.next().map(Into::into),
            _ => {
                return Err(CoreError::invalid_config(format!(
                    "unknown argument `{}` (accepted: --software, --out PATH)",
                    a.display()
                )))
            }
        }
    }
    let providers = aihal::builtin_providers();
    println!(
        "calibrating on: {}",
        providers.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
    );
    let t0 = Instant::now();
    let table = calibrate(&providers, &default_probes(), &options)?;
    let text = table.to_toml();
    println!("{text}");
    println!("measured in {:.1} s", t0.elapsed().as_secs_f64());
    let path = out.ok_or_else(|| {
        CoreError::invalid_config("no cache directory known: set RUST_AI_DISPATCH_TABLE or pass --out PATH")
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CoreError::invalid_config(format!("{}: cannot create it: {e}", dir.display())))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| CoreError::invalid_config(format!("{}: cannot write: {e}", path.display())))?;
    println!("written to {}", path.display());
    Ok(())
}
