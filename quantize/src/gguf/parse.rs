//! Little-endian field reader over a GGUF header that checks every length against what is
//! left of the file before allocating, and names the byte offset of every failure.

use std::fmt::Display;
use std::io::Read;

use aihal_core::{CoreError, Result};

use super::value::{GgufArray, GgufValue, GgufValueType};

/// Arrays nested deeper than this are refused: real files nest at most once, and an
/// unbounded depth would let a small file exhaust the stack.
pub(crate) const MAX_ARRAY_DEPTH: usize = 16;

/// A reader that knows its position and the length of the file.
pub(crate) struct Parser<R> {
    reader: R,
    pos: u64,
    len: u64,
}

/// An `InvalidInput` error naming the byte offset.
pub(crate) fn invalid_at(at: u64, msg: impl Display) -> CoreError {
    CoreError::invalid_input(format!("GGUF file, byte {at}: {msg}"))
}

/// Adds where an `InvalidInput` happened (`in metadata "key"`); other errors pass through.
pub(crate) fn in_context(err: CoreError, context: impl FnOnce() -> String) -> CoreError {
    match err {
        CoreError::InvalidInput(msg) => CoreError::InvalidInput(format!("{msg} (in {})", context())),
        other => other,
    }
}

macro_rules! numbers {
    ($self:ident, $count:ident, $ty:ty) => {{
        const N: usize = std::mem::size_of::<$ty>();
        let bytes = $self.take($count, N as u64, stringify!($ty))?;
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                <$ty>::from_le_bytes(a)
            })
            .collect()
    }};
}

impl<R: Read> Parser<R> {
    /// A parser at byte 0 of a file of `len` bytes.
    pub(crate) fn new(reader: R, len: u64) -> Self {
        Self { reader, pos: 0, len }
    }

    /// The underlying reader (positioned wherever buffering left it).
    pub(crate) fn into_inner(self) -> R {
        self.reader
    }

    /// The current byte offset.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Bytes left after the current position.
    pub(crate) fn remaining(&self) -> u64 {
        self.len - self.pos
    }

    /// Fails unless `count` items of at least `size` bytes each fit in the rest of the file.
    pub(crate) fn need(&self, count: u64, size: u64, what: &str) -> Result<u64> {
        match count.checked_mul(size) {
            Some(n) if n <= self.remaining() => Ok(n),
            _ => Err(invalid_at(
                self.pos,
                format!(
                    "{what}: {count} × {size} bytes do not fit in the {} bytes left of the file",
                    self.remaining()
                ),
            )),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        self.reader.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                invalid_at(self.pos, "the file ended early (it was shorter than it first measured)")
            } else {
                e.into()
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// `count` items of `size` bytes, checked against the file before allocating.
    fn take(&mut self, count: u64, size: u64, what: &str) -> Result<Vec<u8>> {
        let n = self.need(count, size, what)?;
        let n = usize::try_from(n).map_err(|_| invalid_at(self.pos, format!("{what}: {n} bytes exceed memory")))?;
        let mut buf = vec![0u8; n];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    /// A fixed-size field.
    pub(crate) fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.need(1, N as u64, what)?;
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
    }

    /// A little-endian `u32`.
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: `u64` length, then UTF-8 bytes.
    pub(crate) fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, 1, what)?;
        String::from_utf8(bytes).map_err(|e| {
            invalid_at(
                at,
                format!(
                    "{what} is not UTF-8 (invalid byte at {} of the string)",
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    }

    /// A value type tag.
    pub(crate) fn value_type(&mut self, what: &str) -> Result<GgufValueType> {
        let at = self.pos;
        let id = self.u32(what)?;
        GgufValueType::from_id(id).ok_or_else(|| invalid_at(at, format!("{what}: unknown value type {id}")))
    }

    /// A value of type `ty`; `depth` counts the arrays around it.
    pub(crate) fn value(&mut self, ty: GgufValueType, depth: usize) -> Result<GgufValue> {
        let at = self.pos;
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(u8::from_le_bytes(self.array("uint8")?)),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array("int8")?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array("uint16")?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array("int16")?)),
            GgufValueType::U32 => GgufValue::U32(self.u32("uint32")?),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array("int32")?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array("float32")?)),
            GgufValueType::Bool => GgufValue::Bool(bool_at(at, self.array::<1>("bool")?[0])?),
            GgufValueType::String => GgufValue::String(self.string("string value")?),
            GgufValueType::Array => GgufValue::Array(self.array_value(depth + 1)?),
            GgufValueType::U64 => GgufValue::U64(self.u64("uint64")?),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array("int64")?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array("float64")?)),
        })
    }

    /// An array (element type, count, elements) at nesting level `depth` (1 = outermost).
    fn array_value(&mut self, depth: usize) -> Result<GgufArray> {
        let at = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(invalid_at(
                at,
                format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
            ));
        }
        let ty = self.value_type("array element type")?;
        let count = self.u64("array length")?;
        // Even the smallest elements must fit in the rest of the file: this bounds every
        // allocation below by a small multiple of the file size.
        self.need(count, ty.min_size(), &format!("array of {count} {ty} values"))?;
        Ok(match ty {
            GgufValueType::U8 => GgufArray::U8(self.take(count, 1, "uint8 array")?),
            GgufValueType::I8 => GgufArray::I8(numbers!(self, count, i8)),
            GgufValueType::U16 => GgufArray::U16(numbers!(self, count, u16)),
            GgufValueType::I16 => GgufArray::I16(numbers!(self, count, i16)),
            GgufValueType::U32 => GgufArray::U32(numbers!(self, count, u32)),
            GgufValueType::I32 => GgufArray::I32(numbers!(self, count, i32)),
            GgufValueType::F32 => GgufArray::F32(numbers!(self, count, f32)),
            GgufValueType::U64 => GgufArray::U64(numbers!(self, count, u64)),
            GgufValueType::I64 => GgufArray::I64(numbers!(self, count, i64)),
            GgufValueType::F64 => GgufArray::F64(numbers!(self, count, f64)),
            GgufValueType::Bool => {
                let start = self.pos;
                let bytes = self.take(count, 1, "bool array")?;
                let bools = bytes
                    .iter()
                    .zip(start..)
                    .map(|(&b, at)| bool_at(at, b))
                    .collect::<Result<_>>()?;
                GgufArray::Bool(bools)
            }
            // Strings and arrays are collected as they are parsed, never reserved from
            // `count`: at 24 or 32 bytes an element against 8 or 12 in the file, a
            // reservation would cost up to 3 times the rest of the file before reading it.
            GgufValueType::String => {
                let mut v = Vec::new();
                for _ in 0..count {
                    v.push(self.string("string array element")?);
                }
                GgufArray::String(v)
            }
            GgufValueType::Array => {
                let mut v = Vec::new();
                for _ in 0..count {
                    v.push(self.array_value(depth + 1)?);
                }
                GgufArray::Array(v)
            }
        })
    }
}

fn bool_at(at: u64, b: u8) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(invalid_at(at, format!("bool value {other:#04x} (must be 0 or 1)"))),
    }
}
