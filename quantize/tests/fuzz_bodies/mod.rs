//! The bodies of the cargo-fuzz targets in `quantize/fuzz`, shared with the property tests
//! of `tests/hostile_files.rs` (each fuzz target includes this file with `#[path]`), so that
//! coverage-guided fuzzing and the ordinary test suite check the same promises on any input:
//!
//! - every deserializer answers an error or a result, never a panic;
//! - whatever loads is consistent (shapes as listed, lengths as described) and dequantizes
//!   to finite values;
//! - no reader allocates more than a stated multiple of what it was given (the `*_FACTOR`
//!   constants below, each with its reason). Only the property tests measure this (their
//!   test binary counts allocations); under cargo-fuzz, libFuzzer's own `-malloc_limit_mb`
//!   catches the gross cases.
#![allow(dead_code)] // each fuzz target uses one body

use std::io::{Cursor, Read, Seek, SeekFrom};

use aihal_quantize::io::from_safetensors_bytes;
use aihal_quantize::{bnb, dequantize, GgufFile, NestedAbsmax, QuantFormat, QuantizedTensor};

/// Measures the peak of live heap bytes while a closure runs.
pub(crate) trait Meter {
    /// Runs `f` and returns its result with the most bytes that were allocated at once
    /// during the call, on top of what was live before it (including what the result
    /// holds); `None` where nothing is measured.
    fn peak<T>(&mut self, f: impl FnOnce() -> T) -> (T, Option<usize>);
}

/// A meter that measures nothing (the fuzz targets).
pub(crate) struct Unmetered;

impl Meter for Unmetered {
    fn peak<T>(&mut self, f: impl FnOnce() -> T) -> (T, Option<usize>) {
        (f(), None)
    }
}

/// A fixed allowance added to every bound below: the GGUF reader's 8 KiB read buffer, error
/// messages, the smallest sizes of hash tables, safetensors' and serde's small tables, and
/// the bookkeeping rayon allocates the first time a large tensor is dequantized.
pub(crate) const SLACK: usize = 64 * 1024;

/// `GgufFile::read` may hold at most this many times the bytes it has read from its stream
/// (plus [`SLACK`]). Nothing is reserved from a count in the file; what is held is the
/// parsed header, and its costliest entries are a metadata entry (at least 13 bytes in the
/// file: 56 bytes in the entry list, whose capacity is up to twice its length, a hash slot
/// of 33 bytes in a table at most 7/8 full, and a copy of the key: about 14 times the
/// bytes of an entry with a 3-byte key) and a tensor info (at least 24 bytes: 88 in the
/// list, again up to twice, plus its hash slot: about 12 times). Numbers arrays are held
/// twice while they are converted, strings once. `gguf_worst_case_headers` in
/// `tests/hostile_files.rs` builds headers made only of such entries and measures them
/// against this bound. A reader that reserved lists from the counts in the header (bounded
/// only by the file's size) would exceed it on any file larger than the header it reads.
pub(crate) const GGUF_HEADER_FACTOR: usize = 16;

/// `io::from_safetensors_bytes` may hold at most this many times its input (plus
/// [`SLACK`]). The input is borrowed, and tensors are copied out of it once (1×); the JSON
/// header is parsed twice (its `__metadata__` map, then the whole header) and each tensor's
/// description once more into a JSON value. The costliest JSON is a list of small numbers
/// (a shape): 2 bytes of text (`0,`) become a 32-byte JSON value in a list of up to twice
/// its length, then an 8-byte dimension in another such list: 40 times the text.
/// `safetensors_worst_case_headers` measures it.
pub(crate) const SAFETENSORS_FACTOR: usize = 48;

/// `bnb::load_nf4` and `bnb::nf4_weight_names` may hold at most this many times their
/// input (plus [`SLACK`]): the safetensors header parsed once, entries copied once, and
/// the `quant_state` JSON parsed into a JSON value, whose costliest part is again a list
/// of small numbers (`shape`), as for [`SAFETENSORS_FACTOR`].
pub(crate) const BNB_FACTOR: usize = 48;

/// Tensors larger than this are not dequantized by the bodies (time, not memory: every
/// loaded tensor's size was already checked against its input).
pub(crate) const MAX_DEQUANTIZE: usize = 1 << 20;

/// Fails when a measured peak is above `bound`.
#[track_caller]
pub(crate) fn within(what: &str, peak: Option<usize>, bound: usize, input_len: usize) {
    if let Some(peak) = peak {
        assert!(
            peak <= bound,
            "{what} held {peak} bytes at once for a {input_len}-byte input, above its bound of {bound} bytes"
        );
    }
}

/// Dequantizes a loaded tensor, which must give `numel` finite values while holding no more
/// than the f32 output (4 bytes a value) plus [`SLACK`].
fn dequantizes_finite(what: &str, t: &QuantizedTensor, m: &mut impl Meter) {
    if t.numel() > MAX_DEQUANTIZE {
        return;
    }
    let (y, peak) = m.peak(|| dequantize(t));
    within(&format!("dequantize of {what}"), peak, 4 * t.numel() + SLACK, t.numel());
    let y = y.unwrap_or_else(|e| panic!("{what}: a loaded tensor dequantizes: {e}"));
    assert_eq!(y.len(), t.numel(), "{what}");
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        panic!("{what} ({}): loaded, yet value {i} dequantizes to {}", t.format(), y[i]);
    }
}

/// A stream over `data` that records the furthest byte read from it.
pub(crate) struct Tracked<'a> {
    inner: Cursor<&'a [u8]>,
    furthest: u64,
}

impl<'a> Tracked<'a> {
    /// A stream at byte 0 of `data`.
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self {
            inner: Cursor::new(data),
            furthest: 0,
        }
    }

    /// The end of the furthest read so far.
    pub(crate) fn furthest(&self) -> usize {
        self.furthest as usize
    }
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.furthest = self.furthest.max(self.inner.position());
        Ok(n)
    }
}

impl Seek for Tracked<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Any bytes read as a GGUF file by aihal's own reader, then every tensor read in every
/// way: an error or a consistent result, never a panic, and memory bounded by what was
/// read (the header) and by what the header describes once checked (each tensor).
pub(crate) fn gguf_own(data: &[u8], m: &mut impl Meter) {
    let mut r = Tracked::new(data);
    let (file, peak) = m.peak(|| GgufFile::read(&mut r));
    let read = r.furthest();
    within(
        &format!("GgufFile::read (having read {read} bytes)"),
        peak,
        GGUF_HEADER_FACTOR * read + SLACK,
        data.len(),
    );
    let Ok(file) = file else {
        return;
    };
    for (key, value) in file.metadata() {
        assert!(file.get(key).is_some_and(|v| std::ptr::eq(v, value)), "key {key:?}");
    }
    for t in file.tensors().iter().take(16) {
        let name = t.name();
        // A header that parsed has every known-size tensor inside the file.
        let len = t.byte_len().map_or(0, |n| usize::try_from(n).unwrap());
        assert!(
            len <= data.len(),
            "{name}: {len} bytes listed in a {}-byte file",
            data.len()
        );
        let (q, peak) = m.peak(|| file.read_tensor(&mut r, name));
        within(&format!("read_tensor({name:?})"), peak, len + SLACK, data.len());
        if let Ok(q) = q {
            assert_eq!(q.shape(), t.shape(), "{name}");
            dequantizes_finite(name, &q, m);
        }
        let (d, peak) = m.peak(|| file.read_dense(&mut r, name));
        within(&format!("read_dense({name:?})"), peak, 2 * len + SLACK, data.len());
        if let Ok(d) = d {
            assert_eq!(d.shape(), t.shape(), "{name}");
        }
        let (raw, peak) = m.peak(|| file.read_raw(&mut r, name));
        within(&format!("read_raw({name:?})"), peak, len + SLACK, data.len());
        match raw {
            Ok(raw) => assert_eq!(Some(raw.len() as u64), t.byte_len(), "{name}"),
            Err(e) => assert!(t.byte_len().is_none(), "{name}: {e}"),
        }
    }
    // The whole-file walk: one item per tensor, each an error or the tensor as listed.
    // Only small files: each item reads its tensor.
    if data.len() <= 1 << 22 {
        let mut items = 0;
        for item in file.tensors_in(&mut r) {
            items += 1;
            if let Ok((info, t)) = item {
                assert_eq!(t.shape(), info.shape(), "{}", info.name());
                if let Some(q) = t.as_quantized() {
                    assert_eq!(Some(q.data().len() as u64), info.byte_len(), "{}", info.name());
                }
            }
        }
        assert_eq!(items, file.tensors().len());
    }
}

/// Any bytes handed to the aihal safetensors loader: an error or tensors, never a panic;
/// every loaded tensor is validated, so it dequantizes to finite values.
pub(crate) fn safetensors_load(data: &[u8], m: &mut impl Meter) {
    let (tensors, peak) = m.peak(|| from_safetensors_bytes(data));
    within(
        "io::from_safetensors_bytes",
        peak,
        SAFETENSORS_FACTOR * data.len() + SLACK,
        data.len(),
    );
    if let Ok(tensors) = tensors {
        for (name, t) in &tensors {
            dequantizes_finite(name, t, m);
        }
    }
}

/// Any bytes handed to the bitsandbytes NF4 loader, for every NF4 weight the file lists:
/// an error or a weight, never a panic; a loaded weight dequantizes to finite f32 values.
pub(crate) fn bnb_load(data: &[u8], m: &mut impl Meter) {
    let bound = BNB_FACTOR * data.len() + SLACK;
    let (names, peak) = m.peak(|| bnb::nf4_weight_names(data));
    within("bnb::nf4_weight_names", peak, bound, data.len());
    // "w" too, so that a file whose quant_state entry was damaged still reaches the loader.
    let names = names.unwrap_or_default();
    for name in names.iter().map(String::as_str).chain(["w"]).take(4) {
        let (w, peak) = m.peak(|| bnb::load_nf4(data, name));
        within(&format!("bnb::load_nf4({name:?})"), peak, bound, data.len());
        if let Ok(w) = w {
            dequantizes_finite(name, &w.tensor, m);
            if w.tensor.numel() <= MAX_DEQUANTIZE {
                // The stored dtype may round large values to ±inf (float16), as
                // bitsandbytes does; only the length is promised.
                let v = w.dequantize_as_stored_dtype().expect("a loaded weight dequantizes");
                assert_eq!(v.len(), w.tensor.numel());
            }
        }
    }
}

/// Reads fields from the front of a byte string; past its end every field is 0.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn uint(&mut self, n: usize) -> u64 {
        self.take(n)
            .iter()
            .enumerate()
            .fold(0, |v, (i, &b)| v | u64::from(b) << (8 * i))
    }

    /// A run of bytes whose length is the next `n`-byte field.
    fn run(&mut self, n: usize) -> &'a [u8] {
        let len = self.uint(n) as usize;
        self.take(len)
    }

    fn f32s(&mut self, count: usize) -> Vec<f32> {
        self.take(4 * count)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

fn format(tag: u64, block: usize) -> QuantFormat {
    match tag % 12 {
        0 => QuantFormat::Nf4 {
            block_size: block,
            double_quant: false,
        },
        1 => QuantFormat::Nf4 {
            block_size: block,
            double_quant: true,
        },
        2 => QuantFormat::Q4_0,
        3 => QuantFormat::Q8_0,
        4 => QuantFormat::Tq2_0,
        5 => QuantFormat::Ternary,
        6 => QuantFormat::Int8PerChannel,
        7 => QuantFormat::Int8PerBlock { block_size: block },
        8 => QuantFormat::Fp8E4M3 { block_size: None },
        9 => QuantFormat::Fp8E4M3 {
            block_size: Some(block),
        },
        10 => QuantFormat::Fp8E5M2 {
            block_size: Some(block),
        },
        _ => QuantFormat::Fp8E5M2 { block_size: None },
    }
}

/// Lengths up to this are fitted when a first attempt names the length it expected.
const MAX_FIT: usize = 1 << 16;

/// `n` bytes cycled from `from` (zeros if it is empty).
fn cycled(from: &[u8], n: usize) -> Vec<u8> {
    if from.is_empty() {
        return vec![0; n];
    }
    from.iter().copied().cycle().take(n).collect()
}

/// Packed parts decoded from any bytes (format, block size, a shape whose dimensions may be
/// huge, packed bytes, scales and, for double-quantized NF4, a nested absmax), assembled with
/// `QuantizedTensor::from_parts` / `from_nested`: those accept exactly the consistent parts
/// without allocating from the shape, and a tensor they accept and `validate_values`
/// passes dequantizes to finite values. When an attempt is refused with a `ShapeMismatch`
/// that names a small expected length, the parts are fitted to it (bytes taken from the
/// input) and tried again, so that consistent tensors are reached often.
pub(crate) fn packed_parts(input: &[u8], m: &mut impl Meter) {
    let mut f = Fields(input);
    let tag = f.uint(1);
    // A power of two from 32 to 4096 (what NF4 allows) half of the time, else any.
    let block = match f.uint(1) {
        b if b < 128 => 32 << (b % 8),
        _ => f.uint(2) as usize,
    };
    let format = format(tag, block);
    let rank = f.uint(1) % 5;
    let shape: Vec<usize> = (0..rank)
        .map(|_| {
            // Small dimensions mostly (multiples of 32 among them, for the GGML formats),
            // some of any size.
            let d = match f.uint(1) {
                0..100 => f.uint(1),
                100..200 => 32 * (f.uint(1) % 16),
                200..228 => 1 << (f.uint(1) % 64),
                _ => f.uint(8),
            };
            usize::try_from(d).unwrap_or(usize::MAX)
        })
        .collect();
    let mut data = f.run(2).to_vec();
    let count = f.uint(2) as usize;
    let mut scales = f.f32s(count);
    let mut nested = matches!(format, QuantFormat::Nf4 { double_quant: true, .. }).then(|| {
        let codes = f.run(2).to_vec();
        let count = f.uint(1) as usize;
        let scales = f.f32s(count);
        let offset = f.f32s(1).first().copied().unwrap_or(0.0);
        let block_size = f.uint(2) as usize;
        let code = f.f32s(256);
        NestedAbsmax {
            codes,
            scales,
            code,
            offset,
            block_size,
        }
    });
    let pool = f.0;
    for _ in 0..4 {
        let given = data.len() + 4 * scales.len() + nested.as_ref().map_or(0, |n| n.codes.len());
        let decoded = nested.as_ref().map_or(0, |n| 4 * n.codes.len());
        let (t, peak) = m.peak(|| match nested.clone() {
            Some(n) => QuantizedTensor::from_nested(format, shape.clone(), data.clone(), n),
            None => QuantizedTensor::from_parts(format, shape.clone(), data.clone(), scales.clone()),
        });
        // The parts are copied in above the meter's base; only the decoded nested absmax (4
        // bytes a code) and the error message are new.
        within(
            &format!("{format} parts of shape {shape:?}"),
            peak,
            given + decoded + SLACK,
            given,
        );
        let t = match t {
            Ok(t) => t,
            Err(aihal_core::CoreError::ShapeMismatch { context, expected, .. })
                if expected.iter().all(|&n| n <= MAX_FIT) =>
            {
                if context.contains("packed bytes") {
                    data = cycled(pool, expected[0]);
                } else if context.contains("nested") {
                    if let Some(n) = &mut nested {
                        n.codes = cycled(pool, expected[0]);
                        n.scales.resize(expected[1], 1.0);
                        n.code.resize(expected[2], 0.5);
                        n.block_size = n.block_size.max(1);
                        if n.scales.len() != n.codes.len().div_ceil(n.block_size) {
                            n.block_size = 256;
                            n.scales.resize(n.codes.len().div_ceil(256), 1.0);
                        }
                    }
                } else {
                    let values = Fields(pool).f32s(expected[0]);
                    scales = values
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(1.0))
                        .take(expected[0])
                        .collect();
                }
                continue;
            }
            Err(_) => return,
        };
        assert_eq!(t.shape(), &shape[..]);
        if t.validate_values().is_ok() {
            dequantizes_finite(&format!("{format} {shape:?}"), &t, m);
        } else if t.numel() <= MAX_DEQUANTIZE {
            let y = dequantize(&t).expect("a consistent tensor dequantizes");
            assert_eq!(y.len(), t.numel());
        }
        return;
    }
}
