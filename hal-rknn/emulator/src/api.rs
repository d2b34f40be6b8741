//! The exported C functions. Each checks every pointer and size it is handed, answers the
//! runtime's status codes, and never unwinds across the C boundary.
#![allow(clippy::missing_safety_doc)] // each function's contract is the runtime's, stated once below

// Contract shared by every function here: pointers are either NULL (rejected with a status)
// or valid for the access the C API defines for that argument; sizes describe the buffers.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use aihal_rknn_sys as sys;
use half::f16;
use sys::{
    rknn_context, rknn_init_extend, rknn_input, rknn_matmul_ctx, rknn_output, rknn_output_extend, rknn_run_extend,
    rknn_tensor_attr, rknn_tensor_mem, RKNN_ERR_CTX_INVALID, RKNN_ERR_FAIL, RKNN_ERR_INPUT_INVALID,
    RKNN_ERR_MODEL_INVALID, RKNN_ERR_OUTPUT_INVALID, RKNN_ERR_PARAM_INVALID, RKNN_SUCC,
};

use crate::matmul::MatMulCtx;
use crate::model::{EmuModel, ModelCtx};
use crate::state::{configured_version, injected_fault, with_state, Context, State};
use crate::version::{v, Version};

/// Runs `body` unless a fault is injected for `name`, turning a panic into `RKNN_ERR_FAIL`.
pub(crate) fn entry(name: &str, body: impl FnOnce() -> c_int) -> c_int {
    if let Some(code) = injected_fault(name) {
        return code;
    }
    guarded(body)
}

/// Runs `body`, turning a panic into `RKNN_ERR_FAIL`.
pub(crate) fn guarded(body: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(RKNN_ERR_FAIL)
}

fn model_ctx(state: &mut State, ctx: rknn_context) -> Result<&mut ModelCtx, c_int> {
    match state.context(ctx) {
        Some(Context::Model(m)) => Ok(m),
        _ => Err(RKNN_ERR_CTX_INVALID),
    }
}

pub(crate) fn matmul_ctx(state: &mut State, ctx: rknn_matmul_ctx) -> Result<&mut MatMulCtx, c_int> {
    match state.context(ctx) {
        Some(Context::MatMul(m)) => Ok(m),
        _ => Err(RKNN_ERR_CTX_INVALID),
    }
}

pub(crate) fn status(r: Result<(), c_int>) -> c_int {
    r.err().unwrap_or(RKNN_SUCC)
}

/// The masks `rknn_set_core_mask` documents: AUTO, the single cores, CORE_0_1 and
/// CORE_0_1_2 (rknn_api.h from 1.3.0), CORE_ALL from 2.0.0.
pub(crate) fn valid_core_mask(version: Version, mask: u32) -> bool {
    matches!(mask, 0..=4 | 7) || (mask == sys::RKNN_NPU_CORE_ALL && version >= v(2, 0, 0))
}

/// `rknn_init`: loads an emulator model from memory (`size > 0`) or from a path (`size == 0`).
#[no_mangle]
pub unsafe extern "C" fn rknn_init(
    ctx_out: *mut rknn_context,
    model: *mut c_void,
    size: u32,
    flag: u32,
    _extend: *mut rknn_init_extend,
) -> c_int {
    entry("rknn_init", || {
        if ctx_out.is_null() || model.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        let Some(version) = configured_version() else {
            return RKNN_ERR_FAIL;
        };
        let bytes = if size > 0 {
            // SAFETY: the caller passes `size` readable bytes at `model` (C API contract).
            unsafe { std::slice::from_raw_parts(model.cast::<u8>(), size as usize) }.to_vec()
        } else {
            // SAFETY: with `size == 0`, `model` is a NUL-terminated path (C API contract).
            let path = unsafe { CStr::from_ptr(model.cast::<c_char>()) };
            match std::fs::read(path.to_string_lossy().as_ref()) {
                Ok(b) => b,
                Err(_) => return RKNN_ERR_MODEL_INVALID,
            }
        };
        let Some(parsed) = EmuModel::parse(&bytes) else {
            return RKNN_ERR_MODEL_INVALID;
        };
        let handle =
            with_state(|s| s.add_context(Context::Model(Box::new(ModelCtx::new(version, Arc::new(parsed), flag)))));
        // SAFETY: `ctx_out` is non-null and writable (C API contract).
        unsafe { ctx_out.write_unaligned(handle) };
        RKNN_SUCC
    })
}

/// `rknn_dup_context`: a second context on the same model.
#[no_mangle]
pub unsafe extern "C" fn rknn_dup_context(ctx_in: *mut rknn_context, ctx_out: *mut rknn_context) -> c_int {
    entry("rknn_dup_context", || {
        if ctx_in.is_null() || ctx_out.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        // SAFETY: non-null and readable (C API contract).
        let src = unsafe { ctx_in.read_unaligned() };
        let handle = with_state(|s| {
            let m = model_ctx(s, src)?;
            let mut dup = ModelCtx::new(m.version, Arc::clone(&m.model), m.flags);
            dup.core_mask = m.core_mask;
            Ok(s.add_context(Context::Model(Box::new(dup))))
        });
        match handle {
            Ok(h) => {
                // SAFETY: non-null and writable (C API contract).
                unsafe { ctx_out.write_unaligned(h) };
                RKNN_SUCC
            }
            Err(code) => code,
        }
    })
}

/// `rknn_destroy`. An injected fault still frees the context (as a runtime that reports a
/// failure after releasing what it could), so fault tests stay leak-free.
#[no_mangle]
pub unsafe extern "C" fn rknn_destroy(ctx: rknn_context) -> c_int {
    let fault = injected_fault("rknn_destroy");
    let code = guarded(
        || match with_state(|s| model_ctx(s, ctx).map(|_| ()).map(|()| s.remove_context(ctx))) {
            Ok(_) => RKNN_SUCC,
            Err(e) => e,
        },
    );
    fault.unwrap_or(code)
}

fn write_info<T>(info: *mut c_void, size: u32, value: &T) -> c_int {
    if info.is_null() || (size as usize) < size_of::<T>() {
        return RKNN_ERR_PARAM_INVALID;
    }
    // SAFETY: `info` is non-null and, per the C API contract, writable for `size` bytes,
    // which was just checked to cover a `T`.
    unsafe { ptr::copy_nonoverlapping(ptr::from_ref(value).cast::<u8>(), info.cast::<u8>(), size_of::<T>()) };
    RKNN_SUCC
}

fn sdk_version(version: Version) -> sys::rknn_sdk_version {
    let mut v = sys::rknn_sdk_version::zeroed();
    sys::write_c_name(&mut v.api_version, &format!("{version} (aihal-rknn-emulator)"));
    sys::write_c_name(&mut v.drv_version, "0.9.8 (emulated)");
    v
}

/// `rknn_query`: answers the commands of a model context, and `RKNN_QUERY_SDK_VERSION` on a
/// matmul context too. A `size` smaller than the struct is `RKNN_ERR_PARAM_INVALID` (a 1.6.0
/// runtime's log, rknn-toolkit issue 440).
///
/// The SDK query on a matmul context is inferred, not shown by any document: RT2.3 says a
/// matmul context is an `rknn_context`, and `rknn_query` answers `RKNN_QUERY_SDK_VERSION`
/// for a context. Every other command on a matmul context is `RKNN_ERR_PARAM_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn rknn_query(ctx: rknn_context, cmd: u32, info: *mut c_void, size: u32) -> c_int {
    entry("rknn_query", || {
        with_state(|s| {
            let m = match s.context(ctx) {
                Some(Context::MatMul(mm)) if cmd == sys::RKNN_QUERY_SDK_VERSION => {
                    return write_info(info, size, &sdk_version(mm.version));
                }
                Some(Context::Model(m)) => m,
                Some(Context::MatMul(_)) => return RKNN_ERR_PARAM_INVALID,
                None => return RKNN_ERR_CTX_INVALID,
            };
            match cmd {
                sys::RKNN_QUERY_IN_OUT_NUM => write_info(
                    info,
                    size,
                    &sys::rknn_input_output_num {
                        n_input: 1,
                        n_output: 2,
                    },
                ),
                sys::RKNN_QUERY_INPUT_ATTR
                | sys::RKNN_QUERY_NATIVE_INPUT_ATTR
                | sys::RKNN_QUERY_OUTPUT_ATTR
                | sys::RKNN_QUERY_NATIVE_OUTPUT_ATTR => {
                    if info.is_null() || (size as usize) < size_of::<rknn_tensor_attr>() {
                        return RKNN_ERR_PARAM_INVALID;
                    }
                    // SAFETY: non-null and at least an attr's size (checked), readable.
                    let index = unsafe { info.cast::<u32>().read_unaligned() };
                    let attr = if matches!(cmd, sys::RKNN_QUERY_INPUT_ATTR | sys::RKNN_QUERY_NATIVE_INPUT_ATTR) {
                        (index == 0).then(|| m.input_attr())
                    } else {
                        m.output_attr(index)
                    };
                    attr.map_or(RKNN_ERR_PARAM_INVALID, |a| write_info(info, size, &a))
                }
                sys::RKNN_QUERY_PERF_RUN => write_info(
                    info,
                    size,
                    &sys::rknn_perf_run {
                        run_duration: m.perf_us,
                    },
                ),
                sys::RKNN_QUERY_PERF_DETAIL => {
                    if m.flags & sys::RKNN_FLAG_COLLECT_PERF_MASK == 0 || m.outputs.is_none() {
                        return RKNN_ERR_PARAM_INVALID;
                    }
                    let detail = sys::rknn_perf_detail {
                        perf_data: m.perf_detail.as_ptr().cast_mut(),
                        data_len: m.perf_detail.as_bytes().len() as u64,
                    };
                    write_info(info, size, &detail)
                }
                sys::RKNN_QUERY_SDK_VERSION => write_info(info, size, &sdk_version(m.version)),
                sys::RKNN_QUERY_MEM_SIZE => {
                    let mut ms = sys::rknn_mem_size::zeroed();
                    ms.total_weight_size = (m.model.weights.len() + 4 * m.model.bias.len()) as u32;
                    ms.total_internal_size = (m.model.h * m.model.w * m.model.o * 4) as u32;
                    write_info(info, size, &ms)
                }
                sys::RKNN_QUERY_CUSTOM_STRING => {
                    let mut cs = sys::rknn_custom_string::zeroed();
                    sys::write_c_name(&mut cs.string, &m.model.custom);
                    write_info(info, size, &cs)
                }
                _ => RKNN_ERR_PARAM_INVALID,
            }
        })
    })
}

/// `rknn_set_core_mask`.
#[no_mangle]
pub unsafe extern "C" fn rknn_set_core_mask(ctx: rknn_context, mask: u32) -> c_int {
    entry("rknn_set_core_mask", || {
        with_state(|s| {
            status(model_ctx(s, ctx).and_then(|m| {
                if !valid_core_mask(m.version, mask) {
                    return Err(RKNN_ERR_PARAM_INVALID);
                }
                m.core_mask = mask;
                Ok(())
            }))
        })
    })
}

fn read_value(bytes: &[u8], ty: u32, i: usize) -> f32 {
    match ty {
        sys::RKNN_TENSOR_FLOAT32 => {
            f32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]])
        }
        sys::RKNN_TENSOR_FLOAT16 => f16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]).to_f32(),
        sys::RKNN_TENSOR_INT8 => f32::from(bytes[i] as i8),
        _ => f32::from(bytes[i]),
    }
}

/// `rknn_inputs_set`: converts f32/f16/int8/uint8 NCHW or NHWC data to the model's int8
/// NHWC (values are quantized with the input's scale and zero point); with `pass_through` the
/// buffer must already be int8 NHWC.
#[no_mangle]
pub unsafe extern "C" fn rknn_inputs_set(ctx: rknn_context, n_inputs: u32, inputs: *mut rknn_input) -> c_int {
    entry("rknn_inputs_set", || {
        with_state(|s| {
            let m = match model_ctx(s, ctx) {
                Ok(m) => m,
                Err(e) => return e,
            };
            if n_inputs != 1 || inputs.is_null() {
                return RKNN_ERR_INPUT_INVALID;
            }
            // SAFETY: non-null, one element (C API contract: `n_inputs` readable inputs).
            let input = unsafe { inputs.read_unaligned() };
            let model = Arc::clone(&m.model);
            let (h, w, c) = (model.h, model.w, model.c);
            let count = h * w * c;
            if input.index != 0 || input.buf.is_null() {
                return RKNN_ERR_INPUT_INVALID;
            }
            let elem = match input.type_ {
                sys::RKNN_TENSOR_FLOAT32 => 4,
                sys::RKNN_TENSOR_FLOAT16 => 2,
                sys::RKNN_TENSOR_INT8 | sys::RKNN_TENSOR_UINT8 => 1,
                _ => return RKNN_ERR_INPUT_INVALID,
            };
            let nhwc = match input.fmt {
                sys::RKNN_TENSOR_NHWC => true,
                sys::RKNN_TENSOR_NCHW => false,
                _ => return RKNN_ERR_INPUT_INVALID,
            };
            if input.size as usize != count * elem
                || (input.pass_through != 0 && (input.type_ != sys::RKNN_TENSOR_INT8 || !nhwc))
            {
                return RKNN_ERR_INPUT_INVALID;
            }
            // SAFETY: `buf` is non-null and holds `size` readable bytes (C API contract).
            let bytes = unsafe { std::slice::from_raw_parts(input.buf.cast::<u8>(), input.size as usize) };
            let quantized: Vec<i8> = if input.pass_through != 0 {
                bytes.iter().map(|&b| b as i8).collect()
            } else {
                let mut q = vec![0i8; count];
                for (i, slot) in q.iter_mut().enumerate() {
                    // `i` is the NHWC position; find the element in the caller's layout.
                    let (p, ch) = (i / c, i % c);
                    let src = if nhwc { i } else { ch * h * w + p };
                    let v = read_value(bytes, input.type_, src) / model.in_scale;
                    *slot = (v.round() as i64 + i64::from(model.in_zp)).clamp(-128, 127) as i8;
                }
                q
            };
            m.input = Some(quantized);
            RKNN_SUCC
        })
    })
}

/// `rknn_run`: runs the network on the input set or bound, writing bound output memory.
#[no_mangle]
pub unsafe extern "C" fn rknn_run(ctx: rknn_context, _extend: *mut rknn_run_extend) -> c_int {
    entry("rknn_run", || {
        with_state(|s| {
            let start = Instant::now();
            let (in_mem, out_mem, input, model) = match model_ctx(s, ctx) {
                Ok(m) => (m.in_mem, m.out_mem, m.input.clone(), Arc::clone(&m.model)),
                Err(e) => return e,
            };
            let input = match in_mem {
                Some(addr) => match s.mem_by_addr(addr) {
                    Some(mem) => mem.bytes()[..model.h * model.w * model.c]
                        .iter()
                        .map(|&b| b as i8)
                        .collect(),
                    None => return RKNN_ERR_INPUT_INVALID,
                },
                None => match input {
                    Some(i) => i,
                    None => return RKNN_ERR_INPUT_INVALID,
                },
            };
            let outputs = model.run(&input);
            let Ok(m) = model_ctx(s, ctx) else {
                return RKNN_ERR_CTX_INVALID;
            };
            m.outputs = Some(outputs);
            let native: Vec<Option<Vec<u8>>> = (0..2).map(|i| m.output_bytes(i, false)).collect();
            if m.flags & sys::RKNN_FLAG_COLLECT_PERF_MASK != 0 {
                m.perf_detail = std::ffi::CString::new(format!(
                    "ID  OpType  Time(us)\n1   Conv1x1 {}\n2   GlobalAvgPool 1\n",
                    start.elapsed().as_micros()
                ))
                .unwrap_or_default();
            }
            m.perf_us = start.elapsed().as_micros().max(1) as i64;
            for (slot, bytes) in out_mem.iter().zip(native) {
                if let (Some(addr), Some(bytes)) = (slot, bytes) {
                    if let Some(mem) = s.mem_by_addr(*addr) {
                        let n = bytes.len().min(mem.len);
                        mem.bytes_mut()[..n].copy_from_slice(&bytes[..n]);
                    }
                }
            }
            RKNN_SUCC
        })
    })
}

/// `rknn_outputs_get`: every output is checked before any buffer is allocated, so a failure
/// leaves nothing to release.
#[no_mangle]
pub unsafe extern "C" fn rknn_outputs_get(
    ctx: rknn_context,
    n_outputs: u32,
    outputs: *mut rknn_output,
    _extend: *mut rknn_output_extend,
) -> c_int {
    entry("rknn_outputs_get", || {
        with_state(|s| {
            let m = match model_ctx(s, ctx) {
                Ok(m) => m,
                Err(e) => return e,
            };
            if outputs.is_null() || n_outputs == 0 || n_outputs > 2 {
                return RKNN_ERR_OUTPUT_INVALID;
            }
            if m.outputs.is_none() {
                return RKNN_ERR_FAIL;
            }
            // SAFETY: non-null, `n_outputs` elements readable and writable (C API contract).
            let outs = unsafe { std::slice::from_raw_parts_mut(outputs, n_outputs as usize) };
            let mut data = Vec::with_capacity(outs.len());
            for o in outs.iter() {
                let Some(bytes) = m.output_bytes(o.index, o.want_float != 0) else {
                    return RKNN_ERR_OUTPUT_INVALID;
                };
                if o.is_prealloc != 0 && (o.buf.is_null() || (o.size as usize) < bytes.len()) {
                    return RKNN_ERR_OUTPUT_INVALID;
                }
                data.push(bytes);
            }
            for (o, bytes) in outs.iter_mut().zip(data) {
                if o.is_prealloc != 0 {
                    // SAFETY: the caller's buffer holds `size >= bytes.len()` writable bytes
                    // (checked above; C API contract for preallocated outputs).
                    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), o.buf.cast::<u8>(), bytes.len()) };
                } else {
                    o.size = bytes.len() as u32;
                    o.buf = m.allocations.alloc(bytes).cast();
                }
            }
            RKNN_SUCC
        })
    })
}

/// `rknn_outputs_release`: frees the buffers `rknn_outputs_get` allocated.
#[no_mangle]
pub unsafe extern "C" fn rknn_outputs_release(ctx: rknn_context, n_outputs: u32, outputs: *mut rknn_output) -> c_int {
    entry("rknn_outputs_release", || {
        with_state(|s| {
            let m = match model_ctx(s, ctx) {
                Ok(m) => m,
                Err(e) => return e,
            };
            if outputs.is_null() || n_outputs > 2 {
                return RKNN_ERR_OUTPUT_INVALID;
            }
            // SAFETY: non-null, `n_outputs` elements readable and writable (C API contract).
            let outs = unsafe { std::slice::from_raw_parts_mut(outputs, n_outputs as usize) };
            let mut code = RKNN_SUCC;
            for o in outs.iter_mut().filter(|o| o.is_prealloc == 0 && !o.buf.is_null()) {
                if m.allocations.free(o.buf.cast()) {
                    o.buf = ptr::null_mut();
                } else {
                    code = RKNN_ERR_OUTPUT_INVALID;
                }
            }
            code
        })
    })
}

/// `rknn_create_mem`: zeroed emulated NPU memory; NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn rknn_create_mem(ctx: rknn_context, size: u32) -> *mut rknn_tensor_mem {
    if injected_fault("rknn_create_mem").is_some() {
        return ptr::null_mut();
    }
    catch_unwind(AssertUnwindSafe(|| {
        with_state(|s| {
            if size == 0 || s.context(ctx).is_none() {
                return ptr::null_mut();
            }
            s.alloc_mem(ctx, size as usize)
        })
    }))
    .unwrap_or(ptr::null_mut())
}

/// `rknn_destroy_mem`. An injected fault still frees the memory (see `rknn_destroy`).
#[no_mangle]
pub unsafe extern "C" fn rknn_destroy_mem(ctx: rknn_context, mem: *mut rknn_tensor_mem) -> c_int {
    let fault = injected_fault("rknn_destroy_mem");
    let code = guarded(|| {
        with_state(|s| {
            let addr = mem as usize;
            match s.context(ctx) {
                None => return RKNN_ERR_CTX_INVALID,
                Some(Context::Model(m)) => {
                    if m.in_mem == Some(addr) {
                        m.in_mem = None;
                    }
                    for slot in &mut m.out_mem {
                        if *slot == Some(addr) {
                            *slot = None;
                        }
                    }
                }
                Some(Context::MatMul(mm)) => {
                    for slot in &mut mm.bound {
                        if *slot == Some(addr) {
                            *slot = None;
                        }
                    }
                }
            }
            if s.free_mem(ctx, mem) {
                RKNN_SUCC
            } else {
                RKNN_ERR_PARAM_INVALID
            }
        })
    });
    fault.unwrap_or(code)
}

/// `rknn_set_io_mem`: binds memory to the input or an output named by `attr` (native layout
/// and type, at least `attr.size` bytes).
#[no_mangle]
pub unsafe extern "C" fn rknn_set_io_mem(
    ctx: rknn_context,
    mem: *mut rknn_tensor_mem,
    attr: *mut rknn_tensor_attr,
) -> c_int {
    entry("rknn_set_io_mem", || {
        if attr.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        // SAFETY: non-null and readable (C API contract).
        let attr = unsafe { attr.read_unaligned() };
        let name = sys::read_c_name(&attr.name);
        with_state(|s| {
            let Some(mem_len) = s.mem(ctx, mem).map(|e| e.len) else {
                return if s.context(ctx).is_some() {
                    RKNN_ERR_PARAM_INVALID
                } else {
                    RKNN_ERR_CTX_INVALID
                };
            };
            let m = match model_ctx(s, ctx) {
                Ok(m) => m,
                Err(e) => return e,
            };
            let (want, slot) = match (name.as_str(), attr.index) {
                ("input", 0) => (m.input_attr(), None),
                (_, i) => match m.output_attr(i) {
                    Some(a) if sys::read_c_name(&a.name) == name => (a, Some(i as usize)),
                    _ => return RKNN_ERR_PARAM_INVALID,
                },
            };
            if attr.type_ != want.type_ || attr.fmt != want.fmt || mem_len < want.size as usize {
                return RKNN_ERR_PARAM_INVALID;
            }
            match slot {
                None => m.in_mem = Some(mem as usize),
                Some(i) => m.out_mem[i] = Some(mem as usize),
            }
            RKNN_SUCC
        })
    })
}

/// `rknn_mem_sync` (1.6.0 and later; earlier versions answer `RKNN_ERR_FAIL`).
#[no_mangle]
pub unsafe extern "C" fn rknn_mem_sync(ctx: rknn_context, mem: *mut rknn_tensor_mem, mode: u32) -> c_int {
    entry("rknn_mem_sync", || {
        with_state(|s| {
            let version = match s.context(ctx) {
                Some(Context::Model(m)) => m.version,
                Some(Context::MatMul(m)) => m.version,
                None => return RKNN_ERR_CTX_INVALID,
            };
            // Declared from rknn_api.h 1.6.0; older libraries do not export it (this is only
            // reachable through a library made for a later version).
            if version < v(1, 6, 0) {
                return RKNN_ERR_FAIL;
            }
            if s.mem(ctx, mem).is_none() || !(1..=3).contains(&mode) {
                return RKNN_ERR_PARAM_INVALID;
            }
            RKNN_SUCC
        })
    })
}

// ---- declared by the headers, not modelled ------------------------------------------------
//
// Exported so that each version's copy of the library exports what that version's library
// does (`crate::exports`); each answers `RKNN_ERR_FAIL` (or NULL) without reading its
// arguments.

/// `rknn_set_input_shape` (rknn_api.h 1.5.0 on): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_set_input_shape(_ctx: rknn_context, _attr: *mut rknn_tensor_attr) -> c_int {
    entry("rknn_set_input_shape", || RKNN_ERR_FAIL)
}

/// `rknn_set_input_shapes` (rknn_api.h 1.5.2 on): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_set_input_shapes(
    _ctx: rknn_context,
    _n_inputs: u32,
    _attrs: *mut rknn_tensor_attr,
) -> c_int {
    entry("rknn_set_input_shapes", || RKNN_ERR_FAIL)
}

/// `rknn_create_mem2` (rknn_api.h 2.0.0 on): not modelled, NULL.
#[no_mangle]
pub unsafe extern "C" fn rknn_create_mem2(_ctx: rknn_context, _size: u64, _alloc_flags: u64) -> *mut rknn_tensor_mem {
    ptr::null_mut()
}

/// Diagnostic for tests, not part of the runtime's API: writes the number of live contexts
/// and memory blocks to `out[0]` and `out[1]`.
#[no_mangle]
pub unsafe extern "C" fn aihal_rknn_emu_live_objects(out: *mut u64) -> c_int {
    if out.is_null() {
        return RKNN_ERR_PARAM_INVALID;
    }
    let (contexts, mems) = with_state(|s| s.live_counts());
    // SAFETY: the caller passes two writable u64 (this function's documented contract).
    unsafe {
        out.write_unaligned(contexts as u64);
        out.add(1).write_unaligned(mems as u64);
    }
    RKNN_SUCC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EmuModel;

    fn tiny_model() -> Vec<u8> {
        EmuModel {
            h: 1,
            w: 2,
            c: 3,
            o: 2,
            in_scale: 0.1,
            in_zp: 0,
            w_scale: 0.1,
            out_scale: 0.1,
            out_zp: 0,
            weights: vec![1, -2, 3, 4, 5, -6],
            bias: vec![0, 1],
            custom: String::new(),
        }
        .to_bytes()
    }

    #[test]
    fn query_rejects_small_buffers_and_unknown_contexts_like_the_runtime() {
        let mut bytes = tiny_model();
        let mut ctx: rknn_context = 0;
        // SAFETY: valid pointers and sizes, as the C API requires.
        let code = unsafe {
            rknn_init(
                &raw mut ctx,
                bytes.as_mut_ptr().cast(),
                bytes.len() as u32,
                0,
                ptr::null_mut(),
            )
        };
        assert_eq!(code, RKNN_SUCC);
        let mut attr = rknn_tensor_attr::zeroed();
        let p = (&raw mut attr).cast::<c_void>();
        // SAFETY: `attr` is writable for the sizes passed (372 < 376 is rejected unread).
        unsafe {
            assert_eq!(
                rknn_query(ctx, sys::RKNN_QUERY_INPUT_ATTR, p, 372),
                RKNN_ERR_PARAM_INVALID
            );
            assert_eq!(rknn_query(ctx, sys::RKNN_QUERY_INPUT_ATTR, p, 376), RKNN_SUCC);
            assert_eq!(
                rknn_query(ctx + 1, sys::RKNN_QUERY_INPUT_ATTR, p, 376),
                RKNN_ERR_CTX_INVALID
            );
            assert_eq!(rknn_query(ctx, 99, p, 376), RKNN_ERR_PARAM_INVALID);
            assert_eq!(
                rknn_query(ctx, sys::RKNN_QUERY_INPUT_ATTR, ptr::null_mut(), 376),
                RKNN_ERR_PARAM_INVALID
            );
        }
        assert_eq!(sys::read_c_name(&attr.name), "input");
        // SAFETY: live context, destroyed once; the second call sees an unknown handle.
        unsafe {
            assert_eq!(rknn_destroy(ctx), RKNN_SUCC);
            assert_eq!(rknn_destroy(ctx), RKNN_ERR_CTX_INVALID);
            assert_eq!(rknn_run(ctx, ptr::null_mut()), RKNN_ERR_CTX_INVALID);
        }
    }
}
