//! Shared helpers: a small deterministic generator of test data and error bounds.
#![allow(dead_code)]

use aihal_quantize::QuantFormat;

/// xorshift64* with Box–Muller normals: fresh, reproducible data without extra crates.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal.
    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub(crate) fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal()).collect()
    }
}

/// Every format, with representative parameters.
pub(crate) fn all_formats() -> Vec<QuantFormat> {
    vec![
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Nf4 {
            block_size: 32,
            double_quant: true,
        },
        QuantFormat::Q4_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q5_1,
        QuantFormat::Q8_0,
        QuantFormat::Q2K,
        QuantFormat::Q3K,
        QuantFormat::Q4K,
        QuantFormat::Q5K,
        QuantFormat::Q6K,
        QuantFormat::Iq4Nl,
        QuantFormat::Iq4Xs,
        QuantFormat::Tq2_0,
        QuantFormat::Ternary,
        QuantFormat::Int8PerChannel,
        QuantFormat::Int8PerBlock { block_size: 48 },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Fp8E4M3 { block_size: Some(32) },
        QuantFormat::Fp8E5M2 { block_size: None },
        QuantFormat::Fp8E5M2 { block_size: Some(128) },
    ]
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Checks `y` (the dequantized tensor) against `x` with each format's per-element bound,
/// derived from the format's rounding:
/// - Q8_0: half a step `d = amax/127` plus the f16 rounding of `d` (relative 2^-11 times
///   up to 127 steps, absolute 2^-25 per step for f16 subnormals).
/// - Q4_0: half a step `d = amax/8` (a full step for the clipped side, whose levels stop at
///   7d) plus f16 rounding of `d` (8 steps).
/// - Q5_0: as Q4_0 with `d = amax/16` (levels -16d to 15d, 16 steps).
/// - Q4_1 (Q5_1): half a step `d = (max - min)/15` (`/31`) plus the f16 rounding of `d` (15
///   or 31 steps) and of the minimum `m` (relative 2^-11, absolute 2^-25 when subnormal).
/// - The K formats (Q2_K to Q6_K), IQ4_NL and IQ4_XS fit their sub-block scales (no closed per-element bound); their
///   accuracy is checked in total against llama.cpp's bound in `ggml_blocks.rs`.
/// - TQ2_0: half of `d = amax` plus its f16 rounding.
/// - NF4: half the widest gap of the code book (between -1 and -0.6962: 0.152) times the
///   block absmax, plus the absmax's own error under double quantization.
/// - int8: half a step `absmax/127`.
/// - FP8: half an ulp relative (2^-4 for E4M3, 2^-3 for E5M2) in the normal range, half the
///   subnormal quantum (times the scale) below it.
/// - ternary is checked separately (its clipping is not bounded by a step).
///
/// Returns the offending index on failure.
pub(crate) fn check_bound(
    format: QuantFormat,
    shape: &[usize],
    x: &[f32],
    y: &[f32],
    scales: &[f32],
) -> Result<(), String> {
    let k = shape.last().copied().unwrap_or(1).max(1);
    let tiny = 1e-30f32;
    let tensor_amax = absmax(x);
    // Elements are visited in order, so one cached range makes block maxima cheap.
    let cache = std::cell::Cell::new((usize::MAX, 0usize, 0.0f32));
    let absmax = |b: &[f32]| -> f32 {
        let key = (b.as_ptr() as usize, b.len());
        let (p, l, v) = cache.get();
        if (p, l) == key {
            return v;
        }
        let v = absmax(b);
        cache.set((key.0, key.1, v));
        v
    };
    let bound_at = |i: usize| -> f32 {
        match format {
            QuantFormat::Q8_0 => {
                let b = &x[i / 32 * 32..i / 32 * 32 + 32];
                let d = absmax(b) / 127.0;
                0.5 * d * (1.0 + 1e-5) + 127.0 * (d * 2f32.powi(-11) + 2f32.powi(-25)) + tiny
            }
            QuantFormat::Q4_0 => {
                let b = &x[i / 32 * 32..i / 32 * 32 + 32];
                let d = absmax(b) / 8.0;
                // Levels run from -8d to 7d on the side of the signed max: a value of the
                // other sign beyond 7.5d is clipped to 7d.
                (0.5 * d).max(x[i].abs() - 7.0 * d) * (1.0 + 1e-5) + 8.0 * (d * 2f32.powi(-11) + 2f32.powi(-25)) + tiny
            }
            QuantFormat::Q5_0 => {
                let b = &x[i / 32 * 32..i / 32 * 32 + 32];
                let d = absmax(b) / 16.0;
                (0.5 * d).max(x[i].abs() - 15.0 * d) * (1.0 + 1e-5)
                    + 16.0 * (d * 2f32.powi(-11) + 2f32.powi(-25))
                    + tiny
            }
            QuantFormat::Q4_1 | QuantFormat::Q5_1 => {
                let steps = if format == QuantFormat::Q4_1 { 15.0 } else { 31.0 };
                let b = &x[i / 32 * 32..i / 32 * 32 + 32];
                let (lo, hi) = b.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let d = (hi - lo) / steps;
                0.5 * d * (1.0 + 1e-5)
                    + steps * (d * 2f32.powi(-11) + 2f32.powi(-25))
                    + lo.abs() * 2f32.powi(-11)
                    + 2f32.powi(-25)
                    + tiny
            }
            QuantFormat::Tq2_0 => {
                let b = &x[i / 256 * 256..i / 256 * 256 + 256];
                let d = absmax(b);
                0.5 * d * (1.0 + 1e-5) + d * 2f32.powi(-11) + 2f32.powi(-25) + tiny
            }
            QuantFormat::Nf4 { block_size, .. } => {
                let s = i / block_size * block_size;
                let a = absmax(&x[s..(s + block_size).min(x.len())]);
                let stored = scales[i / block_size];
                (0.1522 * a + (stored - a).abs()) * (1.0 + 1e-5) + tiny
            }
            QuantFormat::Int8PerChannel | QuantFormat::Int8PerBlock { .. } => {
                let b = match format {
                    QuantFormat::Int8PerBlock { block_size } => block_size,
                    _ => k,
                };
                let row = i / k;
                let start = row * k + (i % k) / b * b;
                let end = (start + b).min(row * k + k);
                0.5 * absmax(&x[start..end]) / 127.0 * (1.0 + 1e-5) + tiny
            }
            QuantFormat::Fp8E4M3 { block_size } | QuantFormat::Fp8E5M2 { block_size } => {
                let (rel, sub_quantum, max) = if matches!(format, QuantFormat::Fp8E4M3 { .. }) {
                    (2f32.powi(-4), 2f32.powi(-9), 448.0)
                } else {
                    (2f32.powi(-3), 2f32.powi(-16), 57344.0)
                };
                let a = match block_size {
                    None => tensor_amax,
                    Some(b) => {
                        let row = i / k;
                        let start = row * k + (i % k) / b * b;
                        absmax(&x[start..(start + b).min(row * k + k)])
                    }
                };
                let scale = a / max;
                (x[i].abs() * rel).max(0.5 * sub_quantum * scale) * (1.0 + 1e-5) + 2.0 * f32::EPSILON * a + tiny
            }
            _ => f32::INFINITY,
        }
    };
    for i in 0..x.len() {
        let err = (x[i] - y[i]).abs();
        let b = bound_at(i);
        if err.is_nan() || err > b {
            return Err(format!(
                "{format} {shape:?}: index {i}: x = {:e}, y = {:e}, |err| {err:e} > bound {b:e}",
                x[i], y[i]
            ));
        }
    }
    Ok(())
}

/// Ternary: every value is `scale * q` with q in {-1, 0, 1}, and q is the nearest of the
/// three levels to `x / scale`.
pub(crate) fn check_ternary(x: &[f32], y: &[f32], scale: f32) -> Result<(), String> {
    for i in 0..x.len() {
        let q = y[i] / scale;
        if ![-1.0, 0.0, 1.0].contains(&q) {
            return Err(format!("index {i}: {} is not a ternary level of {scale}", y[i]));
        }
        let t = x[i] / scale;
        let want = t.clamp(-1.0, 1.0);
        if (want - q).abs() > 0.5 + 1e-5 {
            return Err(format!("index {i}: x/scale = {t}, level {q} is not the nearest"));
        }
    }
    Ok(())
}
