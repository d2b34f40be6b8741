//! [`RknnMatMul`]: matrix products on the NPU through the runtime's matmul API.

use std::ffi::c_void;

use aihal_core::NpuCoreMask;
use aihal_rknn_sys as sys;
use half::f16;
use sys::{MatmulInfoLayout, RuntimeVersion};

use crate::error::{Result, RknnError, RknnStatus};
use crate::library::RknnLibrary;
use crate::mem::NpuMem;

/// The element types of a product `C = A × B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MatMulType {
    /// int8 × int8 → int32, exact (every runtime from 1.5.0).
    Int8ToInt32,
    /// int8 × int8 → f32, scaled by per-layer quantization parameters (runtime 2.1.0+).
    Int8ToFloat32,
    /// f16 × f16 → f32 (every runtime from 1.5.0).
    Float16ToFloat32,
}

impl MatMulType {
    const fn raw(self) -> u32 {
        match self {
            Self::Int8ToInt32 => sys::RKNN_INT8_MM_INT8_TO_INT32,
            Self::Int8ToFloat32 => sys::RKNN_INT8_MM_INT8_TO_FLOAT32,
            Self::Float16ToFloat32 => sys::RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32,
        }
    }

    /// The first runtime version that has this type.
    pub const fn min_version(self) -> RuntimeVersion {
        match self {
            Self::Int8ToFloat32 => RuntimeVersion::new(2, 1, 0),
            _ => RuntimeVersion::MIN_SUPPORTED,
        }
    }

    /// Bytes per element of A and B.
    const fn input_bytes(self) -> usize {
        match self {
            Self::Float16ToFloat32 => 2,
            _ => 1,
        }
    }

    /// The RK3588's alignment of K and N, in elements.
    pub const fn alignment(self) -> (usize, usize) {
        match self {
            Self::Float16ToFloat32 => (32, 16),
            _ => (32, 32),
        }
    }

    /// The largest K the runtime accepts (RK3588): before 1.6.0, 4096 for int8 and 2048 for
    /// fp16; from 1.6.0, 10240.
    pub fn max_k(self, version: RuntimeVersion) -> usize {
        if version >= RuntimeVersion::new(1, 6, 0) {
            10240
        } else if self == Self::Float16ToFloat32 {
            2048
        } else {
            4096
        }
    }

    fn is_int8(self) -> bool {
        self != Self::Float16ToFloat32
    }
}

/// How B is laid out in NPU memory. The caller always hands B in plain row-major order (see
/// [`BOrder`]); this chooses what the runtime is told and the host converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BLayout {
    /// The NPU's native blocked order (`[N/32, K/32, 32, 32]` for int8, `[N/16, K/32, 16, 32]`
    /// for fp16): the runtime uses B as it is, the fastest choice for weights reused across
    /// runs.
    #[default]
    Native,
    /// Plain `[K, N]`: the runtime rearranges it on every run.
    Normal,
}

/// The order of the B slice a caller passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BOrder {
    /// `[K, N]` row-major (the mathematical B).
    KxN,
    /// `[N, K]` row-major: one row per output feature, as weight matrices and
    /// aihal-quantize tensors store it.
    NxK,
}

/// The matrix quantization parameters apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMatrix {
    /// The left matrix.
    A,
    /// The right matrix.
    B,
    /// The result.
    C,
}

/// An NPU matrix product `C[M, N] = A[M, K] × B[K, N]` with fixed shape and types.
///
/// The RK3588 needs K a multiple of 32 and N a multiple of 32 (int8) or 16 (fp16). Shapes
/// that are not are **padded with zeros** (K: extra zero columns of A and rows of B, which
/// add nothing; N: extra zero columns of B whose results are dropped), so any `M, K, N >= 1`
/// works, at the cost of the padded work. K after padding must not exceed
/// [`MatMulType::max_k`].
///
/// Set B once ([`set_b_i8`](Self::set_b_i8) / [`set_b_f16`](Self::set_b_f16)), then run
/// with as many A as needed. Every handle is released on drop; [`close`](Self::close) does
/// the same and reports a failed release.
///
/// `RknnMatMul` is `Send` (its context and memory may be used from another thread, one
/// thread at a time) but not `Sync`: the runtime does not document concurrent calls on one
/// context, so every call that reaches it takes `&mut self`.
pub struct RknnMatMul {
    lib: RknnLibrary,
    ctx: sys::rknn_matmul_ctx,
    ty: MatMulType,
    b_layout: BLayout,
    info_layout: MatmulInfoLayout,
    dims: [usize; 3],
    padded: [usize; 2],
    io: sys::rknn_matmul_io_attr,
    /// A, B, C once all three exist.
    mems: Vec<NpuMem>,
    b_set: bool,
    released: bool,
}

// SAFETY: the context handle and the memory descriptors are owned exclusively by this value;
// the runtime allows a context to be used from any thread as long as calls do not overlap,
// which `&mut self` on every call guarantees. (Not `Sync`: see the type's docs.)
unsafe impl Send for RknnMatMul {}

impl std::fmt::Debug for RknnMatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RknnMatMul")
            .field("ty", &self.ty)
            .field("m_k_n", &self.dims)
            .field("padded_k_n", &self.padded)
            .field("b_layout", &self.b_layout)
            .field("info_layout", &self.info_layout)
            .finish_non_exhaustive()
    }
}

impl RknnMatMul {
    /// A product of shape `m × k × n` with B in the native layout.
    pub fn new(lib: &RknnLibrary, m: usize, k: usize, n: usize, ty: MatMulType) -> Result<Self> {
        Self::with_b_layout(lib, m, k, n, ty, BLayout::Native)
    }

    /// A product of shape `m × k × n` with B in the given layout.
    pub fn with_b_layout(
        lib: &RknnLibrary,
        m: usize,
        k: usize,
        n: usize,
        ty: MatMulType,
        b_layout: BLayout,
    ) -> Result<Self> {
        if m == 0 || k == 0 || n == 0 {
            return Err(RknnError::invalid_input(format!(
                "matmul shape M={m} K={k} N={n}: every dimension must be at least 1"
            )));
        }
        let version = lib.version()?;
        if version < ty.min_version() {
            return Err(RknnError::Core(aihal_core::CoreError::unsupported(
                format!("NPU matmul {ty:?}"),
                format!("RKNN runtime {version} (needs {} or later)", ty.min_version()),
            )));
        }
        let (k_align, n_align) = ty.alignment();
        let (kp, np) = (k.next_multiple_of(k_align), n.next_multiple_of(n_align));
        if kp > ty.max_k(version) {
            return Err(RknnError::invalid_input(format!(
                "matmul K={k} (padded to {kp}) exceeds the NPU's limit of {} for {ty:?} on runtime {version}; \
                 split K into chunks and add the partial products",
                ty.max_k(version)
            )));
        }
        let too_big = || RknnError::invalid_input(format!("matmul shape M={m} K={kp} N={np} is too large for the NPU"));
        let to_i32 = |v: usize| i32::try_from(v).map_err(|_| too_big());
        let (mi, ki, ni) = (to_i32(m)?, to_i32(kp)?, to_i32(np)?);
        let b_raw = match b_layout {
            BLayout::Native => sys::RKNN_MM_LAYOUT_NATIVE,
            BLayout::Normal => sys::RKNN_MM_LAYOUT_NORM,
        };
        let info_layout = version.matmul_info_layout();
        let mut v1 = sys::rknn_matmul_info_v1::zeroed();
        let mut v2 = sys::rknn_matmul_info_v2::zeroed();
        let info_ptr: *mut c_void = match info_layout {
            MatmulInfoLayout::V1 => {
                (v1.M, v1.K, v1.N, v1.type_, v1.B_layout) = (mi, ki, ni, ty.raw(), b_raw);
                (&raw mut v1).cast()
            }
            MatmulInfoLayout::V2 => {
                (v2.M, v2.K, v2.N, v2.type_, v2.B_layout) = (mi, ki, ni, ty.raw(), b_raw as i16);
                (&raw mut v2).cast()
            }
        };
        let mut io = sys::rknn_matmul_io_attr::zeroed();
        let mut ctx: sys::rknn_matmul_ctx = 0;
        // SAFETY: `info_ptr` points to a zero-initialised struct of the layout this runtime
        // version reads; `ctx` and `io` are writable.
        let code = unsafe { (lib.api().rknn_matmul_create)(&raw mut ctx, info_ptr, &raw mut io) };
        RknnStatus(code).result("rknn_matmul_create")?;
        let mut this = Self {
            lib: lib.clone(),
            ctx,
            ty,
            b_layout,
            info_layout,
            dims: [m, k, n],
            padded: [kp, np],
            io,
            mems: Vec::with_capacity(3),
            b_set: false,
            released: false,
        };
        // From here an early return drops `this`, which releases what exists so far.
        let e = ty.input_bytes();
        let wanted = [m * kp * e, kp * np * e, m * np * 4];
        for (i, want) in wanted.into_iter().enumerate() {
            let attr = this.attr_mut(i);
            if (attr.size as usize) < want {
                return Err(RknnError::Core(aihal_core::CoreError::kernel(
                    "rknn",
                    "rknn_matmul_create",
                    format!(
                        "the runtime sized matrix {} at {} bytes, fewer than the {want} its shape needs",
                        ["A", "B", "C"][i],
                        attr.size
                    ),
                )));
            }
            let size = attr.size as usize;
            // SAFETY: `this.ctx` is the live matmul context.
            let mem = unsafe { NpuMem::create(&this.lib, this.ctx, size) }?;
            this.mems.push(mem);
            let desc = this.mems[i].as_ptr();
            let attr: *mut sys::rknn_matmul_tensor_attr = this.attr_mut(i);
            // SAFETY: live context, memory of that context, and the attribute the runtime
            // filled for this matrix.
            let code = unsafe { (this.lib.api().rknn_matmul_set_io_mem)(this.ctx, desc, attr) };
            RknnStatus(code).result("rknn_matmul_set_io_mem")?;
        }
        Ok(this)
    }

    fn attr_mut(&mut self, i: usize) -> &mut sys::rknn_matmul_tensor_attr {
        match i {
            0 => &mut self.io.A,
            1 => &mut self.io.B,
            _ => &mut self.io.C,
        }
    }

    /// `(M, K, N)` as asked for.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.dims[0], self.dims[1], self.dims[2])
    }

    /// `(K, N)` after padding to the NPU's alignment.
    pub fn padded_shape(&self) -> (usize, usize) {
        (self.padded[0], self.padded[1])
    }

    /// The element types.
    pub fn matmul_type(&self) -> MatMulType {
        self.ty
    }

    /// The B layout the runtime was given.
    pub fn b_layout(&self) -> BLayout {
        self.b_layout
    }

    /// The `rknn_matmul_info` layout used for this runtime version.
    pub fn info_layout(&self) -> MatmulInfoLayout {
        self.info_layout
    }

    /// Which NPU cores run the product. Multi-core masks need runtime 2.0 or later (1.6
    /// answers `RKNN_ERR_FAIL`).
    pub fn set_core_mask(&mut self, mask: NpuCoreMask) -> Result<()> {
        let f = self.lib.api().rknn_matmul_set_core_mask.ok_or_else(|| {
            self.lib
                .missing("rknn_matmul_set_core_mask", "an RK3588 runtime exports it")
        })?;
        // SAFETY: live matmul context.
        RknnStatus(unsafe { f(self.ctx, mask.bits()) }).result("rknn_matmul_set_core_mask")
    }

    /// Sets the scales and zero points of one matrix (runtime 2.0+). One value applies to the
    /// whole matrix; for B, `N` values apply per output column (the padded columns get scale
    /// 1 and zero point 0). With [`MatMulType::Int8ToFloat32`] the output is
    /// `sum((a - zp_a)(b - zp_b)) * scale_a * scale_b`; runtimes reject per-column B scales
    /// for that type, so scale on the host after an [`MatMulType::Int8ToInt32`] product
    /// instead (what [`crate::RknnLinear`] does).
    pub fn set_quant_params(&mut self, matrix: QuantMatrix, scales: &[f32], zero_points: &[i32]) -> Result<()> {
        self.lib.require(
            RuntimeVersion::new(2, 0, 0),
            "rknn_matmul_set_quant_params",
            "quantization parameters need runtime 2.0.0 or later",
        )?;
        let f = self.lib.api().rknn_matmul_set_quant_params.ok_or_else(|| {
            self.lib
                .missing("rknn_matmul_set_quant_params", "runtime 2.0.0 or later")
        })?;
        if !self.ty.is_int8() {
            return Err(RknnError::Core(aihal_core::CoreError::unsupported(
                "NPU matmul quantization parameters",
                "f16 products",
            )));
        }
        let n = self.dims[2];
        let per_column = matches!(matrix, QuantMatrix::B) && scales.len() == n && n > 1;
        let len_ok = |l: usize| l == 1 || (per_column && l == n);
        if !len_ok(scales.len()) || !len_ok(zero_points.len()) {
            return Err(RknnError::invalid_input(format!(
                "quantization parameters of {matrix:?}: {} scales and {} zero points; give 1 each{}",
                scales.len(),
                zero_points.len(),
                if matches!(matrix, QuantMatrix::B) {
                    format!(", or {n} each for per-column B")
                } else {
                    String::new()
                }
            )));
        }
        if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s <= 0.0) {
            return Err(RknnError::invalid_input(format!(
                "quantization scale {bad} of {matrix:?} must be finite and positive"
            )));
        }
        let np = self.padded[1];
        let (mut scale, mut zp) = (scales.to_vec(), zero_points.to_vec());
        if per_column {
            scale.resize(np, 1.0);
            zp.resize(np, 0);
        }
        let mut params = sys::rknn_quant_params::zeroed();
        params.name = match matrix {
            QuantMatrix::A => self.io.A.name,
            QuantMatrix::B => self.io.B.name,
            QuantMatrix::C => self.io.C.name,
        };
        params.scale = scale.as_mut_ptr();
        params.scale_len = scale.len() as i32;
        params.zp = zp.as_mut_ptr();
        params.zp_len = zp.len() as i32;
        // SAFETY: live context; `params` points to `scale_len` floats and `zp_len` ints that
        // outlive the call.
        RknnStatus(unsafe { f(self.ctx, &raw mut params) }).result("rknn_matmul_set_quant_params")
    }

    /// Where B's element `(kk, j)` lives in NPU memory, in elements.
    fn b_offsets(&self) -> impl Fn(usize, usize) -> usize {
        let [kp, np] = self.padded;
        let (layout, nb) = (self.b_layout, self.ty.alignment().1);
        move |kk, j| match layout {
            BLayout::Normal => kk * np + j,
            BLayout::Native => (((j / nb) * (kp / 32) + kk / 32) * nb + j % nb) * 32 + kk % 32,
        }
    }

    fn check_b_len(&self, len: usize) -> Result<()> {
        let [_, k, n] = self.dims;
        if len == k * n {
            Ok(())
        } else {
            Err(RknnError::Core(aihal_core::CoreError::shape_mismatch(
                "NPU matmul B",
                [k, n],
                [len],
            )))
        }
    }

    fn check_type(&self, int8: bool, what: &str) -> Result<()> {
        if self.ty.is_int8() == int8 {
            Ok(())
        } else {
            Err(RknnError::Core(aihal_core::CoreError::unsupported(
                format!("{what} on a {:?} matmul", self.ty),
                if int8 { "int8 data" } else { "f16 data" },
            )))
        }
    }

    fn write_b(&mut self, order: BOrder, elem: usize, mut put: impl FnMut(&mut [u8], usize)) {
        let [_, k, n] = self.dims;
        let offset = self.b_offsets();
        let b = self.mems[1].bytes_mut();
        b.fill(0);
        for idx in 0..k * n {
            let (kk, j) = match order {
                BOrder::KxN => (idx / n, idx % n),
                BOrder::NxK => (idx % k, idx / k),
            };
            let off = offset(kk, j) * elem;
            put(&mut b[off..off + elem], idx);
        }
        self.b_set = true;
    }

    /// Uploads int8 B, `k * n` values in `order`.
    pub fn set_b_i8(&mut self, b: &[i8], order: BOrder) -> Result<()> {
        self.check_type(true, "set_b_i8")?;
        self.check_b_len(b.len())?;
        self.write_b(order, 1, |dst, idx| dst[0] = b[idx] as u8);
        self.sync(1, sys::RKNN_MEMORY_SYNC_TO_DEVICE)
    }

    /// Uploads f16 B, `k * n` values in `order`.
    pub fn set_b_f16(&mut self, b: &[f16], order: BOrder) -> Result<()> {
        self.check_type(false, "set_b_f16")?;
        self.check_b_len(b.len())?;
        self.write_b(order, 2, |dst, idx| dst.copy_from_slice(&b[idx].to_le_bytes()));
        self.sync(1, sys::RKNN_MEMORY_SYNC_TO_DEVICE)
    }

    /// Cache maintenance for memory `which` where the runtime has `rknn_mem_sync` (1.6+).
    fn sync(&mut self, which: usize, mode: u32) -> Result<()> {
        let Some(f) = self.lib.api().rknn_mem_sync else {
            return Ok(());
        };
        if self.lib.version()? < RuntimeVersion::new(1, 6, 0) {
            return Ok(());
        }
        // SAFETY: live context and memory it created.
        RknnStatus(unsafe { f(self.ctx, self.mems[which].as_ptr(), mode) }).result("rknn_mem_sync")
    }

    fn run_raw(&mut self, a_len: usize, elem: usize, write_a: impl Fn(usize) -> [u8; 2]) -> Result<Vec<u8>> {
        let [m, k, n] = self.dims;
        if a_len != m * k {
            return Err(RknnError::Core(aihal_core::CoreError::shape_mismatch(
                "NPU matmul A",
                [m, k],
                [a_len],
            )));
        }
        if !self.b_set {
            return Err(RknnError::invalid_input(
                "NPU matmul run before B was set: call set_b_i8 or set_b_f16 first",
            ));
        }
        let kp = self.padded[0];
        let a = self.mems[0].bytes_mut();
        a.fill(0);
        for i in 0..m {
            for kk in 0..k {
                let bytes = write_a(i * k + kk);
                let off = (i * kp + kk) * elem;
                a[off..off + elem].copy_from_slice(&bytes[..elem]);
            }
        }
        self.sync(0, sys::RKNN_MEMORY_SYNC_TO_DEVICE)?;
        // SAFETY: live context with A, B and C bound to memory it created.
        RknnStatus(unsafe { (self.lib.api().rknn_matmul_run)(self.ctx) }).result("rknn_matmul_run")?;
        self.sync(2, sys::RKNN_MEMORY_SYNC_FROM_DEVICE)?;
        let np = self.padded[1];
        let c = self.mems[2].bytes();
        let mut out = Vec::with_capacity(m * n * 4);
        for i in 0..m {
            out.extend_from_slice(&c[i * np * 4..(i * np + n) * 4]);
        }
        Ok(out)
    }

    /// Runs an [`MatMulType::Int8ToInt32`] product: `a` is `[M, K]` row-major; the result
    /// is `[M, N]` row-major.
    pub fn run_i8(&mut self, a: &[i8]) -> Result<Vec<i32>> {
        self.expect_type(MatMulType::Int8ToInt32, "run_i8")?;
        let bytes = self.run_raw(a.len(), 1, |i| [a[i] as u8, 0])?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Runs an [`MatMulType::Int8ToFloat32`] product (scaled by the quantization
    /// parameters): `a` is `[M, K]`; the result is `[M, N]`.
    pub fn run_i8_f32(&mut self, a: &[i8]) -> Result<Vec<f32>> {
        self.expect_type(MatMulType::Int8ToFloat32, "run_i8_f32")?;
        let bytes = self.run_raw(a.len(), 1, |i| [a[i] as u8, 0])?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Runs an [`MatMulType::Float16ToFloat32`] product: `a` is `[M, K]`; the result is
    /// `[M, N]`.
    pub fn run_f16(&mut self, a: &[f16]) -> Result<Vec<f32>> {
        self.expect_type(MatMulType::Float16ToFloat32, "run_f16")?;
        let bytes = self.run_raw(a.len(), 2, |i| a[i].to_le_bytes())?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn expect_type(&self, want: MatMulType, what: &str) -> Result<()> {
        if self.ty == want {
            Ok(())
        } else {
            Err(RknnError::Core(aihal_core::CoreError::unsupported(
                what,
                format!("a {:?} matmul (it runs {want:?})", self.ty),
            )))
        }
    }

    /// Releases memory and context; returns every failure (the rest is still released).
    fn release(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        // SAFETY: the context is live (not yet released) and owns exactly these blocks.
        unsafe {
            crate::mem::release_context(
                &self.lib,
                self.ctx,
                self.mems.drain(..),
                self.lib.api().rknn_matmul_destroy,
                "rknn_matmul_destroy",
            )
        }
    }

    /// Releases the context and its memory, reporting any failure (drop does the same
    /// silently, logging failures through `tracing`).
    pub fn close(mut self) -> Result<()> {
        self.release()
    }
}

impl Drop for RknnMatMul {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("aihal-rknn: dropping an NPU matmul: {e}");
        }
    }
}
