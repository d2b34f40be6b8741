//! The two real GGUF models in `.testdata/gguf` (fetched by `.ci/run`): every tensor loads
//! through the whole-file reader, and tensors of every type decode bit for bit as candle
//! decodes the same tensor read by candle's own GGUF reader.
//!
//! Run-time harness (`tests/testdata`): a test whose model is missing is reported as ignored
//! with the reason; `AIHAL_REQUIRE_TESTDATA=1` makes it a failure.
#![allow(clippy::float_cmp)] // exact values are the point

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use aihal_quantize::{GgmlType, GgufFile, GgufTensorData};
use candle_core::quantized::gguf_file;
use candle_core::Device;

mod testdata;

fn main() {
    testdata::run(vec![
        testdata::with_data(
            "smollm2_q4_1_loads_whole_and_decodes_as_candle",
            || testdata::gguf_path(testdata::SMOLLM2),
            |path| {
                check_model(
                    &path,
                    272,
                    &[(GgmlType::F32, 61), (GgmlType::Q4_1, 210), (GgmlType::Q8_0, 1)],
                    2,
                    true,
                );
            },
        ),
        testdata::with_data(
            "gemma3_q4_k_m_loads_whole_and_decodes_as_candle",
            || testdata::gguf_path(testdata::GEMMA3),
            |path| {
                check_model(
                    &path,
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
            },
        ),
    ]);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

/// Loads every tensor of the model at `path` one at a time, checks the count and the types, compares
/// the first `per_type` tensors of each type (of at most 2M values; one at least of every
/// type that has one) with candle, and with
/// `read_all` checks the collecting call too.
fn check_model(path: &Path, tensors: usize, types: &[(GgmlType, usize)], per_type: usize, read_all: bool) {
    let name = path.display();
    let mut file = BufReader::new(File::open(path).unwrap());
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
        // Compared with candle: the first few of each type, of at most 2M values (candle
        // decodes in f32, and the token embeddings run to 168M values).
        let numel: usize = info.shape().iter().product();
        let taken = compare.iter().filter(|(_, t, _)| *t == info.ggml_type()).count();
        if taken < per_type && numel <= 1 << 21 {
            compare.push((info.name().to_owned(), info.ggml_type(), data));
        }
        // Everything else is dropped here: a loader holds one tensor at a time.
    }
    assert_eq!(seen, tensors);
    let want: BTreeMap<GgmlType, usize> = types.iter().copied().collect();
    assert_eq!(counts, want, "{name}: tensors per type");
    // Every type that has a tensor small enough is compared (SmolLM2's one Q8_0 tensor is
    // its 28M-value token embedding; Gemma's Q8_0 tensors are compared).
    for t in gguf.tensors() {
        if t.shape().iter().product::<usize>() <= 1 << 21 {
            let ty = t.ggml_type();
            assert!(
                compare.iter().any(|(_, c, _)| *c == ty),
                "{name}: no {ty:?} tensor compared"
            );
        }
    }

    // candle's reader on the same file: its dequantize of the same tensors.
    let mut file = BufReader::new(File::open(path).unwrap());
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
        let mut file = BufReader::new(File::open(path).unwrap());
        let all = gguf.read_all(&mut file).unwrap();
        assert_eq!(all.len(), tensors);
        for (tensor, _, data) in &compare {
            assert!(all.iter().any(|(n, d)| n == tensor && d == data), "{tensor}");
        }
    }
}
