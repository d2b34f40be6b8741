//! Any bytes handed to the aihal safetensors loader: an error or tensors, never a panic;
//! every loaded tensor is validated (non-finite scales, and scales whose product with a
//! code would overflow f32, are refused), so it dequantizes to finite values. The body is
//! `safetensors_load` in `tests/fuzz_bodies`, which `tests/hostile_files.rs` also runs as
//! a property test (with an allocation bound).
#![no_main]

#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bodies::safetensors_load(data, &mut bodies::Unmetered));
