//! Any bytes handed to the bitsandbytes NF4 loader, for every NF4 weight the file lists:
//! an error or a weight, never a panic; a loaded weight dequantizes to finite f32 values.
//! The body is `bnb_load` in `tests/fuzz_bodies`, which `tests/hostile_files.rs` also runs
//! as a property test (with an allocation bound).
#![no_main]

#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bodies::bnb_load(data, &mut bodies::Unmetered));
