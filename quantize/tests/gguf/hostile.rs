//! Hand-made malformed GGUF files: each is a clear error (naming what and where), never a
//! panic, and never an allocation beyond a small multiple of the file size. The largest
//! single allocation on the test thread is recorded by a forwarding global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;

use aihal_core::CoreError;
use aihal_quantize::gguf::{GgmlType, GgufArray, GgufFile, GgufValue};
use aihal_quantize::{dequantize, QuantFormat};

struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown are not recorded.
    let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only
// records the requested sizes in a thread-local `Cell` (const-initialized, no destructor,
// so recording never allocates or re-enters the allocator).
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this wrapper with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` through this wrapper with this `layout`; the
        // caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// A GGUF file written field by field.
#[derive(Clone, Default)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, tensors: u64, kvs: u64) -> Self {
        B(b"GGUF".to_vec()).u32(version).u64(tensors).u64(kvs)
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    /// A tensor info; `dims` in GGUF order (row length first).
    fn tensor(self, name: &str, dims: &[u64], ty: GgmlType, offset: u64) -> Self {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty.id()).u64(offset)
    }
    fn pad(mut self, align: usize) -> Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
}

/// One TQ2_0 block of 256 values: all codes 1 (value 0) except the first (code 2, +d),
/// scale `d`.
fn tq2_block(d: half::f16) -> Vec<u8> {
    let mut b = vec![0x55u8; 64];
    b[0] = 0x56;
    b.extend(d.to_le_bytes());
    b
}

/// A well-formed version-`v` file: one metadata entry, one TQ2_0 tensor of shape [1, 256].
fn good(v: u32) -> Vec<u8> {
    B::header(v, 1, 1)
        .str("general.name")
        .u32(8)
        .str("t")
        .tensor("w", &[256, 1], GgmlType::TQ2_0, 0)
        .pad(32)
        .bytes(&tq2_block(half::f16::ONE))
        .0
}

/// Parses `bytes`, expecting an error whose message contains `needle`; checks that the
/// largest allocation stayed small.
fn refused(case: &str, bytes: &[u8], needle: &str) -> CoreError {
    PEAK.with(|p| p.set(0));
    let Err(err) = GgufFile::read(&mut Cursor::new(bytes)) else {
        panic!("{case}: accepted");
    };
    let peak = PEAK.with(Cell::get);
    assert!(
        peak <= 64 * 1024 + 16 * bytes.len(),
        "{case}: an allocation of {peak} bytes for a {}-byte file",
        bytes.len()
    );
    let msg = err.to_string();
    assert!(msg.contains(needle), "{case}: {msg:?} does not say {needle:?}");
    err
}

fn invalid(case: &str, bytes: &[u8], needle: &str) {
    let err = refused(case, bytes, needle);
    assert!(matches!(err, CoreError::InvalidInput(_)), "{case}: {err:?}");
}

#[test]
fn well_formed_files_of_both_versions_read() {
    for v in [2, 3] {
        let bytes = good(v);
        let mut c = Cursor::new(&bytes);
        let f = GgufFile::read(&mut c).unwrap();
        assert_eq!(f.version(), v);
        assert_eq!(f.get("general.name").and_then(|v| v.as_str()), Some("t"));
        let t = f.read_tensor(&mut c, "w").unwrap();
        assert_eq!(t.format(), QuantFormat::Tq2_0);
        assert_eq!(t.shape(), &[1, 256]);
        let y = dequantize(&t).unwrap();
        assert_eq!(y[0], 1.0);
        assert!(y[1..].iter().all(|&v| v == 0.0));
    }
}

#[test]
fn bad_preambles() {
    invalid("empty", b"", "magic");
    invalid("short magic", b"GGU", "magic");
    invalid("wrong magic", b"GGML\x03\0\0\0", "not a GGUF file");
    invalid("no version", b"GGUF", "version");
    let v1 = refused("version 1", &B::header(1, 0, 0).0, "version 1");
    assert!(matches!(v1, CoreError::Unsupported { .. }), "{v1:?}");
    let be = refused("big-endian", &B::header(3u32.swap_bytes(), 0, 0).0, "big-endian");
    assert!(matches!(be, CoreError::Unsupported { .. }), "{be:?}");
    invalid("version 9", &B::header(9, 0, 0).0, "unknown GGUF version 9");
    invalid("no counts", &b"GGUF\x03\0\0\0"[..], "tensor count");
}

#[test]
fn huge_counts_and_lengths_are_refused_before_allocating() {
    invalid("tensor count", &B::header(3, u64::MAX, 0).0, "tensor infos");
    invalid("metadata count", &B::header(3, 0, 1 << 40).0, "metadata entries");
    // Each count fits alone, not both together.
    let b = B::header(3, 2, 2).bytes(&[0; 60]);
    invalid("both counts", &b.0, "do not fit");
    invalid(
        "key length",
        &B::header(3, 0, 1).u64(u64::MAX).bytes(&[0; 16]).0,
        "metadata key",
    );
    let b = B::header(3, 0, 1).str("k").u32(8).u64(1 << 30).bytes(&[b'x'; 16]);
    invalid("string value length", &b.0, "string value");
    for (ty, name) in [(0u32, "uint8"), (12, "float64"), (8, "string"), (9, "array")] {
        let b = B::header(3, 0, 1).str("k").u32(9).u32(ty).u64(1 << 40).bytes(&[0; 64]);
        invalid(name, &b.0, &format!("array of {} {name} values", 1u64 << 40));
    }
    // A string array whose count fits the bytes (8 per element) only one short.
    let b = B::header(3, 0, 1).str("k").u32(9).u32(8).u64(3).u64(0).u64(0);
    invalid("short string array", &b.0, "do not fit");
    let b = B::header(3, 1, 0).u64(u64::MAX).bytes(&[0; 40]);
    invalid("tensor name length", &b.0, "tensor name");
}

#[test]
fn deep_nesting_is_refused_without_recursing_through_it() {
    for depth in [17usize, 100_000] {
        let mut b = B::header(3, 0, 1).str("k").u32(9);
        for _ in 0..depth {
            b = b.u32(9).u64(1);
        }
        b = b.u32(0).u64(0);
        invalid(&format!("depth {depth}"), &b.0, "nested more than 16 deep");
    }
    // 16 levels are fine.
    let mut b = B::header(3, 0, 1).str("k").u32(9);
    for _ in 0..15 {
        b = b.u32(9).u64(1);
    }
    b = b.u32(4).u64(1).u32(7);
    assert!(GgufFile::read(&mut Cursor::new(b.0)).is_ok());
}

#[test]
fn bad_metadata_values() {
    invalid(
        "value type",
        &B::header(3, 0, 1).str("k").u32(13).u64(0).0,
        "unknown value type 13",
    );
    let b = B::header(3, 0, 1).str("k").u32(7).u8(2);
    // The bool is the last byte; the error names its offset.
    let at = b.0.len() - 1;
    invalid("bool", &b.0, &format!("byte {at}: bool value 0x02"));
    let b = B::header(3, 0, 1).str("k").u32(9).u32(7).u64(2).u8(1).u8(9);
    invalid("bool array", &b.0, "bool value 0x09");
    let b = B::header(3, 0, 1).u64(2).bytes(&[0xC3, 0x28]).u32(4).u32(1);
    invalid("key utf-8", &b.0, "not UTF-8");
    let b = B::header(3, 0, 1).str("k").u32(8).u64(1).u8(0xFF);
    invalid("value utf-8", &b.0, "not UTF-8");
    let b = B::header(3, 0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2);
    invalid("duplicate key", &b.0, "\"k\" appears twice");
    for (case, b) in [
        ("alignment 0", B::header(3, 0, 1).str("general.alignment").u32(4).u32(0)),
        (
            "alignment 48",
            B::header(3, 0, 1).str("general.alignment").u32(4).u32(48),
        ),
        (
            "alignment u64",
            B::header(3, 0, 1).str("general.alignment").u32(10).u64(64),
        ),
    ] {
        invalid(case, &b.0, "general.alignment");
    }
}

#[test]
fn bad_tensor_infos() {
    let one = |dims: &[u64], ty: GgmlType, offset: u64| {
        B::header(3, 1, 0)
            .tensor("w", dims, ty, offset)
            .pad(32)
            .bytes(&[0; 4096])
            .0
    };
    invalid(
        "5 dims",
        &one(&[32, 1, 1, 1, 1], GgmlType::Q8_0, 0),
        "5 dimensions (at most 4)",
    );
    invalid(
        "numel overflow",
        &one(&[1 << 32, 1 << 32], GgmlType::F32, 0),
        "overflow",
    );
    invalid(
        "TQ2_0 row",
        &one(&[128, 2], GgmlType::TQ2_0, 0),
        "multiple of 256 values, got 128",
    );
    invalid(
        "scalar Q4_0",
        &one(&[], GgmlType::Q4_0, 0),
        "multiple of 32 values, got 1",
    );
    invalid(
        "unaligned",
        &one(&[32, 1], GgmlType::Q8_0, 8),
        "not a multiple of the alignment 32",
    );
    invalid(
        "past the end",
        &one(&[256, 63], GgmlType::TQ2_0, 0),
        "run past the end of the file",
    );
    invalid(
        "offset past the end",
        &one(&[32], GgmlType::F32, 1 << 40),
        "run past the end of the file",
    );
    invalid(
        "unknown type past the end",
        &one(&[10], GgmlType(99), 1 << 40),
        "its data at offset",
    );
    let mut truncated = good(3);
    truncated.pop();
    invalid("data truncated", &truncated, "run past the end of the file");
    let b = B::header(3, 2, 0)
        .tensor("w", &[32], GgmlType::F32, 0)
        .tensor("w", &[32], GgmlType::F32, 128)
        .pad(32)
        .bytes(&[0; 256]);
    invalid("duplicate tensor", &b.0, "\"w\" appears twice");
    let b = B::header(3, 2, 0).tensor("w", &[32], GgmlType::F32, 0).bytes(&[0; 16]);
    invalid("missing tensor info", &b.0, "tensor info");
}

#[test]
fn reading_tensors_checks_type_values_and_stream() {
    // An unknown type id is listed; only reading it fails.
    let b = B::header(3, 2, 0)
        .tensor("odd", &[10], GgmlType(99), 0)
        .tensor("e", &[0, 4], GgmlType::Q8_0, 0)
        .pad(32)
        .bytes(&[0; 64]);
    let mut c = Cursor::new(b.0);
    let f = GgufFile::read(&mut c).unwrap();
    let odd = f.tensor("odd").unwrap();
    assert_eq!(
        (odd.ggml_type(), odd.byte_len(), odd.shape()),
        (GgmlType(99), None, &[10][..])
    );
    for err in [
        f.read_tensor(&mut c, "odd").unwrap_err(),
        f.read_raw(&mut c, "odd").unwrap_err(),
    ] {
        assert!(matches!(err, CoreError::Unsupported { .. }), "{err:?}");
        assert!(err.to_string().contains("GGML type 99"), "{err}");
    }
    // An empty tensor is a tensor.
    let e = f.read_tensor(&mut c, "e").unwrap();
    assert_eq!((e.shape(), e.numel()), (&[4, 0][..], 0));

    // Values inside the blocks are checked on read.
    let mut bad = good(3);
    let n = bad.len();
    bad[n - 66] = 0xFF; // codes 3
    let mut c = Cursor::new(bad);
    let f = GgufFile::read(&mut c).unwrap();
    let err = f.read_tensor(&mut c, "w").unwrap_err();
    assert!(
        err.to_string().contains("code 3") && err.to_string().contains("\"w\""),
        "{err}"
    );
    assert_eq!(f.read_raw(&mut c, "w").unwrap().len(), 66, "raw bytes are as stored");

    let mut bad = good(3);
    let n = bad.len();
    bad[n - 2..].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    let mut c = Cursor::new(bad);
    let f = GgufFile::read(&mut c).unwrap();
    let err = f.read_tensor(&mut c, "w").unwrap_err();
    assert!(err.to_string().contains("scale inf"), "{err}");

    // A different, shorter stream than the header came from.
    let bytes = good(3);
    let f = GgufFile::read(&mut Cursor::new(&bytes)).unwrap();
    let err = f
        .read_tensor(&mut Cursor::new(&bytes[..bytes.len() - 10]), "w")
        .unwrap_err();
    assert!(err.to_string().contains("past the end of the stream"), "{err}");
}

#[test]
fn the_allocation_meter_sees_what_parsing_allocates() {
    // A legitimate 200 KB array is allocated whole: the meter used above must see it.
    let n = 200_000u64;
    let b = B::header(3, 0, 1)
        .str("k")
        .u32(9)
        .u32(0)
        .u64(n)
        .bytes(&vec![7; n as usize]);
    PEAK.with(|p| p.set(0));
    let f = GgufFile::read(&mut Cursor::new(&b.0)).unwrap();
    assert!(PEAK.with(Cell::get) >= n as usize);
    assert_eq!(
        f.get("k").and_then(GgufValue::as_array).map(GgufArray::len),
        Some(n as usize)
    );
}
