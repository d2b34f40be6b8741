//! Packed parts decoded from any bytes (format, block size, a shape whose dimensions may be
//! huge, bytes, scales, a nested absmax): `from_parts` / `from_nested` accept exactly the
//! consistent ones without allocating from the shape, and those that `validate_values`
//! passes dequantize to finite values. The body is `packed_parts` in `tests/fuzz_bodies`,
//! which `tests/hostile_files.rs` also runs as a property test (with an allocation bound).
#![no_main]

#[path = "../../tests/fuzz_bodies/mod.rs"]
mod bodies;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bodies::packed_parts(data, &mut bodies::Unmetered));
