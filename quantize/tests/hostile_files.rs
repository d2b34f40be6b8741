//! Hostile files for every deserializer, in the ordinary test suite: the fuzz targets'
//! bodies (`tests/fuzz_bodies`, the same code cargo-fuzz runs) as property tests over
//! arbitrary bytes and over mutations of real files (byte flips, 8-byte counts and lengths
//! overwritten with huge values, numbers in JSON headers inflated, f32 scales made huge,
//! truncations), with an allocation bound checked on every case; regression tests for the
//! hostile inputs found by an outside mutation campaign; and the worst headers each reader
//! can be handed, measured against the bounds the bodies state.
//!
//! The seeds are the small files of `tests/corpus/` (also the seed corpus of the fuzz
//! targets) and a GGUF file built here whose tensor data is much larger than its header;
//! the tests over them need no data and run everywhere. Tests of their own mutate files of
//! every kind made from one of the all-MiniLM-L6-v2 weight matrices, and the real headers
//! (metadata and tokenizer, a few MB each) of the GGUF models of `.testdata/gguf` with a
//! few of their small tensors of every type, as stored. Run-time harness
//! (`tests/testdata`): without those files these tests are reported as ignored with the
//! reason; `AIHAL_REQUIRE_TESTDATA=1` makes them failures.
//!
//! Cases per run: 128 for each loader on arbitrary bytes, 256 for packed parts, 256 for
//! each loader on mutated corpus files, 64 for each loader on mutated MiniLM files, and 64
//! on the mutated real GGUF headers, whose metadata arrays (the tokenizer's tens of
//! thousands of tokens, scores and merges) are cut to their first 512 elements and whose
//! tensors to their first 16 KiB of rows: whole, they cost a debug build about 0.1 s a
//! case. The whole binary takes about 4 s in a debug build
//! (15-25 s before the cuts).
//!
//! Allocations are counted by a forwarding global allocator (live bytes and their peak).
//! The count is global, so the tests of this binary run one at a time (on one thread, so
//! that no test builds its seeds while another measures) and each holds one lock for its
//! whole run.

#[path = "fuzz_bodies/mod.rs"]
mod bodies;
mod common;
mod testdata;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use aihal_core::CoreError;
use aihal_quantize::io::{from_safetensors_bytes, to_safetensors_bytes};
use aihal_quantize::{bnb, dequantize, quantize, GgufFile, QuantFormat, QuantizedTensor};
use bodies::{Meter, Tracked, BNB_FACTOR, GGUF_HEADER_FACTOR, SAFETENSORS_FACTOR, SLACK};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use common::{all_formats, Rng};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

// ---------------------------------------------------------------------------------------
// Counting allocator

/// Bytes allocated and not yet freed, and the most there were since the last reset.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrank(by: usize) {
    LIVE.fetch_sub(by, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds the
// `GlobalAlloc` contract; the wrapper only adds and subtracts sizes in two atomics (which
// never allocate), and only for requests the system allocator granted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this wrapper with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` through this wrapper with this `layout`; the
        // caller upholds the rest of `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // A growing vector is counted at its new size (not old plus new: the system
            // allocator may grow in place).
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The lock every test of this binary holds, so that nothing else allocates while a case
/// is measured.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the others still run.
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The counting meter: the peak of live bytes during the call, above those live before it.
struct Metered;

impl Meter for Metered {
    fn peak<T>(&mut self, f: impl FnOnce() -> T) -> (T, Option<usize>) {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let out = f();
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        (out, Some(peak))
    }
}

fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let (out, peak) = Metered.peak(f);
    (out, peak.unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// Seeds

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");

/// A well-formed file to mutate, with where the 8-byte counts and lengths of its header are.
#[derive(Debug)]
struct Seed {
    name: String,
    bytes: Vec<u8>,
    /// Offsets of the header's 8-byte counts of entries (tensors, metadata, array elements).
    counts: Vec<usize>,
    /// Offsets of its other 8-byte fields (string lengths, dimensions, data offsets).
    lengths: Vec<usize>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The offsets of the 8-byte fields of a well-formed GGUF header: its counts (of tensor
/// infos, metadata entries and array elements) and its lengths (of strings, dimensions and
/// data offsets).
fn gguf_fields(b: &[u8]) -> (Vec<usize>, Vec<usize>) {
    fn value(b: &[u8], at: &mut usize, ty: u32, out: &mut (Vec<usize>, Vec<usize>)) {
        match ty {
            0 | 1 | 7 => *at += 1,
            2 | 3 => *at += 2,
            4..=6 => *at += 4,
            10..=12 => *at += 8,
            8 => {
                out.1.push(*at);
                *at += 8 + u64_at(b, *at) as usize;
            }
            9 => {
                let elem = u32_at(b, *at);
                *at += 4;
                out.0.push(*at);
                let n = u64_at(b, *at);
                *at += 8;
                for _ in 0..n {
                    value(b, at, elem, out);
                }
            }
            other => panic!("value type {other} in a seed"),
        }
    }
    let mut out = (vec![8, 16], Vec::new());
    let mut at = 24;
    for _ in 0..u64_at(b, 16) {
        out.1.push(at);
        at += 8 + u64_at(b, at) as usize;
        let ty = u32_at(b, at);
        at += 4;
        value(b, &mut at, ty, &mut out);
    }
    for _ in 0..u64_at(b, 8) {
        out.1.push(at);
        at += 8 + u64_at(b, at) as usize;
        let dims = u32_at(b, at);
        at += 4;
        for _ in 0..dims {
            out.1.push(at);
            at += 8;
        }
        at += 4;
        out.1.push(at);
        at += 8;
    }
    out
}

fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i - start));
        } else {
            i += 1;
        }
    }
    runs
}

impl Seed {
    fn gguf(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        let (counts, lengths) = gguf_fields(&bytes);
        Self {
            name: name.into(),
            bytes,
            counts,
            lengths,
        }
    }

    /// A safetensors file: its one binary count is the header's length (the numbers of its
    /// JSON are found by `Mutation::Number` in whatever the file has become).
    fn safetensors(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            bytes,
            counts: vec![0],
            lengths: Vec::new(),
        }
    }
}

fn read_dir(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(CORPUS).join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                format!("{sub}/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Weights and the start of the MiniLM file: see [`minilm`].
type MinilmRows = (Vec<f32>, Vec<u8>);

/// Rows 0..64 of one MiniLM weight matrix (64 × 384 real weights), and the first bytes of
/// the MiniLM file itself (its real safetensors header and the start of its data).
/// `Err` says why there are none.
fn minilm() -> Result<&'static MinilmRows, String> {
    static MINILM: OnceLock<Result<MinilmRows, String>> = OnceLock::new();
    MINILM
        .get_or_init(|| {
            let bytes = std::fs::read(testdata::minilm_path()?).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let view = st.tensor("encoder.layer.0.attention.self.query.weight").unwrap();
            assert_eq!(view.shape(), [384, 384]);
            let w = view.data()[..64 * 384 * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let head = bytes[..(8 + u64_at(&bytes, 0) as usize + 4096).min(bytes.len())].to_vec();
            Ok((w, head))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A GGUF file (written by candle's writer) whose tensor data (200 KiB) dwarfs its header:
/// a reader that reserves from a count in the header, bounded only by the file's size, is
/// seen here. Its metadata has a string array and a nested array, so that array lengths
/// can be mutated too.
fn big_gguf(x: &[f32], rows: usize) -> Vec<u8> {
    use gguf_file::Value;
    let dev = candle_core::Device::Cpu;
    let t = candle_core::Tensor::from_slice(x, (rows, x.len() / rows), &dev).unwrap();
    let q8 = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
    let q4 = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
    // The other block types, on 4 rows of 256 values each.
    let rows4 = candle_core::Tensor::from_slice(&x[..1024], (4, 256), &dev).unwrap();
    let others: Vec<(String, QTensor)> = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q6K]
        .into_iter()
        .map(|d| (format!("{d:?}").to_lowercase(), QTensor::quantize(&rows4, d).unwrap()))
        .collect();
    let words: Vec<Value> = (0..48).map(|i| Value::String(format!("token{i}"))).collect();
    let nested = Value::Array(vec![Value::Array(vec![Value::U32(1), Value::U32(2)]); 8]);
    let meta = [
        ("general.architecture", Value::String("aihal-test".into())),
        ("tokenizer.tokens", Value::Array(words)),
        ("test.nested", nested),
        ("test.count", Value::U64(7)),
    ];
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = Cursor::new(Vec::new());
    let mut tensors = vec![("q8", &q8), ("q4", &q4)];
    tensors.extend(others.iter().map(|(n, q)| (n.as_str(), q)));
    gguf_file::write(&mut out, &meta, &tensors).unwrap();
    out.into_inner()
}

fn synthetic_big_gguf() -> Vec<u8> {
    big_gguf(&Rng::new(7).normals(64 * 1536), 64)
}

fn gguf_seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Seed> = read_dir("gguf").into_iter().map(|(n, b)| Seed::gguf(n, b)).collect();
        seeds.push(Seed::gguf("big.gguf (built here)", synthetic_big_gguf()));
        seeds
    })
}

/// The MiniLM seeds of every kind: GGUF, safetensors and bitsandbytes files built here from
/// real weights, and the start of the MiniLM file itself. `Err` says why there are none.
fn minilm_seeds() -> Result<&'static MinilmSeeds, String> {
    static SEEDS: OnceLock<Result<MinilmSeeds, String>> = OnceLock::new();
    SEEDS
        .get_or_init(|| {
            let (w, head) = minilm()?;
            Ok(MinilmSeeds {
                gguf: vec![Seed::gguf("MiniLM Q8_0/Q4_0 (built here)", big_gguf(w, 64))],
                safetensors: minilm_safetensors_seeds(w, head),
                bnb: vec![minilm_bnb_seed(w)],
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// See [`minilm_seeds`].
struct MinilmSeeds {
    gguf: Vec<Seed>,
    safetensors: Vec<Seed>,
    bnb: Vec<Seed>,
}

/// The real GGUF models of `.testdata/gguf` cut down to seeds (`real_gguf_head`). `Err`
/// says which is missing.
fn model_seeds() -> Result<&'static [Seed], String> {
    static SEEDS: OnceLock<Result<Vec<Seed>, String>> = OnceLock::new();
    SEEDS
        .get_or_init(|| {
            [testdata::SMOLLM2, testdata::GEMMA3]
                .into_iter()
                .map(|name| {
                    let bytes = real_gguf_head(&testdata::gguf_path(name)?);
                    Ok(Seed::gguf(format!("{name}: its header and small tensors"), bytes))
                })
                .collect()
        })
        .as_deref()
        .map_err(Clone::clone)
}

/// Elements kept of each metadata array of a real model's header (its tokenizer's tokens,
/// scores, types and merges have tens of thousands): the first ones, special tokens among
/// them, are representative of the rest, and parsing all of them took a debug build about
/// 0.1 s a mutated case.
const REAL_ARRAY_PREFIX: u64 = 512;

/// The GGUF header prefix `b` (magic, version, counts and metadata entries, as far as the
/// end of the metadata) with every metadata array cut to its first `max` elements, the
/// rest of every entry byte for byte.
fn cut_arrays(b: &[u8], max: u64) -> Vec<u8> {
    /// The end of the value of type `ty` at `at`.
    fn end(b: &[u8], at: usize, ty: u32) -> usize {
        match ty {
            0 | 1 | 7 => at + 1,
            2 | 3 => at + 2,
            4..=6 => at + 4,
            10..=12 => at + 8,
            8 => at + 8 + u64_at(b, at) as usize,
            9 => {
                let elem = u32_at(b, at);
                (0..u64_at(b, at + 4)).fold(at + 12, |at, _| end(b, at, elem))
            }
            other => panic!("value type {other} in a seed"),
        }
    }
    let mut out = b[..24].to_vec();
    let mut at = 24;
    for _ in 0..u64_at(b, 16) {
        let key_end = at + 8 + u64_at(b, at) as usize;
        let ty = u32_at(b, key_end);
        let value = key_end + 4;
        out.extend(&b[at..value]);
        if ty == 9 {
            let elem = u32_at(b, value);
            let n = u64_at(b, value + 4);
            out.extend(elem.to_le_bytes());
            out.extend(n.min(max).to_le_bytes());
            at = value + 12;
            for i in 0..n {
                let next = end(b, at, elem);
                if i < max {
                    out.extend(&b[at..next]);
                }
                at = next;
            }
        } else {
            at = end(b, value, ty);
            out.extend(&b[value..at]);
        }
    }
    assert_eq!(at, b.len(), "the metadata ends where the tensor infos start");
    out
}

/// Bytes kept of each tensor of a real model's seed: whole rows, at least one. Whole
/// tensors of up to 1 MiB cost a debug build about 0.06 s a mutated case to dequantize.
const REAL_TENSOR_BYTES: usize = 16 << 10;

/// A real GGUF model of `.testdata/gguf`, cut down to a seed: the bytes of its header up to
/// the end of the metadata (the real metadata: architecture, tokenizer vocabulary and
/// merges), every array cut to its first `REAL_ARRAY_PREFIX` elements, then the infos and
/// the data, as stored, of a few small tensors of each type (two of at most 1 MiB per
/// type), each cut to its first rows (`REAL_TENSOR_BYTES`), re-laid out at the file's
/// alignment.
fn real_gguf_head(path: &Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    let gguf = GgufFile::read(&mut f).unwrap();
    let align = u64::from(gguf.alignment());
    let mut head = vec![0u8; usize::try_from(gguf.data_offset()).unwrap()];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut head).unwrap();
    let info_len = |t: &aihal_quantize::GgufTensorInfo| 8 + t.name().len() + 4 + 8 * t.shape().len() + 4 + 8;
    let infos: usize = gguf.tensors().iter().map(info_len).sum();
    // The header ends within one alignment before the data; the metadata ends where the
    // first tensor info (its name's length, then its name) starts.
    let first = &gguf.tensors()[0];
    let meta_end = (0..align as usize)
        .map(|pad| head.len() - pad - infos)
        .find(|&at| {
            head[at..at + 8] == (first.name().len() as u64).to_le_bytes()
                && &head[at + 8..at + 8 + first.name().len()] == first.name().as_bytes()
        })
        .expect("the first tensor info");
    let mut chosen: Vec<&aihal_quantize::GgufTensorInfo> = Vec::new();
    for t in gguf.tensors() {
        let small = t.byte_len().is_some_and(|n| n <= 1 << 20);
        if small && chosen.iter().filter(|c| c.ggml_type() == t.ggml_type()).count() < 2 {
            chosen.push(t);
        }
    }
    let mut out = cut_arrays(&head[..meta_end], REAL_ARRAY_PREFIX);
    out[8..16].copy_from_slice(&(chosen.len() as u64).to_le_bytes());
    let mut offset = 0u64;
    let mut data = Vec::new();
    for t in &chosen {
        let bytes = gguf.read_raw(&mut f, t.name()).unwrap();
        // Its first rows (outermost slices), up to REAL_TENSOR_BYTES of them.
        let mut shape = t.shape().to_vec();
        let slice = bytes.len() / shape[0];
        shape[0] = (REAL_TENSOR_BYTES / slice).clamp(1, shape[0]);
        let bytes = &bytes[..shape[0] * slice];
        out.extend((t.name().len() as u64).to_le_bytes());
        out.extend(t.name().as_bytes());
        out.extend((shape.len() as u32).to_le_bytes());
        for &d in shape.iter().rev() {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.ggml_type().id().to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (bytes.len() as u64).next_multiple_of(align);
        data.extend(bytes);
        data.resize(data.len().next_multiple_of(align as usize), 0);
    }
    out.resize(out.len().next_multiple_of(align as usize), 0);
    out.extend(data);
    out
}

/// Small tensors of every format (the corpus file `safetensors/all_formats.safetensors`).
fn all_formats_file(rng: &mut Rng) -> Vec<u8> {
    let tensors: Vec<QuantizedTensor> = all_formats()
        .into_iter()
        .map(|f| quantize(f, &rng.normals(256), &[1, 256]).unwrap())
        .collect();
    let names: Vec<String> = (0..tensors.len()).map(|i| format!("t{i}")).collect();
    let refs: Vec<(&str, &QuantizedTensor)> = names.iter().map(String::as_str).zip(&tensors).collect();
    to_safetensors_bytes(&refs).unwrap()
}

/// int8 and FP8 tensors with a scale for every value, so that most of the file is f32
/// scales (the corpus file `safetensors/scales.safetensors`).
fn scales_file(rng: &mut Rng) -> Vec<u8> {
    let formats = [
        QuantFormat::Int8PerBlock { block_size: 1 },
        QuantFormat::Fp8E4M3 { block_size: Some(1) },
        QuantFormat::Fp8E5M2 { block_size: Some(1) },
        QuantFormat::Int8PerChannel,
    ];
    let tensors: Vec<QuantizedTensor> = formats
        .iter()
        .map(|&f| {
            let shape: &[usize] = if f == QuantFormat::Int8PerChannel {
                &[48, 2]
            } else {
                &[4, 24]
            };
            quantize(f, &rng.normals(96), shape).unwrap()
        })
        .collect();
    let names = ["int8", "e4m3", "e5m2", "int8_rows"];
    let refs: Vec<(&str, &QuantizedTensor)> = names.into_iter().zip(&tensors).collect();
    to_safetensors_bytes(&refs).unwrap()
}

fn nf4_dq() -> QuantFormat {
    QuantFormat::Nf4 {
        block_size: 64,
        double_quant: true,
    }
}

/// A double-quantized NF4 weight in bitsandbytes' layout, written by our writer (the corpus
/// file `bnb/dq.safetensors`; `bnb/bnb_b32_odd.safetensors` is a file bitsandbytes wrote).
fn bnb_dq_file(rng: &mut Rng) -> Vec<u8> {
    let t = quantize(nf4_dq(), &rng.normals(512), &[8, 64]).unwrap();
    bnb::to_safetensors_bytes(&[("w", &t)], "bfloat16").unwrap()
}

fn safetensors_seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        read_dir("safetensors")
            .into_iter()
            .map(|(n, b)| Seed::safetensors(n, b))
            .collect()
    })
}

/// A safetensors file of every family from MiniLM weights, and the MiniLM file's own header.
fn minilm_safetensors_seeds(w: &[f32], head: &[u8]) -> Vec<Seed> {
    let shape = [64, 384];
    let formats = [
        nf4_dq(),
        QuantFormat::Q8_0,
        QuantFormat::Int8PerBlock { block_size: 32 },
        QuantFormat::Fp8E4M3 { block_size: Some(128) },
        QuantFormat::Ternary,
    ];
    let ts: Vec<QuantizedTensor> = formats.iter().map(|&f| quantize(f, w, &shape).unwrap()).collect();
    let names = ["nf4", "q8_0", "int8", "fp8", "ternary"];
    let refs: Vec<(&str, &QuantizedTensor)> = names.into_iter().zip(&ts).collect();
    vec![
        Seed::safetensors(
            "MiniLM, every family (built here)",
            to_safetensors_bytes(&refs).unwrap(),
        ),
        Seed::safetensors("MiniLM's own header", head.to_vec()),
    ]
}

fn bnb_seeds() -> &'static [Seed] {
    static SEEDS: OnceLock<Vec<Seed>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        read_dir("bnb")
            .into_iter()
            .map(|(n, b)| Seed::safetensors(n, b))
            .collect()
    })
}

/// MiniLM weights in bitsandbytes' layout.
fn minilm_bnb_seed(w: &[f32]) -> Seed {
    let plain = QuantFormat::Nf4 {
        block_size: 64,
        double_quant: false,
    };
    let a = quantize(nf4_dq(), w, &[64, 384]).unwrap();
    let b = quantize(plain, w, &[64, 384]).unwrap();
    let bytes = bnb::to_safetensors_bytes(&[("q.weight", &a), ("k.weight", &b)], "float16").unwrap();
    Seed::safetensors("MiniLM in bitsandbytes' layout (built here)", bytes)
}

// ---------------------------------------------------------------------------------------
// Mutations

/// A value written over an 8-byte count or length.
#[derive(Clone, Debug)]
enum Count {
    Max,
    Pow2(u32),
    Any(u64),
    /// The file's length divided by this: a count that still "fits" the file.
    FileOver(u8),
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Byte(Index, u8),
    /// Overwrite one of the header's 8-byte counts of entries (`true`, where it has some) or
    /// one of its 8-byte lengths.
    Count(Index, bool, Count),
    /// Overwrite 4 bytes at a multiple of 4 with an f32 (huge, tiny, non-finite).
    Scale(Index, f32),
    /// Replace one decimal number of a JSON header (a shape, an offset, a block size).
    /// Half of the time one of a bitsandbytes `quant_state`'s numbers, where there is one.
    Number(Index, bool, &'static str),
    /// Cut the file.
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Half of the values still fit the file at some entry size, the ones that only a
    // reader reserving from a count (bounded by the file's size) would act on.
    let count = prop_oneof![
        1 => Just(Count::Max),
        1 => (20u32..64).prop_map(Count::Pow2),
        1 => any::<u64>().prop_map(Count::Any),
        3 => prop::sample::select(vec![1u8, 2, 8, 12, 13, 16, 24, 32, 48, 64]).prop_map(Count::FileOver),
    ];
    let scale = prop::sample::select(vec![3e38f32, -3e38, f32::MAX, 1e30, f32::INFINITY, f32::NAN, 1e-40]);
    let number = prop::sample::select(vec![
        "18446744073709551615",
        "18446744073709551616",
        "4294967296",
        "1099511627776",
        "9007199254740993",
        "100000000000000000000000",
        "1e300",
        "0",
        "-1",
    ]);
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        3 => (any::<Index>(), any::<bool>(), count).prop_map(|(i, k, c)| Mutation::Count(i, k, c)),
        2 => (any::<Index>(), scale).prop_map(|(i, s)| Mutation::Scale(i, s)),
        2 => (any::<Index>(), any::<bool>(), number).prop_map(|(i, s, n)| Mutation::Number(i, s, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutations() -> impl Strategy<Value = (Index, Vec<Mutation>)> {
    (any::<Index>(), prop::collection::vec(mutation(), 1..3))
}

fn apply(seed: &Seed, muts: &[Mutation]) -> Vec<u8> {
    let mut b = seed.bytes.clone();
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, bit) => {
                let at = i.index(b.len());
                b[at] ^= 1 << bit;
            }
            Mutation::Byte(i, v) => {
                let at = i.index(b.len());
                b[at] = *v;
            }
            Mutation::Count(i, counts, c) => {
                let list = if *counts || seed.lengths.is_empty() {
                    &seed.counts
                } else {
                    &seed.lengths
                };
                let fields: Vec<usize> = list.iter().copied().filter(|&at| at + 8 <= b.len()).collect();
                let at = if fields.is_empty() {
                    if b.len() < 8 {
                        continue;
                    }
                    i.index(b.len() - 7)
                } else {
                    fields[i.index(fields.len())]
                };
                let v = match *c {
                    Count::Max => u64::MAX,
                    Count::Pow2(s) => 1 << s,
                    Count::Any(v) => v,
                    Count::FileOver(d) => b.len() as u64 / u64::from(d),
                };
                b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            Mutation::Scale(i, s) => {
                // Into an F32 entry of a safetensors file where there is one (its scales),
                // else anywhere at a multiple of 4.
                let slots = f32_slots(&b);
                let at = if slots.is_empty() {
                    if b.len() < 4 {
                        continue;
                    }
                    i.index(b.len() / 4) * 4
                } else {
                    slots[i.index(slots.len())]
                };
                b[at..at + 4].copy_from_slice(&s.to_le_bytes());
            }
            Mutation::Number(i, state, digits) => inflate_number(&mut b, *i, *state, digits),
            Mutation::Truncate(i) => {
                let len = i.index(b.len());
                b.truncate(len);
            }
        }
    }
    b
}

/// The offsets of the f32 values in the F32 entries of a safetensors file (none if `b` is
/// not one).
fn f32_slots(b: &[u8]) -> Vec<usize> {
    let Ok(st) = safetensors::SafeTensors::deserialize(b) else {
        return Vec::new();
    };
    let start = b.as_ptr() as usize;
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .flat_map(|(_, v)| {
            let at = v.data().as_ptr() as usize - start;
            (0..v.data().len() / 4).map(move |k| at + 4 * k)
        })
        .collect()
}

/// Replaces one decimal number of a safetensors file's JSON (its header, including the
/// aihal metadata strings, or a bitsandbytes `quant_state` entry) with `digits`, keeping the
/// file otherwise consistent: the header's stated length follows a change in the header,
/// and a changed `quant_state` entry is written back with the other entries around it.
/// Other files are left as they are.
fn inflate_number(b: &mut Vec<u8>, i: Index, prefer_state: bool, digits: &str) {
    let Some(header) = b
        .get(..8)
        .map(|h| u64::from_le_bytes(h.try_into().unwrap()))
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= b.len())
    else {
        return;
    };
    let mut targets: Vec<(Option<String>, usize, usize)> = digit_runs(&b[8..header])
        .into_iter()
        .map(|(s, n)| (None, s + 8, n))
        .collect();
    if let Ok(st) = safetensors::SafeTensors::deserialize(b) {
        for (name, view) in st.tensors() {
            if name.ends_with(".quant_state.bitsandbytes__nf4") {
                let runs = digit_runs(view.data());
                targets.extend(runs.into_iter().map(|(s, n)| (Some(name.clone()), s, n)));
            }
        }
    }
    if prefer_state && targets.iter().any(|t| t.0.is_some()) {
        targets.retain(|t| t.0.is_some());
    }
    if targets.is_empty() {
        return;
    }
    match &targets[i.index(targets.len())] {
        (None, start, n) => {
            b.splice(*start..start + n, digits.bytes());
            let new_len = (header - 8 + digits.len() - n) as u64;
            b[..8].copy_from_slice(&new_len.to_le_bytes());
        }
        (Some(entry), start, n) => {
            let st = safetensors::SafeTensors::deserialize(b).unwrap();
            let mut state = st.tensor(entry).unwrap().data().to_vec();
            state.splice(*start..start + n, digits.bytes());
            *b = replace_entry(b, entry, &state);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The property tests: the fuzz bodies over arbitrary bytes and mutated real files.

fn arbitrary_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

/// Runs `body` on `cases` values of `strategy` (shrinking a failure as `proptest!` does),
/// holding the lock of this binary.
fn property<S: Strategy>(cases: u32, strategy: S, body: impl Fn(S::Value)) {
    let _serial = serial();
    let config = Config {
        failure_persistence: None,
        ..Config::with_cases(cases)
    };
    TestRunner::new(config)
        .run(&strategy, |v| {
            body(v);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `cases` mutated files of `seeds` handed to `load` (a fuzz target's body).
fn mutated(cases: u32, seeds: &[Seed], load: fn(&[u8], &mut Metered)) {
    property(cases, mutations(), |(which, muts)| {
        let seed = &seeds[which.index(seeds.len())];
        load(&apply(seed, &muts), &mut Metered);
    });
}

fn gguf_reader_on_arbitrary_bytes() {
    // Past the magic and the version half of the time, so the counts are reached.
    property(128, (arbitrary_bytes(), any::<bool>()), |(bytes, prefixed)| {
        let bytes = if prefixed {
            [&b"GGUF\x03\0\0\0"[..], &bytes].concat()
        } else {
            bytes
        };
        bodies::gguf_own(&bytes, &mut Metered);
    });
}

fn packed_parts_from_arbitrary_bytes() {
    property(256, prop::collection::vec(any::<u8>(), 0..1536), |bytes| {
        bodies::packed_parts(&bytes, &mut Metered);
    });
}

fn gguf_own(b: &[u8], m: &mut Metered) {
    bodies::gguf_own(b, m);
}

fn safetensors_load(b: &[u8], m: &mut Metered) {
    bodies::safetensors_load(b, m);
}

fn bnb_load(b: &[u8], m: &mut Metered) {
    bodies::bnb_load(b, m);
}

fn main() {
    use testdata::{test, with_data};
    let mut trials = vec![
        test("gguf_reader_on_arbitrary_bytes", gguf_reader_on_arbitrary_bytes),
        test("safetensors_loader_on_arbitrary_bytes", || {
            property(128, arbitrary_bytes(), |b| safetensors_load(&b, &mut Metered));
        }),
        test("bnb_loader_on_arbitrary_bytes", || {
            property(128, arbitrary_bytes(), |b| bnb_load(&b, &mut Metered));
        }),
        test("packed_parts_from_arbitrary_bytes", packed_parts_from_arbitrary_bytes),
        test("gguf_reader_on_mutated_files", || mutated(256, gguf_seeds(), gguf_own)),
        test("safetensors_loader_on_mutated_files", || {
            mutated(256, safetensors_seeds(), safetensors_load);
        }),
        test("bnb_loader_on_mutated_files", || mutated(256, bnb_seeds(), bnb_load)),
        with_data("gguf_reader_on_mutated_minilm_files", minilm_seeds, |s| {
            mutated(64, &s.gguf, gguf_own);
        }),
        with_data("safetensors_loader_on_mutated_minilm_files", minilm_seeds, |s| {
            mutated(64, &s.safetensors, safetensors_load);
        }),
        with_data("bnb_loader_on_mutated_minilm_files", minilm_seeds, |s| {
            mutated(64, &s.bnb, bnb_load);
        }),
        with_data("gguf_reader_on_mutated_real_model_headers", model_seeds, |s| {
            mutated(64, s, gguf_own);
        }),
        test(
            "the_meter_sees_an_allocation_and_the_bounds_can_fail",
            the_meter_sees_an_allocation_and_the_bounds_can_fail,
        ),
        test("every_seed_loads_unmutated", || {
            every_seed_loads_unmutated(gguf_seeds(), safetensors_seeds(), bnb_seeds());
        }),
        with_data("every_minilm_seed_loads_unmutated", minilm_seeds, |s| {
            every_seed_loads_unmutated(&s.gguf, &s.safetensors, &s.bnb);
        }),
        with_data("every_real_model_seed_loads_unmutated", model_seeds, |s| {
            every_seed_loads_unmutated(s, &[], &[]);
        }),
        test(
            "bnb_inflated_quant_state_shape_is_an_error_not_an_allocation",
            bnb_inflated_quant_state_shape_is_an_error_not_an_allocation,
        ),
        test(
            "gguf_count_that_fits_the_file_reserves_nothing",
            gguf_count_that_fits_the_file_reserves_nothing,
        ),
        test(
            "huge_int8_and_fp8_scales_are_refused",
            huge_int8_and_fp8_scales_are_refused,
        ),
        test("gguf_worst_case_headers", gguf_worst_case_headers),
        test("safetensors_worst_case_headers", safetensors_worst_case_headers),
        with_data(
            "walking_a_real_model_holds_one_tensor_at_a_time",
            || testdata::gguf_path(testdata::SMOLLM2),
            |path| walking_a_real_model_holds_one_tensor_at_a_time(&path),
        ),
    ];
    trials.push(test("write_seed_corpus", write_seed_corpus).with_ignored_flag(true));
    testdata::run_one_at_a_time(trials);
}

// ---------------------------------------------------------------------------------------
// The meter itself, and the seeds

fn the_meter_sees_an_allocation_and_the_bounds_can_fail() {
    let _serial = serial();
    let (v, peak) = measured(|| vec![1u8; 300_000]);
    assert!(peak >= 300_000, "{peak}");
    drop(v);
    let ((), peak) = measured(|| drop(vec![0u64; 1000]));
    assert!(
        (8000..8000 + 1024).contains(&peak),
        "freed memory still counts at its peak: {peak}"
    );
    // The expected panic, without its message and backtrace on stderr.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failed = std::panic::catch_unwind(|| bodies::within("a test", Some(2), 1, 1));
    std::panic::set_hook(hook);
    assert!(failed.is_err(), "a peak above its bound fails");
}

/// Every seed given loads as it is, through the reader and through its fuzz body.
fn every_seed_loads_unmutated(gguf: &[Seed], safetensors: &[Seed], bnb: &[Seed]) {
    let _serial = serial();
    for seed in gguf {
        let f = GgufFile::read(&mut Cursor::new(&seed.bytes)).unwrap_or_else(|e| panic!("{}: {e}", seed.name));
        assert!(!f.tensors().is_empty(), "{}", seed.name);
        bodies::gguf_own(&seed.bytes, &mut Metered);
    }
    for seed in safetensors {
        if seed.name.contains("MiniLM's own header") {
            continue; // a plain (not aihal) file, cut short: an error is its answer
        }
        let ts = from_safetensors_bytes(&seed.bytes).unwrap_or_else(|e| panic!("{}: {e}", seed.name));
        assert!(!ts.is_empty(), "{}", seed.name);
        bodies::safetensors_load(&seed.bytes, &mut Metered);
    }
    for seed in bnb {
        let names = bnb::nf4_weight_names(&seed.bytes).unwrap();
        assert!(!names.is_empty(), "{}", seed.name);
        for n in &names {
            bnb::load_nf4(&seed.bytes, n).unwrap_or_else(|e| panic!("{} {n}: {e}", seed.name));
        }
        bodies::bnb_load(&seed.bytes, &mut Metered);
    }
    // The big GGUF seed is what makes a count-driven reservation visible: its data section
    // is most of the file.
    let Some(big) = gguf.iter().find(|s| s.name.starts_with("big.gguf")) else {
        return;
    };
    let big = &big.bytes;
    let header = GgufFile::read(&mut Cursor::new(big)).unwrap().data_offset() as usize;
    assert!(big.len() > 40 * header, "{} bytes, header {header}", big.len());
}

/// Writes the seed corpus (`tests/corpus/`) from this file's generators. The bitsandbytes
/// file and the two GGUF files are copies of `tests/fixtures` files written by
/// bitsandbytes and by the `gguf` package; they are not regenerated here.
/// Ignored: it rewrites tests/corpus; run by hand (`--ignored write_seed_corpus`) after
/// changing a generator.
fn write_seed_corpus() {
    let _serial = serial();
    let mut rng = Rng::new(2026);
    let dir = Path::new(CORPUS);
    std::fs::write(
        dir.join("safetensors/all_formats.safetensors"),
        all_formats_file(&mut rng),
    )
    .unwrap();
    std::fs::write(dir.join("safetensors/scales.safetensors"), scales_file(&mut rng)).unwrap();
    std::fs::write(dir.join("bnb/dq.safetensors"), bnb_dq_file(&mut rng)).unwrap();
    std::fs::write(dir.join("gguf/blocks.gguf"), blocks_gguf(&mut rng)).unwrap();
}

/// One 1 × 256 tensor of every GGML block type candle has, in a GGUF file written by
/// candle's writer (the corpus file `gguf/blocks.gguf`): our bytes, handed to candle as
/// they are.
fn blocks_gguf(rng: &mut Rng) -> Vec<u8> {
    let tensors: Vec<(String, QTensor)> = all_formats()
        .into_iter()
        .filter_map(|f| {
            let q = quantize(f, &rng.normals(256), &[1, 256]).ok()?.to_qtensor().ok()?;
            Some((f.name().to_owned(), q))
        })
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &[], &refs).unwrap();
    out.into_inner()
}

// ---------------------------------------------------------------------------------------
// Regression tests: the inputs an outside mutation campaign found

/// Rewrites a safetensors file with entry `name`'s bytes replaced.
fn replace_entry(bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let entries: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            if n == name {
                (n, v.dtype(), vec![data.len()], data.to_vec())
            } else {
                (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = entries
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// A bitsandbytes NF4 file whose `quant_state` shape is inflated (the campaign's 12 KB file
/// made `load_nf4` request 13 GB and abort): a `ShapeMismatch` naming the weight and both
/// lengths, with nothing allocated from the shape.
fn bnb_inflated_quant_state_shape_is_an_error_not_an_allocation() {
    let _serial = serial();
    let t = quantize(nf4_dq(), &Rng::new(3).normals(48 * 64), &[48, 64]).unwrap();
    let good = bnb::to_safetensors_bytes(&[("w", &t)], "bfloat16").unwrap();
    // 48 × 2^32 values: 12.9 GB of f32 scales (the campaign's case); 48 × 2^56: more than
    // any machine has; 3 × (2^64 - 1) / 3: usize::MAX values, a "capacity overflow".
    for shape in [
        "[48, 4294967296]",
        "[48, 72057594037927936]",
        "[3, 6148914691236517205]",
    ] {
        let state = format!(
            r#"{{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": {shape}, "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": {}}}"#,
            t.nested().unwrap().offset
        );
        let bad = replace_entry(&good, "w.quant_state.bitsandbytes__nf4", state.as_bytes());
        let (r, peak) = measured(|| bnb::load_nf4(&bad, "w"));
        let err = r.unwrap_err();
        assert!(matches!(err, CoreError::ShapeMismatch { .. }), "{shape}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("bitsandbytes weight \"w\"") && msg.contains("packed bytes"),
            "{msg}"
        );
        assert!(
            peak <= BNB_FACTOR * bad.len() + SLACK,
            "{shape}: {peak} bytes held for a {}-byte file",
            bad.len()
        );
        bodies::bnb_load(&bad, &mut Metered);
    }
    // The same shape through the constructor directly: no "capacity overflow" panic.
    for shape in [vec![1usize << 40, 1 << 10], vec![usize::MAX / 2, 2], vec![usize::MAX]] {
        let data = t.data().to_vec();
        let nested = t.nested().unwrap().clone();
        let (r, peak) = measured(|| QuantizedTensor::from_nested(nf4_dq(), shape.clone(), data, nested));
        let err = r.unwrap_err();
        assert!(
            matches!(err, CoreError::ShapeMismatch { .. } | CoreError::InvalidInput(_)),
            "{shape:?}: {err:?}"
        );
        assert!(peak <= SLACK, "{shape:?}: {peak} bytes");
    }
    // Consistent lengths still assemble, and the codes' length is checked before the
    // shape's scales are decoded.
    let ok = QuantizedTensor::from_nested(nf4_dq(), vec![48, 64], t.data().to_vec(), t.nested().unwrap().clone());
    assert_eq!(ok.unwrap(), t);
    let mut short = t.nested().unwrap().clone();
    short.codes.pop();
    let err = QuantizedTensor::from_nested(nf4_dq(), vec![48, 64], t.data().to_vec(), short).unwrap_err();
    assert!(
        err.to_string().contains("expected [48, 1, 256], got [47, 1, 256]"),
        "{err}"
    );
}

/// One changed 8-byte count (of metadata entries, of tensor infos, of an array's elements)
/// in a file much larger than its header: an error, with memory bounded by the bytes the
/// reader read, which here is far less than the file. (The campaign's 253 MB file made the
/// reader reserve 2.5 GB before returning its error.)
fn gguf_count_that_fits_the_file_reserves_nothing() {
    let _serial = serial();
    let good = synthetic_big_gguf();
    let len = good.len() as u64;
    let (counts, _) = gguf_fields(&good);
    // tensor count, metadata count, then the tokens array's length (the 3rd field after
    // the key length and the string value of "general.architecture").
    let tokens_len = counts.iter().copied().find(|&at| u64_at(&good, at) == 48).unwrap();
    // The largest counts the size checks let through: what the rest of the file could hold
    // at the smallest entry size (13 bytes a metadata entry, 24 a tensor info, 8 a string),
    // beside the other section's entries at their smallest.
    let left = |after: usize| (good.len() - after) as u64;
    for (what, at, value) in [
        ("metadata count", 16, (left(24) - 2 * 24) / 13),
        ("tensor count", 8, (left(24) - 4 * 13) / 24),
        ("tokens array length", tokens_len, left(tokens_len + 8) / 8),
        ("metadata count, u64::MAX", 16, u64::MAX),
    ] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let mut r = Tracked::new(&bad);
        let (result, peak) = measured(|| GgufFile::read(&mut r));
        let err = result.unwrap_err();
        assert!(matches!(err, CoreError::InvalidInput(_)), "{what}: {err:?}");
        assert!(err.to_string().contains("GGUF file, byte"), "{what}: {err}");
        let read = r.furthest();
        assert!(
            peak <= GGUF_HEADER_FACTOR * read + SLACK,
            "{what}: {peak} bytes held after reading {read} of {len} bytes"
        );
        assert!(
            (peak as u64) < len / 4,
            "{what}: {peak} bytes held for a {len}-byte file"
        );
    }
}

/// int8 and FP8 tensors whose scales are finite but huge: loading is an error naming the
/// tensor and the scale, where dequantizing would give ±inf. Scales that cannot overflow
/// with the codes present still load.
fn huge_int8_and_fp8_scales_are_refused() {
    let _serial = serial();
    let x = Rng::new(5).normals(4 * 24);
    for format in [
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 8 },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E4M3 { block_size: Some(8) },
        QuantFormat::Fp8E5M2 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(8) },
    ] {
        let q = quantize(format, &x, &[4, 24]).unwrap();
        let (f, shape, data, mut scales) = q.clone().into_parts();
        let i = scales.len() - 1;
        scales[i] = 3e38;
        let bad = QuantizedTensor::from_parts(f, shape.clone(), data.clone(), scales.clone()).unwrap();
        let y = dequantize(&bad).unwrap();
        assert!(y.iter().any(|v| v.is_infinite()), "{format}: the scale does overflow");
        let err = bad.validate_values().unwrap_err();
        assert!(
            err.to_string().contains(&format!("scale {i} is 3e38")),
            "{format}: {err}"
        );
        let file = to_safetensors_bytes(&[("w", &bad)]).unwrap();
        let err = from_safetensors_bytes(&file).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("tensor \"w\"") && msg.contains(&format!("scale {i} is 3e38")) && msg.contains("overflows"),
            "{format}: {msg}"
        );
        // The same scale over codes that are all 0 cannot overflow: it loads.
        let zeros = QuantizedTensor::from_parts(f, shape.clone(), vec![0; data.len()], scales.clone()).unwrap();
        zeros.validate_values().unwrap();
        // A large scale that stays finite with the largest code loads and dequantizes.
        scales[i] = 1e30;
        let big = QuantizedTensor::from_parts(f, shape, data, scales).unwrap();
        big.validate_values().unwrap();
        assert!(dequantize(&big).unwrap().iter().all(|v| v.is_finite()), "{format}");
    }
    // int8's code -128 (never written by the quantizer, possible in a file) is counted:
    // f32::MAX / 127.5 is safe for 127 and not for -128.
    let s = f32::MAX / 127.5;
    let t = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![1, 2], vec![127, 0x80], vec![s]).unwrap();
    let err = t.validate_values().unwrap_err();
    assert!(err.to_string().contains("code -128 of value 1"), "{err}");
    let t = QuantizedTensor::from_parts(QuantFormat::Int8PerChannel, vec![1, 2], vec![127, 0x81], vec![s]).unwrap();
    t.validate_values().unwrap();
}

// ---------------------------------------------------------------------------------------
// The worst headers for the stated bounds

/// A GGUF file written field by field.
struct B(Vec<u8>);

impl B {
    fn new(tensors: u64, kvs: u64) -> Self {
        let mut b = B(b"GGUF".to_vec());
        b.u32(3).u64(tensors).u64(kvs);
        b
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
}

/// Short distinct keys: `i` written in base 36.
fn key(mut i: usize) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from_digit((i % 36) as u32, 36).unwrap());
        i /= 36;
        if i == 0 {
            return s;
        }
    }
}

/// Headers made only of the entries that cost the most memory per byte of file, each
/// measured against `GGUF_HEADER_FACTOR` times what the reader read. These are the cases
/// the factor's reasoning is about; they must pass with every count honest.
fn gguf_worst_case_headers() {
    let _serial = serial();
    let n = 20_000;
    let mut kvs = B::new(0, n as u64);
    for i in 0..n {
        kvs.str(&key(i)).u32(0);
        kvs.0.push(0); // one uint8
    }
    let mut infos = B::new(n as u64, 0);
    for i in 0..n {
        infos.str(&key(i)).u32(0).u32(0).u64(0); // a scalar F32 at offset 0
    }
    infos.0.resize(infos.0.len().next_multiple_of(32) + 4, 0);
    let mut strings = B::new(0, 1);
    strings.str("k").u32(9).u32(8).u64(50_000);
    for _ in 0..50_000 {
        strings.u64(0);
    }
    let mut arrays = B::new(0, 1);
    arrays.str("k").u32(9).u32(9).u64(50_000);
    for _ in 0..50_000 {
        arrays.u32(0).u64(0);
    }
    let mut numbers = B::new(0, 1);
    numbers.str("k").u32(9).u32(12).u64(50_000);
    numbers.0.extend(vec![0; 8 * 50_000]);
    for (what, file) in [
        ("metadata entries", kvs),
        ("tensor infos", infos),
        ("empty strings", strings),
        ("empty arrays", arrays),
        ("float64s", numbers),
    ] {
        let mut r = Tracked::new(&file.0);
        let (result, peak) = measured(|| GgufFile::read(&mut r));
        result.unwrap_or_else(|e| panic!("{what}: {e}"));
        let read = r.furthest();
        let ratio = peak as f64 / read as f64;
        eprintln!("{what}: {peak} bytes held for {read} bytes read ({ratio:.1}x)");
        assert!(
            peak <= GGUF_HEADER_FACTOR * read + SLACK,
            "{what}: {peak} bytes held for {read} bytes read"
        );
    }
}

/// The JSON that costs the safetensors loaders the most memory per byte: long lists of
/// small numbers (a shape) in the aihal metadata and in bitsandbytes' `quant_state`, and
/// many small entries.
fn safetensors_worst_case_headers() {
    let _serial = serial();
    // An aihal tensor whose shape is 40 000 dimensions of 1 (numel 1).
    let t = quantize(QuantFormat::Int8PerChannel, &[0.5], &[1]).unwrap();
    let file = to_safetensors_bytes(&[("w", &t)]).unwrap();
    let meta_shape = format!("[{}]", vec!["1"; 40_000].join(","));
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let mut meta = std::collections::HashMap::new();
    meta.insert("aihal.quantize.version".to_owned(), "1".to_owned());
    meta.insert(
        "aihal.quantize.tensor.w".to_owned(),
        format!(r#"{{"format": "int8_channel", "block_size": null, "shape": {meta_shape}}}"#),
    );
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    let long_shape = safetensors::serialize(views, Some(meta)).unwrap();
    let (r, peak) = measured(|| from_safetensors_bytes(&long_shape));
    assert_eq!(r.unwrap()["w"].shape().len(), 40_000);
    eprintln!(
        "aihal shape of 40 000 dimensions: {peak} bytes for {} ({:.1}x)",
        long_shape.len(),
        peak as f64 / long_shape.len() as f64
    );
    assert!(peak <= SAFETENSORS_FACTOR * long_shape.len() + SLACK, "{peak}");

    // Many tiny entries.
    let many: Vec<QuantizedTensor> = (0..2000)
        .map(|_| quantize(QuantFormat::Q8_0, &[0.0; 32], &[32]).unwrap())
        .collect();
    let names: Vec<String> = (0..many.len()).map(key).collect();
    let refs: Vec<(&str, &QuantizedTensor)> = names.iter().map(String::as_str).zip(&many).collect();
    let file = to_safetensors_bytes(&refs).unwrap();
    let (r, peak) = measured(|| from_safetensors_bytes(&file));
    assert_eq!(r.unwrap().len(), 2000);
    eprintln!(
        "2000 tiny tensors: {peak} bytes for {} ({:.1}x)",
        file.len(),
        peak as f64 / file.len() as f64
    );
    assert!(peak <= SAFETENSORS_FACTOR * file.len() + SLACK, "{peak}");

    // bitsandbytes: a quant_state whose shape is 40 000 dimensions.
    let w = quantize(
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        &[0.5],
        &[1],
    )
    .unwrap();
    let good = bnb::to_safetensors_bytes(&[("w", &w)], "float32").unwrap();
    let state = format!(r#"{{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": {meta_shape}}}"#);
    let bad = replace_entry(&good, "w.quant_state.bitsandbytes__nf4", state.as_bytes());
    let (r, peak) = measured(|| bnb::load_nf4(&bad, "w"));
    assert_eq!(r.unwrap().tensor.shape().len(), 40_000);
    eprintln!(
        "bitsandbytes shape of 40 000 dimensions: {peak} bytes for {} ({:.1}x)",
        bad.len(),
        peak as f64 / bad.len() as f64
    );
    assert!(peak <= BNB_FACTOR * bad.len() + SLACK, "{peak}");
}

/// Walking a whole real model with `tensors_in` holds one tensor at a time: the peak of
/// live heap bytes during the walk (the header already parsed) stays within the largest
/// tensor plus a fixed allowance, far below the file's size, so a loader that consumes
/// the tensors as they come never holds a second copy of the file.
fn walking_a_real_model_holds_one_tensor_at_a_time(path: &Path) {
    let _serial = serial();
    let file_len = std::fs::metadata(path).unwrap().len() as usize;
    let mut f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let gguf = GgufFile::read(&mut f).unwrap();
    let largest = gguf
        .tensors()
        .iter()
        .filter_map(aihal_quantize::GgufTensorInfo::byte_len)
        .max()
        .unwrap() as usize;
    let (count, peak) = measured(|| {
        let mut count = 0;
        for item in gguf.tensors_in(&mut f) {
            let (_, data) = item.unwrap();
            count += usize::from(!data.shape().is_empty());
        }
        count
    });
    assert_eq!(count, gguf.tensors().len());
    eprintln!("tensors_in over a {file_len}-byte file: peak {peak} bytes, largest tensor {largest}");
    assert!(
        peak <= largest + SLACK,
        "the walk held {peak} bytes at once; the largest tensor has {largest}"
    );
    assert!(peak < file_len / 2, "{peak} bytes held for a {file_len}-byte file");
}
