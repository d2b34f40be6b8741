//! The matmul API of the RK3588 as Rockchip's headers, API reference and official demos
//! document it, version by version.
//!
//! Every behaviour below names the document it comes from. What no document describes is
//! answered with `RKNN_ERR_PARAM_INVALID` (or `RKNN_ERR_FAIL` where the function itself is
//! missing from that version), never with a guess; where users have reported what real
//! hardware does instead, that behaviour is available behind [`crate::state::REPORTED_ENV`]
//! and names its report. Short names of the documents:
//!
//! - "header X": `rknn_matmul_api.h` (and `rknn_api.h`) of runtime X (rknpu2 v1.5.0/v1.5.2,
//!   rknn-toolkit2 v1.6.0, v2.0.0-beta0, v2.1.0, v2.3.0, v2.3.2);
//! - "demo X": rknpu2/examples/rknn_matmul_api_demo of that release;
//! - "RT2.3": Rockchip_RKNPU_API_Reference_RKNNRT_V2.3.0;
//! - "issue N": an airockchip/rknn-toolkit2 issue.
//!
//! The struct generations and layouts are this crate's own ([`crate::version`],
//! [`crate::layout`]), not `aihal-rknn-sys`'s.

use std::ffi::c_int;

use aihal_rknn_sys::{
    rknn_matmul_io_attr, rknn_matmul_tensor_attr, write_c_name, RKNN_ERR_FAIL, RKNN_ERR_PARAM_INVALID,
    RKNN_TENSOR_FLOAT16, RKNN_TENSOR_FLOAT32, RKNN_TENSOR_INT32, RKNN_TENSOR_INT8,
};
use half::f16;

use crate::layout::{NativeB, Perf};
use crate::version::{v, InfoGeneration, Version};

/// What is modelled of `rknn_matmul_info.type` (header 1.5.0: an `rknn_tensor_type`;
/// header 1.6.0 on: an `rknn_matmul_type` with the same numbers for these two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// fp16 × fp16 → fp32: `RKNN_TENSOR_FLOAT16` (1) in header 1.5.0,
    /// `RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32` (1) from header 1.6.0.
    F16ToF32,
    /// int8 × int8 → int32: `RKNN_TENSOR_INT8` (2) in header 1.5.0,
    /// `RKNN_INT8_MM_INT8_TO_INT32` (2) from header 1.6.0.
    I8ToI32,
    /// int8 × int8 → fp32: `RKNN_INT8_MM_INT8_TO_FLOAT32` (9), header 2.1.0 on.
    I8ToF32,
}

impl Kind {
    /// Reads the type field. The other types the headers declare (int4 from 1.6.0; int8 →
    /// int8, the fp16 × int8/int4 hybrids and int8 × int4 from 2.0.0; bf16 output from
    /// 2.3.0; int8 × int4 → fp16 from 2.3.2) are not modelled and answer an error.
    fn read(generation: InfoGeneration, version: Version, raw: u32) -> Result<Kind, c_int> {
        match (generation, raw) {
            (_, 1) => Ok(Kind::F16ToF32),
            (_, 2) => Ok(Kind::I8ToI32),
            (InfoGeneration::V2_1, 9) if version >= v(2, 1, 0) => Ok(Kind::I8ToF32),
            _ => Err(RKNN_ERR_PARAM_INVALID),
        }
    }

    fn is_fp16(self) -> bool {
        self == Kind::F16ToF32
    }

    /// Bytes of an A or B element.
    fn ab_bytes(self) -> usize {
        if self.is_fp16() {
            2
        } else {
            1
        }
    }

    /// `(A/B tensor type, C tensor type)` reported in the io attributes.
    fn tensor_types(self) -> (u32, u32) {
        match self {
            Kind::F16ToF32 => (RKNN_TENSOR_FLOAT16, RKNN_TENSOR_FLOAT32),
            Kind::I8ToI32 => (RKNN_TENSOR_INT8, RKNN_TENSOR_INT32),
            Kind::I8ToF32 => (RKNN_TENSOR_INT8, RKNN_TENSOR_FLOAT32),
        }
    }
}

/// How B is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BLayout {
    /// 0: `[K, N]` row-major (every header).
    Normal,
    /// 1: the native blocked layout (every header; see [`crate::layout::NativeB`]).
    Native,
    /// 2: `RKNN_MM_LAYOUT_TP_NORM`, `[N, K]` row-major (header 2.1.0 on; demo 2.1.0
    /// transposes B for it).
    Transposed,
}

/// What `B_quant_type` declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantKind {
    /// One scale for B (the only kind before 2.0.0, which has no field).
    PerLayer,
    /// One scale per column of B.
    PerChannel,
    /// One scale per `group_size` elements of B (2.1.0 on).
    PerGroup,
}

impl QuantKind {
    /// Reads `B_quant_type` with the numbering of the version's header.
    fn read(generation: InfoGeneration, raw: i16) -> Result<QuantKind, c_int> {
        match (generation, raw) {
            (_, 0) => Ok(QuantKind::PerLayer),
            // Header 2.0.0's field comment: 0 per layer, 1 per channel (demo 2.0.0 sets 1 for
            // its per-channel hybrid types). No per-group: 2.0.0 has no group_size.
            // Header 2.1.0's rknn_matmul_quant_type: PER_CHANNEL_SYM = 2, PER_GROUP_SYM = 4
            // (demo 2.1.0 uses both). The asymmetric kinds (1, 3, 5) are declared too, but
            // no document shows how their zero points apply: not modelled.
            (InfoGeneration::V2_0, 1) | (InfoGeneration::V2_1, 2) => Ok(QuantKind::PerChannel),
            (InfoGeneration::V2_1, 4) => Ok(QuantKind::PerGroup),
            _ => Err(RKNN_ERR_PARAM_INVALID),
        }
    }
}

/// A matmul description read from the caller's `rknn_matmul_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMulDesc {
    /// Rows of A.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of B.
    pub n: usize,
    /// Element types.
    pub kind: Kind,
    /// B's layout.
    pub b_layout: BLayout,
    /// Whether A and C use the perf ("native" in 2.x) layout.
    pub ac_perf: bool,
    /// What B's quantization parameters will be.
    pub b_quant: QuantKind,
    /// Elements per group for [`QuantKind::PerGroup`].
    pub group_size: usize,
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

impl MatMulDesc {
    /// Reads `bytes` (at least `generation.size()` of them) as `version`'s `rknn_matmul_info`
    /// and checks it against that version's documented limits.
    pub fn read(generation: InfoGeneration, version: Version, bytes: &[u8]) -> Result<MatMulDesc, c_int> {
        let bytes = bytes.get(..generation.size()).ok_or(RKNN_ERR_PARAM_INVALID)?;
        let dim = |at: usize| usize::try_from(i32_at(bytes, at)).map_err(|_| RKNN_ERR_PARAM_INVALID);
        let (m, k, n) = (dim(0)?, dim(4)?, dim(8)?);
        let kind = Kind::read(generation, version, i32_at(bytes, 12) as u32)?;
        let (b_raw, ac_raw, b_quant, group_size) = match generation {
            // Headers 1.5.0 and 1.6.0: int32 layout fields at 16 and 20, nothing else.
            InfoGeneration::V1_5 | InfoGeneration::V1_6 => {
                (i32_at(bytes, 16), i32_at(bytes, 20), QuantKind::PerLayer, 0)
            }
            InfoGeneration::V2_0 | InfoGeneration::V2_1 => {
                let reserved_from = if generation == InfoGeneration::V2_0 { 28 } else { 30 };
                // Reserved bytes (header 2.0.0 on); every demo clears the struct.
                if bytes[reserved_from..].iter().any(|&b| b != 0) {
                    return Err(RKNN_ERR_PARAM_INVALID);
                }
                // AC_quant_type: "only support 0" (header 2.0.0). The iommu domain (RT2.3)
                // selects a 4 GiB address space; one domain is modelled.
                if i16_at(bytes, 22) != 0 || i32_at(bytes, 24) != 0 {
                    return Err(RKNN_ERR_PARAM_INVALID);
                }
                let group = if generation == InfoGeneration::V2_1 {
                    i16_at(bytes, 28)
                } else {
                    0
                };
                let quant = QuantKind::read(generation, i16_at(bytes, 18))?;
                let group = usize::try_from(group).map_err(|_| RKNN_ERR_PARAM_INVALID)?;
                (i32::from(i16_at(bytes, 16)), i32::from(i16_at(bytes, 20)), quant, group)
            }
        };
        let b_layout = match b_raw {
            0 => BLayout::Normal,
            1 => BLayout::Native,
            2 if generation == InfoGeneration::V2_1 => BLayout::Transposed,
            _ => return Err(RKNN_ERR_PARAM_INVALID),
        };
        let ac_perf = match ac_raw {
            0 => false,
            1 => true,
            _ => return Err(RKNN_ERR_PARAM_INVALID),
        };
        let desc = MatMulDesc {
            m,
            k,
            n,
            kind,
            b_layout,
            ac_perf,
            b_quant,
            group_size,
        };
        desc.check(version)?;
        Ok(desc)
    }

    /// The limits the headers state for the RK3588.
    fn check(&self, version: Version) -> Result<(), c_int> {
        let MatMulDesc { m, k, n, kind, .. } = *self;
        // K aligned to 32 for int8 and fp16; N to 32 for int8 and 16 for fp16 (every header,
        // "aligned with 32byte": the layouts' block sizes show these are element counts).
        let n_align = if kind.is_fp16() { 16 } else { 32 };
        // K at most 4096 (header 1.5.0; the 1.5.2 user guide: 2048 for fp16), 10240 from
        // header 1.6.0.
        let k_max = match (version < v(1, 6, 0), kind.is_fp16()) {
            (true, false) => 4096,
            (true, true) => 2048,
            (false, _) => 10240,
        };
        if m == 0 || k == 0 || n == 0 || k % 32 != 0 || n % n_align != 0 || k > k_max {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        // Which kinds take which B quantization:
        let documented = match (kind, self.b_quant) {
            // Per-layer (the default) for every kind. Per-channel parameters exist for
            // int8 -> int8 and int8 -> int32 only (headers 2.0.0 on, on
            // rknn_matmul_set_quant_params); RT2.3's rknn_matmul_get_quant_params reads them
            // back for int8 -> int32.
            (_, QuantKind::PerLayer) | (Kind::I8ToI32, QuantKind::PerChannel) => self.group_size == 0,
            // Demo 2.1.0: int8 -> fp32 with per-group B and group_size 32. Other group sizes
            // appear in no document.
            (Kind::I8ToF32, QuantKind::PerGroup) => self.group_size == 32,
            // Everything else, including int8 -> fp32 with per-channel B: "only supported
            // matmul dtype: INT8_MM_INT8_TO_INT8 and INT8_MM_INT8_TO_INT32", create answers -5
            // (issue 550, runtime 2.3.2); the headers agree, so this holds in both modes.
            _ => false,
        };
        if documented {
            Ok(())
        } else {
            Err(RKNN_ERR_PARAM_INVALID)
        }
    }

    /// The native-layout walk of B: blocks of `[subN, subK]` = 32 × 32 (int8) or 16 × 32
    /// (fp16) (every header's RK3588 layout), segments of 8192 rows from 2.0.0 (RK3588
    /// section of header 2.0.0 on).
    fn native_b(&self, version: Version) -> NativeB {
        NativeB {
            k: self.k,
            n: self.n,
            sub_n: if self.kind.is_fp16() { 16 } else { 32 },
            sub_k: 32,
            segment: (version >= v(2, 0, 0)).then_some(8192),
        }
    }

    /// The perf layout of A: `[K/16, M, 16]` for int8, `[K/8, M, 8]` for fp16 (header
    /// 1.5.0's RK3588 section and later).
    fn perf_a(&self) -> Perf {
        Perf {
            rows: self.m,
            cols: self.k,
            sub: if self.kind.is_fp16() { 8 } else { 16 },
        }
    }

    /// The perf layout of C: `[N/4, M, 4]` (every header).
    fn perf_c(&self) -> Perf {
        Perf {
            rows: self.m,
            cols: self.n,
            sub: 4,
        }
    }
}

/// Scales and zero points set with `rknn_matmul_set_quant_params`.
#[derive(Clone, Debug, Default)]
pub struct Quant {
    /// Scales.
    pub scale: Vec<f32>,
    /// Zero points (empty when the caller passed none).
    pub zp: Vec<i32>,
}

/// A matmul context.
pub struct MatMulCtx {
    /// The version the context behaves as.
    pub version: Version,
    /// The shape, types and layouts.
    pub desc: MatMulDesc,
    /// What `rknn_matmul_create` filled in.
    pub io: rknn_matmul_io_attr,
    /// Descriptor addresses bound to A, B and C.
    pub bound: [Option<usize>; 3],
    /// Quantization parameters of A, B and C.
    pub quant: [Option<Quant>; 3],
    /// The core mask set.
    pub core_mask: u32,
}

fn attr(name: &str, dims: &[usize], size: usize, ty: u32) -> rknn_matmul_tensor_attr {
    let mut a = rknn_matmul_tensor_attr::zeroed();
    write_c_name(&mut a.name, name);
    a.n_dims = dims.len() as u32;
    for (d, &v) in a.dims.iter_mut().zip(dims) {
        *d = v as u32;
    }
    a.size = size as u32;
    a.type_ = ty;
    a
}

/// The status of a result no document describes (or, with `reported`, the all-zero result a
/// report describes).
enum Outcome {
    Values,
    Zeros,
}

impl MatMulCtx {
    /// `rknn_matmul_create` for `version`, reading the caller's struct bytes.
    pub fn create(version: Version, info: &[u8]) -> Result<Self, c_int> {
        // 1.3.0 and 1.4.0 export the function, but no header documents their struct.
        let generation = InfoGeneration::of(version).ok_or(RKNN_ERR_FAIL)?;
        let desc = MatMulDesc::read(generation, version, info)?;
        Self::new(version, desc)
    }

    /// A context for an already checked description.
    pub fn new(version: Version, desc: MatMulDesc) -> Result<Self, c_int> {
        let MatMulDesc { m, k, n, kind, .. } = desc;
        let e = kind.ab_bytes();
        let sizes = || -> Option<[usize; 3]> {
            let s = [
                m.checked_mul(k)?.checked_mul(e)?,
                k.checked_mul(n)?.checked_mul(e)?,
                m.checked_mul(n)?.checked_mul(4)?,
            ];
            s.iter().all(|&v| u32::try_from(v).is_ok()).then_some(s)
        };
        let [a_size, b_size, c_size] = sizes().ok_or(RKNN_ERR_PARAM_INVALID)?;
        let (ab_ty, c_ty) = kind.tensor_types();
        // Dims: normal A (M, K), B (K, N), C (M, N) as a 2.2 runtime prints them (issue 154);
        // TP_NORM B (N, K) (RT2.3); native B (N/subN, K/subK, subN, subK) (every header's
        // layout; demos 2.0.0/2.1.0 read subN and subK from dims[2] and dims[3]); perf A
        // (K/sub, M, sub) and C (N/4, M, 4) (demos 2.0.0/2.1.0 read A.dims[2], C.dims[0] and
        // C.dims[2]; the 1.5.2 demo tests for 4 perf dims, which no document explains).
        let a_dims = if desc.ac_perf {
            let p = desc.perf_a();
            vec![k / p.sub, m, p.sub]
        } else {
            vec![m, k]
        };
        let c_dims = if desc.ac_perf { vec![n / 4, m, 4] } else { vec![m, n] };
        let b_dims = match desc.b_layout {
            BLayout::Normal => vec![k, n],
            BLayout::Transposed => vec![n, k],
            BLayout::Native => {
                let b = desc.native_b(version);
                if !b.tiles() {
                    return Err(RKNN_ERR_PARAM_INVALID);
                }
                vec![n / b.sub_n, k / b.sub_k, b.sub_n, b.sub_k]
            }
        };
        let io = rknn_matmul_io_attr {
            A: attr("A", &a_dims, a_size, ab_ty),
            B: attr("B", &b_dims, b_size, ab_ty),
            C: attr("C", &c_dims, c_size, c_ty),
        };
        Ok(Self {
            version,
            desc,
            io,
            bound: [None; 3],
            quant: [None, None, None],
            core_mask: 0,
        })
    }

    /// Which matrix (0 = A, 1 = B, 2 = C) a name designates: the names the io attributes
    /// carry ("A", "B", "C" as printed by demo runs in issue 154).
    pub fn matrix_index(name: &str) -> Option<usize> {
        match name {
            "A" => Some(0),
            "B" => Some(1),
            "C" => Some(2),
            _ => None,
        }
    }

    /// `rknn_matmul_set_quant_params` for the matrix `which`.
    pub fn set_quant(&mut self, which: usize, quant: Quant) -> Result<(), c_int> {
        // Declared from header 2.0.0; earlier libraries do not export it.
        if self.version < v(2, 0, 0) {
            return Err(RKNN_ERR_FAIL);
        }
        let d = self.desc;
        if quant.scale.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        let expected = match (d.kind, which, d.b_quant) {
            // Header 2.0.0 on: "only support matmul type RKNN_INT8_MM_INT8_TO_INT8,
            // RKNN_INT8_MM_INT8_TO_INT32"; RT2.3: per-layer parameters have length 1,
            // per-channel ones length N, and only declared per-channel B takes N.
            (Kind::I8ToI32, 1, QuantKind::PerChannel) => d.n,
            (Kind::I8ToI32, _, _) => 1,
            // Demo 2.1.0: int8 -> fp32 takes B's per-group scales, N * K / group_size of
            // them, and no zero points. Per-layer parameters for this type appear in no
            // document.
            (Kind::I8ToF32, 1, QuantKind::PerGroup) if quant.zp.is_empty() => d.n * d.k / d.group_size,
            _ => return Err(RKNN_ERR_PARAM_INVALID),
        };
        if quant.scale.len() != expected || !(quant.zp.is_empty() || quant.zp.len() == expected) {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        // The symmetric kinds are the only ones modelled, and no document says what a zero
        // point does to an int32 result: non-zero zero points answer an error.
        if quant.zp.iter().any(|&z| z != 0) {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        self.quant[which] = Some(quant);
        Ok(())
    }

    /// `rknn_matmul_set_core_mask`.
    pub fn set_core_mask(&mut self, mask: u32, reported: bool) -> Result<(), c_int> {
        // AUTO 0, CORE_0 1, CORE_1 2, CORE_2 4, CORE_0_1 3, CORE_0_1_2 7 (every matmul
        // header's comment on rknn_matmul_set_core_mask); CORE_ALL 0xffff from rknn_api.h
        // 2.0.0 (RT2.3 refers the matmul masks to rknn_set_core_mask's).
        let multi = matches!(mask, 3 | 7 | 0xffff);
        let known = matches!(mask, 0..=4 | 7) || (mask == 0xffff && self.version >= v(2, 0, 0));
        if !known {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        // Reported: 1.6.0 refuses CORE_0_1 with -1 ("Not support core mask: 3, fallback to
        // single core auto mode", issue 7); the 2.3.x library fails CORE_0_1_2 (issue 253,
        // its status not shown: the same -1 is assumed).
        let reported_failing = self.version.major == 1 && self.version.minor == 6 || self.version >= v(2, 3, 0);
        if reported && multi && reported_failing {
            return Err(RKNN_ERR_FAIL);
        }
        self.core_mask = mask;
        Ok(())
    }

    /// What `rknn_matmul_run` produces for this configuration.
    fn outcome(&self, reported: bool) -> Result<Outcome, c_int> {
        // Issue 550 (runtimes 2.3.2 and 2.4.2): per-channel int8 -> int32 and per-group
        // int8 -> fp32 (also through the official demo) create, set and run successfully
        // and return all zeros.
        let reported_zeros = reported && self.version >= v(2, 3, 2);
        match (self.desc.kind, self.desc.b_quant) {
            (_, QuantKind::PerLayer) => Ok(Outcome::Values),
            // RT2.3 only says the runtime normalises B's per-channel scales (readable with
            // rknn_matmul_get_quant_params); what the int32 result then holds is not
            // documented.
            (Kind::I8ToI32, QuantKind::PerChannel) | (Kind::I8ToF32, QuantKind::PerGroup) if reported_zeros => {
                Ok(Outcome::Zeros)
            }
            // Demo 2.1.0 checks per-group results only with every group's scale equal (its
            // order of the N * K / 32 scales is not documented), and always sets them.
            (Kind::I8ToF32, QuantKind::PerGroup) => match &self.quant[1] {
                Some(q) if q.scale.iter().all(|s| s.to_bits() == q.scale[0].to_bits()) => Ok(Outcome::Values),
                _ => Err(RKNN_ERR_PARAM_INVALID),
            },
            _ => Err(RKNN_ERR_PARAM_INVALID),
        }
    }

    /// `rknn_matmul_run`: computes C from A and B (each at least its io attribute's size).
    pub fn run(&self, a: &[u8], b: &[u8], c: &mut [u8], reported: bool) -> Result<(), c_int> {
        let outcome = self.outcome(reported)?;
        let MatMulDesc { m, k, n, kind, .. } = self.desc;
        let e = kind.ab_bytes();
        // A and B in plain row-major order.
        let mut a_rows = vec![0u8; m * k * e];
        if self.desc.ac_perf {
            self.desc
                .perf_a()
                .walk(|pos, r, col| a_rows[(r * k + col) * e..][..e].copy_from_slice(&a[pos * e..][..e]));
        } else {
            a_rows.copy_from_slice(&a[..m * k * e]);
        }
        let mut b_rows = vec![0u8; k * n * e];
        match self.desc.b_layout {
            BLayout::Normal => b_rows.copy_from_slice(&b[..k * n * e]),
            BLayout::Transposed => {
                for (pos, src) in b[..k * n * e].chunks_exact(e).enumerate() {
                    let (col, row) = (pos / k, pos % k);
                    b_rows[(row * n + col) * e..][..e].copy_from_slice(src);
                }
            }
            BLayout::Native => self
                .desc
                .native_b(self.version)
                .walk(|pos, r, col| b_rows[(r * n + col) * e..][..e].copy_from_slice(&b[pos * e..][..e])),
        }
        let mut c_rows = vec![[0u8; 4]; m * n];
        if let Outcome::Values = outcome {
            for i in 0..m {
                for j in 0..n {
                    c_rows[i * n + j] = self.element(&a_rows, &b_rows, i, j);
                }
            }
        }
        if self.desc.ac_perf {
            self.desc
                .perf_c()
                .walk(|pos, r, col| c[pos * 4..][..4].copy_from_slice(&c_rows[r * n + col]));
        } else {
            for (dst, src) in c.chunks_exact_mut(4).zip(&c_rows) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// `C[i][j]` from row-major A and B, as bytes.
    fn element(&self, a: &[u8], b: &[u8], i: usize, j: usize) -> [u8; 4] {
        let MatMulDesc { k, n, kind, .. } = self.desc;
        if kind.is_fp16() {
            // fp16 × fp16 → fp32 (header 1.5.0 on). How the NPU accumulates is not documented;
            // this sums the exact products in f32 in K order, and tests allow for rounding.
            let at = |m: &[u8], idx: usize| f16::from_le_bytes([m[2 * idx], m[2 * idx + 1]]).to_f32();
            let acc: f32 = (0..k).map(|kk| at(a, i * k + kk) * at(b, kk * n + j)).sum();
            return acc.to_le_bytes();
        }
        // int8 × int8 accumulated exactly: |sum| <= 10240 * 128 * 128 fits an int32.
        let acc: i32 = (0..k)
            .map(|kk| i32::from(a[i * k + kk] as i8) * i32::from(b[kk * n + j] as i8))
            .sum();
        if kind == Kind::I8ToI32 {
            return acc.to_le_bytes();
        }
        // int8 -> fp32. Per layer: the default parameters, scale 1.0 and zero point 0 (RT2.3,
        // rknn_matmul_set_quant_params). Per group: demo 2.1.0's reference, the sum times B's
        // (equal) scale.
        let scale = match self.desc.b_quant {
            QuantKind::PerGroup => self.quant[1].as_ref().map_or(1.0, |q| q.scale[0]),
            _ => 1.0,
        };
        (acc as f32 * scale).to_le_bytes()
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the values compared are exact in f32
mod tests {
    use super::*;

    /// The bytes of an `rknn_matmul_info` of `generation`, laid out by hand from its header.
    #[allow(clippy::too_many_arguments)]
    fn info(
        generation: InfoGeneration,
        m: i32,
        k: i32,
        n: i32,
        ty: u32,
        b: i32,
        ac: i32,
        quant: i16,
        group: i16,
    ) -> Vec<u8> {
        let mut s = vec![0u8; generation.size()];
        s[0..4].copy_from_slice(&m.to_ne_bytes());
        s[4..8].copy_from_slice(&k.to_ne_bytes());
        s[8..12].copy_from_slice(&n.to_ne_bytes());
        s[12..16].copy_from_slice(&ty.to_ne_bytes());
        match generation {
            InfoGeneration::V1_5 | InfoGeneration::V1_6 => {
                s[16..20].copy_from_slice(&b.to_ne_bytes());
                s[20..24].copy_from_slice(&ac.to_ne_bytes());
            }
            _ => {
                s[16..18].copy_from_slice(&(b as i16).to_ne_bytes());
                s[18..20].copy_from_slice(&quant.to_ne_bytes());
                s[20..22].copy_from_slice(&(ac as i16).to_ne_bytes());
                s[28..30].copy_from_slice(&group.to_ne_bytes());
            }
        }
        s
    }

    fn create(version: &str, bytes: &[u8]) -> Result<MatMulCtx, c_int> {
        MatMulCtx::create(Version::parse(version).unwrap(), bytes)
    }

    #[test]
    fn each_generation_reads_its_own_struct() {
        use InfoGeneration::*;
        // 1.5: the type is a tensor type (INT8 = 2), layouts are int32 at 16 and 20.
        let c = create("1.5.2", &info(V1_5, 3, 64, 32, 2, 1, 1, 0, 0)).unwrap();
        assert_eq!((c.desc.m, c.desc.k, c.desc.n), (3, 64, 32));
        assert_eq!(
            (c.desc.kind, c.desc.b_layout, c.desc.ac_perf),
            (Kind::I8ToI32, BLayout::Native, true)
        );
        // 2.x: int16 layouts; a 1 at byte 18 is B_quant_type, not part of B_layout.
        let c = create("2.0.0", &info(V2_0, 1, 64, 32, 2, 1, 0, 1, 0)).unwrap();
        assert_eq!(
            (c.desc.b_layout, c.desc.b_quant),
            (BLayout::Native, QuantKind::PerChannel)
        );
        // Read as 2.1, the same 1 is the asymmetric per-layer kind, which is not modelled.
        assert_eq!(
            create("2.1.0", &info(V2_1, 1, 64, 32, 2, 1, 0, 1, 0)).err(),
            Some(RKNN_ERR_PARAM_INVALID)
        );
        let c = create("2.1.0", &info(V2_1, 1, 64, 32, 2, 1, 0, 2, 0)).unwrap();
        assert_eq!(c.desc.b_quant, QuantKind::PerChannel);
        // 2.0 has no group_size: byte 28 is reserved.
        assert_eq!(
            create("2.0.0", &info(V2_0, 1, 64, 32, 2, 0, 0, 0, 1)).err(),
            Some(RKNN_ERR_PARAM_INVALID)
        );
        // TP_NORM only from 2.1.
        assert!(create("2.0.0", &info(V2_0, 1, 64, 32, 2, 2, 0, 0, 0)).is_err());
        assert_eq!(
            create("2.1.0", &info(V2_1, 1, 64, 32, 2, 2, 0, 0, 0))
                .unwrap()
                .desc
                .b_layout,
            BLayout::Transposed
        );
        // 1.3/1.4: no documented struct.
        assert_eq!(
            create("1.4.0", &info(V1_6, 1, 64, 32, 2, 0, 0, 0, 0)).err(),
            Some(RKNN_ERR_FAIL)
        );
        // Too short a buffer for the generation.
        assert!(create("2.3.2", &info(V1_6, 1, 64, 32, 2, 0, 0, 0, 0)).is_err());
    }

    #[test]
    fn limits_and_types_follow_each_versions_header() {
        use InfoGeneration::*;
        let ok = |ver: &str, g, k, n, ty| create(ver, &info(g, 1, k, n, ty, 0, 0, 0, 0)).is_ok();
        assert!(ok("1.5.2", V1_5, 4096, 32, 2) && !ok("1.5.2", V1_5, 4128, 32, 2));
        assert!(ok("1.5.2", V1_5, 2048, 16, 1) && !ok("1.5.2", V1_5, 2080, 16, 1));
        assert!(ok("1.6.0", V1_6, 10240, 32, 2) && !ok("2.3.2", V2_1, 10272, 32, 2));
        assert!(!ok("2.3.2", V2_1, 48, 32, 2) && !ok("2.3.2", V2_1, 64, 48, 2) && ok("2.3.2", V2_1, 64, 48, 1));
        assert!(!ok("2.0.0", V2_0, 64, 32, 9) && ok("2.1.0", V2_1, 64, 32, 9));
        assert!(!ok("1.6.0", V1_6, 64, 64, 10), "int4 is declared but not modelled");
        assert!(
            !ok("2.3.2", V2_1, 64, 32, 3),
            "int8 -> int8 is declared but not modelled"
        );
    }

    #[test]
    fn io_attributes_describe_each_layout() {
        use InfoGeneration::*;
        let c = create("2.3.2", &info(V2_1, 3, 8224, 64, 2, 1, 1, 0, 0)).unwrap();
        assert_eq!(&c.io.B.dims[..c.io.B.n_dims as usize], &[2, 257, 32, 32]);
        assert_eq!(&c.io.A.dims[..c.io.A.n_dims as usize], &[514, 3, 16]);
        assert_eq!(&c.io.C.dims[..c.io.C.n_dims as usize], &[16, 3, 4]);
        assert_eq!(
            (c.io.A.size, c.io.B.size, c.io.C.size),
            (3 * 8224, 8224 * 64, 3 * 64 * 4)
        );
        let h = create("1.6.0", &info(V1_6, 2, 64, 16, 1, 1, 1, 0, 0)).unwrap();
        assert_eq!(&h.io.B.dims[..4], &[1, 2, 16, 32]);
        assert_eq!(&h.io.A.dims[..3], &[8, 2, 8]);
        assert_eq!((h.io.A.type_, h.io.C.type_), (RKNN_TENSOR_FLOAT16, RKNN_TENSOR_FLOAT32));
        let t = create("2.1.0", &info(V2_1, 2, 64, 32, 2, 2, 0, 0, 0)).unwrap();
        assert_eq!(&t.io.B.dims[..t.io.B.n_dims as usize], &[32, 64]);
    }

    /// A × B in plain order, then through every layout: the same C.
    #[test]
    fn every_layout_gives_the_product_of_the_matrices_it_holds() {
        use InfoGeneration::*;
        let (m, k, n) = (3, 64, 64);
        let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 251) as u8).collect();
        let b: Vec<u8> = (0..k * n).map(|i| (i * 91 % 241) as u8).collect();
        let want: Vec<i32> = (0..m * n)
            .map(|idx| {
                (0..k)
                    .map(|kk| i32::from(a[idx / n * k + kk] as i8) * i32::from(b[kk * n + idx % n] as i8))
                    .sum()
            })
            .collect();
        let ints = |c: &[u8]| {
            c.chunks_exact(4)
                .map(|x| i32::from_le_bytes([x[0], x[1], x[2], x[3]]))
                .collect::<Vec<_>>()
        };
        for (b_layout, ac) in [(0, 0), (1, 0), (1, 1), (2, 1)] {
            let ctx = create(
                "2.1.0",
                &info(V2_1, m as i32, k as i32, n as i32, 2, b_layout, ac, 0, 0),
            )
            .unwrap();
            let mut a_buf = vec![0u8; m * k];
            let mut b_buf = vec![0u8; k * n];
            if ac == 1 {
                ctx.desc.perf_a().walk(|pos, r, c| a_buf[pos] = a[r * k + c]);
            } else {
                a_buf.copy_from_slice(&a);
            }
            match ctx.desc.b_layout {
                BLayout::Normal => b_buf.copy_from_slice(&b),
                BLayout::Transposed => (0..k * n).for_each(|i| b_buf[(i % n) * k + i / n] = b[i]),
                BLayout::Native => ctx
                    .desc
                    .native_b(ctx.version)
                    .walk(|pos, r, c| b_buf[pos] = b[r * n + c]),
            }
            let mut c = vec![0u8; m * n * 4];
            ctx.run(&a_buf, &b_buf, &mut c, false).unwrap();
            let got = ints(&c);
            let got: Vec<i32> = if ac == 1 {
                let mut plain = vec![0; m * n];
                ctx.desc.perf_c().walk(|pos, r, col| plain[r * n + col] = got[pos]);
                plain
            } else {
                got
            };
            assert_eq!(got, want, "B layout {b_layout}, AC layout {ac}");
        }
    }

    #[test]
    fn quantization_parameters_only_where_documented() {
        use InfoGeneration::*;
        let scales = |n: usize| Quant {
            scale: vec![0.5; n],
            zp: vec![0; n],
        };
        // int8 -> int32, per layer: one scale each, zero points must be 0.
        let mut c = create("2.1.0", &info(V2_1, 1, 64, 32, 2, 0, 0, 0, 0)).unwrap();
        assert!(c.set_quant(0, scales(1)).is_ok());
        assert_eq!(
            c.set_quant(1, scales(32)).err(),
            Some(RKNN_ERR_PARAM_INVALID),
            "N scales, per layer declared"
        );
        let shifted = Quant {
            scale: vec![1.0],
            zp: vec![3],
        };
        assert_eq!(c.set_quant(0, shifted).err(), Some(RKNN_ERR_PARAM_INVALID));
        // Per channel declared (2.1 numbering): N scales.
        let mut c = create("2.1.0", &info(V2_1, 1, 64, 32, 2, 0, 0, 2, 0)).unwrap();
        assert!(c.set_quant(1, scales(32)).is_ok());
        assert!(c.set_quant(1, scales(1)).is_err());
        // int8 -> fp32: per-layer parameters are undocumented, per-channel B is refused at
        // create, per-group B with group_size 32 takes N*K/32 scales and no zero points.
        let mut f = create("2.3.2", &info(V2_1, 1, 64, 32, 9, 0, 0, 0, 0)).unwrap();
        assert!(f.set_quant(1, scales(1)).is_err());
        assert!(create("2.3.2", &info(V2_1, 1, 64, 32, 9, 0, 0, 2, 0)).is_err());
        assert!(create("2.3.2", &info(V2_1, 1, 64, 32, 9, 0, 0, 4, 16)).is_err());
        let mut g = create("2.3.2", &info(V2_1, 1, 64, 32, 9, 0, 0, 4, 32)).unwrap();
        assert!(g.set_quant(1, scales(64)).is_err(), "zero points given");
        let group = Quant {
            scale: vec![0.25; 64],
            zp: vec![],
        };
        assert!(g.set_quant(1, group).is_ok());
        // fp16 takes none.
        let mut h = create("2.3.2", &info(V2_1, 1, 64, 32, 1, 0, 0, 0, 0)).unwrap();
        assert!(h.set_quant(0, scales(1)).is_err());
        // Before 2.0 the function does not exist.
        let mut old = create("1.6.0", &info(V1_6, 1, 64, 32, 2, 0, 0, 0, 0)).unwrap();
        assert_eq!(old.set_quant(0, scales(1)).err(), Some(RKNN_ERR_FAIL));
    }

    #[test]
    fn undocumented_results_are_errors_and_reported_ones_zeros() {
        use InfoGeneration::*;
        let (a, b) = (vec![1u8; 64], vec![1u8; 64 * 32]);
        let mut c = vec![0xffu8; 32 * 4];
        let mut ch = create("2.3.2", &info(V2_1, 1, 64, 32, 2, 0, 0, 2, 0)).unwrap();
        ch.set_quant(
            1,
            Quant {
                scale: vec![0.5; 32],
                zp: vec![],
            },
        )
        .unwrap();
        assert_eq!(ch.run(&a, &b, &mut c, false).err(), Some(RKNN_ERR_PARAM_INVALID));
        ch.run(&a, &b, &mut c, true).unwrap();
        assert!(c.iter().all(|&x| x == 0), "issue 550: all zeros on 2.3.2");
        // Before 2.3.2 nothing is reported: the error stays.
        let old = create("2.1.0", &info(V2_1, 1, 64, 32, 2, 0, 0, 2, 0)).unwrap();
        assert!(old.run(&a, &b, &mut c, true).is_err());
        // Per-group int8 -> fp32 with equal scales: the sum times the scale (demo 2.1.0);
        // zeros on 2.3.2 when reported; unequal scales: their order is undocumented.
        let mut g = create("2.3.2", &info(V2_1, 1, 64, 32, 9, 0, 0, 4, 32)).unwrap();
        assert!(g.run(&a, &b, &mut c, false).is_err(), "scales not set");
        g.set_quant(
            1,
            Quant {
                scale: vec![0.25; 64],
                zp: vec![],
            },
        )
        .unwrap();
        g.run(&a, &b, &mut c, false).unwrap();
        assert_eq!(f32::from_le_bytes([c[0], c[1], c[2], c[3]]), 64.0 * 0.25);
        g.run(&a, &b, &mut c, true).unwrap();
        assert!(c.iter().all(|&x| x == 0));
        let mut scales = vec![0.25; 64];
        scales[3] = 0.5;
        g.set_quant(
            1,
            Quant {
                scale: scales,
                zp: vec![],
            },
        )
        .unwrap();
        assert!(g.run(&a, &b, &mut c, false).is_err());
        // int8 -> fp32 per layer: the accumulation under the default scale of 1.
        let f = create("2.1.0", &info(V2_1, 1, 64, 32, 9, 0, 0, 0, 0)).unwrap();
        f.run(&a, &b, &mut c, false).unwrap();
        assert_eq!(f32::from_le_bytes([c[0], c[1], c[2], c[3]]), 64.0);
    }

    #[test]
    fn core_masks_as_documented_or_as_reported() {
        use InfoGeneration::*;
        for (ver, g) in [
            ("1.5.2", V1_5),
            ("1.6.0", V1_6),
            ("2.0.0", V2_0),
            ("2.2.0", V2_1),
            ("2.3.2", V2_1),
        ] {
            let mut c = create(ver, &info(g, 1, 64, 32, 2, 0, 0, 0, 0)).unwrap();
            for mask in [0, 1, 2, 4, 3, 7] {
                assert!(c.set_core_mask(mask, false).is_ok(), "{ver} {mask}");
            }
            assert_eq!(c.set_core_mask(0xffff, false).is_ok(), ver.starts_with('2'), "{ver}");
            assert_eq!(c.set_core_mask(5, false).err(), Some(RKNN_ERR_PARAM_INVALID));
            let fails = ver == "1.6.0" || ver == "2.3.2";
            assert_eq!(c.set_core_mask(7, true).err(), fails.then_some(RKNN_ERR_FAIL), "{ver}");
            assert!(c.set_core_mask(1, true).is_ok());
        }
    }
}
