//! Bad input in the GGML block formats added for real models (Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K): a
//! non-finite block scale or minimum, a length that disagrees with type and shape, a row
//! that is not a whole number of blocks, a truncated file. Each is a `CoreError` naming the
//! tensor and the byte offset; none panics.

use std::io::Cursor;

use aihal_core::CoreError;
use aihal_quantize::{GgufFile, QuantFormat, QuantizedTensor};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// `(format, candle type, bytes per block, byte offsets of its f16 fields in a block)`.
const TYPES: [(QuantFormat, GgmlDType, usize, &[usize]); 8] = [
    (QuantFormat::Q4_1, GgmlDType::Q4_1, 20, &[0, 2]),
    (QuantFormat::Q5_0, GgmlDType::Q5_0, 22, &[0]),
    (QuantFormat::Q5_1, GgmlDType::Q5_1, 24, &[0, 2]),
    (QuantFormat::Q2K, GgmlDType::Q2K, 84, &[80, 82]),
    (QuantFormat::Q3K, GgmlDType::Q3K, 110, &[108]),
    (QuantFormat::Q4K, GgmlDType::Q4K, 144, &[0, 2]),
    (QuantFormat::Q5K, GgmlDType::Q5K, 176, &[0, 2]),
    (QuantFormat::Q6K, GgmlDType::Q6K, 210, &[208]),
];

/// A GGUF file with one [2, 512] tensor `w` of `dtype`, and the file offset of its data.
fn file_with(dtype: GgmlDType) -> (Vec<u8>, usize) {
    let x: Vec<f32> = (0..1024).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
    let t = Tensor::from_vec(x, (2, 512), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &[], &[("w", &q)]).unwrap();
    let bytes = out.into_inner();
    let at = GgufFile::read(&mut Cursor::new(&bytes))
        .unwrap()
        .tensor("w")
        .unwrap()
        .file_offset() as usize;
    (bytes, at)
}

#[test]
fn non_finite_scales_name_the_tensor_block_and_bytes() {
    for (format, dtype, block, fields) in TYPES {
        let (clean, data_at) = file_with(dtype);
        let gguf = GgufFile::read(&mut Cursor::new(&clean)).unwrap();
        assert_eq!(
            gguf.read_tensor(&mut Cursor::new(&clean), "w").unwrap().format(),
            format
        );
        for &field in fields {
            for bits in [0x7C00u16, 0xFC00, 0x7E01] {
                // Block 3's field: +inf, -inf, NaN.
                let mut bytes = clean.clone();
                let at = data_at + 3 * block + field;
                bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
                let err = gguf.read_tensor(&mut Cursor::new(&bytes), "w").unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, CoreError::InvalidInput(_)), "{format}: {msg}");
                assert!(msg.contains("\"w\""), "{format}: {msg}");
                assert!(msg.contains("block 3"), "{format}: {msg}");
                assert!(msg.contains(&format!("byte {}", 3 * block + field)), "{format}: {msg}");
                assert!(msg.contains(&format!("file byte {data_at}")), "{format}: {msg}");
                // The whole-file walk reports it as that tensor's item.
                let mut r = Cursor::new(&bytes);
                let items: Vec<_> = gguf.tensors_in(&mut r).collect();
                assert_eq!(items.len(), 1);
                assert!(items[0].as_ref().is_err_and(|e| e.to_string() == msg), "{format}");
            }
        }
    }
}

#[test]
fn lengths_that_disagree_with_type_and_shape_are_errors() {
    for (format, _, block, _) in TYPES {
        let values = if block > 40 { 256 } else { 32 }; // 32-value blocks take at most 34 bytes
        let good = vec![0u8; 2 * block];
        assert!(QuantizedTensor::from_parts(format, vec![1, 2 * values], good.clone(), vec![]).is_ok());
        for len in [0, block, 2 * block - 1, 2 * block + 1, 3 * block] {
            let err = QuantizedTensor::from_parts(format, vec![1, 2 * values], vec![0; len], vec![]).unwrap_err();
            assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format} {len}: {err}");
        }
        // A row that is not a whole number of blocks.
        let err = QuantizedTensor::from_parts(format, vec![2, values + 1], good.clone(), vec![]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("multiple of {values}")),
            "{format}: {err}"
        );
        // Scales are inline: an f32 scale list is a mismatch.
        let err = QuantizedTensor::from_parts(format, vec![1, 2 * values], good, vec![1.0]).unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{format}: {err}");
    }
}

#[test]
fn a_gguf_row_that_is_not_whole_blocks_names_the_tensor_and_offset() {
    for (format, dtype, _, _) in TYPES {
        let (mut bytes, _) = file_with(dtype);
        // The tensor info follows the 24-byte header (no metadata): name length, "w",
        // dimension count, then ne[0] (the row length), which becomes 500.
        let at = 24 + 8 + 1 + 4;
        assert_eq!(u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()), 512);
        bytes[at..at + 8].copy_from_slice(&500u64.to_le_bytes());
        let err = GgufFile::read(&mut Cursor::new(&bytes)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CoreError::InvalidInput(_)), "{format}: {msg}");
        assert!(msg.contains("\"w\"") && msg.contains("byte"), "{format}: {msg}");
    }
}

#[test]
fn truncated_files_name_the_tensor_and_offset() {
    for (format, dtype, _, _) in TYPES {
        let (bytes, data_at) = file_with(dtype);
        let gguf = GgufFile::read(&mut Cursor::new(&bytes)).unwrap();
        let end = data_at + gguf.tensor("w").unwrap().byte_len().unwrap() as usize;
        for cut in [end - 1, data_at + 1, data_at] {
            // The header read from the whole file, the data from a stream cut short.
            let short = &bytes[..cut];
            let err = gguf.read_tensor(&mut Cursor::new(short), "w").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CoreError::InvalidInput(_)), "{format}: {msg}");
            assert!(
                msg.contains("\"w\"") && msg.contains(&format!("byte {data_at}")),
                "{format}: {msg}"
            );
            let all = gguf.read_all(&mut Cursor::new(short)).unwrap_err();
            assert_eq!(all.to_string(), msg);
            // Read whole, the cut file's header no longer fits it.
            let err = GgufFile::read(&mut Cursor::new(short)).unwrap_err();
            assert!(matches!(err, CoreError::InvalidInput(_)), "{format}: {err}");
            assert!(err.to_string().contains("\"w\""), "{format}: {err}");
        }
    }
}
