//! The checks of the kernel sets, each run on one set: every set against the generic one and
//! the reference, over generated shapes. The unit tests and `tests/isa.rs` (through
//! [`crate::test_support`], once per set, the sets this CPU lacks reported as ignored) run
//! them; the random weights and activations here serve the packed layouts' checks too.

use aihal_quantize::{QuantFormat, QuantizedTensor};
use half::f16;

use super::{generic, Kernels};
use crate::matmul::{run, ActivationPrecision};
use aihal_reference as reference;

/// SplitMix64: fresh, reproducible random data from a proptest seed.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub(crate) fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub(crate) fn vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.f32_in(lo, hi)).collect()
    }
}

/// Random packed bytes for `format` `[n, k]` with sane scales: inline f16 scales in
/// [0.01, 0.5), FP8 bytes that are neither NaN nor infinite.
pub(crate) fn random_weight(format: QuantFormat, n: usize, k: usize, rng: &mut Rng) -> QuantizedTensor {
    let numel = n * k;
    let (data_len, scale_len) = match format {
        QuantFormat::Nf4 { block_size, .. } => (numel.div_ceil(2), numel.div_ceil(block_size)),
        QuantFormat::Q4_0 | QuantFormat::Iq4Nl => (numel / 32 * 18, 0),
        QuantFormat::Q8_0 => (numel / 32 * 34, 0),
        QuantFormat::Tq2_0 => (numel / 256 * 66, 0),
        QuantFormat::Q4_1 => (numel / 32 * 20, 0),
        QuantFormat::Q5_0 => (numel / 32 * 22, 0),
        QuantFormat::Q4K => (numel / 256 * 144, 0),
        QuantFormat::Q6K => (numel / 256 * 210, 0),
        QuantFormat::Q5_1 => (numel / 32 * 24, 0),
        QuantFormat::Q2K => (numel / 256 * 84, 0),
        QuantFormat::Q3K => (numel / 256 * 110, 0),
        QuantFormat::Q5K => (numel / 256 * 176, 0),
        QuantFormat::Iq4Xs => (numel / 256 * 136, 0),
        QuantFormat::Ternary => (numel.div_ceil(4), 1),
        QuantFormat::Int8PerChannel => (numel, n),
        QuantFormat::Int8PerBlock { block_size } => (numel, n * k.div_ceil(block_size)),
        QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => {
            (numel, block_size.map_or(1, |b| n * k.div_ceil(b)))
        }
    };
    if let QuantFormat::Nf4 { double_quant: true, .. } = format {
        // Double quantization: the absmax values go through the 8-bit nested form, so the
        // tensor carries the decoded absmax as the quantizer leaves it.
        let mut wv = rng.vec(numel, -1.0, 1.0);
        for (i, v) in wv.iter_mut().enumerate() {
            *v *= 0.01 + (i / 64 % 7) as f32 * 0.1;
        }
        return aihal_quantize::quantize(format, &wv, &[n, k]).expect("NF4 quantizes any shape");
    }
    let mut data: Vec<u8> = (0..data_len).map(|_| rng.next_u64() as u8).collect();
    let scale = |rng: &mut Rng| f16::from_f32(rng.f32_in(0.01, 0.5)).to_le_bytes();
    match format {
        QuantFormat::Q4_0 | QuantFormat::Q8_0 => {
            let bytes = if format == QuantFormat::Q4_0 { 18 } else { 34 };
            for blk in data.chunks_exact_mut(bytes) {
                blk[..2].copy_from_slice(&scale(rng));
            }
        }
        QuantFormat::Tq2_0 => {
            for blk in data.chunks_exact_mut(66) {
                blk[64..].copy_from_slice(&scale(rng));
            }
        }
        // Random codes, sub-block scales and minimums; finite f16 scales (and minimums).
        QuantFormat::Q4_1 | QuantFormat::Q4K => {
            let bytes = if format == QuantFormat::Q4_1 { 20 } else { 144 };
            for blk in data.chunks_exact_mut(bytes) {
                blk[..2].copy_from_slice(&scale(rng));
                blk[2..4].copy_from_slice(&scale(rng));
            }
        }
        QuantFormat::Q5_0 => {
            for blk in data.chunks_exact_mut(22) {
                blk[..2].copy_from_slice(&scale(rng));
            }
        }
        QuantFormat::Q6K => {
            for blk in data.chunks_exact_mut(210) {
                blk[208..].copy_from_slice(&scale(rng));
            }
        }
        // Random codes, sub-block scales and code-book indices; finite f16 scales (and
        // minimums) at the offsets of each block's layout.
        QuantFormat::Q5_1
        | QuantFormat::Q5K
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Iq4Nl
        | QuantFormat::Iq4Xs => {
            let (bytes, at): (usize, &[usize]) = match format {
                QuantFormat::Q5_1 => (24, &[0, 2]),
                QuantFormat::Q5K => (176, &[0, 2]),
                QuantFormat::Q2K => (84, &[80, 82]),
                QuantFormat::Q3K => (110, &[108]),
                QuantFormat::Iq4Nl => (18, &[0]),
                _ => (136, &[0]),
            };
            for blk in data.chunks_exact_mut(bytes) {
                for &o in at {
                    blk[o..o + 2].copy_from_slice(&scale(rng));
                }
            }
        }
        QuantFormat::Fp8E4M3 { .. } => {
            for b in &mut data {
                if *b & 0x7F == 0x7F {
                    *b &= 0xFE;
                }
            }
        }
        QuantFormat::Fp8E5M2 { .. } => {
            for b in &mut data {
                if *b & 0x7C == 0x7C {
                    *b &= 0xBF;
                }
            }
        }
        _ => {}
    }
    let scales = rng.vec(scale_len, 0.001, 0.05);
    QuantizedTensor::from_parts(format, vec![n, k], data, scales).expect("lengths follow the layout contract")
}

pub(crate) fn all_formats() -> Vec<QuantFormat> {
    vec![
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Tq2_0,
        QuantFormat::Ternary,
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 32 },
        QuantFormat::Int8PerBlock { block_size: 64 },
        QuantFormat::Int8PerBlock { block_size: 7 },
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 32,
            double_quant: false,
        },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E4M3 { block_size: Some(32) },
        QuantFormat::Fp8E5M2 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(20) },
        QuantFormat::Nf4 {
            block_size: 128,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: true,
        },
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Q5_1,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Q5K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
    ]
}

/// A `k` the format allows, from a free draw.
pub(crate) fn fit_k(format: QuantFormat, k: usize) -> usize {
    // The GGML block formats: whole blocks per row (32 values, or 256 for TQ2_0, the K-quants
    // and IQ4_XS).
    match aihal_quantize::ggml::block_layout(format) {
        Some((values, _)) => values * (k / values).max(1),
        None => k.max(1),
    }
}

/// Every kernel set compiled for this architecture, generic first (x86_64: the AVX2 set;
/// aarch64: NEON, with fp16, with dotprod, with both), whether or not this CPU runs it.
pub(crate) fn every_set() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut sets = vec![generic()];
    #[cfg(target_arch = "x86_64")]
    sets.push(&super::x86_set::AVX2);
    #[cfg(target_arch = "aarch64")]
    sets.extend([
        &super::arm::NEON,
        &super::arm::NEON_FP16,
        &super::arm::NEON_DOTPROD,
        &super::arm::NEON_DOTPROD_FP16,
    ]);
    sets
}

/// Whether this CPU has every feature `set` was compiled for (what its kernels' safety
/// contract asks of the caller).
pub(crate) fn runs_here(set: &Kernels) -> bool {
    if set.name == generic().name {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    if set.name == super::x86_set::AVX2.name {
        return super::x86_set::detect().is_some();
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected;
        let (neon, dot, fp16) = (
            is_aarch64_feature_detected!("neon"),
            is_aarch64_feature_detected!("dotprod"),
            is_aarch64_feature_detected!("fp16"),
        );
        for (s, ok) in [
            (&super::arm::NEON, neon),
            (&super::arm::NEON_FP16, neon && fp16),
            (&super::arm::NEON_DOTPROD, neon && dot),
            (&super::arm::NEON_DOTPROD_FP16, neon && dot && fp16),
        ] {
            if set.name == s.name {
                return ok;
            }
        }
    }
    false
}

/// Panics unless this CPU runs `set`: every check calls it before the set's kernels.
fn assert_runs_here(set: &Kernels) {
    assert!(runs_here(set), "this CPU does not run the {} kernels", set.name);
}

fn run_with(kernels: &Kernels, x: &[f32], m: usize, w: &QuantizedTensor, p: ActivationPrecision) -> Vec<f32> {
    let mut y = vec![0.0; m * w.shape()[0]];
    run(kernels, x, m, w, p, &mut y);
    y
}

/// `Σ_k |x[i][k]| * |W[n][k]|` for every output: the scale of its rounding error.
fn abs_products(x: &[f32], m: usize, w: &QuantizedTensor) -> Vec<f32> {
    let wd: Vec<f32> = reference::dequantize_weight(w)
        .unwrap()
        .iter()
        .map(|v| v.abs())
        .collect();
    let xa: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let (n, k) = (w.shape()[0], w.row_len());
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = xa[i * k..(i + 1) * k]
                .iter()
                .zip(&wd[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    out
}

fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len());
    for (i, ((&g, &r), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = rel * s + 1e-30;
        assert!(
            (g - r).abs() <= tol || (g.is_nan() && r.is_nan()) || g == r,
            "{what}: output {i}: got {g}, want {r} (tolerance {tol})"
        );
    }
}

/// `Σ_k |x[i][k]| * absmax(W[n][k]) * 0.47 / 127` for every output of an NF4 weight (how far
/// the int8 levels [`NF4_I8`](crate::kernels::codes::NF4_I8) may move it), zeros for other formats.
fn nf4_level_budget(x: &[f32], m: usize, w: &QuantizedTensor) -> Vec<f32> {
    let (n, k) = (w.shape()[0], w.row_len());
    let QuantFormat::Nf4 { block_size, .. } = w.format() else {
        return vec![0.0; m * n];
    };
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k)
                .map(|kk| x[i * k + kk].abs() * w.scales()[(j * k + kk) / block_size])
                .sum::<f32>()
                * 0.47
                / 127.0;
        }
    }
    out
}

/// `set` on random weights of `format` `[n, k]` (`k` fitted to the format) and activations
/// `[m, k]` from `seed`, against the generic kernels and the reference (the generic kernels
/// against the reference too).
pub(crate) fn check_case(set: &Kernels, format: QuantFormat, m: usize, n: usize, k: usize, seed: u64) {
    assert_runs_here(set);
    let k = fit_k(format, k);
    let mut rng = Rng::new(seed);
    let w = random_weight(format, n, k, &mut rng);
    let x = rng.vec(m * k, -2.0, 2.0);
    let want = reference::matmul(&x, m, &w).unwrap();
    let scale = abs_products(&x, m, &w);
    // The generic exact kernels are the reference, bit for bit.
    assert_eq!(
        run_with(generic(), &x, m, &w, ActivationPrecision::F32),
        want,
        "{format} generic exact"
    );
    // The int8-activation path: the set against generic (same integer sums), and generic
    // against the reference within the activation rounding budget:
    // |x - d q| <= d / 2 = amax / 254 per value, so the output moves by at most
    // Σ_k (amax of k's block / 254) |w_k|.
    let gq = run_with(generic(), &x, m, &w, ActivationPrecision::Int8);
    // The SIMD kernels differ from the reference by the order of f32 additions only.
    let fast = run_with(set, &x, m, &w, ActivationPrecision::F32);
    assert_close(&format!("{format} {} exact", set.name), &fast, &want, &scale, 1e-5);
    let fq = run_with(set, &x, m, &w, ActivationPrecision::Int8);
    assert_close(&format!("{format} {} int8", set.name), &fq, &gq, &scale, 1e-5);
    if (generic().q8)(format).is_some() {
        let mut amax = x.clone();
        for blk in amax.chunks_mut(k).flat_map(|row| row.chunks_mut(32)) {
            let a = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            blk.fill(a);
        }
        let budget = abs_products(&amax, m, &w);
        // NF4 also moves each weight to its int8 level: at most 0.47 / 127 of its absmax,
        // met by activations of at most their block absmax.
        let levels = nf4_level_budget(&amax, m, &w);
        for (i, ((&g, &r), &b)) in gq.iter().zip(&want).zip(&budget).enumerate() {
            let tol = (b / 254.0 + levels[i]) * 1.001 + 1e-5 * scale[i];
            assert!(
                (g - r).abs() <= tol,
                "{format} int8 vs reference at {i}: {g} vs {r} (budget {tol})"
            );
        }
    } else {
        assert_close(&format!("{format} int8 falls back to exact"), &gq, &want, &scale, 1e-5);
    }
}

/// Every format at block and vector edges, on `set`.
pub(crate) fn every_format_at_block_and_vector_edges(set: &Kernels) {
    for (s, format) in all_formats().into_iter().enumerate() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 3, 31),
            (5, 17, 33),
            (4, 16, 64),
            (9, 33, 95),
            (2, 5, 256),
            (3, 2, 513),
            // M at and past the panel thresholds (4 for int8 panels, 16 for exact panels),
            // panels cut short by N, odd K.
            (16, 40, 64),
            (17, 21, 97),
            (23, 9, 288),
            // Long rows: 40 blocks of 32, 5 of 256.
            (5, 9, 1280),
        ] {
            check_case(set, format, m, n, k, s as u64 * 1000 + k as u64);
        }
    }
}

/// `set`'s results do not depend on the number of threads.
pub(crate) fn results_do_not_depend_on_the_thread_count(set: &Kernels) {
    assert_runs_here(set);
    // M = 6 takes the row kernels or the int8 panels, M = 18 the panels of both paths.
    for (format, m) in all_formats().into_iter().flat_map(|f| [(f, 6), (f, 18)]) {
        let (n, k) = (203, fit_k(format, 288));
        let mut rng = Rng::new(7);
        let w = random_weight(format, n, k, &mut rng);
        let x = rng.vec(m * k, -1.0, 1.0);
        for p in [ActivationPrecision::F32, ActivationPrecision::Int8] {
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| run_with(set, &x, m, &w, p))
            };
            let one = on(1);
            assert_eq!(one, on(2), "{format} {p:?}");
            assert_eq!(one, on(5), "{format} {p:?}");
        }
    }
}

/// `set`'s row kernels give a row the sums it gets alone.
pub(crate) fn row_kernels_give_a_row_the_sums_it_gets_alone(set: &Kernels) {
    assert_runs_here(set);
    // Below PANEL_MIN_ROWS every call runs the row kernels, up to MAX_ROWS rows per pass: a
    // row's sums are the same alone as beside others, on both paths.
    for format in all_formats() {
        let (n, k) = (21, fit_k(format, 160));
        let mut rng = Rng::new(13);
        let w = random_weight(format, n, k, &mut rng);
        let m = super::PANEL_MIN_ROWS - 1;
        let x = rng.vec(m * k, -1.0, 1.0);
        for p in [ActivationPrecision::F32, ActivationPrecision::Int8] {
            let all = run_with(set, &x, m, &w, p);
            for i in 0..m {
                let alone = run_with(set, &x[i * k..(i + 1) * k], 1, &w, p);
                assert_eq!(alone, all[i * n..(i + 1) * n], "{format} {p:?} row {i}");
            }
        }
    }
}

/// The f32 path reads every weight as the format's decoder gives it, bit for bit, on `set`:
/// one-hot activation rows (a single 1.0, zeros elsewhere) make each output one weight, a
/// product and sums that round nothing. Through the row kernels (3 rows) and the exact
/// panels (17), over whole blocks of 32 and, where the format takes any K, 12 values past them.
pub(crate) fn f32_path_reads_weights_as_the_decoder(set: &Kernels) {
    assert_runs_here(set);
    for format in all_formats() {
        let (n, k) = (11, fit_k(format, 300));
        let mut rng = Rng::new(17);
        let w = random_weight(format, n, k, &mut rng);
        let want = reference::dequantize_weight(&w).unwrap();
        for m in [3, 17] {
            let hot: Vec<usize> = (0..m).map(|i| (i * 97 + 5) % k).collect();
            let mut x = vec![0.0f32; m * k];
            for (i, &c) in hot.iter().enumerate() {
                x[i * k + c] = 1.0;
            }
            let got = run_with(set, &x, m, &w, ActivationPrecision::F32);
            for (i, &c) in hot.iter().enumerate() {
                for j in 0..n {
                    let (g, r) = (got[i * n + j], want[j * k + c]);
                    assert!(
                        g == r || (g.is_nan() && r.is_nan()),
                        "{format} {}: weight [{j}, {c}] read as {g}, decoded as {r}",
                        set.name
                    );
                }
            }
        }
    }
}

/// Zero, outlier and subnormal activations on `set`.
pub(crate) fn zeros_outliers_and_denormals(set: &Kernels) {
    assert_runs_here(set);
    for format in all_formats() {
        let (m, n, k) = (3, 9, fit_k(format, 96));
        let mut rng = Rng::new(11);
        let w = random_weight(format, n, k, &mut rng);
        // Zero activations give exact zeros on every path.
        let zeros = vec![0.0; m * k];
        for p in [ActivationPrecision::F32, ActivationPrecision::Int8] {
            assert!(
                run_with(set, &zeros, m, &w, p).iter().all(|&v| v == 0.0),
                "{format} {p:?}"
            );
        }
        // One large outlier per block of 32, and denormal values elsewhere.
        let mut x = rng.vec(m * k, -1.0, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            if i % 32 == 5 {
                *v = 3.0e4;
            } else if i % 7 == 0 {
                *v = 1.0e-40;
            }
        }
        let want = reference::matmul(&x, m, &w).unwrap();
        let scale = abs_products(&x, m, &w);
        let got = run_with(set, &x, m, &w, ActivationPrecision::F32);
        assert_close(&format!("{format} outliers"), &got, &want, &scale, 1e-5);
        let got = run_with(set, &x, m, &w, ActivationPrecision::Int8);
        let budget = abs_products(&vec![3.0e4; m * k], m, &w);
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            let tol = budget[i] / 254.0 + 1e-5 * scale[i];
            assert!((g - r).abs() <= tol, "{format} int8 outliers at {i}: {g} vs {r}");
        }
        // Rows made only of subnormal values: the int8 path keeps their (tiny) products.
        let sub: Vec<f32> = rng.vec(m * k, -1.0, 1.0).iter().map(|v| v * 1e-39).collect();
        let want = reference::matmul(&sub, m, &w).unwrap();
        let got = run_with(set, &sub, m, &w, ActivationPrecision::Int8);
        let budget = abs_products(&vec![1e-39; m * k], m, &w);
        for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - r).abs() <= budget[i] / 100.0 + 1e-44,
                "{format} subnormal rows at {i}: {g} vs {r}"
            );
        }
    }
}

/// NaN and infinities in the activations propagate on both of `set`'s paths.
pub(crate) fn nan_and_inf_in_activations_propagate_on_every_path(set: &Kernels) {
    assert_runs_here(set);
    for format in all_formats() {
        let (m, n, k) = (5, 6, fit_k(format, 64));
        let mut rng = Rng::new(3);
        let w = random_weight(format, n, k, &mut rng);
        let mut x = rng.vec(m * k, -1.0, 1.0);
        x[k + 3] = f32::NAN; // row 1
        x[3 * k + 1] = f32::INFINITY; // row 3
        let want = reference::matmul(&x, m, &w).unwrap();
        for p in [ActivationPrecision::F32, ActivationPrecision::Int8] {
            let got = run_with(set, &x, m, &w, p);
            for j in 0..n {
                assert!(got[n + j].is_nan(), "{format} {p:?}: NaN row");
                let (g, r) = (got[3 * n + j], want[3 * n + j]);
                assert!(
                    g == r || (g.is_nan() && r.is_nan()),
                    "{format} {p:?}: inf row gives {g}, reference {r}"
                );
                assert!(got[j].is_finite() && got[2 * n + j].is_finite() && got[4 * n + j].is_finite());
            }
        }
    }
}

/// `set` decodes FP8's special and subnormal codes like the reference.
pub(crate) fn fp8_special_and_subnormal_weights_decode_like_the_reference(set: &Kernels) {
    assert_runs_here(set);
    let mut rng = Rng::new(5);
    for format in [
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(32) },
    ] {
        let (n, k) = (4, 64);
        let w = random_weight(format, n, k, &mut rng);
        let (f, shape, mut data, scales) = w.into_parts();
        // Every byte value appears: subnormals, ±0, NaN, and (E5M2) ±inf.
        for (i, b) in data.iter_mut().enumerate() {
            *b = i as u8;
        }
        let w = QuantizedTensor::from_parts(f, shape, data, scales).unwrap();
        // One-hot activations read single weights: compare every decoded value.
        for kk in 0..k {
            let mut e = vec![0.0f32; k];
            e[kk] = 1.0;
            let want = reference::matmul(&e, 1, &w).unwrap();
            let got = run_with(set, &e, 1, &w, ActivationPrecision::F32);
            for (g, r) in got.iter().zip(&want) {
                assert!(
                    g == r || (g.is_nan() && r.is_nan()),
                    "{format} byte at {kk}: {g} vs {r}"
                );
            }
        }
    }
}

fn nf4(block_size: usize, double_quant: bool) -> QuantFormat {
    QuantFormat::Nf4 {
        block_size,
        double_quant,
    }
}

/// `set` has the int8-activation path for NF4 (and, on x86_64, its panel kernels).
pub(crate) fn nf4_has_the_int8_path(set: &Kernels) {
    for format in [nf4(32, false), nf4(64, true), nf4(4096, false)] {
        assert!(crate::matmul::has_int8_activation_path(format), "{format}");
        assert!((set.q8)(format).is_some(), "{} {format}", set.name);
        #[cfg(target_arch = "x86_64")]
        assert!(
            set.name == generic().name || (set.panel)(format).is_some(),
            "{} {format}",
            set.name
        );
    }
}

/// `set`'s int8-activation path reads NF4 codes as their int8 levels, in the layout's order.
pub(crate) fn nf4_int8_levels_in_layout_order(set: &Kernels) {
    assert_runs_here(set);
    // Byte i holds codes (i % 16, 15 - i % 16): every code in both nibbles, first value in the
    // high nibble. A one-hot activation row reads one weight: amax 1, code 127, so the result
    // is NF4_I8[code] * (absmax / 127), the int8 level rather than the code book value.
    let (n, k) = (2, 64);
    let data: Vec<u8> = (0..n * k / 2).map(|i| ((i % 16) << 4 | (15 - i % 16)) as u8).collect();
    let scales = vec![0.5, 2.0];
    for double_quant in [false, true] {
        let w = QuantizedTensor::from_parts(nf4(64, double_quant), vec![n, k], data.clone(), scales.clone()).unwrap();
        assert!((set.q8)(w.format()).is_some(), "{} {}", set.name, w.format());
        for m in [1, 5] {
            // Row i of x is one-hot at (3i + hot) % k; m = 5 takes the panels where a set has them.
            for hot in 0..k {
                let mut x = vec![0.0f32; m * k];
                for i in 0..m {
                    x[i * k + (3 * i + hot) % k] = 1.0;
                }
                let y = run_with(set, &x, m, &w, ActivationPrecision::Int8);
                for i in 0..m {
                    let kk = (3 * i + hot) % k;
                    for j in 0..n {
                        let flat = j * k + kk;
                        let byte = data[flat / 2];
                        let code = if kk % 2 == 0 { byte >> 4 } else { byte & 0xF };
                        let want = f32::from(crate::kernels::codes::NF4_I8[usize::from(code)]) * (scales[j] / 127.0);
                        let got = y[i * n + j];
                        assert!(
                            (got - want).abs() <= 1e-6 * want.abs(),
                            "{} {}: y[{i}][{j}] at k = {kk}: {got}, want {want}",
                            set.name,
                            w.format()
                        );
                    }
                }
            }
        }
    }
}

/// The fused NF4 matmul on both paths against the f32 product of the weights before
/// quantization. Per weight, the result may move by (bounds in units of the block absmax `a`,
/// the decoded one `a'` under double quantization): NF4 rounding, half the widest gap between
/// levels, 0.152 `a`; the 8-bit absmax, `|a' - a|`; on the int8 path the int8 level, 0.47 / 127
/// `a'`, and the activation rounding, half a step of the activation block absmax times `a'`.
pub(crate) fn nf4_fused_matmul_within_budget_of_the_original_weights(set: &Kernels) {
    assert_runs_here(set);
    let mut rng = Rng::new(17);
    for (format, m, n, k) in [
        (nf4(32, false), 3, 7, 96),
        (nf4(64, false), 6, 17, 320),
        (nf4(64, true), 5, 9, 256),
        (nf4(128, true), 1, 11, 512),
        (nf4(256, true), 4, 8, 1024),
        (nf4(64, true), 2, 5, 77),
        (nf4(32, false), 7, 9, 45),
    ] {
        let mut wv = rng.vec(n * k, -1.0, 1.0);
        for (i, v) in wv.iter_mut().enumerate() {
            *v *= 0.05 + (i / 32 % 5) as f32 * 0.3;
        }
        let w = aihal_quantize::quantize(format, &wv, &[n, k]).unwrap();
        let QuantFormat::Nf4 { block_size, .. } = format else {
            unreachable!()
        };
        let amax: Vec<f32> = wv
            .chunks(block_size)
            .map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs())))
            .collect();
        let x = rng.vec(m * k, -2.0, 2.0);
        for p in [ActivationPrecision::F32, ActivationPrecision::Int8] {
            let y = run_with(set, &x, m, &w, p);
            for i in 0..m {
                let xr = &x[i * k..(i + 1) * k];
                let xa: Vec<f32> = xr
                    .chunks(32)
                    .flat_map(|b| {
                        let a = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        std::iter::repeat_n(a, b.len())
                    })
                    .collect();
                for j in 0..n {
                    let (mut exact, mut tol) = (0.0f64, 1e-5f64);
                    for kk in 0..k {
                        let blk = (j * k + kk) / block_size;
                        let (a, a2) = (f64::from(amax[blk]), f64::from(w.scales()[blk]));
                        let (xv, wv) = (f64::from(xr[kk]), f64::from(wv[j * k + kk]));
                        exact += xv * wv;
                        tol += xv.abs() * (0.1521 * a + (a2 - a).abs());
                        if p == ActivationPrecision::Int8 {
                            tol += xv.abs() * 0.47 / 127.0 * a2 + f64::from(xa[kk]) / 254.0 * a2;
                        }
                    }
                    let got = f64::from(y[i * n + j]);
                    assert!(
                        (got - exact).abs() <= tol,
                        "{format} {p:?} m={m} n={n} k={k}: y[{i}][{j}] = {got}, f32 product {exact}, budget {tol}"
                    );
                }
            }
        }
    }
}
