//! Packed buffers with arbitrary format, shape, bytes and scales: `from_parts` accepts
//! exactly the consistent ones, and those dequantize without panicking.
#![no_main]

use aihal_quantize::{QuantFormat, QuantizedTensor};
use libfuzzer_sys::fuzz_target;

fn format(tag: u8, block: usize) -> QuantFormat {
    match tag % 11 {
        0 => QuantFormat::Nf4 { block_size: block, double_quant: false },
        1 => QuantFormat::Q4_0,
        2 => QuantFormat::Q8_0,
        3 => QuantFormat::Tq2_0,
        4 => QuantFormat::Ternary,
        5 => QuantFormat::Int8PerChannel,
        6 => QuantFormat::Int8PerBlock { block_size: block },
        7 => QuantFormat::Fp8E4M3 { block_size: None },
        8 => QuantFormat::Fp8E4M3 { block_size: Some(block) },
        9 => QuantFormat::Fp8E5M2 { block_size: Some(block) },
        _ => QuantFormat::Fp8E5M2 { block_size: None },
    }
}

fuzz_target!(|input: (u8, u16, Vec<u16>, Vec<u8>, Vec<f32>)| {
    let (tag, block, shape, data, scales) = input;
    let shape: Vec<usize> = shape.into_iter().take(4).map(usize::from).collect();
    let f = format(tag, usize::from(block));
    if let Ok(t) = QuantizedTensor::from_parts(f, shape, data, scales) {
        if t.numel() <= 1 << 20 {
            let _ = t.validate_values();
            let y = aihal_quantize::dequantize(&t).expect("a consistent tensor dequantizes");
            assert_eq!(y.len(), t.numel());
        }
    }
});
