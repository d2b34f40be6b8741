//! Text generation from a GGUF file on the op set: the prompt is tokenized with the file's
//! own tokenizer (and, with `--chat`, wrapped in its chat template), run through the decoder,
//! and the generated text is printed as it comes; then the prefill and decode rates and
//! where every op ran.
//!
//! ```sh
//! cargo run --release --example generate -- --model smollm2 --prompt "The capital of France is"
//! cargo run --release --example generate -- --model smollm2 --chat --prompt "Name three rivers."
//! cargo run --release --example generate -- --gguf PATH --max-tokens 128 --temperature 0.7 --top-p 0.9 --seed 1
//! cargo run --release --example generate -- --model smollm2 --device cpu --prompt "..."
//! ```
//!
//! `--model smollm2` is `.testdata/gguf/SmolLM2-135M-Instruct.Q4_1.gguf`, `--model gemma3`
//! `.testdata/gguf/gemma-3-270m-q4_k_m.gguf` (`bash .ci/run` fetches both). Decoding is greedy
//! unless a temperature above 0 is given. `--device NAME` takes what `RUST_AI_DEVICE` takes.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use aihal::models::llama::{generate, GenerateOptions, LlamaModel, LlamaOptions, SamplingOptions};
use aihal::models::tokenizer::{ChatMessage, ChatTemplate, GgufTokenizer};
use aihal::ops::table::MClass;
use aihal::quantize::GgufFile;
use aihal::{CoreError, DeviceConfig, Result};

const USAGE: &str = "usage: generate [--model smollm2|gemma3 | --gguf PATH] [--prompt TEXT] [--chat] [--max-tokens N]
                [--temperature T] [--top-k K] [--top-p P] [--seed S] [--device NAME]";

struct Args {
    gguf: PathBuf,
    prompt: String,
    chat: bool,
    max_tokens: usize,
    sampling: SamplingOptions,
    device: Option<String>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn named_model(name: &str) -> Result<PathBuf> {
    Ok(PathBuf::from(match name {
        "smollm2" => ".testdata/gguf/SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => ".testdata/gguf/gemma-3-270m-q4_k_m.gguf",
        other => {
            return Err(CoreError::invalid_input(format!(
                "--model {other:?} is not one of smollm2, gemma3 (or give --gguf PATH)"
            )))
        }
    }))
}

fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| CoreError::invalid_input(format!("{flag} {value:?} is not a valid number")))
}

/// `value` as text, or an error naming `what` when it is not valid UTF-8.
fn utf8(what: &str, value: std::ffi::OsString) -> Result<String> {
    value
        .into_string()
        .map_err(|v| CoreError::invalid_input(format!("{what}: \"{}\" is not valid UTF-8", v.display())))
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        gguf: named_model("smollm2")?,
        prompt: "The capital of France is".to_owned(),
        chat: false,
        max_tokens: 64,
        sampling: SamplingOptions::greedy(),
        device: None,
    };
    // `args_os`: an argument that is not valid UTF-8 is an error naming it, not a panic (a
    // path given to --gguf may be any bytes).
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let arg = utf8("an argument", arg)?;
        let mut value_os = |flag: &str| {
            it.next()
                .ok_or_else(|| CoreError::invalid_input(format!("{flag} needs a value")))
        };
        let mut value = |flag: &str| utf8(flag, value_os(flag)?);
        match arg.as_str() {
            "--model" => args.gguf = named_model(&value("--model")?)?,
            "--gguf" => args.gguf = value_os("--gguf")?.into(),
            "--prompt" => args.prompt = value("--prompt")?,
            "--chat" => args.chat = true,
            "--max-tokens" => args.max_tokens = parse("--max-tokens", &value("--max-tokens")?)?,
            "--temperature" => args.sampling.temperature = parse("--temperature", &value("--temperature")?)?,
            "--top-k" => args.sampling.top_k = parse("--top-k", &value("--top-k")?)?,
            "--top-p" => args.sampling.top_p = parse("--top-p", &value("--top-p")?)?,
            "--seed" => args.sampling.seed = parse("--seed", &value("--seed")?)?,
            "--device" => args.device = Some(value("--device")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(CoreError::invalid_input(format!("unknown argument {other:?}\n{USAGE}"))),
        }
    }
    args.sampling.validate()?;
    if !args.gguf.exists() {
        return Err(CoreError::invalid_input(format!(
            "{} does not exist: run `bash .ci/run` to fetch the test models, or pass --gguf PATH",
            args.gguf.display()
        )));
    }
    Ok(args)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let exec = match &args.device {
        // The device flag means what RUST_AI_DEVICE means; the other variables still apply.
        Some(device) => aihal::build_executor(&DeviceConfig::from_lookup(|key| {
            if key == "RUST_AI_DEVICE" {
                Some(device.clone())
            } else {
                std::env::var(key).ok()
            }
        })?)?,
        None => aihal::executor()?,
    };

    let t = Instant::now();
    let mut reader = BufReader::new(
        File::open(&args.gguf)
            .map_err(|e| CoreError::Io(std::io::Error::new(e.kind(), format!("{}: {e}", args.gguf.display()))))?,
    );
    let file = GgufFile::read(&mut reader)?;
    let tokenizer = GgufTokenizer::from_gguf(&file)?;
    let mut model = LlamaModel::from_gguf(&exec, &file, reader, LlamaOptions::default())?;
    // With a measured dispatch table (`cargo run --release --example calibrate`), decode and the
    // prompt each follow a plan: the table's op times plus the moves between providers.
    if exec.table().is_some() && !exec.device_requested() {
        for (phase, m) in [("decode", MClass::One), ("prompt", MClass::Many)] {
            match model.follow_plan(m) {
                Ok(plan) => eprintln!("{phase} plan: {} ({} moves)", plan.devices.join(" "), plan.transfers),
                Err(e) => eprintln!("{phase}: no plan ({e}); ops stay where they were placed"),
            }
        }
    }
    eprintln!(
        "{}: {} layers, hidden {}, vocabulary {}; loaded in {:.2?}; ops placed on {}",
        args.gguf.display(),
        model.config().block_count,
        model.config().embedding_length,
        model.config().vocab_size,
        t.elapsed(),
        exec.device()
    );

    let ids = if args.chat {
        // The file's own template, else the one aihal-models writes for its architecture.
        let template = match ChatTemplate::from_gguf(&file)? {
            Some(t) => t,
            None => ChatTemplate::builtin_for(&file)?.ok_or_else(|| {
                CoreError::invalid_input(format!(
                    "{} has no chat template (tokenizer.chat_template), and its architecture none built in",
                    args.gguf.display()
                ))
            })?,
        };
        let text = template.render(
            &[ChatMessage {
                role: "user".to_owned(),
                content: args.prompt.clone(),
            }],
            true,
        )?;
        tokenizer.encode(&text, false)?
    } else {
        print!("{}", args.prompt);
        tokenizer.encode(&args.prompt, true)?
    };

    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: args.sampling,
        stop: tokenizer.stop_ids().to_vec(),
        max_len: None,
    };
    let mut stream = tokenizer.stream();
    let mut stdout = std::io::stdout();
    let out = generate(&model, &ids, &options, |id| {
        if let Some(text) = stream.push(id)? {
            print!("{text}");
            stdout.flush()?;
        }
        Ok(())
    })?;
    // What the last ids spell but did not complete (a character cut off by the token limit).
    if let Some(text) = stream.finish()? {
        print!("{text}");
    }
    println!();
    eprintln!(
        "\nprefill: {} tokens in {:.2?} ({:.1} tokens/s); decode: {} tokens in {:.2?} ({:.1} tokens/s); stopped: {:?}",
        out.prompt_tokens,
        out.prefill,
        out.prefill_tokens_per_s(),
        out.decode_steps,
        out.decode,
        out.decode_tokens_per_s(),
        out.stop
    );
    eprintln!("\nwhere each op ran:\n{}", exec.report());
    Ok(())
}
