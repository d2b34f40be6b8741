//! Mutated and truncated files fed to every deserializer: each answer is an error or a
//! tensor that dequantizes to finite values, never a panic. (The `quantize/fuzz` targets
//! explore the same entry points with coverage guidance.)

mod common;

use std::io::Cursor;

use aihal_quantize::io::{from_safetensors_bytes, to_safetensors_bytes};
use aihal_quantize::{bnb, dequantize, quantize, read_gguf_tensor, GgufFile, QuantFormat, QuantizedTensor};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use common::{all_formats, Rng};

fn mutate(rng: &mut Rng, good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    match rng.next_u64() % 4 {
        0 => b.truncate((rng.next_u64() as usize) % (b.len() + 1)),
        1 => {
            for _ in 0..=(rng.next_u64() % 8) {
                let i = (rng.next_u64() as usize) % b.len();
                b[i] = rng.next_u64() as u8;
            }
        }
        2 => {
            // Flip bytes inside the JSON header, where lengths and offsets live.
            let hdr = 8 + (rng.next_u64() as usize) % 200.min(b.len() - 8);
            b[hdr] ^= 1 << (rng.next_u64() % 8);
        }
        _ => b.extend((0..rng.next_u64() % 64).map(|_| rng.next_u64() as u8)),
    }
    b
}

fn check(t: &QuantizedTensor) {
    let y = dequantize(t).expect("a loaded tensor dequantizes");
    assert!(
        y.iter().all(|v| v.is_finite()),
        "{}: loaded values are finite",
        t.format()
    );
}

#[test]
fn mutated_aihal_files() {
    let mut rng = Rng::new(40);
    let tensors: Vec<QuantizedTensor> = all_formats()
        .into_iter()
        .map(|f| quantize(f, &rng.normals(2 * 256), &[2, 256]).unwrap())
        .collect();
    let names: Vec<String> = (0..tensors.len()).map(|i| format!("t{i}")).collect();
    let refs: Vec<(&str, &QuantizedTensor)> = names.iter().map(String::as_str).zip(&tensors).collect();
    let good = to_safetensors_bytes(&refs).unwrap();
    let mut loaded = 0;
    for _ in 0..1500 {
        if let Ok(ts) = from_safetensors_bytes(&mutate(&mut rng, &good)) {
            ts.values().for_each(check);
            loaded += 1;
        }
    }
    assert!(loaded > 0, "some mutations (in the tensor data) still load");
}

#[test]
fn mutated_bitsandbytes_files() {
    let mut rng = Rng::new(41);
    let t = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        &rng.normals(512),
        &[8, 64],
    )
    .unwrap();
    let good = bnb::to_safetensors_bytes(&[("w", &t)], "bfloat16").unwrap();
    for _ in 0..1500 {
        if let Ok(w) = bnb::load_nf4(&mutate(&mut rng, &good), "w") {
            check(&w.tensor);
        }
    }
}

#[test]
fn mutated_gguf_files() {
    let mut rng = Rng::new(42);
    let t = candle_core::Tensor::from_vec(rng.normals(4 * 64), (4, 64), &candle_core::Device::Cpu).unwrap();
    let q4 = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
    let q8 = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let mut buf = Cursor::new(Vec::new());
    gguf_file::write(&mut buf, &[], &[("a", &q4), ("b", &q8)]).unwrap();
    let good = buf.into_inner();
    for _ in 0..1500 {
        let bytes = mutate(&mut rng, &good);
        let mut r = Cursor::new(&bytes);
        if let Ok(content) = gguf_file::Content::read(&mut r) {
            for name in ["a", "b"] {
                if let Ok(t) = read_gguf_tensor(&content, &mut r, name) {
                    // GGML scales are not validated on import (bytes are taken as they are);
                    // the import must still be consistent.
                    assert_eq!(dequantize(&t).unwrap().len(), t.numel());
                }
            }
        }
    }
}

/// Reads every tensor of `bytes` with our own GGUF reader; `true` when the header parsed.
/// Whatever parses must be consistent: quantized tensors dequantize to finite values of
/// the listed shape, and every tensor of a known type has its bytes in the file.
fn read_all_own_gguf(bytes: &[u8]) -> bool {
    let mut r = Cursor::new(bytes);
    let Ok(file) = GgufFile::read(&mut r) else {
        return false;
    };
    for t in file.tensors() {
        if let Ok(q) = file.read_tensor(&mut r, t.name()) {
            assert_eq!(q.shape(), t.shape());
            check(&q);
        }
        if let Ok(d) = file.read_dense(&mut r, t.name()) {
            assert_eq!(d.shape(), t.shape());
        }
        match file.read_raw(&mut r, t.name()) {
            Ok(raw) => assert_eq!(Some(raw.len() as u64), t.byte_len()),
            Err(e) => assert!(t.byte_len().is_none(), "{}: {e}", t.name()),
        }
    }
    // Keys are unique: each one looks up its own entry.
    assert!(file
        .metadata()
        .all(|(k, v)| file.get(k).is_some_and(|g| std::ptr::eq(g, v))));
    true
}

/// Overwrites 8 bytes of the header with a huge or random value: where that lands on a
/// count or a length, the reader must refuse it before allocating.
fn huge_field(rng: &mut Rng, good: &[u8], header_len: usize) -> Vec<u8> {
    let mut b = good.to_vec();
    let at = match rng.next_u64() % 4 {
        0 => 8 + 8 * (rng.next_u64() as usize % 3), // tensor count, metadata count, first key length
        _ => (rng.next_u64() as usize) % (header_len - 8),
    };
    let v = match rng.next_u64() % 4 {
        0 => u64::MAX,
        1 => 1 << (30 + rng.next_u64() % 34),
        2 => good.len() as u64 + rng.next_u64() % 64,
        _ => rng.next_u64(),
    };
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    b
}

#[test]
fn mutated_gguf_files_own_reader() {
    let mut rng = Rng::new(43);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    // Files written by the `gguf` Python package: every value type, TQ2_0 and other types.
    let seeds: Vec<Vec<u8>> = ["mixed.gguf", "candle.gguf"]
        .iter()
        .map(|n| std::fs::read(format!("{dir}{n}")).unwrap())
        .collect();
    let header_lens: Vec<usize> = seeds
        .iter()
        .map(|s| {
            assert!(read_all_own_gguf(s), "the unmutated file reads");
            GgufFile::read(&mut Cursor::new(s)).unwrap().data_offset() as usize
        })
        .collect();
    let mut loaded = 0;
    for i in 0..4000 {
        let k = i % seeds.len();
        let bytes = if i % 3 == 0 {
            huge_field(&mut rng, &seeds[k], header_lens[k])
        } else {
            mutate(&mut rng, &seeds[k])
        };
        loaded += usize::from(read_all_own_gguf(&bytes));
    }
    assert!(loaded > 0, "some mutations (in the tensor data) still parse");
}
