//! The checks of code compiled for an instruction set, one trial per check and set (kernel
//! set, packed layout or build), decided at run time: a trial whose sets this CPU lacks is
//! reported as ignored, with the reason, never as passed. `AIHAL_REQUIRE_ISA` (a comma list of
//! [`Isa::name`]s, e.g. `avx2,avx512vnni,avx512bf16`) makes a listed set this CPU lacks a
//! failure instead; names of the other architecture do not apply here, and an unknown name
//! stops the run before any trial.
//!
//! A harness of its own (`harness = false`, libtest-mimic): the built-in one can only decide
//! `#[ignore]` at compile time. The filters and flags are libtest's (`cargo test -p aihal-cpu
//! --test isa -- packed:: --test-threads 1`).

use aihal_cpu::test_support::{self as support, Check, Isa, KernelSet};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// The variable that turns a missing instruction set into a failure.
const REQUIRE: &str = "AIHAL_REQUIRE_ISA";

fn main() {
    let args = Arguments::from_args();
    let (required, unknown) = required_sets(std::env::var(REQUIRE).ok().as_deref());
    if !unknown.is_empty() {
        // A misspelt requirement would require nothing: refuse to run at all.
        let known: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
        eprintln!(
            "error: {REQUIRE} lists {}, which is no instruction set these tests know ({})",
            unknown.join(", "),
            known.join(", ")
        );
        std::process::exit(101);
    }
    let here: Vec<&str> = Isa::ALL.iter().filter(|i| i.here()).map(|i| i.name()).collect();
    let lacking: Vec<&str> = Isa::ALL
        .iter()
        .filter(|i| i.arch() == std::env::consts::ARCH && !i.here())
        .map(|i| i.name())
        .collect();
    eprintln!(
        "aihal-cpu: instruction sets here: {}; lacking (their trials are ignored{}): {}",
        list(&here),
        if required.is_empty() {
            String::new()
        } else {
            format!(", or fail where {REQUIRE} lists them")
        },
        list(&lacking),
    );

    let mut checks = support::checks();
    checks.extend(generated_cases());
    let trials: Vec<Trial> = checks.into_iter().map(|c| trial(c, &required)).collect();
    libtest_mimic::run(&args, trials).exit();
}

/// `names` or `none`.
fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(" ")
    }
}

/// The sets `AIHAL_REQUIRE_ISA` lists (`value`) for this architecture, and the names it lists
/// that are no set at all. Names of the other architecture's sets are dropped.
fn required_sets(value: Option<&str>) -> (Vec<Isa>, Vec<String>) {
    let (mut required, mut unknown) = (Vec::new(), Vec::new());
    for name in value.unwrap_or("").split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match Isa::ALL.iter().find(|i| i.name().eq_ignore_ascii_case(name)) {
            Some(&isa) if isa.arch() == std::env::consts::ARCH => required.push(isa),
            Some(_) => {}
            None => unknown.push(name.to_string()),
        }
    }
    (required, unknown)
}

/// `check` as a trial: run where the CPU has every set it needs; else ignored with the reason,
/// or failed where `required` lists a set it lacks.
fn trial(check: Check, required: &[Isa]) -> Trial {
    let missing: Vec<Isa> = check.needs.iter().copied().filter(|i| !i.here()).collect();
    let required_missing: Vec<&str> = missing
        .iter()
        .filter(|i| required.contains(i))
        .map(|i| i.name())
        .collect();
    let Check { name, run, .. } = check;
    Trial::ignorable_test(name, move || {
        if !required_missing.is_empty() {
            return Err(Failed::from(format!(
                "{REQUIRE} requires {}, which this CPU lacks",
                required_missing.join(", ")
            )));
        }
        if let Some(first) = missing.first() {
            return Ok(Completion::ignored_with(format!(
                "this CPU has no {}; {REQUIRE}={} makes this a failure",
                first.what(),
                first.name()
            )));
        }
        run();
        Ok(Completion::Completed)
    })
}

/// A proptest configuration with `cases` cases whose failures are kept in (and replayed from)
/// `regressions`, a path from the package's directory (where cargo runs the tests).
fn config(cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..ProptestConfig::default()
    }
}

/// The generated cases: one check per kernel set and per packed layout, each a proptest run.
fn generated_cases() -> Vec<Check> {
    let mut checks = Vec::new();
    for set in KernelSet::all() {
        checks.push(Check {
            name: format!("kernels::fast_kernels_match_the_reference::{}", set.name()),
            needs: set.needs(),
            run: Box::new(move || {
                proptest!(config(48, "proptest-regressions/isa/kernels.txt"), |(
                    format in prop::sample::select(support::all_formats()),
                    m in 1usize..25, n in 1usize..40, k in 1usize..300, seed in any::<u64>()
                )| {
                    support::kernel_case(set, format, m, n, k, seed);
                });
            }),
        });
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    for layout in support::Layout::all() {
        checks.push(Check {
            name: format!("packed::packed_matches_the_generic_kernels::{}", layout.name()),
            needs: layout.needs(),
            run: Box::new(move || {
                let formats = support::all_formats();
                proptest!(config(64, "proptest-regressions/isa/packed.txt"), |(
                    f in 0usize..14, m in 1usize..25, n in 1usize..40, k in 1usize..300,
                    bad in proptest::collection::vec(0usize..24, 0..3), seed in any::<u64>()
                )| {
                    support::packed_case(layout, formats[f], m, n, k, &bad, seed);
                });
            }),
        });
        // NF4 whose blocks tile the rows: the shapes that pack (where AVX-512 VNNI or the Arm
        // dot product runs; the other layouts keep NF4 as it is).
        checks.push(Check {
            name: format!("packed::packed_nf4_matches_the_generic_kernel::{}", layout.name()),
            needs: layout.needs(),
            run: Box::new(move || {
                let formats = support::packed_formats();
                proptest!(config(48, "proptest-regressions/isa/packed.txt"), |(
                    f in 6usize..9, m in 1usize..25, n in 1usize..40, blocks in 1usize..6,
                    bad in proptest::collection::vec(0usize..24, 0..2), seed in any::<u64>()
                )| {
                    let format = formats[f];
                    let aihal_quantize::QuantFormat::Nf4 { block_size, .. } = format else { unreachable!() };
                    support::packed_case(layout, format, m, n, blocks * block_size, &bad, seed);
                });
            }),
        });
    }
    checks
}
