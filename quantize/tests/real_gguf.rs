//! The two real GGUF models in `.testdata/gguf` (fetched by `.ci/run`): every tensor loads
//! through the whole-file reader, and tensors of every type decode bit for bit as candle
//! decodes the same tensor read by candle's own GGUF reader.
//!
//! Missing files skip loudly; `AIHAL_REQUIRE_TESTDATA=1` makes them an error.
#![allow(clippy::float_cmp)] // exact values are the point

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use aihal_quantize::{GgmlType, GgufFile, GgufTensorData};
use candle_core::quantized::gguf_file;
use candle_core::Device;

/// The path of `.testdata/gguf/<name>`, or `None` (after saying so) when it is missing.
fn model(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("AIHAL_GGUF_DIR").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.testdata/gguf")),
        PathBuf::from,
    );
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{} not found (`bash .ci/run` fetches it into .testdata/gguf; or point AIHAL_GGUF_DIR at a directory holding it)",
        path.display()
    );
    assert!(
        std::env::var("AIHAL_REQUIRE_TESTDATA").as_deref() != Ok("1"),
        "AIHAL_REQUIRE_TESTDATA=1 but {msg}"
    );
    eprintln!("\n*** SKIPPED: {msg}. Set AIHAL_REQUIRE_TESTDATA=1 to make this an error. ***\n");
    None
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Loads every tensor of `name` one at a time, checks the count and the types, compares
/// the first `per_type` tensors of each type (of at most 4M values) with candle, and with
/// `read_all` checks the collecting call too.
fn check_model(name: &str, tensors: usize, types: &[(GgmlType, usize)], per_type: usize, read_all: bool) {
    let Some(path) = model(name) else { return };
    let mut file = BufReader::new(File::open(&path).unwrap());
    let gguf = GgufFile::read(&mut file).unwrap();
    assert_eq!(gguf.tensors().len(), tensors, "{name}");

    let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
    let mut compare: Vec<(String, GgmlType, GgufTensorData)> = Vec::new();
    let mut seen = 0;
    for item in gguf.tensors_in(&mut file) {
        let (info, data) = item.unwrap_or_else(|e| panic!("{name}: {e}"));
        seen += 1;
        assert_eq!(data.shape(), info.shape(), "{}", info.name());
        match &data {
            GgufTensorData::Quantized(q) => {
                assert_eq!(GgmlType::of_format(q.format()), Some(info.ggml_type()));
                assert_eq!(q.data().len() as u64, info.byte_len().unwrap());
            }
            GgufTensorData::Dense(b) => assert_eq!(b.bytes().len() as u64, info.byte_len().unwrap()),
        }
        *counts.entry(info.ggml_type()).or_default() += 1;
        // Compared with candle: the first few of each type, of at most 4M values (candle
        // decodes in f32, and the token embeddings run to 168M values).
        let numel: usize = info.shape().iter().product();
        let taken = compare.iter().filter(|(_, t, _)| *t == info.ggml_type()).count();
        if taken < per_type && numel <= 1 << 22 {
            compare.push((info.name().to_owned(), info.ggml_type(), data));
        }
        // Everything else is dropped here: a loader holds one tensor at a time.
    }
    assert_eq!(seen, tensors);
    let want: BTreeMap<GgmlType, usize> = types.iter().copied().collect();
    assert_eq!(counts, want, "{name}: tensors per type");

    // candle's reader on the same file: its dequantize of the same tensors.
    let mut file = BufReader::new(File::open(&path).unwrap());
    let content = gguf_file::Content::read(&mut file).unwrap();
    for (tensor, _, data) in &compare {
        let theirs = content.tensor(&mut file, tensor, &Device::Cpu).unwrap();
        assert_eq!(theirs.shape().dims(), data.shape(), "{tensor}");
        let want = theirs
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let got = data.to_f32().unwrap();
        assert!(got.iter().all(|v| v.is_finite()), "{tensor}");
        assert_eq!(bits(&got), bits(&want), "{name}: {tensor}");
    }
    // The collecting call gives the same tensors (on the smaller model: it holds them all).
    if read_all {
        let mut file = BufReader::new(File::open(&path).unwrap());
        let all = gguf.read_all(&mut file).unwrap();
        assert_eq!(all.len(), tensors);
        for (tensor, _, data) in &compare {
            assert!(all.iter().any(|(n, d)| n == tensor && d == data), "{tensor}");
        }
    }
}

#[test]
fn smollm2_q4_1_loads_whole_and_decodes_as_candle() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        272,
        &[(GgmlType::F32, 61), (GgmlType::Q4_1, 210), (GgmlType::Q8_0, 1)],
        2,
        true,
    );
}

#[test]
fn gemma3_q4_k_m_loads_whole_and_decodes_as_candle() {
    check_model(
        "gemma-3-270m-q4_k_m.gguf",
        236,
        &[
            (GgmlType::F32, 109),
            (GgmlType::Q5_0, 81),
            (GgmlType::Q8_0, 10),
            (GgmlType::Q4_K, 27),
            (GgmlType::Q6_K, 9),
        ],
        2,
        false,
    );
}
