//! Any bytes handed to the aihal safetensors loader: an error or tensors, never a panic; a
//! loaded tensor dequantizes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = aihal_quantize::io::from_safetensors_bytes(data) {
        for t in tensors.values() {
            if t.numel() <= 1 << 20 {
                let y = aihal_quantize::dequantize(t).expect("a loaded tensor dequantizes");
                assert!(y.iter().all(|v| v.is_finite()), "loaded tensors are validated");
            }
        }
    }
});
