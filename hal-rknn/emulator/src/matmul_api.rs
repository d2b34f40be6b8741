//! The exported matmul functions (`rknn_matmul_*`), under the same contract as
//! [`crate::api`]: every pointer and size is checked, nothing unwinds across the boundary.
//! What each one models, and from which document, is in [`crate::matmul`].
#![allow(clippy::missing_safety_doc)] // each function's contract is the runtime's, stated in `api`

use std::ffi::{c_int, c_void};

use aihal_rknn_sys as sys;
use sys::{
    rknn_matmul_ctx, rknn_matmul_io_attr, rknn_matmul_shape, rknn_matmul_tensor_attr, rknn_quant_params,
    rknn_tensor_mem, RKNN_ERR_FAIL, RKNN_ERR_PARAM_INVALID, RKNN_SUCC,
};

use crate::api::{entry, guarded, matmul_ctx, status};
use crate::matmul::{MatMulCtx, Quant};
use crate::state::{configured_version, injected_fault, reported_mode, with_state, Context};
use crate::version::InfoGeneration;

/// `rknn_matmul_create`: reads the `rknn_matmul_info` generation of the configured version
/// (24 bytes before 2.0.0, 64 from it) and fills `io_attr`.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_create(
    ctx_out: *mut rknn_matmul_ctx,
    info: *mut c_void,
    io_attr: *mut rknn_matmul_io_attr,
) -> c_int {
    entry("rknn_matmul_create", || {
        if ctx_out.is_null() || info.is_null() || io_attr.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        let Some(version) = configured_version() else {
            return RKNN_ERR_FAIL;
        };
        // 1.3.0 and 1.4.0: no documented struct to read.
        let Some(generation) = InfoGeneration::of(version) else {
            return RKNN_ERR_FAIL;
        };
        // SAFETY: the caller passes the struct of this version's generation, `size()` bytes
        // (C API contract); it is only read.
        let bytes = unsafe { std::slice::from_raw_parts(info.cast::<u8>(), generation.size()) };
        let ctx = match MatMulCtx::create(version, bytes) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let io = ctx.io;
        let handle = with_state(|s| s.add_context(Context::MatMul(Box::new(ctx))));
        // SAFETY: both are non-null and writable (C API contract).
        unsafe {
            ctx_out.write_unaligned(handle);
            io_attr.write_unaligned(io);
        }
        RKNN_SUCC
    })
}

/// `rknn_matmul_set_io_mem`: binds memory of this context (at least the matrix's size) to
/// the matrix the attribute names (RT2.3: memory from `rknn_create_mem(ctx, io_attr.X.size)`,
/// bound with `&io_attr.X`).
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_set_io_mem(
    ctx: rknn_matmul_ctx,
    mem: *mut rknn_tensor_mem,
    attr: *mut rknn_matmul_tensor_attr,
) -> c_int {
    entry("rknn_matmul_set_io_mem", || {
        if attr.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        // SAFETY: non-null and readable (C API contract).
        let attr = unsafe { attr.read_unaligned() };
        with_state(|s| {
            let mem_len = s.mem(ctx, mem).map(|e| e.len);
            let mm = match matmul_ctx(s, ctx) {
                Ok(m) => m,
                Err(e) => return e,
            };
            let Some(which) = MatMulCtx::matrix_index(&sys::read_c_name(&attr.name)) else {
                return RKNN_ERR_PARAM_INVALID;
            };
            let want = [mm.io.A.size, mm.io.B.size, mm.io.C.size][which] as usize;
            match mem_len {
                Some(len) if len >= want => {
                    mm.bound[which] = Some(mem as usize);
                    RKNN_SUCC
                }
                _ => RKNN_ERR_PARAM_INVALID,
            }
        })
    })
}

/// `rknn_matmul_set_core_mask` (see [`MatMulCtx::set_core_mask`]).
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_set_core_mask(ctx: rknn_matmul_ctx, mask: u32) -> c_int {
    entry("rknn_matmul_set_core_mask", || {
        let reported = reported_mode();
        with_state(|s| status(matmul_ctx(s, ctx).and_then(|mm| mm.set_core_mask(mask, reported))))
    })
}

/// `rknn_matmul_set_quant_params` (2.0.0 and later; see [`MatMulCtx::set_quant`]). `zp` may
/// be NULL with `zp_len` 0, as demo 2.1.0 passes per-group scales.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_set_quant_params(ctx: rknn_matmul_ctx, params: *mut rknn_quant_params) -> c_int {
    entry("rknn_matmul_set_quant_params", || {
        if params.is_null() {
            return RKNN_ERR_PARAM_INVALID;
        }
        // SAFETY: non-null and readable (C API contract).
        let p = unsafe { params.read_unaligned() };
        let len_ok = |l: i32| (0..=1 << 24).contains(&l);
        if p.scale.is_null() || p.scale_len < 1 || !len_ok(p.scale_len) || !len_ok(p.zp_len) {
            return RKNN_ERR_PARAM_INVALID;
        }
        if p.zp.is_null() && p.zp_len != 0 {
            return RKNN_ERR_PARAM_INVALID;
        }
        // SAFETY: the caller passes `scale_len` floats and, when `zp` is not NULL, `zp_len`
        // ints (C API contract).
        let (scale, zp) = unsafe {
            (
                std::slice::from_raw_parts(p.scale, p.scale_len as usize).to_vec(),
                if p.zp.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(p.zp, p.zp_len as usize).to_vec()
                },
            )
        };
        with_state(|s| {
            status(matmul_ctx(s, ctx).and_then(|mm| {
                let which = MatMulCtx::matrix_index(&sys::read_c_name(&p.name)).ok_or(RKNN_ERR_PARAM_INVALID)?;
                mm.set_quant(which, Quant { scale, zp })
            }))
        })
    })
}

/// `rknn_matmul_run`: computes C from the bound A and B (see [`MatMulCtx::run`]).
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_run(ctx: rknn_matmul_ctx) -> c_int {
    entry("rknn_matmul_run", || {
        let reported = reported_mode();
        with_state(|s| {
            let (bound, sizes) = match matmul_ctx(s, ctx) {
                Ok(mm) => (mm.bound, [mm.io.A.size, mm.io.B.size, mm.io.C.size]),
                Err(e) => return e,
            };
            let [Some(a), Some(b), Some(c)] = bound else {
                return RKNN_ERR_PARAM_INVALID;
            };
            let mut read = |addr: usize, n: u32| s.mem_by_addr(addr).map(|m| m.bytes()[..n as usize].to_vec());
            let (Some(a), Some(b)) = (read(a, sizes[0]), read(b, sizes[1])) else {
                return RKNN_ERR_PARAM_INVALID;
            };
            let mut out = vec![0u8; sizes[2] as usize];
            let computed = match matmul_ctx(s, ctx) {
                Ok(mm) => mm.run(&a, &b, &mut out, reported),
                Err(e) => return e,
            };
            if let Err(e) = computed {
                return e;
            }
            match s.mem_by_addr(c) {
                Some(mem) => {
                    mem.bytes_mut()[..out.len()].copy_from_slice(&out);
                    RKNN_SUCC
                }
                None => RKNN_ERR_PARAM_INVALID,
            }
        })
    })
}

/// `rknn_matmul_destroy`: frees the context and any memory still bound to it. An injected
/// fault still frees it (see `rknn_destroy`).
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_destroy(ctx: rknn_matmul_ctx) -> c_int {
    let fault = injected_fault("rknn_matmul_destroy");
    let code = guarded(
        || match with_state(|s| matmul_ctx(s, ctx).map(|_| ()).map(|()| s.remove_context(ctx))) {
            Ok(_) => RKNN_SUCC,
            Err(e) => e,
        },
    );
    fault.unwrap_or(code)
}

// ---- declared by the headers, not modelled ------------------------------------------------
//
// These exist so that each version's copy of the library exports what that version's
// library exports (`crate::exports`), which `aihal-rknn` reads to bound the version. Their
// parameters follow the 2.1.0 headers; each answers `RKNN_ERR_FAIL` without reading them.

/// `rknn_matmul_get_quant_params` (header 2.0.0 on): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_get_quant_params(
    _ctx: rknn_matmul_ctx,
    _params: *mut rknn_quant_params,
    _scale: *mut f32,
) -> c_int {
    entry("rknn_matmul_get_quant_params", || RKNN_ERR_FAIL)
}

/// `rknn_matmul_set_dynamic_shape` (header 2.0.0 on): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_set_dynamic_shape(_ctx: rknn_matmul_ctx, _shape: *mut rknn_matmul_shape) -> c_int {
    entry("rknn_matmul_set_dynamic_shape", || RKNN_ERR_FAIL)
}

/// `rknn_matmul_create_dyn_shape` (header 2.0.0 only): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_create_dyn_shape(
    _ctx: *mut rknn_matmul_ctx,
    _info: *mut c_void,
    _shape_num: c_int,
    _shapes: *mut rknn_matmul_shape,
    _io_attrs: *mut rknn_matmul_io_attr,
) -> c_int {
    entry("rknn_matmul_create_dyn_shape", || RKNN_ERR_FAIL)
}

/// `rknn_matmul_create_dynamic_shape` (header 2.1.0 on): not modelled, `RKNN_ERR_FAIL`.
#[no_mangle]
pub unsafe extern "C" fn rknn_matmul_create_dynamic_shape(
    _ctx: *mut rknn_matmul_ctx,
    _info: *mut c_void,
    _shape_num: c_int,
    _shapes: *mut rknn_matmul_shape,
    _io_attrs: *mut rknn_matmul_io_attr,
) -> c_int {
    entry("rknn_matmul_create_dynamic_shape", || RKNN_ERR_FAIL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn matmul_create_enforces_alignment_and_null_checks() {
        let mut info = sys::rknn_matmul_info_v2::zeroed();
        (info.M, info.K, info.N, info.type_) = (1, 48, 32, sys::RKNN_INT8_MM_INT8_TO_INT32);
        let mut io = rknn_matmul_io_attr::zeroed();
        let mut ctx: rknn_matmul_ctx = 0;
        // SAFETY: valid pointers (the default version, 2.3.2, reads the 64-byte layout).
        unsafe {
            let p = (&raw mut info).cast::<c_void>();
            assert_eq!(
                rknn_matmul_create(&raw mut ctx, p, &raw mut io),
                RKNN_ERR_PARAM_INVALID,
                "K=48"
            );
            info.K = 64;
            info.reserved[3] = 1;
            let p = (&raw mut info).cast::<c_void>();
            assert_eq!(
                rknn_matmul_create(&raw mut ctx, p, &raw mut io),
                RKNN_ERR_PARAM_INVALID,
                "reserved"
            );
            info.reserved[3] = 0;
            let p = (&raw mut info).cast::<c_void>();
            assert_eq!(
                rknn_matmul_create(ptr::null_mut(), p, &raw mut io),
                RKNN_ERR_PARAM_INVALID
            );
            assert_eq!(rknn_matmul_create(&raw mut ctx, p, &raw mut io), RKNN_SUCC);
            assert_eq!(io.A.size, 64);
            assert_eq!(io.C.size, 32 * 4);
            assert_eq!(rknn_matmul_run(ctx), RKNN_ERR_PARAM_INVALID, "nothing bound");
            let mut scale = [0.5f32; 1];
            let mut params = rknn_quant_params::zeroed();
            params.name = io.A.name;
            (params.scale, params.scale_len) = (scale.as_mut_ptr(), 1);
            assert_eq!(
                rknn_matmul_set_quant_params(ctx, &raw mut params),
                RKNN_SUCC,
                "zp may be NULL"
            );
            params.zp_len = 1;
            assert_eq!(
                rknn_matmul_set_quant_params(ctx, &raw mut params),
                RKNN_ERR_PARAM_INVALID,
                "NULL zp with a length"
            );
            assert_eq!(
                rknn_matmul_get_quant_params(ctx, &raw mut params, scale.as_mut_ptr()),
                RKNN_ERR_FAIL
            );
            assert_eq!(rknn_matmul_destroy(ctx), RKNN_SUCC);
        }
    }
}
