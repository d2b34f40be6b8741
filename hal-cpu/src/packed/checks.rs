//! The checks of the packed layouts, each run on one layout: packed weights against the
//! generic int8-activation kernels (bit for bit: the packed kernels compute the same integer
//! block sums and round `(s_w · d_x) · isum` the same way), and against `matmul_with` of the
//! best set where they run its exact kernels. The unit tests and `tests/isa.rs` (through
//! [`crate::test_support`], once per layout, the layouts this CPU lacks reported as ignored)
//! run them.

#[cfg(target_arch = "x86_64")]
use aihal_quantize::quantize;
use aihal_quantize::{QuantFormat, QuantizedTensor};

use super::{matmul_packed, PackedWeights};
use crate::kernels::checks::{fit_k, random_weight, Rng};
use crate::kernels::generic;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use crate::kernels::panels::{Isa, Kind};
use crate::matmul::{matmul_with, run, ActivationPrecision, MatmulOptions};

/// The default options: the int8-activation path.
pub(crate) fn int8() -> MatmulOptions {
    MatmulOptions::default()
}

/// Bitwise equality, any NaN equal to any NaN.
pub(crate) fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{what}: output {i}: got {g}, want {w}"
        );
    }
}

/// Within `bound[i]` of `want[i]` where that is finite; equal (or both NaN) where not.
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let ok = if w.is_finite() {
            (g - w).abs() <= b
        } else {
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan())
        };
        assert!(ok, "{what}: output {i}: got {g}, want {w} (bound {b})");
    }
}

/// The bound for sums of `k` products in another order: `2 k ε Σ |w x|` (plus the smallest
/// normal, for sums that cancel to nothing).
pub(crate) fn order_bound(w: &QuantizedTensor, x: &[f32], m: usize) -> Vec<f32> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let dense = aihal_quantize::dequantize(w).unwrap();
    let mut b = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|t| f64::from(dense[j * k + t].abs()) * f64::from(x[i * k + t].abs()))
                .sum();
            b[i * n + j] = (2.0 * k as f64 * f64::from(f32::EPSILON) * s) as f32 + f32::MIN_POSITIVE;
        }
    }
    b
}

/// The activations as the bf16 path of packed FP8 sees them: each row it carries (finite,
/// magnitudes in `2^-64 ..= 2^64` or zero) rounded to bf16 to nearest, the other rows as they
/// are (they take the f32 kernel).
pub(crate) fn bf16_rounded(x: &[f32], k: usize) -> Vec<f32> {
    x.chunks(k.max(1))
        .flat_map(|row| {
            let carried = row.iter().all(|v| {
                let a = v.abs();
                a <= 2f32.powi(64) && (a >= 2f32.powi(-64) || a == 0.0)
            });
            row.iter()
                .map(move |&v| if carried { half::bf16::from_f32(v).to_f32() } else { v })
        })
        .collect()
}

/// The name of `isa`'s layouts, without the format (`avx2-panel8`, `avx512vnni-panel16`, ...).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn layout_prefix(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx2 => "avx2-panel8",
        Isa::AvxVnni => "avxvnni-panel8",
        Isa::Avx512Vnni => "avx512vnni-panel16",
        Isa::NeonDot => "neondot-panel4",
    }
}

/// Random weights of `format` `[n, k]` (`k` fitted to the format) in `isa`'s layout (kept as
/// they are where the format has none there) against the generic kernels, on activations
/// `[m, k]` from `seed`; the `bad` activation rows get a NaN, an infinity or both at random
/// places.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn check_case(isa: Isa, format: QuantFormat, m: usize, n: usize, k: usize, bad: &[usize], seed: u64) {
    let k = fit_k(format, k);
    let mut rng = Rng::new(seed);
    let w = random_weight(format, n, k, &mut rng);
    let mut x = rng.vec(m * k, -2.0, 2.0);
    for &i in bad.iter().filter(|&&i| i < m) {
        let at = i * k + (rng.next_u64() as usize) % k;
        x[at] = if rng.next_u64().is_multiple_of(2) {
            f32::NAN
        } else {
            f32::INFINITY
        };
    }
    let packed = PackedWeights::in_layout(&w, isa, true);
    // `PackedWeights::new` takes the most capable layout this CPU has for `w`: this one, where
    // it is that or where none packs `w`.
    let most = Isa::available()
        .iter()
        .rev()
        .copied()
        .find(|&i| Kind::for_tensor(&w, i).is_some());
    if most.is_none_or(|i| i == isa) {
        assert_eq!(PackedWeights::new(&w).unwrap().layout_name(), packed.layout_name());
    }
    check_layout(&w, &packed, Kind::for_tensor(&w, isa).is_some(), &x, m, bad);
}

/// One layout of `w` (`[n, k]`; packed if `packs`, else kept as it is) against the generic
/// kernels on the `m` rows of `x` (see [`check_case`]).
pub(crate) fn check_layout(
    w: &QuantizedTensor,
    packed: &PackedWeights,
    packs: bool,
    x: &[f32],
    m: usize,
    bad: &[usize],
) {
    let format = w.format();
    let (n, k) = (w.shape()[0], w.shape()[1]);
    assert_eq!(packed.is_packed(), packs, "{format}: {}", packed.layout_name());
    assert_eq!(packed.shape(), [n, k]);
    assert_eq!(packed.format(), format);
    let what = format!("{format} {} m={m} n={n} k={k} bad={bad:?}", packed.layout_name());

    // The f32 path: the exact kernels of the best set on the same bytes; FP8's own packed
    // kernel (f32 FMA in another order) within the bound of a reordered sum.
    let exact = matmul_with(x.into(), m, w, MatmulOptions::exact()).unwrap();
    let got = matmul_packed(x.into(), m, packed, MatmulOptions::exact()).unwrap();
    let fp8 = packed.is_packed() && matches!(format, QuantFormat::Fp8E4M3 { .. } | QuantFormat::Fp8E5M2 { .. });
    if fp8 {
        let bound = order_bound(w, x, m);
        assert_close(&format!("{what} f32 path"), &got, &exact, &bound);
        let got8 = matmul_packed(x.into(), m, packed, int8()).unwrap();
        if packed.activation_path(ActivationPrecision::Int8) == "bf16" {
            // The reduced path: the exact sums of the activations rounded to bf16.
            let xr = bf16_rounded(x, k);
            let want = matmul_with(xr.as_slice().into(), m, w, MatmulOptions::exact()).unwrap();
            assert_close(&format!("{what} bf16 path"), &got8, &want, &order_bound(w, &xr, m));
        } else {
            // No reduced path here: the same kernel on either precision.
            assert_same(&format!("{what} int8 option"), &got8, &got);
        }
        assert!(got.iter().any(|&v| v != 0.0), "{what}: outputs all zero");
    } else {
        assert_same(&format!("{what} f32 path"), &got, &exact);
    }

    let got = matmul_packed(x.into(), m, packed, int8()).unwrap();
    if fp8 {
        // Checked above.
    } else if packed.is_packed() {
        // Finite rows: the generic q8 kernel, bit for bit. Non-finite rows: the best set's
        // exact kernel, as matmul_with runs it.
        let mut want = vec![0.0; m * n];
        run(generic(), x, m, w, ActivationPrecision::Int8, &mut want);
        for i in 0..m {
            if !x[i * k..(i + 1) * k].iter().all(|v| v.is_finite()) {
                want[i * n..(i + 1) * n].copy_from_slice(&exact[i * n..(i + 1) * n]);
            }
        }
        assert_same(&format!("{what} int8 path"), &got, &want);
        assert!(got.iter().any(|&v| v != 0.0), "{what}: outputs all zero");
    } else {
        let want = matmul_with(x.into(), m, w, int8()).unwrap();
        assert_same(&format!("{what} original layout"), &got, &want);
    }
    // The packed form converts back to the same bytes.
    let back = packed.to_quantized();
    assert_eq!(
        (back.format(), back.shape(), back.data(), back.scales(), back.nested()),
        (w.format(), w.shape(), w.data(), w.scales(), w.nested()),
        "{what}: round trip"
    );
    // Rows read back one by one (a tied embedding's lookups): the reference's rows of the
    // original tensor, bit for bit (NaN payloads compared as bits), in any order, repeated;
    // an id past `N` is an error.
    let ids: Vec<u32> = [n - 1, 0, n / 2, n - 1].iter().map(|&i| i as u32).collect();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(packed.rows(&ids).unwrap()),
        bits(aihal_reference::embedding(&ids, w).unwrap()),
        "{what}: rows"
    );
    assert!(packed.rows(&[n as u32]).is_err(), "{what}: row {n} of {n}");
}

/// The formats the packed layouts take (and NF4, FP8 and the GGML formats with a minimum or
/// sub-block scales where only some layouts do). New ones go at the end: `tests/isa.rs` picks
/// NF4's by index.
pub(crate) fn packed_formats() -> [QuantFormat; 23] {
    [
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Tq2_0,
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 32 },
        QuantFormat::Int8PerBlock { block_size: 96 },
        QuantFormat::Nf4 {
            block_size: 32,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        QuantFormat::Nf4 {
            block_size: 128,
            double_quant: false,
        },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E4M3 { block_size: Some(64) },
        QuantFormat::Fp8E5M2 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(32) },
        QuantFormat::Q5_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_1,
        QuantFormat::Q2K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
        QuantFormat::Q3K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
    ]
}

/// The GGML formats packed through converted blocks (Q5_0 in Q5_1's chunks, Q4_1, Q5_1, Q4_K and Q5_K affine, Q2_K, Q6_K
/// and Q3_K in Q6_K's layout, IQ4_XS in IQ4_NL's with f32 scales)
/// in `isa`'s layout, against the generic kernels bit for bit: every pass size of activation
/// rows (1 to 7, 16, 33), `N` within and past whole panels, `K` of one and of several
/// super-blocks, rows with NaN or infinities (the exact path), and the round trip to the
/// original bytes ([`check_layout`]).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn converted_formats_at_every_row_count(isa: Isa) {
    let mut seed = 1000;
    for format in [
        QuantFormat::Q5_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_1,
        QuantFormat::Q2K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
        QuantFormat::Q3K,
        QuantFormat::Iq4Xs,
    ] {
        for m in [1, 2, 3, 4, 5, 6, 7, 16, 33] {
            for &(n, k) in &[(1, 256), (19, 256), (40, 768), (17, 2560)] {
                seed += 1;
                let bad: &[usize] = if m > 2 { &[1, m - 1] } else { &[] };
                check_case(isa, format, m, n, k, bad, seed);
            }
        }
        // Weights from the quantizer (real sub-block scales and minimums).
        let (n, k, m) = (21, 512, 5);
        let mut rng = Rng::new(seed);
        let w = aihal_quantize::quantize(format, &rng.vec(n * k, -1.0, 1.0), &[n, k]).unwrap();
        let x = rng.vec(m * k, -1.0, 1.0);
        let packed = PackedWeights::in_layout(&w, isa, true);
        check_layout(&w, &packed, Kind::for_tensor(&w, isa).is_some(), &x, m, &[]);
    }
    // Q4_1 headers of every kind of f16 (a signaling NaN, -0, subnormals, infinities, the
    // largest finite) in `d` and in `m`: the packed f16 bits, converted in registers, give
    // the generic kernel's results, and the bytes come back exactly.
    let (n, k, m) = (5, 64, 3);
    let mut rng = Rng::new(77);
    let w = random_weight(QuantFormat::Q4_1, n, k, &mut rng);
    let (format, shape, mut data, scales) = w.into_parts();
    let special = [
        0x7C01u16, 0x8000, 0x0001, 0x7C00, 0xFC00, 0x83FF, 0x7BFF, 0x0400, 0x7E00, 0xFBFF,
    ];
    for (i, blk) in data.chunks_exact_mut(20).enumerate() {
        blk[2..4].copy_from_slice(&special[i].to_le_bytes());
        blk[..2].copy_from_slice(&special[(i + 3) % special.len()].to_le_bytes());
    }
    let w = QuantizedTensor::from_parts(format, shape, data, scales).unwrap();
    let x = rng.vec(m * k, -1.0, 1.0);
    let packed = PackedWeights::in_layout(&w, isa, true);
    check_layout(&w, &packed, Kind::for_tensor(&w, isa).is_some(), &x, m, &[]);
    // Q4_1 at the panel edges of every layout (16, 8 and 4 rows): one block per row (K = 32)
    // and a few, N below one panel, at one, and past several by 1 to 3 rows, at M = 1 (the
    // decode pass) and past the row passes.
    for &(m, n, k) in &[
        (1, 3, 32),
        (1, 4, 32),
        (1, 35, 32),
        (1, 49, 32),
        (2, 51, 32),
        (7, 67, 32),
        (1, 33, 96),
        (3, 18, 160),
        (1, 66, 576),
    ] {
        seed += 1;
        check_case(isa, QuantFormat::Q4_1, m, n, k, &[], seed);
    }
}

/// Every packed format in `isa`'s layout at panel and block edges.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn panel_and_block_edges(isa: Isa) {
    let mut seed = 7;
    for format in packed_formats() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 8, 32),
            (2, 9, 33),
            (3, 7, 64),
            (4, 16, 95),
            (5, 17, 256),
            (16, 15, 200),
            (17, 24, 512),
            (1, 40, 768),
        ] {
            seed += 1;
            check_case(isa, format, m, n, k, &[], seed);
        }
        check_case(isa, format, 6, 13, 288, &[0, 5], seed + 100);
        // Past 6 rows with more blocks than one pass takes (the 8-bit kernels pair panels,
        // here 3 panels: a pair and an odd one), and rows that take the exact path.
        check_case(isa, format, 9, 40, 75 * 32, &[1, 8], seed + 200);
    }
}

/// `isa`'s layouts keep the formats' bit width (and say which layout they are).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn layouts_keep_the_bit_width(isa: Isa) {
    let mut rng = Rng::new(3);
    for format in packed_formats() {
        let w = random_weight(format, 16, 512, &mut rng);
        let p = PackedWeights::in_layout(&w, isa, true);
        if Kind::for_tensor(&w, isa).is_none() {
            assert_eq!(p.layout_name(), "original");
            continue;
        }
        let name = p.layout_name();
        assert!(
            name.strip_prefix(layout_prefix(isa))
                .is_some_and(|f| f.starts_with('-') && f.len() > 1),
            "{name}"
        );
        // 16 rows are whole panels: not one byte more than the original, but for NF4 with
        // double quantization (its decoded absmax besides the 8-bit form) and FP8 per tensor
        // (the scale once per row).
        // The GGML formats converted block by block take what their layout says, per row and
        // block of 32: Q6_K and Q3_K 8-bit codes (with their 2 sub-block scales, and f16 d per
        // 256 values), Q4_1 4-bit codes with its two f16 (the file's 20 bytes).
        let blocks = 16 * 512 / 32;
        let converted = match format {
            // Q5_0: Q5_1's 5-bit chunks with one f16, the file's 22 bytes.
            QuantFormat::Q5_0 => Some(22 * blocks),
            QuantFormat::Q4_1 => Some(20 * blocks),
            // Q4_K and Q5_K: per 256 values their codes, 16 bytes of sub-block scales and
            // minimums, `d` and `dmin` (the file's bytes and 4 more; nothing kept aside: the
            // file's 12 scale bytes are rebuilt from the 16 to unpack).
            QuantFormat::Q4K => Some(148 * blocks / 8),
            // Q5_1: 4-bit codes and a chunk of fifth bits with Q4_1's scales, the file's 24
            // bytes.
            QuantFormat::Q5_1 => Some(24 * blocks),
            QuantFormat::Q5K => Some(180 * blocks / 8),
            // Q2_K: the file's 84 bytes per 256 values, rearranged.
            QuantFormat::Q2K => Some(84 * blocks / 8),
            // Q6_K on AVX2 and NEON: its 6-bit codes in 4-bit and 2-bit chunks, 26 bytes per
            // block of 32 with the sub-block scales, and f16 d per 256 values (the file's 210
            // per 256).
            QuantFormat::Q6K if matches!(isa, Isa::Avx2 | Isa::NeonDot) => Some(26 * blocks + 2 * blocks / 8),
            // Q3_K on AVX2 and NEON: its codes as nibbles with the sub-block scales, 18 bytes per block
            // of 32, and f16 d per 256 values (the file's 110 per 256).
            QuantFormat::Q3K if matches!(isa, Isa::Avx2 | Isa::NeonDot) => Some(18 * blocks + 2 * blocks / 8),
            QuantFormat::Q6K | QuantFormat::Q3K => Some(34 * blocks + 2 * blocks / 8),
            // IQ4_XS: 4-bit codes and an f32 scale per block of 32, its 8 header bytes per 256
            // values kept aside.
            QuantFormat::Iq4Xs => Some(20 * blocks + 8 * blocks / 8),
            _ => None,
        };
        if let Some(bytes) = converted {
            assert_eq!(p.storage_bytes(), bytes, "{format}");
        } else if let QuantFormat::Fp8E4M3 { block_size: None } | QuantFormat::Fp8E5M2 { block_size: None } = format {
            assert_eq!(p.storage_bytes(), w.storage_bytes() + 4 * 16, "{format}");
        } else if w.nested().is_none() {
            assert_eq!(p.storage_bytes(), w.storage_bytes(), "{format}");
        }
        assert!(p.as_quantized().is_none());
        let shown = format!("{p:?}");
        assert!(shown.contains(p.layout_name()) && shown.len() < 200, "{shown}");
    }
}

/// Matrices whose packed buffer spans huge pages (2 MiB and more: the small matrices of the
/// other tests stay below) give the same bytes and results with and without them, in `isa`'s
/// layout.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn huge_page_buffers_hold_the_same_layout(isa: Isa) {
    let mut rng = Rng::new(23);
    let n = 40; // 3 panels of 16 (the last one partial), 5 of 8, 10 of 4
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Tq2_0,
        QuantFormat::Int8PerChannel,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Fp8E4M3 { block_size: Some(64) },
    ] {
        let bits = match format {
            QuantFormat::Tq2_0 => 2,
            QuantFormat::Q4_0 | QuantFormat::Nf4 { .. } => 4,
            _ => 8,
        };
        let k = fit_k(format, (9 << 21) / (n * bits) / 256 * 256); // 2.25 MiB of codes
        let w = random_weight(format, n, k, &mut rng);
        let huge = PackedWeights::in_layout(&w, isa, true);
        let small = PackedWeights::in_layout(&w, isa, false);
        assert!(
            huge.storage_bytes() >= crate::pages::HUGE,
            "{format}: {} bytes",
            huge.storage_bytes()
        );
        assert_eq!(
            huge.huge_pages(),
            huge.is_packed() && cfg!(target_os = "linux"),
            "{format}"
        );
        assert!(!small.huge_pages(), "{format}");
        let m = 2;
        let x = rng.vec(m * k, -1.0, 1.0);
        if format == QuantFormat::Q8_0 {
            // Once against the generic kernels (the others are compared with small pages).
            check_layout(&w, &huge, Kind::for_tensor(&w, isa).is_some(), &x, m, &[]);
        }
        for options in [int8(), MatmulOptions::exact()] {
            let a = matmul_packed(x.as_slice().into(), m, &huge, options).unwrap();
            let b = matmul_packed(x.as_slice().into(), m, &small, options).unwrap();
            assert_same(&format!("{format} huge against small pages"), &a, &b);
        }
        // A clone is a deep copy on pages of the same kind.
        let copy = huge.clone();
        drop(huge);
        assert_eq!(copy.huge_pages(), copy.is_packed() && cfg!(target_os = "linux"));
        assert_eq!(copy.to_quantized().data(), w.data(), "{format}: clone");
    }
}

/// Results in `isa`'s layout do not depend on the number of threads.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn results_do_not_depend_on_the_thread_count(isa: Isa) {
    let mut rng = Rng::new(11);
    for format in packed_formats() {
        let (n, k) = (61, fit_k(format, 520));
        let w = random_weight(format, n, k, &mut rng);
        let packed = PackedWeights::in_layout(&w, isa, true);
        for m in [1, 3, 4, 7, 20] {
            let mut x = rng.vec(m * k, -1.0, 1.0);
            if m > 3 {
                x[2 * k + 5] = f32::NEG_INFINITY;
            }
            for options in [int8(), MatmulOptions::exact()] {
                let runs: Vec<Vec<f32>> = [1, 2, 5]
                    .iter()
                    .map(|&t| {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                        pool.install(|| matmul_packed(x.as_slice().into(), m, &packed, options).unwrap())
                    })
                    .collect();
                assert_same(&format!("{format} m={m} 2 threads"), &runs[1], &runs[0]);
                assert_same(&format!("{format} m={m} 5 threads"), &runs[2], &runs[0]);
            }
        }
    }
}

/// Packed FP8 (AVX-512 VNNI's layout) decodes every code as the exact kernels do.
#[cfg(target_arch = "x86_64")]
pub(crate) fn packed_fp8_decodes_every_code_like_the_exact_kernels() {
    // Every byte, NaN and infinity codes included (which quantizing never writes, but a file
    // may hold): a third of the rows holds every code once (NaN outputs), a third finite codes
    // and one infinity (E5M2: infinite outputs), a third finite codes only.
    let mut rng = Rng::new(17);
    for format in [
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(64) },
    ] {
        let (n, k) = (20, 256);
        let is_special = |b: u8| match format {
            QuantFormat::Fp8E4M3 { .. } => b & 0x7F == 0x7F,
            _ => b & 0x7F > 0x7B,
        };
        let data: Vec<u8> = (0..n * k)
            .map(|i| {
                let (j, t) = (i / k, i % k);
                let every = (t as u8).wrapping_add(j as u8);
                match j % 3 {
                    0 => every,
                    1 if t == j && matches!(format, QuantFormat::Fp8E5M2 { .. }) => 0x7C | (j as u8 & 1) << 7,
                    _ if is_special(every) => 0x3A,
                    _ => every,
                }
            })
            .collect();
        let scales = match format {
            QuantFormat::Fp8E4M3 { .. } => vec![0.75],
            _ => (0..n * k / 64).map(|i| 0.5 + i as f32 / 64.0).collect(),
        };
        let w = QuantizedTensor::from_parts(format, vec![n, k], data, scales).unwrap();
        let packed = PackedWeights::in_layout(&w, Isa::Avx512Vnni, true);
        assert!(packed.is_packed(), "{format}");
        for m in [1, 7] {
            let x = rng.vec(m * k, -1.0, 1.0);
            let want = matmul_with(x.as_slice().into(), m, &w, MatmulOptions::exact()).unwrap();
            let got = matmul_packed(x.as_slice().into(), m, &packed, MatmulOptions::exact()).unwrap();
            assert!(want.iter().any(|v| v.is_nan()), "{format}: NaN codes reach the outputs");
            assert!(want.iter().any(|v| v.is_finite()), "{format}: finite rows");
            if let QuantFormat::Fp8E5M2 { .. } = format {
                assert!(
                    want.iter().any(|v| v.is_infinite()),
                    "{format}: infinities reach the outputs"
                );
            }
            // Rows whose sum is finite: within a reordered sum (the bound from the finite codes).
            let finite = {
                let (f, s, d, sc) = w.clone().into_parts();
                let d: Vec<u8> = d.iter().map(|&b| if is_special(b) { 0 } else { b }).collect();
                QuantizedTensor::from_parts(f, s, d, sc).unwrap()
            };
            let bound = order_bound(&finite, &x, m);
            assert_close(&format!("{format} m={m}"), &got, &want, &bound);
            let back = packed.to_quantized();
            assert_eq!((back.data(), back.scales()), (w.data(), w.scales()));
        }
    }
}

/// On the exact path too, FP8's packed kernel (AVX-512 VNNI's layout) gives a row the same result alone as beside
/// others: passes of 6, 4, 3, 2 and 1 rows, at once over the blocks (up to 6 rows) or 64
/// blocks at a time (7 rows and more), add the same sums.
#[cfg(target_arch = "x86_64")]
pub(crate) fn packed_fp8_exact_rows_do_not_depend_on_the_rows_beside_them() {
    let mut rng = Rng::new(29);
    for format in [
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(32) },
    ] {
        let (n, k) = (20, 130 * 32 + 7);
        let w = quantize(format, &rng.vec(n * k, -1.0, 1.0), &[n, k]).unwrap();
        let packed = PackedWeights::in_layout(&w, Isa::Avx512Vnni, true);
        assert!(packed.is_packed(), "{format}");
        let x = rng.vec(9 * k, -1.0, 1.0);
        let alone: Vec<Vec<f32>> = (0..9)
            .map(|i| matmul_packed(x[i * k..(i + 1) * k].into(), 1, &packed, MatmulOptions::exact()).unwrap())
            .collect();
        for m in [2, 3, 4, 5, 6, 7, 9] {
            let got = matmul_packed(x[..m * k].into(), m, &packed, MatmulOptions::exact()).unwrap();
            for (i, row) in alone.iter().take(m).enumerate() {
                assert_same(&format!("{format} m={m} row {i}"), &got[i * n..(i + 1) * n], row);
            }
        }
    }
}

/// Packed FP8's bf16 path (AVX-512 BF16) rounds the activations to nearest and leaves the
/// rows it cannot carry to the f32 kernel.
#[cfg(target_arch = "x86_64")]
pub(crate) fn packed_fp8_bf16_path_rounds_to_nearest_and_leaves_what_it_cannot_carry() {
    use crate::kernels::x86_packed512::Bf16Act;
    assert!(crate::kernels::cpu().avx512_bf16, "this CPU has no AVX-512 BF16");
    // The rounding, bit for bit against `half` (ties, the largest values, a partial last
    // block, zeros past K), and the order within groups of 4.
    let mut rng = Rng::new(5);
    let k = 70;
    let mut x = rng.vec(3 * k, -3.0, 3.0);
    x[1] = f32::from_bits(0x3F80_8000); // a tie, to even (down)
    x[2] = f32::from_bits(0x3F81_8000); // a tie, to even (up)
    x[3] = -1.0e19;
    x[k + 5] = 2f32.powi(65); // too large: the row is left to the f32 kernel
    x[2 * k + 9] = 1.0e-30; // too small: likewise
    let a = Bf16Act::new(&x, 3, k, 96);
    assert_eq!(a.exact_rows, [false, true, true]);
    let bits = a.bits();
    for t in 0..96 {
        let want = if t < k { half::bf16::from_f32(x[t]).to_bits() } else { 0 };
        let at = t - t % 4 + [0, 2, 1, 3][t % 4];
        assert_eq!(bits[at], want, "value {t}");
    }

    // Rows that bf16 would lose, each beside ordinary rows: an activation of 2^120 against
    // 448 (a product past f32's range before the scale brings it back), subnormal and tiny
    // activations against a large scale (flushed by `vdpbf16ps`), NaN and infinity. They
    // give the f32 kernel's sums; the ordinary rows the exact sums of their bf16 values.
    let (n, k) = (20, 96);
    let data: Vec<u8> = (0..n * k).map(|i| (i * 37 % 126) as u8 | (i as u8 & 0x80)).collect();
    for (format, scale) in [
        (QuantFormat::Fp8E4M3 { block_size: None }, 1.0e-6f32),
        (QuantFormat::Fp8E5M2 { block_size: None }, 1.0e30),
    ] {
        let w = QuantizedTensor::from_parts(format, vec![n, k], data.clone(), vec![scale]).unwrap();
        let packed = PackedWeights::in_layout(&w, Isa::Avx512Vnni, true);
        assert_eq!(packed.activation_path(ActivationPrecision::Int8), "bf16");
        let m = 8;
        let mut x = rng.vec(m * k, -1.0, 1.0);
        x[k + 3] = 2f32.powi(120);
        x[2 * k + 4] = 1.0e-40;
        x[3 * k + 5] = 1.0e-25;
        x[5 * k + 6] = f32::NAN;
        x[6 * k + 7] = f32::NEG_INFINITY;
        let want = matmul_with(x.as_slice().into(), m, &w, MatmulOptions::exact()).unwrap();
        let got = matmul_packed(x.as_slice().into(), m, &packed, int8()).unwrap();
        let xr = bf16_rounded(&x, k);
        let rounded = matmul_with(xr.as_slice().into(), m, &w, MatmulOptions::exact()).unwrap();
        assert_close(&format!("{format}"), &got, &rounded, &order_bound(&w, &xr, m));
        for i in [1, 2, 3, 5, 6] {
            let row = |v: &[f32]| v[i * n..(i + 1) * n].to_vec();
            assert_close(
                &format!("{format} row {i}"),
                &row(&got),
                &row(&want),
                &row(&order_bound(&w, &x, m)),
            );
        }
        if scale < 1.0 {
            assert!(
                want[n..2 * n].iter().all(|v| v.is_finite()),
                "{format}: the 2^120 row is finite"
            );
        }
        assert!(
            got[2 * n..4 * n].iter().any(|&v| v != 0.0),
            "{format}: tiny rows are not flushed"
        );
        // The ordinary rows did take the bf16 path: their sums differ from the f32 ones.
        assert!((0..n).any(|j| got[j] != want[j]), "{format}: row 0 rounded to bf16");
        // A row's result does not depend on the rows beside it (passes of 6, 4, 1 rows).
        for i in [0, 4, 7] {
            let alone = matmul_packed(x[i * k..(i + 1) * k].into(), 1, &packed, int8()).unwrap();
            assert_same(&format!("{format} row {i} alone"), &alone, &got[i * n..(i + 1) * n]);
        }
    }
    // Likewise past 64 blocks, where 7 rows run in passes of 64 blocks and one row in one.
    let (n, k, m) = (16, 65 * 32, 7);
    let data: Vec<u8> = (0..n * k).map(|i| (i * 29 % 126) as u8 | (i as u8 & 0x80)).collect();
    let w =
        QuantizedTensor::from_parts(QuantFormat::Fp8E4M3 { block_size: None }, vec![n, k], data, vec![0.01]).unwrap();
    let packed = PackedWeights::in_layout(&w, Isa::Avx512Vnni, true);
    let x = rng.vec(m * k, -1.0, 1.0);
    let got = matmul_packed(x.as_slice().into(), m, &packed, int8()).unwrap();
    for i in 0..m {
        let alone = matmul_packed(x[i * k..(i + 1) * k].into(), 1, &packed, int8()).unwrap();
        assert_same(&format!("long row {i} alone"), &alone, &got[i * n..(i + 1) * n]);
    }
}
