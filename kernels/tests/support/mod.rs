//! A run-time test harness for suites that need a device (libtest-mimic, `harness = false`):
//! the built-in harness decides `#[ignore]` at compile time only, so a suite that found no
//! Vulkan adapter or CUDA driver would otherwise count its tests as passed without running
//! them. Here each test is a trial that runs on the device when it opened, is reported as
//! *ignored* with the reason when it did not, and fails instead when the suite's
//! `AIHAL_REQUIRE_*` variable is `1` (CI sets them for what it installs).
//!
//! Shared by aihal-kernels' and aihal-cuda's device tests (`#[path]` include).
#![allow(dead_code)]

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// A test of a suite: its name and its body, given what the suite opened.
pub(crate) type Test<T> = (String, Box<dyn FnOnce(&T) + Send>);

/// `(name, body)` as a [`Test`].
pub(crate) fn test<T>(name: impl Into<String>, body: impl FnOnce(&T) + Send + 'static) -> Test<T> {
    (name.into(), Box::new(body))
}

/// Whether the variable `var` is `1`.
pub(crate) fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// Runs `tests` as one test binary's trials and exits with libtest's status. Each test gets
/// what `open` opens (a device, context or provider) for itself, so tests that count a
/// provider's transfers do not see each other's. When the first `open` is `Err(why)` every
/// test is ignored with `why`, or failed when `var` is `1`. `always` are tests that run
/// whether or not the device opens.
pub(crate) fn run<T: 'static>(
    open: fn() -> Result<T, String>,
    var: &'static str,
    tests: Vec<Test<T>>,
    always: Vec<Trial>,
) -> ! {
    let args = Arguments::from_args();
    let require = required(var);
    let absent = open().err();
    if let Some(why) = &absent {
        eprintln!(
            "{} device tests {}: {why}",
            tests.len(),
            if require { "FAIL" } else { "are ignored" }
        );
    }
    let mut trials: Vec<Trial> = tests
        .into_iter()
        .map(|(name, body)| {
            let absent = absent.clone();
            Trial::ignorable_test(name, move || match absent {
                None => {
                    let device = open().map_err(|why| Failed::from(format!("opened once, then not: {why}")))?;
                    body(&device);
                    Ok(Completion::Completed)
                }
                Some(why) if require => Err(Failed::from(format!("{var}=1 but {why}"))),
                Some(why) => Ok(Completion::ignored_with(format!("{why}; {var}=1 makes this a failure"))),
            })
        })
        .collect();
    trials.extend(always);
    libtest_mimic::run(&args, trials).exit()
}

/// A test that runs whether or not the device opened (a probe's answers, bad input).
pub(crate) fn always(name: &str, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}
