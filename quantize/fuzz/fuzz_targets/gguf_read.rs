//! Any bytes read as a GGUF file through candle's reader and imported: an error or a
//! tensor, never a panic.
#![no_main]

use std::io::Cursor;

use candle_core::quantized::gguf_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    if let Ok(content) = gguf_file::Content::read(&mut r) {
        let names: Vec<String> = content.tensor_infos.keys().take(8).cloned().collect();
        for name in names {
            let _ = aihal_quantize::read_gguf_tensor(&content, &mut r, &name);
        }
    }
});
