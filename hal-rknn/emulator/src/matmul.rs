//! The matmul API: shape and alignment checks, the three B layouts and the perf A/C layout,
//! and exact int8 and fp16 products.

use std::ffi::c_int;

use aihal_rknn_sys::{
    rknn_matmul_info_v1, rknn_matmul_info_v2, rknn_matmul_io_attr, rknn_matmul_tensor_attr, write_c_name,
    RuntimeVersion, RKNN_ERR_FAIL, RKNN_ERR_PARAM_INVALID, RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32,
    RKNN_INT8_MM_INT8_TO_FLOAT32, RKNN_INT8_MM_INT8_TO_INT32, RKNN_MM_LAYOUT_NATIVE, RKNN_MM_LAYOUT_NORM,
    RKNN_MM_LAYOUT_TP_NORM, RKNN_QUANT_TYPE_PER_CHANNEL_SYM, RKNN_QUANT_TYPE_PER_LAYER_SYM, RKNN_TENSOR_FLOAT16,
    RKNN_TENSOR_FLOAT32, RKNN_TENSOR_INT32, RKNN_TENSOR_INT8,
};
use half::f16;

/// A matmul description after reading whichever `rknn_matmul_info` layout the version uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMulDesc {
    /// Rows of A.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of B.
    pub n: usize,
    /// `RKNN_*_MM_*` type.
    pub ty: u32,
    /// B layout.
    pub b_layout: i32,
    /// A and C layout.
    pub ac_layout: i32,
}

/// Scales and zero points set with `rknn_matmul_set_quant_params`.
#[derive(Clone, Debug, Default)]
pub struct Quant {
    /// Scales (1 or N).
    pub scale: Vec<f32>,
    /// Zero points (1 or N).
    pub zp: Vec<i32>,
}

/// A matmul context.
pub struct MatMulCtx {
    /// The version the context behaves as.
    pub version: RuntimeVersion,
    /// The shape and types.
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

/// Whether the version knows the matmul type.
fn type_supported(version: RuntimeVersion, ty: u32) -> bool {
    match ty {
        RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32 | RKNN_INT8_MM_INT8_TO_INT32 => true,
        RKNN_INT8_MM_INT8_TO_FLOAT32 => version >= RuntimeVersion::new(2, 1, 0),
        _ => false,
    }
}

/// `(K alignment, N alignment, K limit)` on the RK3588 for a type and version.
pub fn limits(version: RuntimeVersion, ty: u32) -> (usize, usize, usize) {
    let fp16 = ty == RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32;
    let k_max = if version < RuntimeVersion::new(1, 6, 0) {
        if fp16 {
            2048
        } else {
            4096
        }
    } else {
        10240
    };
    (32, if fp16 { 16 } else { 32 }, k_max)
}

/// Reads the 24-byte layout.
pub fn desc_from_v1(info: &rknn_matmul_info_v1) -> MatMulDesc {
    MatMulDesc {
        m: info.M.max(0) as usize,
        k: info.K.max(0) as usize,
        n: info.N.max(0) as usize,
        ty: info.type_,
        b_layout: info.B_layout,
        ac_layout: info.AC_layout,
    }
}

/// Reads the 64-byte layout, rejecting what this emulator does not model (non-zero reserved
/// bytes, an IOMMU domain other than 0, group quantization).
pub fn desc_from_v2(info: &rknn_matmul_info_v2) -> Result<MatMulDesc, c_int> {
    let quant_ok = |q: i16| q == RKNN_QUANT_TYPE_PER_LAYER_SYM || q == RKNN_QUANT_TYPE_PER_CHANNEL_SYM;
    if info.reserved.iter().any(|&b| b != 0)
        || info.iommu_domain_id != 0
        || info.group_size != 0
        || !quant_ok(info.B_quant_type)
        || info.AC_quant_type != RKNN_QUANT_TYPE_PER_LAYER_SYM
    {
        return Err(RKNN_ERR_PARAM_INVALID);
    }
    Ok(MatMulDesc {
        m: info.M.max(0) as usize,
        k: info.K.max(0) as usize,
        n: info.N.max(0) as usize,
        ty: info.type_,
        b_layout: i32::from(info.B_layout),
        ac_layout: i32::from(info.AC_layout),
    })
}

fn elem_sizes(ty: u32) -> (usize, usize, u32, u32) {
    // (A/B element bytes, C element bytes, A/B tensor type, C tensor type)
    match ty {
        RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32 => (2, 4, RKNN_TENSOR_FLOAT16, RKNN_TENSOR_FLOAT32),
        RKNN_INT8_MM_INT8_TO_FLOAT32 => (1, 4, RKNN_TENSOR_INT8, RKNN_TENSOR_FLOAT32),
        _ => (1, 4, RKNN_TENSOR_INT8, RKNN_TENSOR_INT32),
    }
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

impl MatMulCtx {
    /// Validates a description and builds the context and its io attributes.
    pub fn new(version: RuntimeVersion, desc: MatMulDesc) -> Result<Self, c_int> {
        if !type_supported(version, desc.ty) {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        let (k_align, n_align, k_max) = limits(version, desc.ty);
        let MatMulDesc { m, k, n, .. } = desc;
        if m == 0 || k == 0 || n == 0 || k % k_align != 0 || n % n_align != 0 || k > k_max {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        let tp_norm_ok = version >= RuntimeVersion::new(2, 1, 0);
        match desc.b_layout {
            RKNN_MM_LAYOUT_NORM | RKNN_MM_LAYOUT_NATIVE => {}
            RKNN_MM_LAYOUT_TP_NORM if tp_norm_ok => {}
            _ => return Err(RKNN_ERR_PARAM_INVALID),
        }
        if desc.ac_layout != RKNN_MM_LAYOUT_NORM && desc.ac_layout != RKNN_MM_LAYOUT_NATIVE {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        let sizes = || -> Option<(usize, usize, usize)> {
            let (e, ec, ..) = elem_sizes(desc.ty);
            let a = m.checked_mul(k)?.checked_mul(e)?;
            let b = k.checked_mul(n)?.checked_mul(e)?;
            let c = m.checked_mul(n)?.checked_mul(ec)?;
            [a, b, c].iter().all(|&v| u32::try_from(v).is_ok()).then_some((a, b, c))
        };
        let (a_size, b_size, c_size) = sizes().ok_or(RKNN_ERR_PARAM_INVALID)?;
        let (_, _, ab_ty, c_ty) = elem_sizes(desc.ty);
        let b_dims: Vec<usize> = match desc.b_layout {
            RKNN_MM_LAYOUT_NATIVE => {
                let nb = if ab_ty == RKNN_TENSOR_FLOAT16 { 16 } else { 32 };
                vec![n / nb, k / 32, nb, 32]
            }
            RKNN_MM_LAYOUT_TP_NORM => vec![n, k],
            _ => vec![k, n],
        };
        let io = rknn_matmul_io_attr {
            A: attr("A", &[m, k], a_size, ab_ty),
            B: attr("B", &b_dims, b_size, ab_ty),
            C: attr("C", &[m, n], c_size, c_ty),
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

    /// Which matrix (0 = A, 1 = B, 2 = C) a name designates.
    pub fn matrix_index(name: &str) -> Option<usize> {
        match name {
            "A" => Some(0),
            "B" => Some(1),
            "C" => Some(2),
            _ => None,
        }
    }

    /// Checks and stores quantization parameters for the matrix `which`.
    pub fn set_quant(&mut self, which: usize, quant: Quant) -> Result<(), c_int> {
        if self.version < RuntimeVersion::new(2, 0, 0) {
            return Err(RKNN_ERR_FAIL);
        }
        let n = self.desc.n;
        let per_channel = quant.scale.len() == n && n > 1;
        let ok_len = |l: usize| l == 1 || (which == 1 && l == n);
        if self.desc.ty == RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32
            || !ok_len(quant.scale.len())
            || !ok_len(quant.zp.len())
            || quant.scale.iter().any(|s| !s.is_finite() || *s <= 0.0)
            // the runtime rejects per-channel B for INT8 -> FP32 (rknn-toolkit2 issue #550)
            || (per_channel && self.desc.ty == RKNN_INT8_MM_INT8_TO_FLOAT32)
        {
            return Err(RKNN_ERR_PARAM_INVALID);
        }
        self.quant[which] = Some(quant);
        Ok(())
    }

    /// Element `(row, col)` offset of A in its layout.
    fn a_index(&self, i: usize, kk: usize) -> usize {
        let d = &self.desc;
        if d.ac_layout == RKNN_MM_LAYOUT_NATIVE {
            let blk = if d.ty == RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32 {
                8
            } else {
                16
            };
            ((kk / blk) * d.m + i) * blk + kk % blk
        } else {
            i * d.k + kk
        }
    }

    /// Element offset of B[kk][j] in its layout.
    fn b_index(&self, kk: usize, j: usize) -> usize {
        let d = &self.desc;
        match d.b_layout {
            RKNN_MM_LAYOUT_NATIVE => {
                let nb = if d.ty == RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32 {
                    16
                } else {
                    32
                };
                (((j / nb) * (d.k / 32) + kk / 32) * nb + j % nb) * 32 + kk % 32
            }
            RKNN_MM_LAYOUT_TP_NORM => j * d.k + kk,
            _ => kk * d.n + j,
        }
    }

    /// Element offset of C[i][j] in its layout.
    fn c_index(&self, i: usize, j: usize) -> usize {
        let d = &self.desc;
        if d.ac_layout == RKNN_MM_LAYOUT_NATIVE {
            ((j / 4) * d.m + i) * 4 + j % 4
        } else {
            i * d.n + j
        }
    }

    /// Computes C from A and B (each at least its io attribute's size).
    pub fn compute(&self, a: &[u8], b: &[u8], c: &mut [u8]) {
        let MatMulDesc { m, k, n, ty, .. } = self.desc;
        let scale = |w: usize, j: usize| {
            self.quant[w].as_ref().map_or((1.0f32, 0i32), |q| {
                let s = if q.scale.len() == 1 { q.scale[0] } else { q.scale[j] };
                let z = if q.zp.len() == 1 { q.zp[0] } else { q.zp[j] };
                (s, z)
            })
        };
        for i in 0..m {
            for j in 0..n {
                let out = self.c_index(i, j) * 4;
                let bytes = if ty == RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32 {
                    let mut acc = 0.0f32;
                    for kk in 0..k {
                        let ai = self.a_index(i, kk) * 2;
                        let bi = self.b_index(kk, j) * 2;
                        let av = f16::from_le_bytes([a[ai], a[ai + 1]]).to_f32();
                        let bv = f16::from_le_bytes([b[bi], b[bi + 1]]).to_f32();
                        acc += av * bv;
                    }
                    acc.to_le_bytes()
                } else {
                    let (sa, za) = scale(0, 0);
                    let (sb, zb) = scale(1, j);
                    let mut acc = 0i64;
                    for kk in 0..k {
                        let av = i64::from(a[self.a_index(i, kk)] as i8) - i64::from(za);
                        let bv = i64::from(b[self.b_index(kk, j)] as i8) - i64::from(zb);
                        acc += av * bv;
                    }
                    if ty == RKNN_INT8_MM_INT8_TO_FLOAT32 {
                        (acc as f32 * sa * sb).to_le_bytes()
                    } else {
                        (acc.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32).to_le_bytes()
                    }
                };
                c[out..out + 4].copy_from_slice(&bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(ty: u32, b_layout: i32, ac_layout: i32) -> MatMulCtx {
        let desc = MatMulDesc {
            m: 3,
            k: 64,
            n: 32,
            ty,
            b_layout,
            ac_layout,
        };
        MatMulCtx::new(RuntimeVersion::new(2, 3, 2), desc).unwrap()
    }

    #[test]
    fn perf_a_and_c_layouts_hold_the_same_product_as_normal_ones() {
        let (m, k, n) = (3, 64, 32);
        let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 251) as u8).collect();
        let b: Vec<u8> = (0..k * n).map(|i| (i * 91 % 241) as u8).collect();
        let normal = ctx(RKNN_INT8_MM_INT8_TO_INT32, RKNN_MM_LAYOUT_NORM, RKNN_MM_LAYOUT_NORM);
        let mut c_normal = vec![0u8; m * n * 4];
        normal.compute(&a, &b, &mut c_normal);

        // A in [K/16, M, 16], C in [N/4, M, 4].
        let perf = ctx(RKNN_INT8_MM_INT8_TO_INT32, RKNN_MM_LAYOUT_NORM, RKNN_MM_LAYOUT_NATIVE);
        let mut a_perf = vec![0u8; m * k];
        for i in 0..m {
            for kk in 0..k {
                a_perf[((kk / 16) * m + i) * 16 + kk % 16] = a[i * k + kk];
            }
        }
        let mut c_perf = vec![0u8; m * n * 4];
        perf.compute(&a_perf, &b, &mut c_perf);
        for i in 0..m {
            for j in 0..n {
                let p = (((j / 4) * m + i) * 4 + j % 4) * 4;
                let q = (i * n + j) * 4;
                assert_eq!(c_perf[p..p + 4], c_normal[q..q + 4], "({i}, {j})");
            }
        }
        assert!(c_normal.iter().any(|&v| v != 0));
    }

    #[test]
    fn version_gates_types_layouts_and_k_limits() {
        let v = |s| RuntimeVersion::parse(s).unwrap();
        let desc = |k, ty, b_layout| MatMulDesc {
            m: 1,
            k,
            n: 32,
            ty,
            b_layout,
            ac_layout: 0,
        };
        assert!(MatMulCtx::new(v("2.0.0"), desc(32, RKNN_INT8_MM_INT8_TO_FLOAT32, 0)).is_err());
        assert!(MatMulCtx::new(v("2.1.0"), desc(32, RKNN_INT8_MM_INT8_TO_FLOAT32, 0)).is_ok());
        assert!(MatMulCtx::new(v("2.0.0"), desc(32, RKNN_INT8_MM_INT8_TO_INT32, RKNN_MM_LAYOUT_TP_NORM)).is_err());
        assert!(MatMulCtx::new(v("1.5.2"), desc(4128, RKNN_INT8_MM_INT8_TO_INT32, 0)).is_err());
        assert!(MatMulCtx::new(v("1.6.0"), desc(4128, RKNN_INT8_MM_INT8_TO_INT32, 0)).is_ok());
        assert!(MatMulCtx::new(v("1.5.2"), desc(2080, RKNN_FLOAT16_MM_FLOAT16_TO_FLOAT32, 0)).is_err());
        assert!(MatMulCtx::new(v("2.3.2"), desc(10272, RKNN_INT8_MM_INT8_TO_INT32, 0)).is_err());
    }
}
