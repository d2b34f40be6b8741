//! Marks the emulator's shared library "nodelete": once loaded it stays mapped after
//! `dlclose`, as a process-wide runtime does. Its process-wide state (the registry of
//! contexts) then stays reachable, so leak checkers report only what callers leak.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
}
