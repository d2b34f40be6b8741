//! Any bytes read as a GGUF file by aihal's own reader, then every tensor read in every
//! way: an error or a consistent result, never a panic; quantized tensors that read
//! dequantize to finite values. The body is `gguf_own` in `tests/fuzz_bodies`, which
//! `tests/hostile_files.rs` also runs as a property test, there with the allocation bound
//! (memory within a stated multiple of the bytes read); here libFuzzer's malloc limit
//! catches the gross cases.
#![no_main]

#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bodies::gguf_own(data, &mut bodies::Unmetered));
