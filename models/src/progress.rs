//! Progress bars for loads that take a while (indicatif): drawn on stderr when it is a
//! terminal, hidden otherwise (logs, pipes, tests), so that nothing is written where no one
//! watches.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};

/// A bar of `len` units (bytes when `bytes`, else steps) labelled `what`, hidden unless
/// stderr is a terminal. Dropping it (at the end of the load, or on an error) clears it.
pub(crate) fn bar(len: u64, what: &str, bytes: bool) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let template = if bytes {
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({elapsed})"
    } else {
        "{msg} [{bar:30}] {pos}/{len} ({elapsed})"
    };
    let bar = ProgressBar::new(len).with_finish(ProgressFinish::AndClear);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
