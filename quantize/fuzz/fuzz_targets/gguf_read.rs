//! GGUF files imported through candle's parsed header (`read_gguf_tensor`): an error or a
//! tensor, never a panic.
//!
//! Only files that aihal's own reader accepts are handed to candle's `Content::read`: that
//! parser is candle's, not ours, and panics on some hostile headers (candle 0.11 divides by
//! zero when `general.alignment` is 0, which this target found within seconds once seeded
//! with `tests/corpus/gguf`). What is fuzzed here is our import of what candle parsed; our
//! reader itself is the `gguf_own` target.
#![no_main]

use std::io::Cursor;

use aihal_quantize::GgufFile;
use candle_core::quantized::gguf_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    if GgufFile::read(&mut r).is_err() {
        return;
    }
    r.set_position(0);
    if let Ok(content) = gguf_file::Content::read(&mut r) {
        let names: Vec<String> = content.tensor_infos.keys().take(8).cloned().collect();
        for name in names {
            if let Ok(t) = aihal_quantize::read_gguf_tensor(&content, &mut r, &name) {
                let y = aihal_quantize::dequantize(&t).expect("an imported tensor dequantizes");
                assert_eq!(y.len(), t.numel());
            }
        }
    }
});
