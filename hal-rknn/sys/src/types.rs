//! `#[repr(C)]` structs of the runtime's C API, each with its size and field offsets checked
//! at compile time against the layout table of the API reference (LP64: aarch64 and x86_64).
//!
//! Every struct is `Copy` and has a `zeroed()` constructor: the runtime expects zeroed
//! reserved tails, and the official samples clear every struct before filling it.
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_char, c_void};
use std::mem::{align_of, offset_of, size_of};

use crate::consts::{RKNN_MAX_DIMS, RKNN_MAX_DYNAMIC_SHAPE_NUM, RKNN_MAX_NAME_LEN};

/// A runtime context: an opaque handle passed by value (`uint64_t` on 64-bit targets).
pub type rknn_context = u64;
/// A matmul context: the same type as [`rknn_context`].
pub type rknn_matmul_ctx = rknn_context;

macro_rules! zeroed {
    ($($t:ty),* $(,)?) => {$(
        impl $t {
            /// A value with every byte zero, as the runtime expects before a struct is filled.
            pub fn zeroed() -> Self {
                // SAFETY: the struct holds only integers, floats, arrays of them and raw
                // pointers, for all of which the all-zero bit pattern is a valid value.
                unsafe { std::mem::zeroed() }
            }
        }
        impl Default for $t {
            fn default() -> Self {
                Self::zeroed()
            }
        }
    )*};
}

/// `RKNN_QUERY_IN_OUT_NUM`: how many inputs and outputs the model has.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_input_output_num {
    /// Number of inputs.
    pub n_input: u32,
    /// Number of outputs.
    pub n_output: u32,
}

/// A tensor's attributes (runtime 1.3.0 and later; 376 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_tensor_attr {
    /// Tensor index; set it before `rknn_query`.
    pub index: u32,
    /// Number of used entries of `dims`.
    pub n_dims: u32,
    /// Dimensions.
    pub dims: [u32; RKNN_MAX_DIMS],
    /// NUL-terminated name.
    pub name: [c_char; RKNN_MAX_NAME_LEN],
    /// Element count.
    pub n_elems: u32,
    /// Size in bytes.
    pub size: u32,
    /// Layout (`RKNN_TENSOR_NCHW`, …).
    pub fmt: u32,
    /// Element type (`RKNN_TENSOR_INT8`, …).
    pub type_: u32,
    /// Quantization type (`RKNN_TENSOR_QNT_*`).
    pub qnt_type: u32,
    /// Fractional length for dynamic fixed point.
    pub fl: i8,
    /// Zero point for affine quantization.
    pub zp: i32,
    /// Scale for affine quantization.
    pub scale: f32,
    /// Row stride in pixels (0: equal to the width).
    pub w_stride: u32,
    /// Size in bytes including row padding.
    pub size_with_stride: u32,
    /// Whether the buffer goes to the NPU without conversion.
    pub pass_through: u8,
    /// Height stride (0: equal to the height), for multi-batch inputs.
    pub h_stride: u32,
}

/// One input for `rknn_inputs_set` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_input {
    /// Input index.
    pub index: u32,
    /// The data.
    pub buf: *mut c_void,
    /// Size of `buf` in bytes.
    pub size: u32,
    /// 1: hand the buffer to the NPU as it is; 0: convert `type_`/`fmt` to the model's.
    pub pass_through: u8,
    /// Element type of `buf`.
    pub type_: u32,
    /// Layout of `buf`.
    pub fmt: u32,
}

/// One output for `rknn_outputs_get` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_output {
    /// 1: convert to f32.
    pub want_float: u8,
    /// 1: the caller provides `buf` and `size`; 0: the runtime allocates until release.
    pub is_prealloc: u8,
    /// Output index.
    pub index: u32,
    /// The data.
    pub buf: *mut c_void,
    /// Size of `buf` in bytes.
    pub size: u32,
}

/// Memory the NPU can read and write (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_tensor_mem {
    /// CPU address.
    pub virt_addr: *mut c_void,
    /// Physical address.
    pub phys_addr: u64,
    /// dma-buf file descriptor.
    pub fd: i32,
    /// Offset into the fd.
    pub offset: i32,
    /// Size in bytes.
    pub size: u32,
    /// `RKNN_TENSOR_MEMORY_FLAGS_*`.
    pub flags: u32,
    /// Runtime-private data.
    pub priv_data: *mut c_void,
}

/// Extra arguments of `rknn_init` (136 bytes in every version; the 2.1 field names).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_init_extend {
    /// Context whose weights are shared (`RKNN_FLAG_SHARE_WEIGHT_MEM`).
    pub ctx: rknn_context,
    /// Offset of the model inside the buffer (1.4.0).
    pub real_model_offset: i32,
    /// Size of the model inside the buffer (1.4.0).
    pub real_model_size: u32,
    /// fd of a zero-copy model buffer (2.1.0).
    pub model_buffer_fd: i32,
    /// Flags of a zero-copy model buffer (2.1.0).
    pub model_buffer_flags: u32,
    /// Reserved, zero.
    pub reserved: [u8; 112],
}

/// Extra arguments of `rknn_run` (24 bytes; unused, pass NULL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_run_extend {
    /// Frame id (output).
    pub frame_id: u64,
    /// 0: blocking.
    pub non_block: i32,
    /// Timeout in milliseconds.
    pub timeout_ms: i32,
    /// Fence fd.
    pub fence_fd: i32,
}

/// Extra arguments of `rknn_outputs_get` (8 bytes; pass NULL).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_output_extend {
    /// Frame id (output).
    pub frame_id: u64,
}

/// `RKNN_QUERY_SDK_VERSION` (512 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_sdk_version {
    /// Runtime version, e.g. `2.1.0 (967d001cc8@2024-08-07T19:28:19)`.
    pub api_version: [c_char; 256],
    /// Kernel driver version, e.g. `0.9.6`.
    pub drv_version: [c_char; 256],
}

/// `RKNN_QUERY_MEM_SIZE` (runtime 1.4.0 and later; 64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_mem_size {
    /// Bytes of weights.
    pub total_weight_size: u32,
    /// Bytes of intermediate tensors.
    pub total_internal_size: u32,
    /// Bytes of DMA memory allocated.
    pub total_dma_allocated_size: u64,
    /// Bytes of SRAM.
    pub total_sram_size: u32,
    /// Bytes of SRAM free.
    pub free_sram_size: u32,
    /// Reserved.
    pub reserved: [u32; 10],
}

/// `RKNN_QUERY_PERF_DETAIL` (16 bytes). `perf_data` belongs to the runtime.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_perf_detail {
    /// Text of per-layer timings, owned by the runtime.
    pub perf_data: *mut c_char,
    /// Its length.
    pub data_len: u64,
}

/// `RKNN_QUERY_PERF_RUN` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_perf_run {
    /// NPU time of the last run in microseconds.
    pub run_duration: i64,
}

/// `RKNN_QUERY_CUSTOM_STRING` (1024 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_custom_string {
    /// NUL-terminated string stored in the model.
    pub string: [c_char; 1024],
}

/// `RKNN_QUERY_INPUT_DYNAMIC_RANGE` (1.5.0; 33040 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_input_range {
    /// Input index.
    pub index: u32,
    /// Number of shapes listed.
    pub shape_number: u32,
    /// Layout.
    pub fmt: u32,
    /// Name.
    pub name: [c_char; RKNN_MAX_NAME_LEN],
    /// The shapes.
    pub dyn_range: [[u32; RKNN_MAX_DIMS]; RKNN_MAX_DYNAMIC_SHAPE_NUM],
    /// Dimensions per shape.
    pub n_dims: u32,
}

/// One matrix of a matmul (332 bytes): filled by `rknn_matmul_create`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_matmul_tensor_attr {
    /// Name (`A`, `B` or `C`).
    pub name: [c_char; RKNN_MAX_NAME_LEN],
    /// Number of used dims.
    pub n_dims: u32,
    /// Dimensions.
    pub dims: [u32; RKNN_MAX_DIMS],
    /// Bytes to allocate for this matrix.
    pub size: u32,
    /// Element type (`RKNN_TENSOR_*`).
    pub type_: u32,
}

/// The three matrices of a matmul (996 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_matmul_io_attr {
    /// The left matrix, `[M, K]`.
    pub A: rknn_matmul_tensor_attr,
    /// The right matrix, `[K, N]`.
    pub B: rknn_matmul_tensor_attr,
    /// The result, `[M, N]`.
    pub C: rknn_matmul_tensor_attr,
}

/// `rknn_matmul_info` as runtimes 1.5.0 to 1.6.x read it (24 bytes).
///
/// 1.5.x names the last two fields `native_layout` and `perf_layout` and types `type_` as a
/// tensor type; the numbers are the same as 1.6's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_matmul_info_v1 {
    /// Rows of A and C.
    pub M: i32,
    /// Columns of A, rows of B.
    pub K: i32,
    /// Columns of B and C.
    pub N: i32,
    /// `RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32` or `RKNN_INT8_MM_INT8_TO_INT32`.
    pub type_: u32,
    /// B layout: 0 normal, 1 native.
    pub B_layout: i32,
    /// A and C layout: 0 normal, 1 perf.
    pub AC_layout: i32,
}

/// `rknn_matmul_info` as runtimes 2.0.0 and later read it (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_matmul_info_v2 {
    /// Rows of A and C.
    pub M: i32,
    /// Columns of A, rows of B.
    pub K: i32,
    /// Columns of B and C.
    pub N: i32,
    /// `RKNN_*_MM_*` type.
    pub type_: u32,
    /// B layout: `RKNN_MM_LAYOUT_*`.
    pub B_layout: i16,
    /// B quantization type: `RKNN_QUANT_TYPE_*`.
    pub B_quant_type: i16,
    /// A and C layout: 0 normal, 1 perf.
    pub AC_layout: i16,
    /// A and C quantization type (per layer only).
    pub AC_quant_type: i16,
    /// Which 4 GiB IOMMU address space the context uses.
    pub iommu_domain_id: i32,
    /// Group size of per-group quantization (2.1.0; reserved in 2.0.0).
    pub group_size: i16,
    /// Reserved, zero.
    pub reserved: [i8; 34],
}

/// Quantization parameters of one matmul matrix (2.0.0; 288 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rknn_quant_params {
    /// The matrix name, copied from `rknn_matmul_io_attr`.
    pub name: [c_char; RKNN_MAX_NAME_LEN],
    /// Scales (1 per layer or N per channel).
    pub scale: *mut f32,
    /// Length of `scale`.
    pub scale_len: i32,
    /// Zero points.
    pub zp: *mut i32,
    /// Length of `zp`.
    pub zp_len: i32,
}

/// A matmul shape for dynamic-shape matmuls (2.0.0; 12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rknn_matmul_shape {
    /// Rows of A.
    pub M: i32,
    /// Columns of A.
    pub K: i32,
    /// Columns of B.
    pub N: i32,
}

zeroed!(
    rknn_input_output_num,
    rknn_tensor_attr,
    rknn_input,
    rknn_output,
    rknn_tensor_mem,
    rknn_init_extend,
    rknn_run_extend,
    rknn_output_extend,
    rknn_sdk_version,
    rknn_mem_size,
    rknn_perf_detail,
    rknn_perf_run,
    rknn_custom_string,
    rknn_input_range,
    rknn_matmul_tensor_attr,
    rknn_matmul_io_attr,
    rknn_matmul_info_v1,
    rknn_matmul_info_v2,
    rknn_quant_params,
);

macro_rules! layout {
    ($t:ty, size $size:literal, align $align:literal $(, $field:ident @ $off:literal)* $(,)?) => {
        const _: () = assert!(size_of::<$t>() == $size, concat!("size of ", stringify!($t)));
        const _: () = assert!(align_of::<$t>() == $align, concat!("alignment of ", stringify!($t)));
        $(const _: () = assert!(
            offset_of!($t, $field) == $off,
            concat!("offset of ", stringify!($t), ".", stringify!($field))
        );)*
    };
}

#[cfg(target_pointer_width = "64")]
#[allow(clippy::wildcard_imports)]
mod checks {
    use super::*;

    layout!(rknn_input_output_num, size 8, align 4, n_input @ 0, n_output @ 4);
    layout!(rknn_tensor_attr, size 376, align 4,
        index @ 0, n_dims @ 4, dims @ 8, name @ 72, n_elems @ 328, size @ 332, fmt @ 336, type_ @ 340,
        qnt_type @ 344, fl @ 348, zp @ 352, scale @ 356, w_stride @ 360, size_with_stride @ 364,
        pass_through @ 368, h_stride @ 372);
    layout!(rknn_input, size 32, align 8, index @ 0, buf @ 8, size @ 16, pass_through @ 20, type_ @ 24, fmt @ 28);
    layout!(rknn_output, size 24, align 8, want_float @ 0, is_prealloc @ 1, index @ 4, buf @ 8, size @ 16);
    layout!(rknn_tensor_mem, size 40, align 8,
        virt_addr @ 0, phys_addr @ 8, fd @ 16, offset @ 20, size @ 24, flags @ 28, priv_data @ 32);
    layout!(rknn_init_extend, size 136, align 8,
        ctx @ 0, real_model_offset @ 8, real_model_size @ 12, model_buffer_fd @ 16, model_buffer_flags @ 20,
        reserved @ 24);
    layout!(rknn_run_extend, size 24, align 8, frame_id @ 0, non_block @ 8, timeout_ms @ 12, fence_fd @ 16);
    layout!(rknn_output_extend, size 8, align 8, frame_id @ 0);
    layout!(rknn_sdk_version, size 512, align 1, api_version @ 0, drv_version @ 256);
    layout!(rknn_mem_size, size 64, align 8,
        total_weight_size @ 0, total_internal_size @ 4, total_dma_allocated_size @ 8, total_sram_size @ 16,
        free_sram_size @ 20, reserved @ 24);
    layout!(rknn_perf_detail, size 16, align 8, perf_data @ 0, data_len @ 8);
    layout!(rknn_perf_run, size 8, align 8, run_duration @ 0);
    layout!(rknn_custom_string, size 1024, align 1, string @ 0);
    layout!(rknn_input_range, size 33040, align 4,
        index @ 0, shape_number @ 4, fmt @ 8, name @ 12, dyn_range @ 268, n_dims @ 33036);
    layout!(rknn_matmul_tensor_attr, size 332, align 4, name @ 0, n_dims @ 256, dims @ 260, size @ 324, type_ @ 328);
    layout!(rknn_matmul_io_attr, size 996, align 4, A @ 0, B @ 332, C @ 664);
    layout!(rknn_matmul_info_v1, size 24, align 4, M @ 0, K @ 4, N @ 8, type_ @ 12, B_layout @ 16, AC_layout @ 20);
    layout!(rknn_matmul_info_v2, size 64, align 4,
        M @ 0, K @ 4, N @ 8, type_ @ 12, B_layout @ 16, B_quant_type @ 18, AC_layout @ 20, AC_quant_type @ 22,
        iommu_domain_id @ 24, group_size @ 28, reserved @ 30);
    layout!(rknn_quant_params, size 288, align 8, name @ 0, scale @ 256, scale_len @ 264, zp @ 272, zp_len @ 280);
    layout!(rknn_matmul_shape, size 12, align 4, M @ 0, K @ 4, N @ 8);
}

/// Copies `s` into a fixed C string field, truncating so a NUL always ends it.
pub fn write_c_name(field: &mut [c_char], s: &str) {
    let n = s.len().min(field.len().saturating_sub(1));
    for (dst, src) in field.iter_mut().zip(s.as_bytes()[..n].iter()) {
        *dst = *src as c_char;
    }
    for dst in field.iter_mut().skip(n) {
        *dst = 0;
    }
}

/// Reads a fixed C string field up to its first NUL (or its end), replacing invalid UTF-8.
pub fn read_c_name(field: &[c_char]) -> String {
    let bytes: Vec<u8> = field.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_truncate_with_a_nul() {
        let mut field = [1 as c_char; 8];
        write_c_name(&mut field, "A");
        assert_eq!(read_c_name(&field), "A");
        assert!(field[1..].iter().all(|&c| c == 0));
        write_c_name(&mut field, "a-very-long-name");
        assert_eq!(read_c_name(&field), "a-very-");
        assert_eq!(field[7], 0);
        let unterminated = [b'x' as c_char; 4];
        assert_eq!(read_c_name(&unterminated), "xxxx");
    }

    #[test]
    fn zeroed_structs_are_zero() {
        let info = rknn_matmul_info_v2::zeroed();
        assert_eq!((info.M, info.B_quant_type, info.iommu_domain_id), (0, 0, 0));
        assert!(info.reserved.iter().all(|&b| b == 0));
        let attr = rknn_tensor_attr::default();
        assert_eq!((attr.index, attr.size, attr.h_stride), (0, 0, 0));
        let mem = rknn_tensor_mem::zeroed();
        assert!(mem.virt_addr.is_null());
    }
}
