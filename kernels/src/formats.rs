//! The formats the kernels decode, in one place: for each `QuantFormat`, whether the
//! kernels run it and how (the decoder variant, the values per scale, the code book).
//!
//! [`facts`] is the one match over `QuantFormat` that decides support: the upload
//! ([`DeviceQuantized::upload`](crate::DeviceQuantized::upload)), the device check
//! ([`device_support`](crate::device_support)) and so `CubeProvider::supports` all read it.
//! Every format `aihal-quantize` has today is decoded; a format added there later is refused
//! here ("no CubeCL decoder") until a decoder joins `decode.rs` and an arm joins this match.

use aihal_core::Result;
use aihal_quantize::{QuantFormat, QuantizedTensor};

use crate::decode::kind;

/// The code book a format's kernels index (uploaded beside the packed bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// None: the codes are integers.
    None,
    /// The 16 NF4 levels (`aihal_quantize::nf4::NF4_CODE`).
    Nf4,
    /// The 256 values of an FP8 E4M3 byte.
    E4M3,
    /// The 256 values of an FP8 E5M2 byte.
    E5M2,
    /// The 16 values of llama.cpp's `kvalues_iq4nl` (IQ4_NL, IQ4_XS).
    Iq4,
}

/// What the kernels know of one format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The decoder variant (`decode::kind`), a compile-time value of every kernel.
    pub(crate) kind: u32,
    /// Values per scale: a GGML block or super-block, an NF4 / int8 / FP8 block, the row
    /// length for one scale per row, 1 for one scale per tensor.
    pub(crate) block: usize,
    /// The code book the decoder indexes.
    pub(crate) table: Table,
}

/// How the kernels decode `format` in rows of `row_len` values (every format has a decoder:
/// the match names each one).
///
/// NF4 with double quantization also needs the tensor's nested absmax; the upload checks
/// that, since it is a property of the tensor, not of the format.
pub(crate) fn facts(format: QuantFormat, row_len: usize) -> Facts {
    let (kind, block, table) = match format {
        // llama.cpp's blocks, read as stored (`aihal_quantize::format`'s layout table):
        // 32 values per block, the scale (and minimum) inline.
        QuantFormat::Q8_0 => (kind::Q8_0, 32, Table::None),
        QuantFormat::Q4_0 => (kind::Q4_0, 32, Table::None),
        QuantFormat::Q4_1 => (kind::Q4_1, 32, Table::None),
        QuantFormat::Q5_0 => (kind::Q5_0, 32, Table::None),
        QuantFormat::Q5_1 => (kind::Q5_1, 32, Table::None),
        // 256-value super-blocks with sub-block scales.
        QuantFormat::Q2K => (kind::Q2_K, 256, Table::None),
        QuantFormat::Q3K => (kind::Q3_K, 256, Table::None),
        QuantFormat::Q4K => (kind::Q4_K, 256, Table::None),
        QuantFormat::Q5K => (kind::Q5_K, 256, Table::None),
        QuantFormat::Q6K => (kind::Q6_K, 256, Table::None),
        // 4-bit indices into llama.cpp's non-linear code book, per block or super-block.
        QuantFormat::Iq4Nl => (kind::IQ4_NL, 32, Table::Iq4),
        QuantFormat::Iq4Xs => (kind::IQ4_XS, 256, Table::Iq4),
        QuantFormat::Tq2_0 => (kind::TQ2_0, 256, Table::None),
        QuantFormat::Ternary => (kind::TERNARY, 1, Table::None),
        QuantFormat::Nf4 {
            block_size,
            double_quant: false,
        } => (kind::NF4, block_size, Table::Nf4),
        QuantFormat::Nf4 {
            block_size,
            double_quant: true,
        } => (kind::NF4_DOUBLE, block_size, Table::Nf4),
        QuantFormat::Int8PerChannel => (kind::INT8_CHANNEL, row_len, Table::None),
        QuantFormat::Int8PerBlock { block_size } => (kind::INT8_BLOCK, block_size, Table::None),
        QuantFormat::Fp8E4M3 { block_size } => fp8(block_size, Table::E4M3),
        QuantFormat::Fp8E5M2 { block_size } => fp8(block_size, Table::E5M2),
    };
    Facts {
        kind,
        block: block.max(1),
        table,
    }
}

fn fp8(block_size: Option<usize>, table: Table) -> (u32, usize, Table) {
    match block_size {
        None => (kind::FP8_TENSOR, 1, table),
        Some(b) => (kind::FP8_BLOCK, b, table),
    }
}

/// The code book of `table` as the kernels read it (empty for none).
pub(crate) fn table_values(table: Table) -> Result<Vec<f32>> {
    Ok(match table {
        Table::None => Vec::new(),
        Table::Nf4 => aihal_quantize::nf4::NF4_CODE.to_vec(),
        Table::E4M3 => (0..=255u8).map(aihal_quantize::fp8::e4m3_to_f32).collect(),
        Table::E5M2 => (0..=255u8).map(aihal_quantize::fp8::e5m2_to_f32).collect(),
        Table::Iq4 => iq4_code_book()?,
    })
}

/// llama.cpp's `kvalues_iq4nl`, read through `aihal_quantize`'s own decoder (the code book
/// lives there only): one IQ4_NL block with `d = 1` (f16 `0x3C00`) whose byte `j` holds
/// index `j` in both nibbles decodes to the code book, exactly (small integers times 1).
fn iq4_code_book() -> Result<Vec<f32>> {
    let mut block = vec![0x00, 0x3C];
    block.extend((0..16u8).map(|j| j | (j << 4)));
    let w = QuantizedTensor::from_parts(QuantFormat::Iq4Nl, vec![1, 32], block, Vec::new())?;
    let mut row = [0.0f32; 32];
    aihal_quantize::decode::decode_row_into(&w, 0, 0, &mut row)?;
    Ok(row[..16].to_vec())
}
