//! [`PackedWeights`]: a weight matrix repacked once for this CPU's int8-activation kernels,
//! and [`matmul_packed`] over it.

use aihal_core::Result;
use aihal_quantize::{QuantFormat, QuantizedTensor};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::kernels::panels as layout;
use crate::matmul::{
    has_int8_activation_path, matmul_into, output_len, ActivationPrecision, Activations, MatmulOptions,
};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod panels;

/// A weight matrix `[N, K]` repacked once for the int8-activation kernels of this CPU, so that
/// no call decodes or repacks it again.
///
/// Q4_0, Q8_0, TQ2_0, int8 per channel and int8 per block (block size a multiple of 32) are
/// packed in panels of 16 weight rows where the CPU has AVX-512 F/BW with VNNI (the kernels
/// multiply with `vpdpbusd`), else of 8 rows where it has AVX2, FMA and F16C (`vpdpbusd` on
/// 256-bit vectors where it has AVX-VNNI, `vpmaddubsw` where not), and of 4 rows on aarch64
/// CPUs with the int8 dot product (`sdot` by element; the RK3588's Cortex-A76 and A55):
/// per block of 32 values, one vector holds 4 consecutive codes of each row of the panel, at
/// the format's own bit width (4-bit codes stay two per byte, TQ2_0's stay four per byte), and
/// the panel's block scales are contiguous (f16 for the GGML formats, one conversion per
/// panel; f32 for int8). The packing only regroups bytes: the packed form takes the same
/// memory as the original (plus zero rows up to a whole panel) and converts back exactly
/// ([`to_quantized`](Self::to_quantized)). The original tensor is not kept.
///
/// Packing reads and writes the weights once, in parallel: about the cost of copying them,
/// page faults of the new buffer included.
///
/// The packed codes and scales live in one buffer which, on Linux and from 2 MiB up, is
/// aligned to 2 MiB and advised to use transparent huge pages (`madvise(MADV_HUGEPAGE)`,
/// before its first touch): a call at M = 1 streams every byte once, and with 4 KiB pages
/// that is a TLB miss per 4 KiB of each stream. [`PackOptions::with_huge_pages`] turns it
/// off, and [`huge_pages`](Self::huge_pages) says whether it was asked for. The
/// `bench_matmul` example times the same kernels with and without them (its `4 KiB pages`
/// rows).
///
/// Q5_0, Q4_1, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (among them the GGUF formats of SmolLM2
/// Q4_1 and Gemma 3 Q4_K_M) pack too, their blocks converted once so that the kernels above run them: Q4_1 and Q4_K as 4-bit codes in Q4_0's
/// nibble order with a scale and an additive term per block of 32 (the integer dot product
/// of the unsigned codes, then `add · (d_x · Σ x)` per block: the int8-activation path of
/// `matmul_with`, rounded the same way), Q4_1's as its f16 `d` and `m` (converted to f32 in
/// registers), Q4_K's as its f16 `d` and `dmin` with its 6-bit sub-block scales and minimums as
/// bytes (the block's scale `d · sc` and term formed in registers); Q5_1 and Q5_K
/// as Q4_1 and Q4_K with a chunk of fifth bits beside the nibbles, and Q5_0 in Q5_1's chunks
/// (its offset of 16 taken away through the activation sums, as Q4_0's 8 is); Q6_K, and
/// Q3_K in the same layout, as 8-bit codes with i8 sub-block scales beside them (two integer
/// sums per block of 32, combined in i32), but Q6_K on AVX2 at its 6 bits (4-bit and 2-bit
/// chunks, joined in registers; a panel taken by more than 8 activation rows is widened to
/// bytes once per call); Q2_K as its own bytes, the 2-bit codes in TQ2_0's
/// panels with the 4-bit sub-block scales and minimums beside them (its minimums taken away
/// per block, as `matmul_with` does). These pack for AVX-512 VNNI, AVX2 (which AVX-VNNI
/// CPUs run) and NEON with the dot product. Packed Q4_1, Q5_0, Q5_1 and Q2_K take the
/// original's bytes, and Q6_K on AVX2 too; the others take more (Q3_K, and Q6_K on AVX-512 and
/// NEON, 8 bits per code; Q4_K and Q5_K 4 bytes more per 256 values than the file). All convert back to the original bytes exactly.
///
/// NF4 whose blocks tile the rows (`K` a multiple of the block size) packs with AVX-512 (F/BW
/// and VNNI) and on NEON with the dot product: the codes regrouped in Q4_0's nibble order and
/// looked up in the code book's int8 levels, as the int8-activation path of `matmul_with`
/// does; IQ4_NL (its blocks shaped as Q4_0's, its indices already in that order) packs for
/// the same sets and runs the same look-up kernels over its own code book. With AVX-512 one more format packs in 16-row panels: FP8 E4M3/E5M2 per tensor or per block of a multiple of 32 (the codes decoded to
/// f32 in registers, f32 activations and f32 FMA on the f32 path; on the reduced-precision
/// path with AVX-512 BF16, looked up as bf16 against activations rounded to bf16, with
/// `vdpbf16ps`).
///
/// Where the CPU has neither AVX2 nor the Arm dot product, or the format and shape have no
/// packed layout (ternary, int8 blocks not a multiple of 32, NF4 on x86 without AVX-512, FP8
/// without AVX-512, NF4 blocks that straddle rows),
/// the original tensor is kept and [`matmul_packed`] runs the same kernels as
/// [`matmul_with`](crate::matmul_with); [`layout_name`](Self::layout_name) says which layout
/// was chosen.
///
/// ```
/// use aihal_cpu::{matmul_packed, MatmulOptions, PackedWeights};
/// use aihal_quantize::{quantize, QuantFormat};
///
/// let w: Vec<f32> = (0..64 * 128).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
/// let q = quantize(QuantFormat::Q4_0, &w, &[64, 128])?;
/// let packed = PackedWeights::new(&q)?;
/// let x = vec![0.5f32; 2 * 128];
/// let y = matmul_packed(x.as_slice().into(), 2, &packed, MatmulOptions::default())?;
/// assert_eq!(y.len(), 2 * 64);
/// // The same sums as matmul_with, rounded in another order.
/// let z = aihal_cpu::matmul_with(x.as_slice().into(), 2, &q, MatmulOptions::default())?;
/// assert!(y.iter().zip(&z).all(|(a, b)| (a - b).abs() <= 1e-5 * (1.0 + b.abs())));
/// # Ok::<(), aihal_core::CoreError>(())
/// ```
#[derive(Clone)]
pub struct PackedWeights {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    /// No packed layout here: the original tensor and today's kernels.
    Original(QuantizedTensor),
    /// Panels of 8 rows for the AVX2 set, or of 16 rows for AVX-512 VNNI.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    Panels(layout::Packed),
}

/// How [`PackedWeights::with_options`] stores a matrix. The default is what
/// [`PackedWeights::new`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackOptions {
    /// Ask for transparent huge pages for the packed buffer (Linux, buffers of 2 MiB and
    /// more; a hint the kernel may decline, and nothing elsewhere). Default `true`. Where
    /// transparent huge pages are set to `madvise`, the kernel may compact memory to find
    /// 2 MiB pages at the buffer's first touch, which can make packing slower on a
    /// fragmented machine; `false` keeps ordinary pages.
    pub huge_pages: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self { huge_pages: true }
    }
}

impl PackOptions {
    /// These options with [`huge_pages`](Self::huge_pages) set to `on`.
    #[must_use]
    pub fn with_huge_pages(self, on: bool) -> Self {
        Self { huge_pages: on }
    }
}

/// Format, shape, layout and size (not the bytes).
impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeights")
            .field("format", &self.format())
            .field("shape", &self.shape())
            .field("layout", &self.layout_name())
            .field("storage_bytes", &self.storage_bytes())
            .finish()
    }
}

/// The best panel layout for `w` on this CPU: the most capable instruction set that has one.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn panel_layout(w: &QuantizedTensor) -> Option<(layout::Kind, layout::Isa)> {
    layout::Isa::available()
        .iter()
        .rev()
        .find_map(|&isa| Some((layout::Kind::for_tensor(w, isa)?, isa)))
}

impl PackedWeights {
    /// Packs `w` (`[N, K]`) for this CPU, or keeps a copy of it where no packed layout fits
    /// (see the type's docs). Errors: `w` is not rank 2, or its format is unknown here.
    pub fn new(w: &QuantizedTensor) -> Result<Self> {
        Self::with_options(w, PackOptions::default())
    }

    /// Like [`new`](Self::new), stored as `options` say.
    ///
    /// ```
    /// use aihal_cpu::{PackOptions, PackedWeights};
    /// use aihal_quantize::{quantize, QuantFormat};
    ///
    /// let w = quantize(QuantFormat::Q8_0, &vec![0.25f32; 64 * 128], &[64, 128])?;
    /// let small_pages = PackedWeights::with_options(&w, PackOptions::default().with_huge_pages(false))?;
    /// assert!(!small_pages.huge_pages());
    /// # Ok::<(), aihal_core::CoreError>(())
    /// ```
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "aarch64")), allow(unused_variables))]
    pub fn with_options(w: &QuantizedTensor, options: PackOptions) -> Result<Self> {
        crate::matmul::check_weight(0, 0, w)?;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some((kind, isa)) = panel_layout(w) {
            return Ok(Self {
                inner: Inner::Panels(layout::Packed::pack(w, kind, isa, options.huge_pages)?),
            });
        }
        Ok(Self {
            inner: Inner::Original(w.clone()),
        })
    }

    /// Like [`new`](Self::new), taking `w` by value: where no packed layout fits, `w` is kept
    /// without a copy.
    pub fn from_tensor(w: QuantizedTensor) -> Result<Self> {
        crate::matmul::check_weight(0, 0, &w)?;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        if let Some((kind, isa)) = panel_layout(&w) {
            return Ok(Self {
                inner: Inner::Panels(layout::Packed::pack(&w, kind, isa, true)?),
            });
        }
        Ok(Self {
            inner: Inner::Original(w),
        })
    }

    /// `w` packed in `isa`'s layout where the format and shape have one there, else kept as it
    /// is: what the checks of each layout test. Panics where this CPU lacks `isa`.
    #[cfg(all(
        any(test, feature = "test-internals"),
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    pub(crate) fn in_layout(w: &QuantizedTensor, isa: layout::Isa, huge_pages: bool) -> Self {
        assert!(layout::Isa::available().contains(&isa), "this CPU lacks {isa:?}");
        match layout::Kind::for_tensor(w, isa) {
            Some(kind) => Self {
                inner: Inner::Panels(layout::Packed::pack(w, kind, isa, huge_pages).unwrap()),
            },
            None => Self::unpacked(w.clone()).unwrap(),
        }
    }

    /// Keeps `w` as it is (no packing): [`matmul_packed`] then runs the kernels of
    /// [`matmul_with`](crate::matmul_with).
    pub fn unpacked(w: QuantizedTensor) -> Result<Self> {
        crate::matmul::check_weight(0, 0, &w)?;
        Ok(Self {
            inner: Inner::Original(w),
        })
    }

    /// The layout chosen: `original`, `avx512vnni-panel16-<format>` where the CPU has
    /// AVX-512 F/BW and VNNI, else `avxvnni-panel8-<format>` where it has AVX-VNNI, else
    /// `avx2-panel8-<format>`; on aarch64 `neondot-panel4-<format>` where the CPU has the
    /// int8 dot product; `<format>` is `q4_0`, `q8_0`, `q5_0`, `tq2_0`, `int8_channel`,
    /// `int8_block`, `q4_1`, `q4_k` and `q6_k` (not on AVX-VNNI: those CPUs take the
    /// `avx2-panel8` layout for them) and `nf4` (not on AVX2 or AVX-VNNI), and with AVX-512
    /// also `fp8_e4m3` and `fp8_e5m2`.
    pub fn layout_name(&self) -> &'static str {
        match &self.inner {
            Inner::Original(_) => "original",
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.kind.name(p.isa),
        }
    }

    /// What [`matmul_packed`] multiplies these weights with under `precision`: `"int8"`
    /// (activations quantized per block of 32), `"bf16"` (activations rounded to bf16: packed
    /// FP8 on CPUs with AVX-512 BF16, under [`ActivationPrecision::Int8`]) or `"f32"`. Rows the
    /// reduced path cannot carry take the f32 path whatever this says: NaN and infinities, and
    /// on the bf16 path also magnitudes above `2^64` or below `2^-64` (zero aside).
    pub fn activation_path(&self, precision: ActivationPrecision) -> &'static str {
        if precision == ActivationPrecision::F32 {
            return "f32";
        }
        match &self.inner {
            Inner::Original(w) if has_int8_activation_path(w.format()) => "int8",
            Inner::Original(_) => "f32",
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => match p.kind {
                layout::Kind::Fp8 { .. } if crate::kernels::fp8_bf16_here() => "bf16",
                layout::Kind::Fp8 { .. } => "f32",
                _ => "int8",
            },
        }
    }

    /// Whether the packed buffer was advised to use huge pages (see the type's docs): false
    /// for the `original` layout, for buffers under 2 MiB, off Linux, and when
    /// [`PackOptions::huge_pages`] was off. Whether the kernel granted them is its decision
    /// (`AnonHugePages` in `/proc/meminfo` counts the pages it did).
    pub fn huge_pages(&self) -> bool {
        match &self.inner {
            Inner::Original(_) => false,
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.huge_pages(),
        }
    }

    /// Whether the weights are held in a packed layout (not the original tensor).
    pub fn is_packed(&self) -> bool {
        !matches!(self.inner, Inner::Original(_))
    }

    /// The format of the weights.
    pub fn format(&self) -> QuantFormat {
        match &self.inner {
            Inner::Original(w) => w.format(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.format,
        }
    }

    /// `[N, K]`: output features, input features.
    pub fn shape(&self) -> [usize; 2] {
        match &self.inner {
            Inner::Original(w) => [w.shape()[0], w.shape()[1]],
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => [p.n, p.k],
        }
    }

    /// Bytes of weight data held (codes and scales).
    pub fn storage_bytes(&self) -> usize {
        match &self.inner {
            Inner::Original(w) => w.storage_bytes(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.storage_bytes(),
        }
    }

    /// The original tensor, if it is kept (the `original` layout).
    pub fn as_quantized(&self) -> Option<&QuantizedTensor> {
        match &self.inner {
            Inner::Original(w) => Some(w),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(_) => None,
        }
    }

    /// Rows `ids` of the weight dequantized to f32 (`ids.len() × K`, row after row), bit for
    /// bit what [`aihal_reference::embedding`] gives from the original tensor: a packed
    /// matrix converts back to its original bytes exactly, so each row is read from its
    /// panel converted back (a few rows' work per id). What an embedding lookup into a table
    /// that is also a layer's weight (tied embeddings) reads, without a second copy of the
    /// table.
    ///
    /// Errors: `InvalidInput` naming the first id that is not below `N`.
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        match &self.inner {
            Inner::Original(w) => aihal_reference::embedding(ids, w),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.rows(ids),
        }
    }

    /// The weights in their original format, bit for bit the tensor they were packed from
    /// (rebuilt from the packed form, which allocates its size; cloned for the `original`
    /// layout).
    pub fn to_quantized(&self) -> QuantizedTensor {
        match &self.inner {
            Inner::Original(w) => w.clone(),
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            Inner::Panels(p) => p.unpack(),
        }
    }
}

/// `y = x · Wᵀ` over packed weights: `x` `[m, K]` (f32, f16 or bf16), `y` `[m, N]` f32.
///
/// The same errors for bad input as [`matmul_with`](crate::matmul_with), and the same
/// results up to the order of f32 additions: on the int8-activation path the packed kernels
/// give, bit for bit, what the scalar int8 kernel gives (the row and panel kernels of
/// `matmul_with` round the same block sums in another order). They run for every M (up to 4
/// activation rows per pass over a panel with AVX2, 6 with AVX-512).
/// Rows with NaN or infinities and the [`ActivationPrecision::F32`](crate::ActivationPrecision::F32) path give `matmul_with`'s
/// results bit for bit: they run its exact kernels on the weights converted back to their
/// format 16 rows at a time, a decode pass the original tensor would not need (keep the
/// weights [`PackedWeights::unpacked`] for a mostly-f32 workload). Packed FP8 is the
/// exception: its f32 path runs its own f32 kernel (each weight decoded as `value · scale`,
/// as the layout contract says, then f32 FMA), whose sums differ from `matmul_with`'s only
/// in the order of the additions; it decodes every code as the reference does, NaN and
/// infinities included. Its decode of subnormal E4M3/E5M2 codes goes through f32 subnormals,
/// so it assumes the default floating-point mode (no flush-to-zero or denormals-are-zero),
/// as the AVX2 FP8 kernels of `matmul_with` do. On the reduced-precision path
/// ([`ActivationPrecision::Int8`]) with AVX-512 BF16, packed FP8 computes the exact sums of
/// the activations rounded to bf16 (within a reordered sum: the tests bound it by
/// `2 K ε Σ |w x|`), the codes looked up as bf16 values in registers and multiplied with
/// `vdpbf16ps`; rows with a value that is not finite or whose magnitude is above `2^64` or
/// below `2^-64` (zero aside: the range where `vdpbf16ps`'s flush of subnormals or an
/// overflow before the scale could change the sum) take the f32 kernel. A row's result
/// does not depend on the other rows of the call. Without AVX-512 BF16 both paths run the
/// f32 kernel.
pub fn matmul_packed(x: Activations<'_>, m: usize, w: &PackedWeights, options: MatmulOptions) -> Result<Vec<f32>> {
    let [n, _] = w.shape();
    let mut y = vec![0.0f32; output_len(m, n)?];
    matmul_packed_into(x, m, w, options, &mut y)?;
    Ok(y)
}

/// Like [`matmul_packed`], writing `[m, N]` into `out`.
pub fn matmul_packed_into(
    x: Activations<'_>,
    m: usize,
    w: &PackedWeights,
    options: MatmulOptions,
    out: &mut [f32],
) -> Result<()> {
    match &w.inner {
        Inner::Original(t) => matmul_into(x, m, t, options, out),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        Inner::Panels(p) => panels::run(p, x, m, options.activations, out),
    }
}

// Results are compared bit for bit on purpose: the packed kernels give the generic ones' bits.
#[cfg(any(test, feature = "test-internals"))]
#[allow(clippy::float_cmp)]
pub(crate) mod checks;
#[cfg(test)]
mod tests;
