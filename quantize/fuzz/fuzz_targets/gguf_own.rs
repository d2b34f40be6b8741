//! Any bytes read as a GGUF file by aihal's own reader, then every tensor read in every
//! way: an error or a consistent result, never a panic or an allocation the file size does
//! not justify.
#![no_main]

use std::io::Cursor;

use aihal_quantize::GgufFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    let Ok(file) = GgufFile::read(&mut r) else {
        return;
    };
    for (key, value) in file.metadata() {
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)));
    }
    for t in file.tensors().iter().take(16) {
        if let Ok(q) = file.read_tensor(&mut r, t.name()) {
            assert_eq!(q.shape(), t.shape());
            let values = aihal_quantize::dequantize(&q).expect("a read tensor dequantizes");
            assert!(values.iter().all(|v| v.is_finite()));
        }
        if let Ok(d) = file.read_dense(&mut r, t.name()) {
            assert_eq!(d.shape(), t.shape());
        }
        match file.read_raw(&mut r, t.name()) {
            Ok(raw) => assert_eq!(Some(raw.len() as u64), t.byte_len()),
            Err(_) => assert!(t.byte_len().is_none()),
        }
    }
});
