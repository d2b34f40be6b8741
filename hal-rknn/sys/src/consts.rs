//! Constants of the runtime's C API: status codes, flags, query commands and enum values.
//!
//! The C enums use aliases (two query names share 8 and 9) and sentinels that moved between
//! versions, so they are plain integer constants here, never Rust enums. The values are
//! unchanged from runtime 1.5 to 2.3 unless a constant says otherwise.

use std::ffi::c_int;

// ---- status codes: every function returning `int` returns 0 or one of these -------------

/// Success.
pub const RKNN_SUCC: c_int = 0;
/// Generic failure.
pub const RKNN_ERR_FAIL: c_int = -1;
/// The operation timed out.
pub const RKNN_ERR_TIMEOUT: c_int = -2;
/// The NPU device is not available.
pub const RKNN_ERR_DEVICE_UNAVAILABLE: c_int = -3;
/// An allocation failed.
pub const RKNN_ERR_MALLOC_FAIL: c_int = -4;
/// A parameter is invalid (also: a query buffer is smaller than the runtime's struct).
pub const RKNN_ERR_PARAM_INVALID: c_int = -5;
/// The model is invalid.
pub const RKNN_ERR_MODEL_INVALID: c_int = -6;
/// The context is invalid.
pub const RKNN_ERR_CTX_INVALID: c_int = -7;
/// An `rknn_input` is invalid.
pub const RKNN_ERR_INPUT_INVALID: c_int = -8;
/// An `rknn_output` is invalid.
pub const RKNN_ERR_OUTPUT_INVALID: c_int = -9;
/// Runtime, driver and firmware versions do not match.
pub const RKNN_ERR_DEVICE_UNMATCH: c_int = -10;
/// A pre-compiled model does not match the driver (the misspelling is the runtime's own).
pub const RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL: c_int = -11;
/// A model's optimization level does not match the runtime.
pub const RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION: c_int = -12;
/// The model was compiled for another platform.
pub const RKNN_ERR_TARGET_PLATFORM_UNMATCH: c_int = -13;

/// The symbolic name of a status code, `None` for a code no runtime version defines.
pub const fn status_name(code: c_int) -> Option<&'static str> {
    Some(match code {
        RKNN_SUCC => "RKNN_SUCC",
        RKNN_ERR_FAIL => "RKNN_ERR_FAIL",
        RKNN_ERR_TIMEOUT => "RKNN_ERR_TIMEOUT",
        RKNN_ERR_DEVICE_UNAVAILABLE => "RKNN_ERR_DEVICE_UNAVAILABLE",
        RKNN_ERR_MALLOC_FAIL => "RKNN_ERR_MALLOC_FAIL",
        RKNN_ERR_PARAM_INVALID => "RKNN_ERR_PARAM_INVALID",
        RKNN_ERR_MODEL_INVALID => "RKNN_ERR_MODEL_INVALID",
        RKNN_ERR_CTX_INVALID => "RKNN_ERR_CTX_INVALID",
        RKNN_ERR_INPUT_INVALID => "RKNN_ERR_INPUT_INVALID",
        RKNN_ERR_OUTPUT_INVALID => "RKNN_ERR_OUTPUT_INVALID",
        RKNN_ERR_DEVICE_UNMATCH => "RKNN_ERR_DEVICE_UNMATCH",
        RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL => "RKNN_ERR_INCOMPATILE_PRE_COMPILE_MODEL",
        RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION => "RKNN_ERR_INCOMPATILE_OPTIMIZATION_LEVEL_VERSION",
        RKNN_ERR_TARGET_PLATFORM_UNMATCH => "RKNN_ERR_TARGET_PLATFORM_UNMATCH",
        _ => return None,
    })
}

// ---- limits -------------------------------------------------------------------------------

/// Dimensions a tensor attribute can hold.
pub const RKNN_MAX_DIMS: usize = 16;
/// Maximum channels of an input.
pub const RKNN_MAX_NUM_CHANNEL: usize = 15;
/// Bytes of a name field, NUL included.
pub const RKNN_MAX_NAME_LEN: usize = 256;
/// Shapes a dynamic-shape input can list (1.5.0 and later).
pub const RKNN_MAX_DYNAMIC_SHAPE_NUM: usize = 512;

// ---- rknn_init flags ----------------------------------------------------------------------

/// High priority (the default).
pub const RKNN_FLAG_PRIOR_HIGH: u32 = 0x0;
/// Medium priority.
pub const RKNN_FLAG_PRIOR_MEDIUM: u32 = 0x1;
/// Low priority.
pub const RKNN_FLAG_PRIOR_LOW: u32 = 0x2;
/// Asynchronous mode: `rknn_outputs_get` answers the previous frame.
pub const RKNN_FLAG_ASYNC_MASK: u32 = 0x4;
/// Collect per-layer timings for `RKNN_QUERY_PERF_DETAIL` (slows inference).
pub const RKNN_FLAG_COLLECT_PERF_MASK: u32 = 0x8;
/// The caller allocates all memory.
pub const RKNN_FLAG_MEM_ALLOC_OUTSIDE: u32 = 0x10;
/// Share weights with the context passed in `rknn_init_extend.ctx`.
pub const RKNN_FLAG_SHARE_WEIGHT_MEM: u32 = 0x20;
/// The input fence fd comes from outside.
pub const RKNN_FLAG_FENCE_IN_OUTSIDE: u32 = 0x40;
/// The output fence fd is exported.
pub const RKNN_FLAG_FENCE_OUT_OUTSIDE: u32 = 0x80;
/// Load only enough to answer memory-size queries (1.5.0).
pub const RKNN_FLAG_COLLECT_MODEL_INFO_ONLY: u32 = 0x100;
/// The caller allocates the internal memory only (1.5.2).
pub const RKNN_FLAG_INTERNAL_ALLOC_OUTSIDE: u32 = 0x200;
/// Prefer the GPU for operators the NPU lacks (1.5.2).
pub const RKNN_FLAG_EXECUTE_FALLBACK_PRIOR_DEVICE_GPU: u32 = 0x400;
/// Allow SRAM buffers (1.6.0).
pub const RKNN_FLAG_ENABLE_SRAM: u32 = 0x800;
/// Share SRAM buffers between contexts (1.6.0).
pub const RKNN_FLAG_SHARE_SRAM: u32 = 0x1000;
/// Do not raise the process priority (1.6.0).
pub const RKNN_FLAG_DISABLE_PROC_HIGH_PRIORITY: u32 = 0x2000;
/// The runtime skips the input cache flush (2.0.0).
pub const RKNN_FLAG_DISABLE_FLUSH_INPUT_MEM_CACHE: u32 = 0x4000;
/// The runtime skips the output cache invalidation (2.0.0).
pub const RKNN_FLAG_DISABLE_FLUSH_OUTPUT_MEM_CACHE: u32 = 0x8000;
/// The model buffer is NPU memory read in place (2.1.0).
pub const RKNN_FLAG_MODEL_BUFFER_ZERO_COPY: u32 = 0x10000;
/// `rknn_create_mem2` without a context (2.1.0).
pub const RKNN_MEM_FLAG_ALLOC_NO_CONTEXT: u32 = 0x20000;

// ---- rknn_query commands ------------------------------------------------------------------

/// Fills `rknn_input_output_num`.
pub const RKNN_QUERY_IN_OUT_NUM: u32 = 0;
/// Fills `rknn_tensor_attr` of the input whose `index` is set.
pub const RKNN_QUERY_INPUT_ATTR: u32 = 1;
/// Fills `rknn_tensor_attr` of the output whose `index` is set.
pub const RKNN_QUERY_OUTPUT_ATTR: u32 = 2;
/// Fills `rknn_perf_detail` (needs `RKNN_FLAG_COLLECT_PERF_MASK`).
pub const RKNN_QUERY_PERF_DETAIL: u32 = 3;
/// Fills `rknn_perf_run`.
pub const RKNN_QUERY_PERF_RUN: u32 = 4;
/// Fills `rknn_sdk_version`.
pub const RKNN_QUERY_SDK_VERSION: u32 = 5;
/// Fills `rknn_mem_size`.
pub const RKNN_QUERY_MEM_SIZE: u32 = 6;
/// Fills `rknn_custom_string`.
pub const RKNN_QUERY_CUSTOM_STRING: u32 = 7;
/// Fills `rknn_tensor_attr` of an input in the NPU's native layout.
pub const RKNN_QUERY_NATIVE_INPUT_ATTR: u32 = 8;
/// Fills `rknn_tensor_attr` of an output in the NPU's native layout.
pub const RKNN_QUERY_NATIVE_OUTPUT_ATTR: u32 = 9;
/// Alias of [`RKNN_QUERY_NATIVE_INPUT_ATTR`].
pub const RKNN_QUERY_NATIVE_NC1HWC2_INPUT_ATTR: u32 = 8;
/// Alias of [`RKNN_QUERY_NATIVE_OUTPUT_ATTR`].
pub const RKNN_QUERY_NATIVE_NC1HWC2_OUTPUT_ATTR: u32 = 9;
/// Native input attribute in NHWC.
pub const RKNN_QUERY_NATIVE_NHWC_INPUT_ATTR: u32 = 10;
/// Native output attribute in NHWC.
pub const RKNN_QUERY_NATIVE_NHWC_OUTPUT_ATTR: u32 = 11;
/// Device memory information (struct undocumented).
pub const RKNN_QUERY_DEVICE_MEM_INFO: u32 = 12;
/// Fills `rknn_input_range` (dynamic-shape models, 1.5.0).
pub const RKNN_QUERY_INPUT_DYNAMIC_RANGE: u32 = 13;
/// Current input attribute (dynamic-shape models, 1.5.0).
pub const RKNN_QUERY_CURRENT_INPUT_ATTR: u32 = 14;
/// Current output attribute (dynamic-shape models, 1.5.0).
pub const RKNN_QUERY_CURRENT_OUTPUT_ATTR: u32 = 15;
/// Current native input attribute (1.5.2).
pub const RKNN_QUERY_CURRENT_NATIVE_INPUT_ATTR: u32 = 16;
/// Current native output attribute (1.5.2).
pub const RKNN_QUERY_CURRENT_NATIVE_OUTPUT_ATTR: u32 = 17;

// ---- rknn_tensor_type ---------------------------------------------------------------------

/// 32-bit float.
pub const RKNN_TENSOR_FLOAT32: u32 = 0;
/// 16-bit float.
pub const RKNN_TENSOR_FLOAT16: u32 = 1;
/// Signed 8-bit integer.
pub const RKNN_TENSOR_INT8: u32 = 2;
/// Unsigned 8-bit integer.
pub const RKNN_TENSOR_UINT8: u32 = 3;
/// Signed 16-bit integer.
pub const RKNN_TENSOR_INT16: u32 = 4;
/// Unsigned 16-bit integer.
pub const RKNN_TENSOR_UINT16: u32 = 5;
/// Signed 32-bit integer.
pub const RKNN_TENSOR_INT32: u32 = 6;
/// Unsigned 32-bit integer.
pub const RKNN_TENSOR_UINT32: u32 = 7;
/// Signed 64-bit integer.
pub const RKNN_TENSOR_INT64: u32 = 8;
/// Boolean.
pub const RKNN_TENSOR_BOOL: u32 = 9;
/// Signed 4-bit integer (1.6.0).
pub const RKNN_TENSOR_INT4: u32 = 10;
/// bfloat16 (2.3.0).
pub const RKNN_TENSOR_BFLOAT16: u32 = 11;

// ---- rknn_tensor_qnt_type -----------------------------------------------------------------

/// Not quantized.
pub const RKNN_TENSOR_QNT_NONE: u32 = 0;
/// Dynamic fixed point (uses `fl`).
pub const RKNN_TENSOR_QNT_DFP: u32 = 1;
/// Affine asymmetric (uses `zp` and `scale`).
pub const RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC: u32 = 2;

// ---- rknn_tensor_format -------------------------------------------------------------------

/// Batch, channel, height, width.
pub const RKNN_TENSOR_NCHW: u32 = 0;
/// Batch, height, width, channel.
pub const RKNN_TENSOR_NHWC: u32 = 1;
/// The NPU's native blocked layout.
pub const RKNN_TENSOR_NC1HWC2: u32 = 2;
/// No layout (vectors, matrices).
pub const RKNN_TENSOR_UNDEFINED: u32 = 3;

// ---- rknn_core_mask -----------------------------------------------------------------------

/// The runtime picks an idle core.
pub const RKNN_NPU_CORE_AUTO: u32 = 0;
/// Core 0.
pub const RKNN_NPU_CORE_0: u32 = 1;
/// Core 1.
pub const RKNN_NPU_CORE_1: u32 = 2;
/// Core 2.
pub const RKNN_NPU_CORE_2: u32 = 4;
/// Cores 0 and 1 together.
pub const RKNN_NPU_CORE_0_1: u32 = 3;
/// Cores 0, 1 and 2 together.
pub const RKNN_NPU_CORE_0_1_2: u32 = 7;
/// Every core of the platform (2.0.0).
pub const RKNN_NPU_CORE_ALL: u32 = 0xffff;

// ---- memory -------------------------------------------------------------------------------

/// `rknn_tensor_mem.flags`: the runtime allocated the memory.
pub const RKNN_TENSOR_MEMORY_FLAGS_ALLOC_INSIDE: u32 = 1;
/// `rknn_tensor_mem.flags`: wraps a dma-buf fd.
pub const RKNN_TENSOR_MEMORY_FLAGS_FROM_FD: u32 = 2;
/// `rknn_tensor_mem.flags`: wraps a physical address.
pub const RKNN_TENSOR_MEMORY_FLAGS_FROM_PHYS: u32 = 3;
/// `rknn_mem_sync` mode: after the CPU wrote (1.6.0).
pub const RKNN_MEMORY_SYNC_TO_DEVICE: u32 = 1;
/// `rknn_mem_sync` mode: before the CPU reads what the NPU wrote (1.6.0).
pub const RKNN_MEMORY_SYNC_FROM_DEVICE: u32 = 2;
/// `rknn_mem_sync` mode: both directions (1.6.0).
pub const RKNN_MEMORY_SYNC_BIDIRECTIONAL: u32 = 3;

// ---- matmul -------------------------------------------------------------------------------

/// f16 × f16 → f32 (the value of `RKNN_TENSOR_FLOAT16` used by 1.5.x).
pub const RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32: u32 = 1;
/// i8 × i8 → i32 (the value of `RKNN_TENSOR_INT8` used by 1.5.x).
pub const RKNN_INT8_MM_INT8_TO_INT32: u32 = 2;
/// i8 × i8 → i8 with quantization parameters (2.0.0).
pub const RKNN_INT8_MM_INT8_TO_INT8: u32 = 3;
/// f16 × f16 → f16 (2.0.0).
pub const RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT16: u32 = 4;
/// f16 × i8 → f32 (2.0.0).
pub const RKNN_FLOAT16_MM_INT8_TO_FLOAT32: u32 = 5;
/// f16 × i8 → f16 (2.0.0).
pub const RKNN_FLOAT16_MM_INT8_TO_FLOAT16: u32 = 6;
/// f16 × i4 → f32 (2.0.0).
pub const RKNN_FLOAT16_MM_INT4_TO_FLOAT32: u32 = 7;
/// f16 × i4 → f16 (2.0.0).
pub const RKNN_FLOAT16_MM_INT4_TO_FLOAT16: u32 = 8;
/// i8 × i8 → f32 (2.1.0).
pub const RKNN_INT8_MM_INT8_TO_FLOAT32: u32 = 9;
/// i4 × i4 → i16 (1.6.0).
pub const RKNN_INT4_MM_INT4_TO_INT16: u32 = 10;
/// i8 × i4 → i32 (2.0.0).
pub const RKNN_INT8_MM_INT4_TO_INT32: u32 = 11;
/// f16 × i4 → bf16 (2.3.0).
pub const RKNN_FLOAT16_MM_INT4_TO_BFLOAT16: u32 = 12;
/// i8 × i4 → f16 (2.3.2).
pub const RKNN_INT8_MM_INT4_TO_FLOAT16: u32 = 15;

/// B (or A/C) in plain row-major order: A `[M, K]`, B `[K, N]`, C `[M, N]`.
pub const RKNN_MM_LAYOUT_NORM: i32 = 0;
/// B in the NPU's native blocked order; A and C in the "perf" blocked order.
pub const RKNN_MM_LAYOUT_NATIVE: i32 = 1;
/// B given transposed, `[N, K]` (2.1.0).
pub const RKNN_MM_LAYOUT_TP_NORM: i32 = 2;

// `rknn_matmul_info.B_quant_type` is numbered differently by 2.0.0 and by 2.1.0 and later:
// use `RuntimeVersion::matmul_quant_type` rather than these constants directly.

/// 2.0.0's `B_quant_type` for per-layer quantization (the field's comment in the 2.0.0
/// header).
pub const RKNN_V2_0_QUANT_TYPE_PER_LAYER: i16 = 0;
/// 2.0.0's `B_quant_type` for per-channel quantization (the field's comment in the 2.0.0
/// header; the 2.0.0 matmul demo sets 1 for per-channel B). 2.1.0 renumbered it to
/// [`RKNN_QUANT_TYPE_PER_CHANNEL_SYM`].
pub const RKNN_V2_0_QUANT_TYPE_PER_CHANNEL: i16 = 1;

/// Quantization type: one symmetric scale per matrix (2.1.0 enum).
pub const RKNN_QUANT_TYPE_PER_LAYER_SYM: i16 = 0;
/// Quantization type: one scale and zero point per matrix (2.1.0 enum).
pub const RKNN_QUANT_TYPE_PER_LAYER_ASYM: i16 = 1;
/// Quantization type: one symmetric scale per output channel (2.1.0 enum; 2.0.0 used 1).
pub const RKNN_QUANT_TYPE_PER_CHANNEL_SYM: i16 = 2;
/// Quantization type: one scale and zero point per output channel (2.1.0 enum).
pub const RKNN_QUANT_TYPE_PER_CHANNEL_ASYM: i16 = 3;
/// Quantization type: one symmetric scale per group (2.1.0 enum).
pub const RKNN_QUANT_TYPE_PER_GROUP_SYM: i16 = 4;
/// Quantization type: one scale and zero point per group (2.1.0 enum).
pub const RKNN_QUANT_TYPE_PER_GROUP_ASYM: i16 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_has_a_name_and_others_have_none() {
        for code in -13..=0 {
            let name = status_name(code).unwrap();
            assert!(name.starts_with("RKNN_"), "{code}: {name}");
        }
        assert_eq!(status_name(-2), Some("RKNN_ERR_TIMEOUT"));
        assert_eq!(status_name(-14), None);
        assert_eq!(status_name(1), None);
    }
}
