//! What the facade's model tests share: the test-data location and the CI switches.

use std::path::{Path, PathBuf};

/// Whether the environment variable `var` is `1` (the `AIHAL_REQUIRE_*` switches that turn a
/// skipped trial into a failure).
pub(crate) fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// The GGUF test file `name`: in `AIHAL_GGUF_DIR` when set, else in `.testdata/gguf` at the
/// workspace root (where `.ci/run` fetches it).
pub(crate) fn gguf_path(name: &str) -> PathBuf {
    std::env::var_os("AIHAL_GGUF_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join(".testdata/gguf"),
            PathBuf::from,
        )
        .join(name)
}
