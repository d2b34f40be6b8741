//! Any bytes handed to the bitsandbytes NF4 loader: an error or a tensor, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = aihal_quantize::bnb::load_nf4(data, "w") {
        if w.tensor.numel() <= 1 << 20 {
            let _ = w.dequantize_as_stored_dtype().expect("a loaded weight dequantizes");
        }
    }
});
