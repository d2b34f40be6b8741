//! A GGUF reader of our own: the header (metadata and tensor infos) of versions 2 and 3,
//! and tensors read as they are stored: the GGML block types of [`QuantFormat`](crate::QuantFormat)
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, TQ2_0) into [`QuantizedTensor`]s, the plain number types into [`TensorBuffer`]s, any type ggml
//! defines as raw bytes. [`GgufFile::tensors_in`] walks every tensor of a file one at a
//! time (for a model loader), [`GgufFile::read_all`] collects them.
//!
//! It exists because candle 0.11's `gguf_file::Content::read` fails on a whole file as
//! soon as one tensor has a type candle does not know, and TQ2_0 (the type llama.cpp
//! writes BitNet-style ternary weights in) is one. [`GgufFile`] lists tensors of any type
//! id and refuses only to *read* a tensor whose type it cannot represent. Use it for
//! every GGUF file; [`read_gguf_tensor`](crate::read_gguf_tensor) remains for callers who
//! already hold candle's parsed header.
//!
//! # What is checked
//!
//! The file is untrusted. Every count and length (tensor and metadata counts, string
//! lengths, array lengths, tensor dimensions) is checked against the bytes left in the
//! file before anything is allocated, and no list is reserved from its count: metadata
//! entries, tensor infos and the elements of string and nested arrays are collected as
//! they are parsed (a string or a run of numbers is allocated at its stated length, which
//! the file holds, and filled at once). So memory stays within a small multiple of the
//! bytes actually read (at most 16 times, plus the read buffer; `tests/hostile_files.rs`
//! asserts it), however large a count claims to be; arithmetic on sizes and offsets is
//! overflow-checked; arrays may nest at most 16 deep. Structural problems are `InvalidInput` errors naming what was wrong and the
//! byte offset: a bad magic, duplicate keys or tensor names, an unknown value type, a
//! `bool` that is not 0 or 1, a string that is not UTF-8, more than 4 dimensions (ggml's
//! limit), a row length that is not a whole number of blocks, a tensor offset that is not
//! a multiple of the alignment, `general.alignment` that is not a `uint32` power of two,
//! and tensor data running past the end of the file. Version 1 files and big-endian files
//! are `Unsupported`. Quantized tensors are read byte for byte (never re-quantized) and
//! then checked value by value ([`QuantizedTensor::validate_values`]: finite f16 scales
//! and minimums, TQ2_0 codes in 0..=2); such errors name the tensor, the block, and the
//! byte offsets of the tensor's data in the file and of the bad field in the tensor.
//!
//! # Shapes
//!
//! GGUF lists dimensions innermost first (`ne[0]` is the row length). [`GgufTensorInfo::shape`]
//! is candle's row-major order, the GGUF dimensions reversed, so a weight matrix is
//! `[N, K]` and the last dimension is the row the GGML blocks run along, as the
//! [layout contract](mod@crate::format) expects.
//!
//! ```
//! use std::io::Cursor;
//! use aihal_quantize::gguf::{GgmlType, GgufFile};
//!
//! # fn main() -> aihal_core::Result<()> {
//! # let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mixed.gguf"))?;
//! let mut file = Cursor::new(bytes); // or a `std::fs::File`
//! let gguf = GgufFile::read(&mut file)?;
//! assert_eq!(gguf.get("general.architecture").and_then(|v| v.as_str()), Some("aihal-test"));
//! for t in gguf.tensors() {
//!     if t.ggml_type() == GgmlType::TQ2_0 {
//!         let w = gguf.read_tensor(&mut file, t.name())?; // a QuantizedTensor, bytes as stored
//!         assert_eq!(w.shape(), t.shape());
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod parse;
mod types;
mod value;

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::ops::Range;

use aihal_core::{CoreError, DType, Result, TensorBuffer};

use crate::tensor::QuantizedTensor;
use parse::{in_context, invalid_at, Parser};
pub use types::GgmlType;
pub use value::{GgufArray, GgufValue, GgufValueType};

/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// The most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

const MAGIC: [u8; 4] = *b"GGUF";
/// Bytes of the smallest metadata entry (empty key, type tag, one-byte value) and of the
/// smallest tensor info (empty name, dimension count, type, offset).
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// One tensor of a GGUF file, as its header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    name: String,
    ggml_type: GgmlType,
    shape: Vec<usize>,
    offset: u64,
    file_offset: u64,
    byte_len: Option<u64>,
}

impl GgufTensorInfo {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its GGML type (possibly an id this crate does not know).
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Its shape in candle's row-major order (the GGUF dimensions reversed).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Its offset relative to the start of the data section, as stored.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its absolute offset in the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Its size in bytes, `None` when the type id is unknown (so is its size).
    pub fn byte_len(&self) -> Option<u64> {
        self.byte_len
    }
}

/// The parsed header of a GGUF file (versions 2 and 3, little-endian): metadata in file
/// order, tensor infos in file order, alignment and the start of the data section.
///
/// Parsing reads only the header; tensors are read on demand from the same stream with
/// [`read_tensor`](Self::read_tensor), [`read_dense`](Self::read_dense) or
/// [`read_raw`](Self::read_raw). See the [module documentation](self) for what is checked.
#[derive(Clone, Debug)]
pub struct GgufFile {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    keys: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    names: HashMap<String, usize>,
    alignment: u32,
    data_offset: u64,
}

impl GgufFile {
    /// Parses the header of the GGUF file that fills `reader` from byte 0.
    ///
    /// The stream is read through an internal buffer (a bare `File` is fine), its length is
    /// taken with `seek(End)`, and it is left positioned at the end of the header. Errors:
    /// `InvalidInput` for a malformed header (naming the byte offset), `Unsupported` for
    /// version 1 and big-endian files, `Io` for read errors.
    pub fn read<R: Read + Seek>(reader: &mut R) -> Result<Self> {
        let len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        let mut p = Parser::new(BufReader::new(reader), len);

        let magic = p.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(invalid_at(
                0,
                format!("not a GGUF file: it starts with {magic:02x?}, not \"GGUF\""),
            ));
        }
        let version = p.u32("version")?;
        check_version(version)?;
        let tensor_count = p.u64("tensor count")?;
        let kv_count = p.u64("metadata entry count")?;
        // Both sections must fit in the rest of the file at their smallest.
        let kv_bytes = p.need(kv_count, MIN_KV_BYTES, "metadata entries")?;
        let info_bytes = p.need(tensor_count, MIN_TENSOR_INFO_BYTES, "tensor infos")?;
        if kv_bytes.checked_add(info_bytes).is_none_or(|n| n > p.remaining()) {
            return Err(invalid_at(
                p.pos(),
                format!(
                    "{kv_count} metadata entries and {tensor_count} tensor infos do not fit in the {} bytes left of the file",
                    p.remaining()
                ),
            ));
        }

        let (metadata, keys) = read_metadata(&mut p, kv_count)?;
        let alignment = match keys.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(GgufValue::U32(a)) if a.is_power_of_two() => *a,
            Some(other) => {
                return Err(CoreError::invalid_input(format!(
                    "GGUF file: general.alignment is {other:?}, not a uint32 power of two"
                )))
            }
        };
        let (mut tensors, names) = read_tensor_infos(&mut p, tensor_count, alignment)?;

        let header_end = p.pos();
        p.into_inner().into_inner().seek(SeekFrom::Start(header_end))?;
        let data_offset = header_end
            .checked_next_multiple_of(u64::from(alignment))
            .ok_or_else(|| invalid_at(header_end, "the data section offset overflows"))?;
        for t in &mut tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|start| Some((start, start.checked_add(t.byte_len.unwrap_or(0))?)));
            match end {
                Some((start, end)) if end <= len => t.file_offset = start,
                _ => {
                    let size = t.byte_len.map_or("data".to_owned(), |n| format!("{n} bytes"));
                    return Err(CoreError::invalid_input(format!(
                        "GGUF tensor {:?} ({}, shape {:?}): its {size} at offset {} of the data section \
                         (which starts at byte {data_offset}) run past the end of the file ({len} bytes)",
                        t.name, t.ggml_type, t.shape, t.offset
                    )));
                }
            }
        }
        Ok(Self {
            version,
            metadata,
            keys,
            tensors,
            names,
            alignment,
            data_offset,
        })
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// The absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The metadata entries in file order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The tensor infos in file order, whatever their type.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.names.get(name).map(|&i| &self.tensors[i])
    }

    fn info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor(name)
            .ok_or_else(|| CoreError::invalid_input(format!("GGUF file has no tensor named {name:?}")))
    }

    /// Reads tensor `name` as a [`QuantizedTensor`], byte for byte (never re-quantized):
    /// every GGML block type of [`QuantFormat`](crate::QuantFormat). The values are checked
    /// ([`QuantizedTensor::validate_values`]).
    ///
    /// `reader` is the stream the header was read from (its length is checked again).
    /// Plain number types are `Unsupported` here (read them with
    /// [`read_dense`](Self::read_dense)), as are the other GGML types (their bytes are
    /// available from [`read_raw`](Self::read_raw)).
    pub fn read_tensor<R: Read + Seek>(&self, reader: &mut R, name: &str) -> Result<QuantizedTensor> {
        let info = self.info(name)?;
        let Some(format) = info.ggml_type.quant_format() else {
            let hint = if info.ggml_type.dense_dtype().is_some() {
                "read it with GgufFile::read_dense"
            } else {
                "GgufFile::read_raw gives the bytes"
            };
            let hint = format!(
                "{hint}; {} are read as QuantizedTensor",
                crate::formats::block_format_names(false)
            );
            return Err(CoreError::unsupported(
                format!("GgufFile::read_tensor of {name:?}"),
                format!("{} ({hint})", info.ggml_type),
            ));
        };
        let data = read_bytes(reader, info)?;
        let t = QuantizedTensor::from_parts(format, info.shape.clone(), data, Vec::new())
            .map_err(|e| in_context(e, || describe(info)))?;
        t.validate_values().map_err(|e| in_context(e, || describe(info)))?;
        Ok(t)
    }

    /// Reads rows `rows` of quantized tensor `name` as a [`QuantizedTensor`] of shape
    /// `[rows.len(), K]`, byte for byte: only those rows' bytes are read, so that a large
    /// tensor (a vocabulary's embedding table) can be read and used a part at a time instead
    /// of held whole. `K` is the last dimension of the tensor's shape (row-major, as
    /// [`GgufTensorInfo::shape`] gives it) and its rows are all the others together. The
    /// values are checked as [`read_tensor`](Self::read_tensor) checks them.
    ///
    /// Errors: those of `read_tensor`; `InvalidInput` for an empty range or one past the
    /// tensor's rows, and `Unsupported` for a tensor whose rows do not hold whole blocks.
    pub fn read_tensor_rows<R: Read + Seek>(
        &self,
        reader: &mut R,
        name: &str,
        rows: Range<usize>,
    ) -> Result<QuantizedTensor> {
        let info = self.info(name)?;
        let (Some(format), Some((per, bytes))) = (info.ggml_type.quant_format(), info.ggml_type.block_layout()) else {
            return Err(CoreError::unsupported(
                format!("GgufFile::read_tensor_rows of {name:?}"),
                format!("{} (rows are read of the quantized block types)", info.ggml_type),
            ));
        };
        let k = info.shape.last().copied().unwrap_or(1);
        let n: usize = info.shape.iter().rev().skip(1).product();
        if k == 0 || !(k as u64).is_multiple_of(per) {
            return Err(CoreError::unsupported(
                format!("GgufFile::read_tensor_rows of {name:?}"),
                format!("rows of {k} values, not whole blocks of {per}"),
            ));
        }
        if rows.start >= rows.end || rows.end > n {
            return Err(CoreError::invalid_input(format!(
                "{}: rows {}..{} are not a non-empty range within its {n} rows",
                describe(info),
                rows.start,
                rows.end
            )));
        }
        // The whole tensor lies in the stream (checked as for a whole read), so these rows do.
        checked_len(reader, info)?;
        let row_bytes = k as u64 / per * bytes;
        let mut data = vec![0u8; usize::try_from(row_bytes * rows.len() as u64).unwrap_or(usize::MAX)];
        reader.seek(SeekFrom::Start(info.file_offset + row_bytes * rows.start as u64))?;
        reader.read_exact(&mut data)?;
        let context = || format!("{}, rows {}..{}", describe(info), rows.start, rows.end);
        let t = QuantizedTensor::from_parts(format, vec![rows.len(), k], data, Vec::new())
            .map_err(|e| in_context(e, context))?;
        t.validate_values().map_err(|e| in_context(e, context))?;
        Ok(t)
    }

    /// Reads tensor `name` as it is stored, whatever its type: a GGML block type this crate
    /// represents as a [`QuantizedTensor`] (as [`read_tensor`](Self::read_tensor) does,
    /// values checked), a plain number type as a [`TensorBuffer`] of that element type (as
    /// [`read_dense`](Self::read_dense) does). Other types are `Unsupported`.
    pub fn read_any<R: Read + Seek>(&self, reader: &mut R, name: &str) -> Result<GgufTensorData> {
        let info = self.info(name)?;
        if info.ggml_type.dense_dtype().is_some() {
            self.read_dense(reader, name).map(GgufTensorData::Dense)
        } else {
            self.read_tensor(reader, name).map(GgufTensorData::Quantized)
        }
    }

    /// Every tensor of the file, one at a time, in the order of their data in the file (a
    /// forward read of the stream; llama.cpp writes data in the order of the tensor infos),
    /// each read with [`read_any`](Self::read_any): no re-quantization, and only the tensor
    /// being read is held here, so a model loader that consumes the tensors as they come
    /// never holds a second copy of the file. An item that fails (an unsupported type,
    /// non-finite scales, a short stream) is an `Err` naming the tensor and its byte
    /// offset; the iterator goes on with the next tensor.
    ///
    /// `reader` is the stream the header was read from.
    pub fn tensors_in<'a, R: Read + Seek>(&'a self, reader: &'a mut R) -> GgufTensors<'a, R> {
        let mut order: Vec<usize> = (0..self.tensors.len()).collect();
        order.sort_by_key(|&i| self.tensors[i].file_offset);
        GgufTensors {
            file: self,
            reader,
            order: order.into_iter(),
        }
    }

    /// Reads every tensor (see [`tensors_in`](Self::tensors_in)) into a list in data
    /// order; the first failure is the error.
    pub fn read_all<R: Read + Seek>(&self, reader: &mut R) -> Result<Vec<(String, GgufTensorData)>> {
        self.tensors_in(reader)
            .map(|r| r.map(|(info, data)| (info.name.clone(), data)))
            .collect()
    }

    /// Reads a plain tensor (F32, F16, BF16, F64, I8, I16, I32, I64) into a
    /// [`TensorBuffer`] of the same element type and shape, values as stored (no
    /// conversion, no check of the values). Other types are `Unsupported`.
    pub fn read_dense<R: Read + Seek>(&self, reader: &mut R, name: &str) -> Result<TensorBuffer> {
        let info = self.info(name)?;
        let dtype = info.ggml_type.dense_dtype().ok_or_else(|| {
            CoreError::unsupported(
                format!("GgufFile::read_dense of {name:?}"),
                format!(
                    "{} (a quantized type: read it with GgufFile::read_tensor)",
                    info.ggml_type
                ),
            )
        })?;
        // Read straight into the buffer: one copy of the tensor, not two.
        let mut buf = TensorBuffer::zeros(&info.shape, dtype)?;
        read_bytes_into(reader, info, buf.bytes_mut())?;
        to_native_endian(buf.bytes_mut(), dtype);
        Ok(buf)
    }

    /// The stored bytes of tensor `name`, for any type ggml defines (`Unsupported` for an
    /// unknown type id, whose size is unknown). Multi-byte fields are little-endian.
    pub fn read_raw<R: Read + Seek>(&self, reader: &mut R, name: &str) -> Result<Vec<u8>> {
        read_bytes(reader, self.info(name)?)
    }
}

/// One tensor of a GGUF file as it is stored: what [`GgufFile::read_any`] and
/// [`GgufFile::tensors_in`] give.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufTensorData {
    /// A GGML block type read byte for byte (those of [`QuantFormat`](crate::QuantFormat)).
    Quantized(QuantizedTensor),
    /// A plain number type (F32, F16, BF16, F64, I8, I16, I32, I64) in a buffer of the same
    /// element type, values as stored.
    Dense(TensorBuffer),
}

impl GgufTensorData {
    /// The shape (row-major, the GGUF dimensions reversed).
    pub fn shape(&self) -> &[usize] {
        match self {
            Self::Quantized(q) => q.shape(),
            Self::Dense(b) => b.shape(),
        }
    }

    /// The quantized tensor, if this is one.
    pub fn as_quantized(&self) -> Option<&QuantizedTensor> {
        match self {
            Self::Quantized(q) => Some(q),
            Self::Dense(_) => None,
        }
    }

    /// The dense buffer, if this is one.
    pub fn as_dense(&self) -> Option<&TensorBuffer> {
        match self {
            Self::Quantized(_) => None,
            Self::Dense(b) => Some(b),
        }
    }

    /// The values as f32: dequantized (as the layout contract defines them), or widened
    /// from F16 / BF16 (exact) or F32 as stored. Integer and F64 buffers are `Unsupported`.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        match self {
            Self::Quantized(q) => crate::dequantize(q),
            Self::Dense(b) => match b.dtype() {
                DType::F32 => Ok(b.as_slice::<f32>()?.to_vec()),
                DType::F16 => Ok(b.as_slice::<half::f16>()?.iter().map(|v| v.to_f32()).collect()),
                DType::BF16 => Ok(b.as_slice::<half::bf16>()?.iter().map(|v| v.to_f32()).collect()),
                other => Err(CoreError::unsupported(
                    "GgufTensorData::to_f32",
                    format!("{other:?} tensors"),
                )),
            },
        }
    }
}

/// The iterator of [`GgufFile::tensors_in`]: each tensor with its info, in data order.
pub struct GgufTensors<'a, R> {
    file: &'a GgufFile,
    reader: &'a mut R,
    order: std::vec::IntoIter<usize>,
}

impl<'a, R: Read + Seek> Iterator for GgufTensors<'a, R> {
    type Item = Result<(&'a GgufTensorInfo, GgufTensorData)>;

    fn next(&mut self) -> Option<Self::Item> {
        let info = &self.file.tensors[self.order.next()?];
        Some(self.file.read_any(self.reader, &info.name).map(|d| (info, d)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.order.size_hint()
    }
}

impl<R: Read + Seek> ExactSizeIterator for GgufTensors<'_, R> {}

/// `GGUF tensor "name" (type, shape [..]) at file byte N`, for error context.
fn describe(info: &GgufTensorInfo) -> String {
    format!(
        "GGUF tensor {:?} ({}, shape {:?}) whose data starts at file byte {}",
        info.name, info.ggml_type, info.shape, info.file_offset
    )
}

fn check_version(version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(CoreError::unsupported(
            "the GGUF reader",
            "GGUF version 1 (its counts are 32-bit; versions 2 and 3 are read)",
        )),
        v if (1..=3).contains(&v.swap_bytes()) => Err(CoreError::unsupported(
            "the GGUF reader",
            format!("a big-endian GGUF file (version {})", v.swap_bytes()),
        )),
        v => Err(invalid_at(4, format!("unknown GGUF version {v} (2 and 3 are read)"))),
    }
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

fn read_metadata<R: Read>(p: &mut Parser<R>, count: u64) -> Result<Metadata> {
    // Nothing is reserved from `count`: a count that fits the file at 13 bytes an entry
    // would still reserve about 10 times the file's size (an entry takes 56 bytes here, plus
    // its hash slot) before the first entry is read. The lists grow as entries are parsed,
    // so they cost a bounded multiple of the bytes actually read.
    let mut entries = Vec::new();
    let mut keys = HashMap::new();
    for i in 0..count {
        let at = p.pos();
        let key = p
            .string("metadata key")
            .map_err(|e| in_context(e, || format!("metadata entry {i}")))?;
        let value = p
            .value_type("metadata value type")
            .and_then(|ty| p.value(ty, 0))
            .map_err(|e| in_context(e, || format!("metadata entry {i}, {key:?}")))?;
        if keys.insert(key.clone(), entries.len()).is_some() {
            return Err(invalid_at(at, format!("metadata key {key:?} appears twice")));
        }
        entries.push((key, value));
    }
    Ok((entries, keys))
}

type TensorInfos = (Vec<GgufTensorInfo>, HashMap<String, usize>);

fn read_tensor_infos<R: Read>(p: &mut Parser<R>, count: u64, alignment: u32) -> Result<TensorInfos> {
    // Grown as parsed, as in `read_metadata`.
    let mut tensors = Vec::new();
    let mut names = HashMap::new();
    for i in 0..count {
        let at = p.pos();
        let name = p
            .string("tensor name")
            .map_err(|e| in_context(e, || format!("tensor info {i}")))?;
        let info = read_tensor_info(p, name, alignment)?;
        if names.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(invalid_at(at, format!("tensor name {:?} appears twice", info.name)));
        }
        tensors.push(info);
    }
    Ok((tensors, names))
}

fn read_tensor_info<R: Read>(p: &mut Parser<R>, name: String, alignment: u32) -> Result<GgufTensorInfo> {
    let ctx = |e| in_context(e, || format!("tensor info {name:?}"));
    let at = p.pos();
    let n_dims = p.u32("dimension count").map_err(ctx)?;
    if n_dims as usize > MAX_DIMS {
        return Err(ctx(invalid_at(at, format!("{n_dims} dimensions (at most {MAX_DIMS})"))));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    let mut numel = 1u64;
    for _ in 0..n_dims {
        let at = p.pos();
        let d = p.u64("dimension").map_err(ctx)?;
        numel = numel
            .checked_mul(d)
            .filter(|&n| i64::try_from(n).is_ok())
            .ok_or_else(|| ctx(invalid_at(at, format!("dimensions {dims:?} × {d} overflow"))))?;
        dims.push(usize::try_from(d).map_err(|_| ctx(invalid_at(at, format!("dimension {d} exceeds memory"))))?);
    }
    let at = p.pos();
    let ggml_type = GgmlType(p.u32("tensor type").map_err(ctx)?);
    let byte_len = match ggml_type.block_layout() {
        None => None,
        Some((values, bytes)) => {
            let row = dims.first().map_or(1, |&r| r as u64);
            if row % values != 0 {
                return Err(ctx(invalid_at(
                    at,
                    format!("{ggml_type} needs rows that are a multiple of {values} values, got {row}"),
                )));
            }
            // numel < 2^63 and bytes per block < 2^9, but check anyway.
            Some(
                (numel / values)
                    .checked_mul(bytes)
                    .ok_or_else(|| ctx(invalid_at(at, "byte size overflows")))?,
            )
        }
    };
    let at = p.pos();
    let offset = p.u64("tensor data offset").map_err(ctx)?;
    if offset % u64::from(alignment) != 0 {
        return Err(ctx(invalid_at(
            at,
            format!("data offset {offset} is not a multiple of the alignment {alignment}"),
        )));
    }
    dims.reverse();
    Ok(GgufTensorInfo {
        name,
        ggml_type,
        shape: dims,
        offset,
        file_offset: 0, // set once the data section's start is known
        byte_len,
    })
}

/// The bytes of one tensor, checked against the reader's length before allocating.
fn read_bytes<R: Read + Seek>(reader: &mut R, info: &GgufTensorInfo) -> Result<Vec<u8>> {
    let n = checked_len(reader, info)?;
    let mut data = vec![0u8; n];
    fill(reader, info, &mut data)?;
    Ok(data)
}

/// Reads one tensor's bytes into `out`, which must be exactly as long.
fn read_bytes_into<R: Read + Seek>(reader: &mut R, info: &GgufTensorInfo, out: &mut [u8]) -> Result<()> {
    let n = checked_len(reader, info)?;
    if n != out.len() {
        return Err(CoreError::shape_mismatch(describe(info), [n], [out.len()]));
    }
    fill(reader, info, out)
}

fn fill<R: Read + Seek>(reader: &mut R, info: &GgufTensorInfo, out: &mut [u8]) -> Result<()> {
    reader.seek(SeekFrom::Start(info.file_offset))?;
    reader.read_exact(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            CoreError::invalid_input(format!(
                "{}: the stream ended inside its {} bytes",
                describe(info),
                out.len()
            ))
        } else {
            e.into()
        }
    })
}

/// The byte length of one tensor, checked against the reader's length.
fn checked_len<R: Read + Seek>(reader: &mut R, info: &GgufTensorInfo) -> Result<usize> {
    let len = info.byte_len.ok_or_else(|| {
        CoreError::unsupported(
            format!("reading GGUF tensor {:?}", info.name),
            format!("{} (its size is unknown)", info.ggml_type),
        )
    })?;
    let file_len = reader.seek(SeekFrom::End(0))?;
    if info.file_offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(CoreError::invalid_input(format!(
            "GGUF tensor {:?}: {len} bytes at byte {} run past the end of the stream ({file_len} bytes); \
             is it the stream the header was read from?",
            info.name, info.file_offset
        )));
    }
    usize::try_from(len)
        .map_err(|_| CoreError::invalid_input(format!("GGUF tensor {:?}: {len} bytes exceed memory", info.name)))
}

/// GGUF stores numbers little-endian; a [`TensorBuffer`] holds them in native order.
fn to_native_endian(data: &mut [u8], dtype: DType) {
    if cfg!(target_endian = "big") {
        let size = dtype.size_in_bytes();
        if size > 1 {
            data.chunks_exact_mut(size).for_each(<[u8]>::reverse);
        }
    }
}
