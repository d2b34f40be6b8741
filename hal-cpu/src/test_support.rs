//! Support for this crate's own tests (feature `test-internals`; not an API, hidden from the
//! docs): the checks of code compiled for an instruction set, each named with the sets it
//! needs, so that `tests/isa.rs` runs every one as a trial and reports those whose sets this
//! CPU lacks as ignored (with the reason), never as passed.
//!
//! The checks themselves live beside the code they check (`checks` modules, compiled for the
//! unit tests too); this module only names them. A check asserts on its own that the CPU runs
//! its set before it calls a kernel compiled for it, so a wrong `needs` fails a trial instead
//! of executing an instruction the CPU lacks.

use aihal_quantize::QuantFormat;

use crate::kernels::checks as kc;
use crate::kernels::Kernels;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::packed::checks as pc;

/// An instruction set (a group of CPU features) that some checks need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// x86_64: AVX2, FMA and F16C (the per-call kernels, the `avx2-panel8` layouts, the ops'
    /// AVX2 builds, the activation quantization's AVX2 build).
    Avx2,
    /// x86_64: AVX-VNNI with the AVX2 set (the `avxvnni-panel8` layouts).
    AvxVnni,
    /// x86_64: AVX-512 F with AVX2 and FMA (the ops' 16-lane builds).
    Avx512F,
    /// x86_64: AVX-512 F/BW and VNNI with the AVX2 set (the `avx512vnni-panel16` layouts, the
    /// activation quantization's AVX-512 build).
    Avx512Vnni,
    /// x86_64: AVX-512 VBMI on top of AVX-512 VNNI (NF4's `vpermb` look-up).
    Avx512Vbmi,
    /// x86_64: AVX-512 BF16 on top of AVX-512 VNNI (packed FP8 on bf16 activations).
    Avx512Bf16,
    /// aarch64: the int8 dot product, FEAT_DotProd (the `neon+dotprod` kernel sets, the
    /// `neondot-panel4` layouts).
    Dotprod,
    /// aarch64: half-precision arithmetic, FEAT_FP16 (the `+fp16` kernel sets).
    Fp16,
}

impl Isa {
    /// Every set, of both architectures.
    pub const ALL: [Self; 8] = [
        Self::Avx2,
        Self::AvxVnni,
        Self::Avx512F,
        Self::Avx512Vnni,
        Self::Avx512Vbmi,
        Self::Avx512Bf16,
        Self::Dotprod,
        Self::Fp16,
    ];

    /// Its name in `AIHAL_REQUIRE_ISA`: `avx2`, `avxvnni`, `avx512f`, `avx512vnni`,
    /// `avx512vbmi`, `avx512bf16`, `dotprod` or `fp16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avxvnni",
            Self::Avx512F => "avx512f",
            Self::Avx512Vnni => "avx512vnni",
            Self::Avx512Vbmi => "avx512vbmi",
            Self::Avx512Bf16 => "avx512bf16",
            Self::Dotprod => "dotprod",
            Self::Fp16 => "fp16",
        }
    }

    /// What it is, in words (`AVX-512 BF16`).
    pub fn what(self) -> &'static str {
        match self {
            Self::Avx2 => "AVX2 + FMA + F16C",
            Self::AvxVnni => "AVX-VNNI",
            Self::Avx512F => "AVX-512 F",
            Self::Avx512Vnni => "AVX-512 VNNI (with F/BW)",
            Self::Avx512Vbmi => "AVX-512 VBMI",
            Self::Avx512Bf16 => "AVX-512 BF16",
            Self::Dotprod => "the int8 dot product (FEAT_DotProd)",
            Self::Fp16 => "FEAT_FP16",
        }
    }

    /// The architecture it belongs to, as [`std::env::consts::ARCH`] names it.
    pub fn arch(self) -> &'static str {
        match self {
            Self::Dotprod | Self::Fp16 => "aarch64",
            _ => "x86_64",
        }
    }

    /// Whether this CPU runs it, detected as the kernels detect it (false on another
    /// architecture).
    pub fn here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::{panels, x86_set};
            match self {
                Self::Avx2 => x86_set::detect().is_some(),
                Self::AvxVnni => panels::Isa::available().contains(&panels::Isa::AvxVnni),
                Self::Avx512F => crate::ops::checks::avx512_builds_run_here(),
                Self::Avx512Vnni => crate::kernels::cpu().avx512_vnni,
                Self::Avx512Vbmi => crate::kernels::cpu().avx512_vbmi,
                Self::Avx512Bf16 => crate::kernels::cpu().avx512_bf16,
                Self::Dotprod | Self::Fp16 => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected;
            match self {
                Self::Dotprod => is_aarch64_feature_detected!("dotprod"),
                Self::Fp16 => is_aarch64_feature_detected!("fp16"),
                _ => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }
}

/// One check of code compiled for some instruction sets: a trial of `tests/isa.rs`.
pub struct Check {
    /// `module::check::variant`, e.g. `packed::panel_and_block_edges::avx2-panel8`.
    pub name: String,
    /// The instruction sets it needs, all of them (none: every CPU of this architecture).
    pub needs: &'static [Isa],
    /// The check; it panics on a failure.
    pub run: Box<dyn FnOnce() + Send>,
}

impl Check {
    /// `check` of `module`, for `variant`, needing `needs`.
    fn new(
        module: &str,
        check: &str,
        variant: &str,
        needs: &'static [Isa],
        run: impl FnOnce() + Send + 'static,
    ) -> Self {
        Self {
            name: format!("{module}::{check}::{variant}"),
            needs,
            run: Box::new(run),
        }
    }
}

/// A kernel set compiled for this architecture, the generic one included.
#[derive(Clone, Copy)]
pub struct KernelSet(&'static Kernels);

impl KernelSet {
    /// Every set compiled for this architecture, generic first, whether this CPU runs it or not.
    pub fn all() -> Vec<Self> {
        kc::every_set().into_iter().map(Self).collect()
    }

    /// Its name (`generic`, `avx2+fma+f16c`, `neon+dotprod`, ...).
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// The instruction sets it needs.
    pub fn needs(self) -> &'static [Isa] {
        match self.0.name {
            "avx2+fma+f16c" => &[Isa::Avx2],
            "neon+fp16" => &[Isa::Fp16],
            "neon+dotprod" => &[Isa::Dotprod],
            "neon+dotprod+fp16" => &[Isa::Dotprod, Isa::Fp16],
            _ => &[],
        }
    }
}

/// The instruction set of a packed layout, of this architecture.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[derive(Clone, Copy)]
pub struct Layout(crate::kernels::panels::Isa);

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl Layout {
    /// Every packed layout of this architecture, the least capable first, whether this CPU
    /// runs it or not.
    pub fn all() -> Vec<Self> {
        use crate::kernels::panels::Isa as P;
        #[cfg(target_arch = "x86_64")]
        let all = [P::Avx2, P::AvxVnni, P::Avx512Vnni];
        #[cfg(target_arch = "aarch64")]
        let all = [P::NeonDot];
        all.into_iter().map(Self).collect()
    }

    /// Its name without the format (`avx2-panel8`, `neondot-panel4`, ...).
    pub fn name(self) -> &'static str {
        pc::layout_prefix(self.0)
    }

    /// The instruction sets it needs.
    pub fn needs(self) -> &'static [Isa] {
        use crate::kernels::panels::Isa as P;
        match self.0 {
            P::Avx2 => &[Isa::Avx2],
            P::AvxVnni => &[Isa::AvxVnni],
            P::Avx512Vnni => &[Isa::Avx512Vnni],
            P::NeonDot => &[Isa::Dotprod],
        }
    }
}

/// The formats the kernel sets' generated cases draw from.
pub fn all_formats() -> Vec<QuantFormat> {
    kc::all_formats()
}

/// The formats the packed layouts' checks take.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn packed_formats() -> Vec<QuantFormat> {
    pc::packed_formats().to_vec()
}

/// One generated case of a kernel set: `set` on random weights of `format` `[n, k]` and
/// activations `[m, k]` from `seed`, against the generic kernels and the reference.
pub fn kernel_case(set: KernelSet, format: QuantFormat, m: usize, n: usize, k: usize, seed: u64) {
    kc::check_case(set.0, format, m, n, k, seed);
}

/// One generated case of a packed layout: random weights of `format` `[n, k]` in `layout`
/// against the generic kernels, on activations `[m, k]` from `seed` whose `bad` rows hold a NaN
/// or an infinity.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub fn packed_case(layout: Layout, format: QuantFormat, m: usize, n: usize, k: usize, bad: &[usize], seed: u64) {
    pc::check_case(layout.0, format, m, n, k, bad, seed);
}

/// A check of one kernel set: its name and its body.
type PerSet = (&'static str, fn(&Kernels));

/// The body of a check of one packed layout.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
type PerLayout = fn(crate::kernels::panels::Isa);

/// Every check but the generated cases ([`kernel_case`], [`packed_case`]), one per check and
/// kernel set, layout or build, with the instruction sets each needs.
pub fn checks() -> Vec<Check> {
    let mut all = Vec::new();
    let per_set: [PerSet; 10] = [
        (
            "every_format_at_block_and_vector_edges",
            kc::every_format_at_block_and_vector_edges,
        ),
        (
            "results_do_not_depend_on_the_thread_count",
            kc::results_do_not_depend_on_the_thread_count,
        ),
        (
            "row_kernels_give_a_row_the_sums_it_gets_alone",
            kc::row_kernels_give_a_row_the_sums_it_gets_alone,
        ),
        ("zeros_outliers_and_denormals", kc::zeros_outliers_and_denormals),
        (
            "f32_path_reads_weights_as_the_decoder",
            kc::f32_path_reads_weights_as_the_decoder,
        ),
        (
            "nan_and_inf_in_activations_propagate_on_every_path",
            kc::nan_and_inf_in_activations_propagate_on_every_path,
        ),
        (
            "fp8_special_and_subnormal_weights_decode_like_the_reference",
            kc::fp8_special_and_subnormal_weights_decode_like_the_reference,
        ),
        ("nf4_has_the_int8_path", kc::nf4_has_the_int8_path),
        ("nf4_int8_levels_in_layout_order", kc::nf4_int8_levels_in_layout_order),
        (
            "nf4_fused_matmul_within_budget_of_the_original_weights",
            kc::nf4_fused_matmul_within_budget_of_the_original_weights,
        ),
    ];
    for set in KernelSet::all() {
        for (check, run) in per_set {
            let kernels = set.0;
            all.push(Check::new("kernels", check, set.name(), set.needs(), move || {
                run(kernels);
            }));
        }
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let per_layout: [(&str, PerLayout); 5] = [
            ("panel_and_block_edges", pc::panel_and_block_edges),
            (
                "converted_formats_at_every_row_count",
                pc::converted_formats_at_every_row_count,
            ),
            ("layouts_keep_the_bit_width", pc::layouts_keep_the_bit_width),
            (
                "huge_page_buffers_hold_the_same_layout",
                pc::huge_page_buffers_hold_the_same_layout,
            ),
            (
                "results_do_not_depend_on_the_thread_count",
                pc::results_do_not_depend_on_the_thread_count,
            ),
        ];
        for layout in Layout::all() {
            for (check, run) in per_layout {
                let isa = layout.0;
                all.push(Check::new("packed", check, layout.name(), layout.needs(), move || {
                    run(isa);
                }));
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        let fp8 = "avx512vnni-panel16";
        all.extend([
            Check::new(
                "packed",
                "packed_fp8_decodes_every_code_like_the_exact_kernels",
                fp8,
                &[Isa::Avx512Vnni],
                pc::packed_fp8_decodes_every_code_like_the_exact_kernels,
            ),
            Check::new(
                "packed",
                "packed_fp8_exact_rows_do_not_depend_on_the_rows_beside_them",
                fp8,
                &[Isa::Avx512Vnni],
                pc::packed_fp8_exact_rows_do_not_depend_on_the_rows_beside_them,
            ),
            Check::new(
                "packed",
                "packed_fp8_bf16_path_rounds_to_nearest_and_leaves_what_it_cannot_carry",
                "avx512bf16",
                &[Isa::Avx512Bf16],
                pc::packed_fp8_bf16_path_rounds_to_nearest_and_leaves_what_it_cannot_carry,
            ),
            Check::new(
                "kernels::act",
                "x86_build_matches_the_scalar_definition",
                "avx2",
                &[Isa::Avx2],
                || crate::kernels::act::checks::x86_build_matches_the_scalar_definition(false),
            ),
            Check::new(
                "kernels::act",
                "x86_build_matches_the_scalar_definition",
                "avx512",
                &[Isa::Avx512Vnni],
                || crate::kernels::act::checks::x86_build_matches_the_scalar_definition(true),
            ),
            Check::new(
                "kernels::x86_packed512",
                "nf4_lookups_agree",
                "vpshufb",
                &[Isa::Avx512Vnni],
                || crate::kernels::x86_packed512::checks::nf4_lookups_agree(false),
            ),
            Check::new(
                "kernels::x86_packed512",
                "nf4_lookups_agree",
                "vpermb",
                &[Isa::Avx512Vbmi],
                || crate::kernels::x86_packed512::checks::nf4_lookups_agree(true),
            ),
            Check::new(
                "ops",
                "builds_give_the_baseline_bits",
                "avx2",
                &[Isa::Avx2],
                crate::ops::checks::avx2_builds_give_the_baseline_bits,
            ),
            Check::new(
                "ops",
                "builds_give_the_baseline_bits",
                "avx512f",
                &[Isa::Avx512F],
                crate::ops::checks::avx512_builds_give_the_baseline_bits,
            ),
        ]);
    }
    #[cfg(target_arch = "aarch64")]
    {
        use crate::kernels::arm::checks::fp8_in_registers_gives_the_chunked_decode_bits as fp8;
        all.extend([
            Check::new(
                "kernels::arm",
                "fp8_in_registers_gives_the_chunked_decode_bits",
                "f32",
                &[],
                || fp8(false),
            ),
            Check::new(
                "kernels::arm",
                "fp8_in_registers_gives_the_chunked_decode_bits",
                "fp16",
                &[Isa::Fp16],
                || fp8(true),
            ),
        ]);
    }
    all
}
