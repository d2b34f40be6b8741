//! Whole-model generation speed against the peers, in one run: aihal, candle-transformers
//! 0.11 and llama.cpp's `llama-bench` on the same GGUF files, at the same thread counts, with
//! the same prompt and token counts, in one markdown table.
//!
//! What is measured, per model, thread count and engine:
//!
//! - **prefill**: one forward pass over a fixed 128-token prompt, in prompt tokens per
//!   second;
//! - **decode**: 64 greedy tokens after that prompt (each a single-token forward pass and an
//!   argmax), in tokens per second;
//! - **peak RSS**: the process's peak resident memory (`VmHWM` of `/proc/<pid>/status`), model
//!   loading included.
//!
//! How: every (engine, model, threads) measurement runs in a child process of its own, so
//! that the peak memory is that engine's alone and each engine starts cold. For aihal and
//! candle the child is this example again (`bench_generate child engine=aihal model=smollm2
//! reps=3`, with `RAYON_NUM_THREADS=T`: both use the global rayon pool for their parallel
//! work), which loads the model once, runs the prompt and the decode once untimed (warm-up:
//! page faults, lazily grown buffers, the pool's threads), then `reps` times from a fresh
//! state (aihal: a fresh [`Generator`](aihal::models::llama::Generator) per repetition via
//! `generate`; candle: its KV cache restarts at position 0), and prints one machine-readable
//! line with the medians and its own `VmHWM`. The prompt is the same 128 pseudo-random ids
//! (a fixed seed, ids in 1000..30000, valid in both models' vocabularies) for both engines.
//! aihal runs on its CPU provider (the device is forced to `cpu`), with int8 activations as
//! by default; candle with its quantized CPU kernels (`QMatMul`), as
//! `quantized_llama::ModelWeights::from_gguf` and `quantized_gemma3::ModelWeights::from_gguf`
//! load them.
//!
//! llama.cpp runs when `LLAMA_BENCH` names a `llama-bench` binary:
//! `llama-bench -m FILE -t T -p 128 -n 64 -r REPS -o json`, its `avg_ts` of the `pp128` and
//! `tg64` tests (its own warm-up run first, then the mean of `REPS` runs), its peak memory
//! sampled from `/proc/<pid>/status` every 20 ms while it runs (`VmHWM` only grows, so the
//! last sample before it exits is its peak unless the peak came in its last 20 ms). Note
//! that `tg64` decodes from an empty context and prompt tokens are random, where the other
//! two engines decode after the 128-token prompt; at these lengths attention is a small
//! part of a step. Without `LLAMA_BENCH` the comparison is skipped with one line saying how
//! to get the binary; no number is ever made up.
//!
//! Then the ratios aihal/llama.cpp and aihal/candle per row (above 1: aihal is faster), the
//! machine (CPU model, the SIMD extensions that choose the kernels) and aihal's CPU kernel
//! set. The numbers are medians of one run on whatever else the machine is doing: the load
//! average is printed before and after. Nothing is asserted about them.
//!
//! ```sh
//! cargo run --release --example bench_generate
//! cargo run --release --example bench_generate -- models=smollm2 threads=1,2 reps=5
//! LLAMA_BENCH=/path/to/llama.cpp/build/bin/llama-bench cargo run --release --example bench_generate
//! cargo run --release --example bench_generate -- engines=aihal,candle models=gemma3 threads=2
//! LLAMA_BENCH=... cargo run --release --example bench_generate -- engines=aihal,llama.cpp rounds=5
//! ```
//!
//! Arguments (all optional): `models=smollm2,gemma3` (default: those whose file exists),
//! `threads=1,2`, `reps=3`, `engines=aihal,candle,llama.cpp`, `rounds=1` (with more, every
//! measurement is repeated that many times, the engines taking turns within each round, and
//! the decode ratio aihal/llama.cpp is also given round by round: on a shared host whose
//! other load comes and goes, a ratio of two measurements taken minutes apart says little).
//! The files are
//! `.testdata/gguf/SmolLM2-135M-Instruct.Q4_1.gguf` and `.testdata/gguf/gemma-3-270m-q4_k_m.gguf`
//! (`bash .ci/run` fetches both), or the same names in `AIHAL_GGUF_DIR`. A model aihal does
//! not read yet (the loader answers `Unsupported` for its architecture) gets a row saying so,
//! while the peers still run it.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aihal::models::llama::{generate, CausalLm, GenerateOptions, LlamaModel, LlamaOptions, SplitMix64};
use aihal::ops::Executor;
use aihal::{CoreError, DeviceConfig};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};

const PROMPT_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 64;

/// The models by name: the GGUF file of each.
const MODELS: [(&str, &str); 2] = [
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
];

const ENGINES: [&str; 3] = ["aihal", "candle", "llama.cpp"];

/// What a child process prints first on the line that carries its result.
const RESULT_TAG: &str = "BENCH_GENERATE_RESULT";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, BoxError>;

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(std::ffi::OsString::into_string)
        .collect()
    {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("error: argument {} is not valid UTF-8", bad.display());
            return ExitCode::FAILURE;
        }
    };
    let result = if args.first().map(String::as_str) == Some("child") {
        child(&args[1..])
    } else {
        parent(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `key=value` arguments; an unknown key or a bare word is an error.
fn parse_args(args: &[String], known: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("argument {a:?} is not key=value (keys: {})", known.join(", ")))?;
        if !known.contains(&k) {
            return Err(format!("unknown argument {k:?} (keys: {})", known.join(", ")).into());
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn gguf_dir() -> PathBuf {
    std::env::var_os("AIHAL_GGUF_DIR").map_or_else(|| PathBuf::from(".testdata/gguf"), PathBuf::from)
}

fn model_path(name: &str) -> Result<PathBuf> {
    let file = MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            let names: Vec<&str> = MODELS.iter().map(|(n, _)| *n).collect();
            format!("model {name:?} is not one of {}", names.join(", "))
        })?;
    Ok(gguf_dir().join(file))
}

/// The prompt: `PROMPT_TOKENS` ids in 1000..30000 from a fixed seed (the same for every
/// engine and model; valid in both vocabularies).
fn prompt() -> Vec<u32> {
    let mut rng = SplitMix64::new(2026);
    (0..PROMPT_TOKENS)
        .map(|_| 1000 + (rng.next_u64() % 29_000) as u32)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `VmHWM` (peak resident memory) of `/proc/<pid>/status`, in KiB.
fn vm_hwm_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The child: one engine, one model, the thread count of its environment.

/// One engine's prefill and decode rates (tokens/s) for one repetition.
type Rates = (f64, f64);

/// A decoder aihal runs, as this bench drives it.
trait AihalBench {
    /// Prefill `prompt`, then `decode` greedy tokens, from a fresh state.
    fn run(&self, prompt: &[u32], decode: usize) -> aihal::Result<Rates>;
}

impl<M: CausalLm> AihalBench for M {
    fn run(&self, prompt: &[u32], decode: usize) -> aihal::Result<Rates> {
        // One token more than `decode`: the first comes from the prefill's logits, so this
        // makes `decode` single-token passes.
        let options = GenerateOptions {
            max_tokens: decode + 1,
            stop: Vec::new(),
            ..GenerateOptions::default()
        };
        let out = generate(self, prompt, &options, |_| Ok(()))?;
        if out.decode_steps != decode {
            return Err(CoreError::invalid_input(format!(
                "decoded {} tokens instead of {decode} (stopped: {:?})",
                out.decode_steps, out.stop
            )));
        }
        Ok((out.prefill_tokens_per_s(), out.decode_tokens_per_s()))
    }
}

/// The aihal model for a GGUF file. [`LlamaModel`] reads every architecture of
/// `aihal::models::llama::Architecture::ALL`; a decoder of another type would be one more
/// arm here, chosen by `Architecture::of` of the file. An architecture no type reads is the
/// loader's `Unsupported` error.
fn load_causal_lm(exec: &Arc<Executor>, path: &Path) -> aihal::Result<Box<dyn AihalBench>> {
    Ok(Box::new(LlamaModel::load(exec, path, LlamaOptions::default())?))
}

/// candle-transformers' quantized decoders.
enum CandleModel {
    Llama(candle_transformers::models::quantized_llama::ModelWeights),
    Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights),
}

impl CandleModel {
    fn load(path: &Path) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let content = gguf_file::Content::read(&mut f)?;
        let arch = match content.metadata.get("general.architecture") {
            Some(v) => v.to_string()?.clone(),
            None => String::new(),
        };
        Ok(match arch.as_str() {
            "llama" => Self::Llama(candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                content,
                &mut f,
                &Device::Cpu,
            )?),
            "gemma3" => Self::Gemma3(candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(
                content,
                &mut f,
                &Device::Cpu,
            )?),
            other => return Err(format!("candle bench: architecture {other:?} is not wired up here").into()),
        })
    }

    /// The last position's logits for `ids` at `pos` (position 0 restarts the KV caches).
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>> {
        let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let y = match self {
            Self::Llama(m) => m.forward(&x, pos)?,
            Self::Gemma3(m) => m.forward(&x, pos)?,
        };
        Ok(y.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec1()?)
    }

    /// The same steps as aihal's `generate`: the prompt's pass, then `decode` times an
    /// argmax and a single-token pass, and the last argmax.
    fn run(&mut self, prompt: &[u32], decode: usize) -> Result<Rates> {
        let t = Instant::now();
        let mut logits = self.forward(prompt, 0)?;
        let prefill = t.elapsed();
        let t = Instant::now();
        for pos in prompt.len()..prompt.len() + decode {
            let id = argmax(&logits);
            logits = self.forward(&[id], pos)?;
        }
        std::hint::black_box(argmax(&logits));
        let decode_time = t.elapsed();
        Ok((
            prompt.len() as f64 / prefill.as_secs_f64(),
            decode as f64 / decode_time.as_secs_f64(),
        ))
    }
}

/// What one child measured.
enum Outcome {
    /// Median rates.
    Rates(Rates),
    /// The engine does not read this model.
    Unsupported(String),
}

fn child(args: &[String]) -> Result<()> {
    let a = parse_args(args, &["engine", "model", "reps"])?;
    let engine = a.get("engine").ok_or("child: engine= missing")?.clone();
    let model = a.get("model").ok_or("child: model= missing")?.clone();
    let reps: usize = a.get("reps").map_or(Ok(3), |r| r.parse())?;
    let path = model_path(&model)?;
    let prompt = prompt();
    let t = Instant::now();
    let measure = |run: &mut dyn FnMut() -> Result<Rates>| -> Result<Rates> {
        run()?; // warm-up
        let mut rates = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            rates.push(run()?);
        }
        Ok((
            median(rates.iter().map(|r| r.0).collect()),
            median(rates.iter().map(|r| r.1).collect()),
        ))
    };
    let mut load = Duration::ZERO;
    let outcome = match engine.as_str() {
        "aihal" => {
            // The CPU provider, whatever RUST_AI_DEVICE says: the peers run on the CPU.
            let exec = aihal::build_executor(&DeviceConfig::from_lookup(|key| {
                if key == "RUST_AI_DEVICE" {
                    Some("cpu".to_owned())
                } else {
                    std::env::var(key).ok()
                }
            })?)?;
            match load_causal_lm(&exec, &path) {
                Err(e @ CoreError::Unsupported { .. }) => {
                    Outcome::Unsupported(format!("not supported by aihal yet: {e}"))
                }
                Err(e) => return Err(e.into()),
                Ok(m) => {
                    load = t.elapsed();
                    Outcome::Rates(measure(&mut || Ok(m.run(&prompt, DECODE_TOKENS)?))?)
                }
            }
        }
        "candle" => {
            let mut m = CandleModel::load(&path)?;
            load = t.elapsed();
            Outcome::Rates(measure(&mut || m.run(&prompt, DECODE_TOKENS))?)
        }
        other => return Err(format!("child: engine {other:?} is not aihal or candle").into()),
    };
    let hwm = vm_hwm_kib("self").unwrap_or(0);
    let threads = rayon::current_num_threads();
    match outcome {
        Outcome::Rates((prefill, decode)) => println!(
            "{RESULT_TAG} status=ok threads={threads} prefill={prefill:.3} decode={decode:.3} hwm_kib={hwm} load_s={:.3}",
            load.as_secs_f64()
        ),
        Outcome::Unsupported(why) => {
            println!("{RESULT_TAG} status=unsupported threads={threads} hwm_kib={hwm} why={why}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The parent: runs the children and llama-bench, prints the table.

/// One row of the table.
struct Row {
    model: String,
    threads: usize,
    engine: &'static str,
    /// Prefill and decode tokens/s, or why there are none: what the table says, and the
    /// whole reason for the notes under it.
    rates: std::result::Result<Rates, (String, String)>,
    peak_kib: Option<u64>,
    file_bytes: u64,
}

/// A finished child process: its exit status, output, and peak memory sampled while it ran.
struct Finished {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
    sampled_hwm_kib: Option<u64>,
}

/// Runs `cmd`, reading its output on threads of its own and sampling its `VmHWM` every
/// 20 ms until it exits.
fn run_watched(mut cmd: Command) -> Result<Finished> {
    let mut proc = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = proc.id().to_string();
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(proc.stdout.take().ok_or("no stdout")?));
    let err = reader(Box::new(proc.stderr.take().ok_or("no stderr")?));
    let mut hwm = None;
    let status = loop {
        if let Some(v) = vm_hwm_kib(&pid) {
            hwm = Some(v);
        }
        if let Some(status) = proc.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Finished {
        status,
        stdout: out.join().map_err(|_| "stdout reader panicked")?,
        stderr: err.join().map_err(|_| "stderr reader panicked")?,
        sampled_hwm_kib: hwm,
    })
}

/// The last few lines of a child's stderr, for an error message.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// `key=value` fields of a result line; `why=` takes the rest of the line.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = line;
    while let Some((k, v)) = rest.split_once('=') {
        let k = k.trim();
        if k == "why" {
            out.insert(k, v);
            break;
        }
        let (v, next) = v.split_once(' ').unwrap_or((v, ""));
        out.insert(k, v);
        rest = next;
    }
    out
}

/// This example run as a child for one engine, model and thread count.
fn run_child(engine: &'static str, model: &str, threads: usize, reps: usize) -> Result<(Row, f64)> {
    let path = model_path(model)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "child",
        &format!("engine={engine}"),
        &format!("model={model}"),
        &format!("reps={reps}"),
    ])
    .env("RAYON_NUM_THREADS", threads.to_string());
    let done = run_watched(cmd)?;
    let line = done.stdout.lines().find_map(|l| l.strip_prefix(RESULT_TAG));
    let mut row = Row {
        model: model.to_owned(),
        threads,
        engine,
        rates: Err((String::new(), String::new())),
        peak_kib: None,
        file_bytes: std::fs::metadata(&path)?.len(),
    };
    let Some(line) = line.filter(|_| done.status.success()) else {
        row.rates = Err((
            "failed".to_owned(),
            format!("failed ({}): {}", done.status, tail(&done.stderr)),
        ));
        return Ok((row, 0.0));
    };
    let f = fields(line);
    let num = |k: &str| -> Result<f64> { Ok(f.get(k).ok_or_else(|| format!("no {k}= in {line:?}"))?.parse()?) };
    if f.get("threads").and_then(|t| t.parse::<usize>().ok()) != Some(threads) {
        return Err(format!("{engine} child ran {:?} rayon threads, not {threads}", f.get("threads")).into());
    }
    let mut load = 0.0;
    row.rates = match f.get("status") {
        Some(&"ok") => {
            // The peak of a process that ran nothing says nothing: only measured rows get one.
            row.peak_kib = Some(num("hwm_kib")? as u64);
            load = num("load_s")?;
            Ok((num("prefill")?, num("decode")?))
        }
        Some(&"unsupported") => Err((
            format!("not supported by {engine} yet"),
            f.get("why").map_or_else(|| line.to_owned(), |w| (*w).to_owned()),
        )),
        _ => Err(("failed".to_owned(), line.to_owned())),
    };
    Ok((row, load))
}

/// `avg_ts` of the `pp128` and `tg64` tests in llama-bench's `-o json` output: an array of
/// flat objects (their only nested values are arrays of numbers), read field by field.
fn llama_bench_rates(json: &str) -> Result<Rates> {
    let number = |obj: &str, key: &str| -> Option<f64> {
        let at = obj.find(&format!("\"{key}\""))? + key.len() + 2;
        let rest = obj[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))?;
        rest[..end].parse().ok()
    };
    let (mut pp, mut tg) = (None, None);
    for obj in json.split('{').skip(1) {
        let obj = obj.split('}').next().unwrap_or("");
        let (Some(n_prompt), Some(n_gen), Some(ts)) =
            (number(obj, "n_prompt"), number(obj, "n_gen"), number(obj, "avg_ts"))
        else {
            continue;
        };
        if n_prompt as usize == PROMPT_TOKENS && n_gen == 0.0 {
            pp = Some(ts);
        } else if n_prompt == 0.0 && n_gen as usize == DECODE_TOKENS {
            tg = Some(ts);
        }
    }
    match (pp, tg) {
        (Some(pp), Some(tg)) => Ok((pp, tg)),
        _ => Err(format!("no pp{PROMPT_TOKENS} and tg{DECODE_TOKENS} results in llama-bench's output").into()),
    }
}

fn run_llama_bench(bin: &Path, model: &str, threads: usize, reps: usize) -> Result<Row> {
    let path = model_path(model)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-m")
        .arg(&path)
        .args(["-t", &threads.to_string()])
        .args(["-p", &PROMPT_TOKENS.to_string(), "-n", &DECODE_TOKENS.to_string()])
        .args(["-r", &reps.to_string(), "-o", "json"]);
    let done = run_watched(cmd)?;
    let rates = if done.status.success() {
        llama_bench_rates(&done.stdout).map_err(|e| ("failed".to_owned(), e.to_string()))
    } else {
        Err((
            "failed".to_owned(),
            format!("llama-bench failed ({}): {}", done.status, tail(&done.stderr)),
        ))
    };
    Ok(Row {
        model: model.to_owned(),
        threads,
        engine: "llama.cpp",
        rates,
        peak_kib: done.sampled_hwm_kib,
        file_bytes: std::fs::metadata(&path)?.len(),
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The SIMD extensions that decide which kernels run, as `/proc/cpuinfo` names them.
fn simd_flags() -> String {
    let want = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx512_bf16",
        "avx_vnni",
        "asimddp",
        "i8mm",
    ];
    let flags: Vec<String> = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags") || l.starts_with("Features"))
                .map(|l| l.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default();
    let present: Vec<String> = want
        .iter()
        .map(|w| (*w).to_owned())
        .filter(|w| flags.contains(w))
        .collect();
    let absent: Vec<String> = want
        .iter()
        .map(|w| (*w).to_owned())
        .filter(|w| !flags.contains(w))
        .collect();
    format!("has {}; lacks {}", present.join(" "), absent.join(" "))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

fn kernel_set() -> &'static str {
    #[cfg(feature = "cpu")]
    {
        aihal::cpu::kernel_set_name()
    }
    #[cfg(not(feature = "cpu"))]
    {
        "none (built without the cpu feature)"
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.0}", bytes / (1024.0 * 1024.0))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".to_owned(),
    }
}

fn parent(args: &[String]) -> Result<()> {
    let a = parse_args(args, &["models", "threads", "reps", "engines", "rounds"])?;
    let models = match a.get("models") {
        Some(m) => list(m),
        None => MODELS
            .iter()
            .filter(|(n, _)| model_path(n).is_ok_and(|p| p.exists()))
            .map(|(n, _)| (*n).to_owned())
            .collect(),
    };
    for m in &models {
        let p = model_path(m)?;
        if !p.exists() {
            return Err(format!(
                "{} does not exist: `bash .ci/run` fetches it (or set AIHAL_GGUF_DIR)",
                p.display()
            )
            .into());
        }
    }
    if models.is_empty() {
        return Err(format!(
            "no model file found in {}: `bash .ci/run` fetches them",
            gguf_dir().display()
        )
        .into());
    }
    let threads: Vec<usize> = list(a.get("threads").map_or("1,2", String::as_str))
        .iter()
        .map(|t| t.parse::<usize>().map_err(|e| format!("threads={t}: {e}")))
        .collect::<std::result::Result<_, _>>()?;
    let reps: usize = a.get("reps").map_or(Ok(3), |r| r.parse())?;
    let rounds: usize = a.get("rounds").map_or(Ok(1), |r| r.parse())?.max(1);
    let engines: Vec<&'static str> = list(a.get("engines").map_or("aihal,candle,llama.cpp", String::as_str))
        .iter()
        .map(|e| {
            ENGINES
                .iter()
                .copied()
                .find(|k| k == e)
                .ok_or_else(|| format!("engine {e:?} is not one of {}", ENGINES.join(", ")))
        })
        .collect::<std::result::Result<_, _>>()?;

    println!("# Generation speed: aihal, candle-transformers 0.11, llama.cpp");
    println!();
    println!(
        "- machine: {} ({} CPUs available)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("- SIMD: {}", simd_flags());
    println!("- aihal CPU kernel set: {}", kernel_set());
    println!(
        "- method: prefill of a {PROMPT_TOKENS}-token prompt, then {DECODE_TOKENS} greedy tokens; after a warm-up run, \
         the median of {reps} runs (llama.cpp: llama-bench's mean of {reps}); each measurement in its own process{}",
        if rounds > 1 {
            format!("; {rounds} rounds, each running every engine in turn, and the table's rates are the medians over the rounds")
        } else {
            String::new()
        }
    );
    println!("- load average before: {}", load_average());

    let llama_bench = std::env::var_os("LLAMA_BENCH").map(PathBuf::from);
    if engines.contains(&"llama.cpp") {
        match &llama_bench {
            Some(b) => println!("- llama.cpp: {}", b.display()),
            None => println!(
                "- llama.cpp: skipped, LLAMA_BENCH is not set. Build llama.cpp's llama-bench (in its source tree: \
                 `cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF && cmake --build build --target llama-bench`; \
                 the recipe used here is in ../shared/reference/performance.md) and set LLAMA_BENCH=build/bin/llama-bench"
            ),
        }
    }
    println!();

    let mut rows = Vec::new();
    for round in 1..=rounds {
        for model in &models {
            for &t in &threads {
                for &engine in &engines {
                    let row = if engine == "llama.cpp" {
                        let Some(bin) = &llama_bench else { continue };
                        run_llama_bench(bin, model, t, reps)?
                    } else {
                        let (row, load) = run_child(engine, model, t, reps)?;
                        if load > 0.0 {
                            eprintln!("{model}, {t} thread(s), {engine}: loaded in {load:.2} s");
                        }
                        row
                    };
                    let tag = if rounds > 1 {
                        format!(" (round {round})")
                    } else {
                        String::new()
                    };
                    match &row.rates {
                        Ok((p, d)) => {
                            eprintln!("{model}, {t} thread(s), {engine}{tag}: prefill {p:.1} t/s, decode {d:.1} t/s");
                        }
                        Err((_, why)) => eprintln!("{model}, {t} thread(s), {engine}{tag}: {why}"),
                    }
                    rows.push((round, row));
                }
            }
        }
    }
    // One row per (model, threads, engine): with several rounds, the median of each rate over
    // the rounds that produced one, the largest peak, and the first failure if none did.
    let per_round = rows;
    let mut rows: Vec<Row> = Vec::new();
    for (_, r) in &per_round {
        if rows
            .iter()
            .any(|x| x.model == r.model && x.threads == r.threads && x.engine == r.engine)
        {
            continue;
        }
        let same: Vec<&Row> = per_round
            .iter()
            .map(|(_, x)| x)
            .filter(|x| x.model == r.model && x.threads == r.threads && x.engine == r.engine)
            .collect();
        let ok: Vec<Rates> = same.iter().filter_map(|x| x.rates.as_ref().ok().copied()).collect();
        rows.push(Row {
            model: r.model.clone(),
            threads: r.threads,
            engine: r.engine,
            rates: if ok.is_empty() {
                r.rates.clone()
            } else {
                Ok((
                    median(ok.iter().map(|x| x.0).collect()),
                    median(ok.iter().map(|x| x.1).collect()),
                ))
            },
            peak_kib: same.iter().filter_map(|x| x.peak_kib).max(),
            file_bytes: r.file_bytes,
        });
    }

    println!("| model | threads | engine | prefill t/s | decode t/s | peak RSS MiB | file MiB |");
    println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let (p, d) = match &r.rates {
            Ok((p, d)) => (format!("{p:.1}"), format!("{d:.1}")),
            Err((short, _)) => (short.clone(), "-".to_owned()),
        };
        let peak = r.peak_kib.map_or_else(|| "-".to_owned(), |k| mib(k as f64 * 1024.0));
        println!(
            "| {} | {} | {} | {p} | {d} | {peak} | {} |",
            r.model,
            r.threads,
            r.engine,
            mib(r.file_bytes as f64)
        );
    }
    let notes: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let (_, why) = r.rates.as_ref().err()?;
            Some(format!("- {}, {} thread(s), {}: {why}", r.model, r.threads, r.engine))
        })
        .collect();
    if !notes.is_empty() {
        println!();
        println!("{}", notes.join("\n"));
    }
    println!();
    println!("Ratios (aihal's tokens/s over the peer's; above 1: aihal is faster):");
    println!();
    println!(
        "| model | threads | prefill aihal/llama.cpp | decode aihal/llama.cpp | prefill aihal/candle | decode aihal/candle |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for model in &models {
        for &t in &threads {
            let rate = |engine: &str| {
                rows.iter()
                    .find(|r| r.model == *model && r.threads == t && r.engine == engine)
                    .and_then(|r| r.rates.as_ref().ok().copied())
            };
            let (ours, lcpp, candle) = (rate("aihal"), rate("llama.cpp"), rate("candle"));
            println!(
                "| {model} | {t} | {} | {} | {} | {} |",
                ratio(ours.map(|r| r.0), lcpp.map(|r| r.0)),
                ratio(ours.map(|r| r.1), lcpp.map(|r| r.1)),
                ratio(ours.map(|r| r.0), candle.map(|r| r.0)),
                ratio(ours.map(|r| r.1), candle.map(|r| r.1)),
            );
        }
    }
    if rounds > 1 {
        println!();
        println!(
            "Round by round (the engines alternate within each round, so a change in the machine's other load \
             reaches both sides of a ratio): decode aihal/llama.cpp, and its median, lowest and highest"
        );
        println!();
        println!("| model | threads | per round | median | lowest | highest |");
        println!("| --- | ---: | --- | ---: | ---: | ---: |");
        for model in &models {
            for &t in &threads {
                let rate = |round: usize, engine: &str| {
                    per_round
                        .iter()
                        .find(|(k, r)| *k == round && r.model == *model && r.threads == t && r.engine == engine)
                        .and_then(|(_, r)| r.rates.as_ref().ok().map(|x| x.1))
                };
                let ratios: Vec<f64> = (1..=rounds)
                    .filter_map(|k| Some(rate(k, "aihal")? / rate(k, "llama.cpp")?))
                    .collect();
                if ratios.is_empty() {
                    continue;
                }
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
                let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ratios.iter().copied().fold(0.0, f64::max);
                println!(
                    "| {model} | {t} | {} | {:.2} | {lo:.2} | {hi:.2} |",
                    each.join(", "),
                    median(ratios)
                );
            }
        }
    }
    println!();
    println!("- load average after: {}", load_average());
    Ok(())
}
