//! [`RknnMatMul`]: matrix products on the NPU through the runtime's matmul API.

use std::ffi::c_void;

use aihal_core::NpuCoreMask;
use aihal_rknn_sys as sys;
use half::f16;
use sys::{MatmulInfoLayout, MatmulQuantKind, RuntimeVersion};

use crate::error::{Result, RknnError, RknnStatus};
use crate::library::{RknnLibrary, RuntimeInfo, VersionSource};
use crate::mem::NpuMem;

/// The element types of a product `C = A × B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MatMulType {
    /// int8 × int8 → int32, exact (every runtime from 1.5.0).
    Int8ToInt32,
    /// int8 × int8 → f32 (runtime 2.1.0+): the int32 accumulation as f32, under the default
    /// quantization parameters (per layer, scale 1, zero point 0: the 2.3.0 API reference).
    /// Scales cannot be set: per-layer scales for this type are undocumented (the matmul
    /// header lists quantization parameters for the int8 → int8 and int8 → int32 types only),
    /// per-channel B is refused by the runtime (`RKNN_ERR_PARAM_INVALID`, rknn-toolkit2 issue
    /// 550), and the per-group B of the official demo is reported to return zeros on 2.3.2
    /// (same issue). Scale on the host after an [`MatMulType::Int8ToInt32`] product instead.
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
    /// The NPU's native blocked order: `[N/subN, K/subK, subN, subK]`, with the block sizes the
    /// runtime reports in `rknn_matmul_io_attr.B.dims[2..4]` (32 × 32 for int8, 16 × 32 for
    /// fp16 in the headers). From runtime 2.0.0 a K above 8192 is stored as consecutive
    /// 8192-row segments, each in this order ([`RuntimeVersion::native_b_segment_rows`]).
    /// The runtime uses B as it is: the fastest choice for weights reused across runs.
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

/// How B's quantization parameters are declared when the context is created
/// (`rknn_matmul_info.B_quant_type`, runtime 2.0.0 and later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum BQuant {
    /// One scale and zero point for all of B (the runtime's default).
    #[default]
    PerLayer,
    /// One scale per column of B, for [`MatMulType::Int8ToInt32`] only (the 2.0.0 and later
    /// headers list per-channel parameters for int8 → int8 and int8 → int32).
    ///
    /// Rockchip documents no formula for the int32 result with per-channel B: the 2.3.0 API
    /// reference only says that the runtime normalises B's scales and that
    /// `rknn_matmul_get_quant_params` returns them. Users report that it returns all zeros
    /// on runtimes 2.3.2 and 2.4.2 (rknn-toolkit2 issue 550), so it is refused from 2.3.2 on,
    /// and whenever the exact version is unknown ([`VersionSource::Symbols`]).
    /// [`crate::RknnLinear`] never uses it: it scales on the host.
    ///
    /// [`VersionSource::Symbols`]: crate::VersionSource::Symbols
    PerChannel,
}

/// How a product is set up beyond its shape and types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MatMulOptions {
    b_layout: BLayout,
    b_quant: BQuant,
}

impl MatMulOptions {
    /// Native B, per-layer quantization.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layout of B in NPU memory.
    #[must_use]
    pub fn b_layout(mut self, layout: BLayout) -> Self {
        self.b_layout = layout;
        self
    }

    /// How B's quantization parameters are declared.
    #[must_use]
    pub fn b_quant(mut self, quant: BQuant) -> Self {
        self.b_quant = quant;
        self
    }
}

/// Where the elements of a native-layout B live: the runtime's block sizes and, from 2.0.0,
/// the 8192-row segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NativeB {
    /// Padded K and N.
    kp: usize,
    np: usize,
    /// Columns and rows of one block (`B.dims[2]`, `B.dims[3]`).
    sub_n: usize,
    sub_k: usize,
    /// Rows per segment, `kp` when unsegmented.
    seg_rows: usize,
}

impl NativeB {
    /// Checks the block sizes the runtime reported in `B.dims` against the padded shape.
    pub(crate) fn new(
        dims: &[u32],
        kp: usize,
        np: usize,
        seg_rows: Option<usize>,
    ) -> std::result::Result<Self, String> {
        let &[_, _, sub_n, sub_k] = dims else {
            return Err(format!(
                "the runtime described native B with {} dims {dims:?}; the header's layout has 4 \
                 ([N/subN, K/subK, subN, subK])",
                dims.len()
            ));
        };
        let (sub_n, sub_k) = (sub_n as usize, sub_k as usize);
        let seg_rows = seg_rows.unwrap_or(kp);
        let tiles = |len: usize, block: usize| block > 0 && len.is_multiple_of(block);
        let last = kp - (kp - 1) / seg_rows * seg_rows;
        if !tiles(np, sub_n) || !tiles(seg_rows.min(kp), sub_k) || !tiles(last, sub_k) {
            return Err(format!(
                "the runtime reported native B blocks of {sub_n} columns × {sub_k} rows (B.dims \
                 {dims:?}), which do not tile K={kp} (segments of {seg_rows} rows) × N={np}"
            ));
        }
        Ok(Self {
            kp,
            np,
            sub_n,
            sub_k,
            seg_rows,
        })
    }

    /// The element offset of B's `(kk, j)` in NPU memory.
    pub(crate) fn offset(&self, kk: usize, j: usize) -> usize {
        let seg = kk / self.seg_rows;
        let seg_start = seg * self.seg_rows;
        let rows = self.seg_rows.min(self.kp - seg_start);
        let (k_in, k_blocks) = (kk - seg_start, rows / self.sub_k);
        let block = (j / self.sub_n) * k_blocks + k_in / self.sub_k;
        seg_start * self.np + (block * self.sub_n + j % self.sub_n) * self.sub_k + k_in % self.sub_k
    }
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
    b_quant: BQuant,
    info_layout: MatmulInfoLayout,
    dims: [usize; 3],
    padded: [usize; 2],
    /// Where B's elements go when B is native.
    native_b: Option<NativeB>,
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
            .field("b_quant", &self.b_quant)
            .field("info_layout", &self.info_layout)
            .finish_non_exhaustive()
    }
}

fn unsupported(what: impl Into<String>, context: impl ToString) -> RknnError {
    RknnError::Core(aihal_core::CoreError::unsupported(what, context))
}

/// The first version on which per-channel B is reported to return all zeros
/// (rknn-toolkit2 issue 550: 2.3.2 and 2.4.2).
const PER_CHANNEL_REPORTED_BROKEN: RuntimeVersion = RuntimeVersion::new(2, 3, 2);

impl RknnMatMul {
    /// A product of shape `m × k × n` with B in the native layout.
    pub fn new(lib: &RknnLibrary, m: usize, k: usize, n: usize, ty: MatMulType) -> Result<Self> {
        Self::with_options(lib, m, k, n, ty, MatMulOptions::new())
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
        Self::with_options(lib, m, k, n, ty, MatMulOptions::new().b_layout(b_layout))
    }

    /// A product of shape `m × k × n` set up as `options` say.
    pub fn with_options(
        lib: &RknnLibrary,
        m: usize,
        k: usize,
        n: usize,
        ty: MatMulType,
        options: MatMulOptions,
    ) -> Result<Self> {
        let MatMulOptions { b_layout, b_quant } = options;
        if m == 0 || k == 0 || n == 0 {
            return Err(RknnError::invalid_input(format!(
                "matmul shape M={m} K={k} N={n}: every dimension must be at least 1"
            )));
        }
        let runtime = lib.runtime_info()?;
        let version = runtime.version;
        if version < ty.min_version() {
            return Err(unsupported(
                format!("NPU matmul {ty:?}"),
                format!("RKNN runtime {version} (needs {} or later)", ty.min_version()),
            ));
        }
        let quant_kind = match b_quant {
            BQuant::PerLayer => MatmulQuantKind::PerLayer,
            BQuant::PerChannel => {
                Self::check_per_channel(ty, &runtime)?;
                MatmulQuantKind::PerChannel
            }
        };
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
                // Declared here, numbered as this version numbers it: a runtime only applies
                // per-channel scales it was told to expect at creation.
                v2.B_quant_type = version.matmul_quant_type(quant_kind).ok_or_else(|| {
                    unsupported(format!("RKNN runtime {version}"), format!("B quantization {b_quant:?}"))
                })?;
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
            b_quant,
            info_layout,
            dims: [m, k, n],
            padded: [kp, np],
            native_b: None,
            io,
            mems: Vec::with_capacity(3),
            b_set: false,
            released: false,
        };
        // From here an early return drops `this`, which releases what exists so far.
        if b_layout == BLayout::Native {
            // The block sizes come from the runtime, as the official demos take them.
            let b = &this.io.B;
            let dims = &b.dims[..(b.n_dims as usize).min(b.dims.len())];
            let native = NativeB::new(dims, kp, np, version.native_b_segment_rows())
                .map_err(|msg| RknnError::Core(aihal_core::CoreError::kernel("rknn", "rknn_matmul_create", msg)))?;
            this.native_b = Some(native);
        }
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

    /// Refuses per-channel B where it is undocumented or reported broken.
    fn check_per_channel(ty: MatMulType, runtime: &RuntimeInfo) -> Result<()> {
        let version = runtime.version;
        if ty != MatMulType::Int8ToInt32 {
            return Err(unsupported(
                format!("an NPU {ty:?} matmul"),
                "per-channel B (the matmul header lists per-channel parameters for int8 -> int8 and \
                 int8 -> int32 only; int8 -> f32 is refused with RKNN_ERR_PARAM_INVALID: rknn-toolkit2 issue 550)",
            ));
        }
        if version < RuntimeVersion::new(2, 0, 0) {
            return Err(unsupported(
                format!("RKNN runtime {version}"),
                "per-channel B (quantization parameters need 2.0.0 or later)",
            ));
        }
        if runtime.source != VersionSource::SdkQuery {
            return Err(unsupported(
                format!("an RKNN runtime known only to be {version} or later (it did not report its version)"),
                format!(
                    "per-channel B (reported to return all zeros from {PER_CHANNEL_REPORTED_BROKEN} on: \
                     rknn-toolkit2 issue 550; scale on the host)"
                ),
            ));
        }
        if version >= PER_CHANNEL_REPORTED_BROKEN {
            return Err(unsupported(
                format!("RKNN runtime {version}"),
                "per-channel B (reported to return all zeros on 2.3.2 and 2.4.2: rknn-toolkit2 issue 550; \
                 scale on the host)",
            ));
        }
        Ok(())
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

    /// How B's quantization parameters were declared.
    pub fn b_quant(&self) -> BQuant {
        self.b_quant
    }

    /// The `rknn_matmul_info` layout used for this runtime version.
    pub fn info_layout(&self) -> MatmulInfoLayout {
        self.info_layout
    }

    /// The block sizes of native B, `(subN, subK)` as the runtime reported them in
    /// `rknn_matmul_io_attr.B.dims[2..4]`; `None` for normal B.
    pub fn native_b_blocks(&self) -> Option<(usize, usize)> {
        self.native_b.map(|b| (b.sub_n, b.sub_k))
    }

    /// Which NPU cores run the product.
    ///
    /// Every matmul header from 1.5.0 lists the single cores, `CORES_0_1` and `CORES_0_1_2`
    /// (and 2.0.0 adds `ALL`), but users report multi-core masks failing: 1.6.0 answers
    /// `RKNN_ERR_FAIL` for `CORES_0_1` (rknn-toolkit2 issue 7) and 2.3.x fails `CORES_0_1_2`
    /// (issue 253). The runtime's status is returned as an error, never hidden.
    pub fn set_core_mask(&mut self, mask: NpuCoreMask) -> Result<()> {
        let f = self.lib.api().rknn_matmul_set_core_mask.ok_or_else(|| {
            self.lib
                .missing("rknn_matmul_set_core_mask", "an RK3588 runtime exports it")
        })?;
        // SAFETY: live matmul context.
        RknnStatus(unsafe { f(self.ctx, mask.bits()) }).result("rknn_matmul_set_core_mask")
    }

    /// Sets the scales of one matrix (runtime 2.0+), for [`MatMulType::Int8ToInt32`].
    ///
    /// One scale applies to the whole matrix. For B created with [`BQuant::PerChannel`], `N`
    /// scales apply per column (the padded columns get scale 1); a B created per layer takes
    /// one. Zero points must be 0: what non-zero ones do to an int32 result is not
    /// documented. The int32 result itself stays the exact accumulation for per-layer
    /// parameters (the 2.3.0 API reference: C "does not have a real scale"; its scale is
    /// A's times B's).
    ///
    /// [`MatMulType::Int8ToFloat32`] and f16 products take no parameters (see
    /// [`MatMulType::Int8ToFloat32`]).
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
        match self.ty {
            MatMulType::Int8ToInt32 => {}
            MatMulType::Int8ToFloat32 => {
                return Err(unsupported(
                    "an NPU Int8ToFloat32 matmul",
                    "quantization parameters (per-layer scales for int8 -> f32 are undocumented, and the \
                     official demo's per-group B is reported to return zeros: rknn-toolkit2 issue 550; use \
                     Int8ToInt32 and scale on the host)",
                ));
            }
            MatMulType::Float16ToFloat32 => {
                return Err(unsupported("NPU matmul quantization parameters", "f16 products"));
            }
        }
        let n = self.dims[2];
        let per_column = matches!(matrix, QuantMatrix::B) && self.b_quant == BQuant::PerChannel;
        let want = if per_column { n } else { 1 };
        if scales.len() != want || zero_points.len() != want {
            return Err(RknnError::invalid_input(format!(
                "quantization parameters of {matrix:?}: {} scales and {} zero points; this context takes {want} \
                 of each{}",
                scales.len(),
                zero_points.len(),
                if matches!(matrix, QuantMatrix::B) && !per_column {
                    " (per-column B needs BQuant::PerChannel when the matmul is created)"
                } else {
                    ""
                }
            )));
        }
        if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s <= 0.0) {
            return Err(RknnError::invalid_input(format!(
                "quantization scale {bad} of {matrix:?} must be finite and positive"
            )));
        }
        if let Some(zp) = zero_points.iter().find(|&&z| z != 0) {
            return Err(unsupported(
                "an NPU Int8ToInt32 matmul",
                format!(
                    "zero point {zp} of {matrix:?} (no Rockchip document says what zero points do to an \
                     int32 result; subtract them on the host)"
                ),
            ));
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
        let np = self.padded[1];
        let native = self.native_b;
        move |kk, j| match native {
            Some(b) => b.offset(kk, j),
            None => kk * np + j,
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

#[cfg(test)]
mod tests {
    use super::NativeB;

    #[test]
    fn native_b_offsets_follow_the_headers_block_order() {
        // int8 on the RK3588, K=64, N=64: blocks of 32 columns × 32 rows; the header lists
        // K1..K32 of N1, then of N2, …, of N32, then K33..K64 of N1, …, then N33.
        let b = NativeB::new(&[2, 2, 32, 32], 64, 64, None).unwrap();
        assert_eq!(b.offset(0, 0), 0);
        assert_eq!(b.offset(5, 1), 32 + 5);
        assert_eq!(b.offset(31, 31), 31 * 32 + 31);
        assert_eq!(b.offset(32, 0), 1024, "K33 N1 starts the second K block");
        assert_eq!(b.offset(0, 32), 2048, "K1 N33 starts the second N block");
        assert_eq!(b.offset(63, 63), 4095);
        // fp16: blocks of 16 columns × 32 rows.
        let h = NativeB::new(&[2, 2, 16, 32], 64, 32, None).unwrap();
        assert_eq!(h.offset(0, 16), 2 * 16 * 32);
        assert_eq!(h.offset(32, 1), 16 * 32 + 32);
    }

    #[test]
    fn from_2_0_a_k_above_8192_is_stored_in_8192_row_segments() {
        // K = 8192 + 64, N = 32: segment 0 holds rows 0..8192 (8192 × 32 elements), segment
        // 1 rows 8192..8256, each in the native order on its own.
        let b = NativeB::new(&[1, 258, 32, 32], 8256, 32, Some(8192)).unwrap();
        assert_eq!(b.offset(8191, 31), 8192 * 32 - 1, "last element of segment 0");
        assert_eq!(b.offset(8192, 0), 8192 * 32, "first element of segment 1");
        assert_eq!(b.offset(8193, 1), 8192 * 32 + 32 + 1);
        assert_eq!(b.offset(8224, 0), 8192 * 32 + 1024, "second K block of segment 1");
        // Unsegmented (1.6), the same element sits in the same column stream.
        let one = NativeB::new(&[1, 258, 32, 32], 8256, 32, None).unwrap();
        assert_eq!(one.offset(8192, 0), 8192 * 32);
        assert_eq!(one.offset(8193, 1), 8192 * 32 + 32 + 1);
        let wide = NativeB::new(&[2, 258, 32, 32], 8256, 64, None).unwrap();
        let wide_seg = NativeB::new(&[2, 258, 32, 32], 8256, 64, Some(8192)).unwrap();
        assert_eq!(wide.offset(0, 32), 8256 * 32, "one block: N33 after all of K");
        assert_eq!(wide_seg.offset(0, 32), 8192 * 32, "segmented: N33 after segment 0's K");
        assert_eq!(wide_seg.offset(8192, 32), 8192 * 64 + 64 * 32);
    }

    #[test]
    fn block_sizes_that_do_not_tile_the_shape_are_errors() {
        assert!(NativeB::new(&[64, 32], 64, 64, None).unwrap_err().contains("4 ("));
        assert!(NativeB::new(&[2, 2, 0, 32], 64, 64, None).is_err());
        assert!(NativeB::new(&[2, 2, 48, 32], 64, 64, None).is_err());
        assert!(NativeB::new(&[2, 2, 32, 48], 64, 64, None).is_err());
        // A last segment that the block height does not divide.
        assert!(NativeB::new(&[1, 1, 32, 64], 8192 + 32, 32, Some(8192)).is_err());
    }
}
