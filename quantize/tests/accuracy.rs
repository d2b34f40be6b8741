//! Accuracy against stated bounds: llama.cpp's own quantization-test thresholds for the GGML
//! formats, and every format's per-element bound on the weights of a real model
//! (all-MiniLM-L6-v2).
//!
//! Run-time harness (`tests/testdata`): without the MiniLM weights the test that reads them
//! is reported as ignored with the reason; `AIHAL_REQUIRE_TESTDATA=1` makes it a failure.

mod common;
mod testdata;

use std::path::PathBuf;

use aihal_quantize::{dequantize, quantize, ErrorStats, QuantFormat};
use common::{all_formats, check_bound, check_ternary};

/// llama.cpp `tests/test-quantize-fns.cpp`: data `0.1 + 2 cos(i)` over 4096 values, error
/// `sqrt(sum (x - y)^2) / n`, which must stay below 0.002 for Q4_0 and Q8_0 and below 0.01
/// for the ternary types (TQ1_0, TQ2_0).
fn main() {
    testdata::run(vec![
        testdata::test(
            "ggml_formats_meet_llama_cpp_test_thresholds",
            ggml_formats_meet_llama_cpp_test_thresholds,
        ),
        testdata::with_data(
            "every_format_meets_its_bound_on_minilm_weights",
            testdata::minilm_path,
            every_format_meets_its_bound_on_minilm_weights,
        ),
    ]);
}

fn ggml_formats_meet_llama_cpp_test_thresholds() {
    let n = 32 * 128;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    for (format, max) in [
        (QuantFormat::Q4_0, 0.002),
        (QuantFormat::Q8_0, 0.002),
        (QuantFormat::Tq2_0, 0.01),
    ] {
        let y = dequantize(&quantize(format, &x, &[n]).unwrap()).unwrap();
        let sum: f64 = x.iter().zip(&y).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let err = sum.sqrt() / n as f64;
        assert!(err < max, "{format}: total error {err} >= {max}");
    }
}

fn every_format_meets_its_bound_on_minilm_weights(path: PathBuf) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // The six weight matrices of the first encoder layer (1.77 M values) keep the debug
    // build quick; the accuracy example covers all layers.
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| {
            n.starts_with("encoder.layer.0.") && n.ends_with(".weight") && st.tensor(n).unwrap().shape().len() == 2
        })
        .map(str::to_owned)
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    for name in &names {
        let view = st.tensor(name).unwrap();
        let shape = view.shape().to_vec();
        let x: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for format in all_formats() {
            if aihal_quantize::ggml::block_layout(format).is_some_and(|(values, _)| shape[1] % values != 0) {
                continue;
            }
            let q = quantize(format, &x, &shape).unwrap();
            let y = dequantize(&q).unwrap();
            let r = if format == QuantFormat::Ternary {
                check_ternary(&x, &y, q.scales()[0])
            } else {
                check_bound(format, &shape, &x, &y, q.scales())
            };
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
            let s = ErrorStats::between(&x, &y).unwrap();
            assert!(s.snr_db.is_finite() && s.rmse > 0.0, "{name} {format}: {s}");
        }
    }
}
