//! Quantized matmul `y = x · Wᵀ` on the CPU: aihal-cpu against candle's `QMatMul` on the same
//! weights and the DRAM read bandwidth measured in the same run, in one table.
//!
//! ```text
//! cargo run --release --example bench_matmul            # full table (a few minutes)
//! cargo run --release --example bench_matmul -- quick   # 4096x4096 only, M = 1 and 32
//! RAYON_NUM_THREADS=1 cargo run --release --example bench_matmul
//! cargo run --release --example bench_matmul -- quick m=32 only=q4_0   # one M, our formats containing "q4_0"
//! cargo run --release --example bench_matmul -- shape=640x2048 only=q4_1,q5_0   # several, comma separated
//! cargo run --release --example bench_matmul -- shape=11008x4096 m=1    # one shape (N x K)
//! cargo run --release --example bench_matmul -- models only=q4_1   # SmolLM2's and Gemma 3 270M's shapes
//! RAYON_NUM_THREADS=1 cargo run --release --example bench_matmul -- shape=4096x14336 m=512 packed-only
//!     # the packed rows and the floor alone (no candle, no unpacked rows: minutes per call at
//!     # hundreds of rows for some of them), as against ggml's `test-backend-ops` at 512 rows
//! ```
//!
//! Each of our formats is also compared with candle's `QMatMul` on the same format where candle
//! has it (the last column); formats whose blocks do not divide `K` (256 values for TQ2_0,
//! Q4_K and Q6_K) are left out of a shape, ours and candle's alike.
//!
//! Method (see the crate README): every call reads a different weight matrix from a rotating
//! set of at least 4x the L3 size (128 MiB and more), so M = 1 figures are DRAM figures; the
//! floor is a parallel sum with the same rayon pool over a rotation of buffers of the Q8_0
//! matrix's size. Within a block of rows (one shape, one M), every pass times every row once
//! over its whole rotation, the floor first, so that the rows of a pass ran within seconds of
//! each other; times are medians over the passes, and the ratios (ours against candle, ours
//! against the floor) are taken pass by pass before their median, so that the drift of this
//! shared machine's bandwidth over a block does not fall on one row more than another.
//!
//! The `packed` rows run `matmul_packed` over `PackedWeights` built once per matrix before
//! any timing (the packing is not in the timed region; its one-time cost is printed apart).
//! At M = 1 the `packed, 4 KiB pages` rows run the same kernels over copies packed without
//! huge pages (`PackOptions::with_huge_pages(false)`), to show what the pages contribute.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aihal_cpu::{
    matmul_into, matmul_packed, matmul_packed_into, ActivationPrecision, Activations, MatmulOptions, PackOptions,
    PackedWeights,
};
use aihal_quantize::{quantize, QuantFormat, QuantizedTensor};
use aihal_reference as reference;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

/// Bytes every rotating working set spans at least (4x a 32 MiB L3).
const WORKING_SET: usize = 128 << 20;

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f32()).collect()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The wrapping sum of `buf`, in chunks of `chunk` words over the pool: what the floors read.
fn parallel_sum(buf: &[u64], chunk: usize) -> u64 {
    buf.par_chunks(chunk)
        .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
        .sum()
}

/// DRAM read bandwidth (bytes/s): a parallel sum over 1 GiB of u64, median of 5.
fn dram_read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    let mut runs = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        black_box(parallel_sum(&buf, 1 << 16));
        runs.push((buf.len() * 8) as f64 / t.elapsed().as_secs_f64());
    }
    runs.remove(0);
    median(runs)
}

/// One timed row of a block: what one call reads, and a call over matrix `i` of its rotation.
struct Timed<'a> {
    name: String,
    bytes: usize,
    copies: usize,
    run: Box<dyn FnMut(usize) + 'a>,
}

/// Seconds per call of every row, pass by pass: each pass runs every row once over its whole
/// rotation, one row after the other, so that the rows of a pass see the same machine (its
/// bandwidth drifts over seconds here). Passes go on until `budget` has passed and at least
/// 5 have run (at most 40). One untimed pass first: page faults, the pool's start.
fn time_passes(rows: &mut [Timed<'_>], budget: Duration) -> Vec<Vec<f64>> {
    for r in rows.iter_mut() {
        for i in 0..r.copies {
            (r.run)(i);
        }
    }
    let mut times = vec![Vec::new(); rows.len()];
    let start = Instant::now();
    while times[0].len() < 5 || (start.elapsed() < budget && times[0].len() < 40) {
        for (r, t) in rows.iter_mut().zip(&mut times) {
            let s = Instant::now();
            for i in 0..r.copies {
                (r.run)(i);
            }
            t.push(s.elapsed().as_secs_f64() / r.copies as f64);
        }
    }
    times
}

/// The read floor as a row: a parallel sum over one buffer of `bytes` per call, from a
/// rotation of at least [`WORKING_SET`], on the same pool.
fn floor_row(bufs: &[Vec<u64>]) -> Timed<'_> {
    Timed {
        name: "read floor (parallel sum)".into(),
        bytes: bufs[0].len() * 8,
        copies: bufs.len(),
        run: Box::new(move |i| {
            black_box(parallel_sum(&bufs[i], 1 << 14));
        }),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {} is not valid UTF-8", a.display()))
        })
        .collect::<Result<_, _>>()?;
    let quick = args.iter().any(|a| a == "quick");
    let packed_only = args.iter().any(|a| a == "packed-only");
    let threads = rayon::current_num_threads();
    println!(
        "aihal-cpu per-call kernel set: {} (the packed layouts are named on the packing lines below), rayon threads: {threads}",
        aihal_cpu::kernel_set_name()
    );
    let bw = dram_read_bandwidth();
    println!(
        "DRAM read bandwidth: {:.1} GB/s (1 GiB parallel sum, same pool; each block of rows below also measures its own floor)\n",
        bw / 1e9
    );

    // N x K: a square projection, and Llama-7B's MLP both ways (up/gate 11008 x 4096, down
    // 4096 x 11008), so that "4096 x 11008" is covered in either reading.
    let arg = |key: &str| args.iter().find_map(|a| a.strip_prefix(key).map(str::to_owned));
    let shapes: Vec<(usize, usize)> = match arg("shape=") {
        Some(s) => {
            let (n, k) = s.split_once('x').ok_or("shape=NxK, e.g. shape=11008x4096")?;
            let (n, k) = (n.parse()?, k.parse::<usize>()?);
            if n == 0 || k == 0 || !k.is_multiple_of(32) {
                return Err(format!("shape={s}: N and K must be positive and K a multiple of 32").into());
            }
            vec![(n, k)]
        }
        None if quick => vec![(4096, 4096)],
        // SmolLM2-135M (hidden 576, MLP 1536, vocabulary 49152) and Gemma 3 270M (hidden 640,
        // attention 1024, MLP 2048, vocabulary 262144), as N x K.
        None if args.iter().any(|a| a == "models") => vec![
            (576, 576),
            (192, 576),
            (1536, 576),
            (576, 1536),
            (49152, 576),
            (640, 2048),
            (2048, 640),
            (640, 1024),
            (1024, 640),
            (262_144, 640),
        ],
        None => vec![(4096, 4096), (11008, 4096), (4096, 11008)],
    };
    let only_m: Option<usize> = arg("m=").map(|v| v.parse()).transpose()?;
    let only = arg("only=");
    let ms: Vec<usize> = if quick { vec![1, 32] } else { vec![1, 8, 32, 128] }
        .into_iter()
        .filter(|&m| only_m.is_none_or(|o| o == m))
        .collect();
    let ms = if ms.is_empty() {
        only_m.into_iter().collect()
    } else {
        ms
    };
    let ours = [
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Int8PerChannel,
        QuantFormat::Nf4 {
            block_size: 64,
            double_quant: false,
        },
        QuantFormat::Fp8E4M3 { block_size: None },
        QuantFormat::Tq2_0,
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
    ];
    let ours: Vec<QuantFormat> = ours
        .into_iter()
        .filter(|f| {
            only.as_ref()
                .is_none_or(|o| o.split(',').any(|o| f.to_string().contains(o)))
        })
        .collect();
    let mut rng = Rng(42);
    println!(
        "| weights N x K | M | kernel | ms/call | weight GB/s | % of floor | GFLOP/s | vs candle Q4_0 | vs candle Q8_0 | vs candle Q4_K | vs candle, same format |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &(n, k) in &shapes {
        let ours: Vec<QuantFormat> = ours.iter().copied().filter(|&f| fits(f, k)).collect();
        let w = rng.vec(n * k);
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu)?;
        // candle's matrices, each rotation made of distinct copies.
        let mut candle = Vec::new();
        let mut dtypes = vec![GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q4K];
        dtypes.extend(ours.iter().filter_map(|&f| candle_dtype(f)));
        if packed_only {
            dtypes.clear();
        }
        let mut seen = Vec::new();
        dtypes.retain(|d| {
            let first = !seen.contains(d);
            seen.push(*d);
            first
        });
        dtypes.retain(|&d| k.is_multiple_of(d.block_size()));
        for dtype in dtypes {
            let q = QTensor::quantize(&wt, dtype)?;
            let bytes = q.storage_size_in_bytes();
            let copies = WORKING_SET.div_ceil(bytes) + 1;
            let mats: Vec<QMatMul> = (0..copies)
                .map(|_| QMatMul::from_qtensor(QTensor::quantize(&wt, dtype).expect("quantize")))
                .collect::<Result<_, _>>()?;
            candle.push((dtype, bytes, mats));
        }
        let mut weights = Vec::new();
        let mut packed = Vec::new();
        for &format in &ours {
            let q = quantize(format, &w, &[n, k])?;
            let bytes = q.storage_bytes();
            let copies = WORKING_SET.div_ceil(bytes) + 1;
            let t = Instant::now();
            let p = PackedWeights::new(&q)?;
            let once = t.elapsed();
            if p.is_packed() {
                println!(
                    "packing {n} x {k} {format} once: {:.1} ms ({}, {} bytes, original {bytes}); not timed below",
                    once.as_secs_f64() * 1e3,
                    p.layout_name(),
                    p.storage_bytes(),
                );
                let pack = |options| -> Result<Vec<PackedWeights>, aihal_core::CoreError> {
                    (0..copies).map(|_| PackedWeights::with_options(&q, options)).collect()
                };
                let huge = pack(PackOptions::default())?;
                let small = if ms.contains(&1) && huge[0].huge_pages() {
                    pack(PackOptions::default().with_huge_pages(false))?
                } else {
                    Vec::new()
                };
                packed.push((format, p.storage_bytes(), huge, small));
            }
            weights.push((format, bytes, vec![q; copies]));
        }
        println!();
        // The floor's rotation: buffers of the Q8_0 matrix's size, as many as the kernels'.
        let floor_bytes = n * k / 32 * 34;
        let floor_bufs: Vec<Vec<u64>> = (0..=WORKING_SET.div_ceil(floor_bytes))
            .map(|c| (0..floor_bytes / 8).map(|i| (i ^ c) as u64).collect())
            .collect();
        for &m in &ms {
            let x = rng.vec(m * k);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
            let flops = 2.0 * (m * n * k) as f64;
            let mut rows = vec![floor_row(&floor_bufs)];
            for (dtype, bytes, mats) in &candle {
                let xt = &xt;
                rows.push(Timed {
                    name: format!("candle {dtype:?}"),
                    bytes: *bytes,
                    copies: mats.len(),
                    run: Box::new(move |i| {
                        black_box(mats[i].forward(black_box(xt)).expect("candle forward"));
                    }),
                });
            }
            let peers = rows.len();
            // Row index of candle's row for a dtype (the floor is row 0).
            let peer = |d: GgmlDType| candle.iter().position(|c| c.0 == d).map(|i| i + 1);
            let mut formats: Vec<Option<QuantFormat>> = vec![None; peers];
            for (format, bytes, mats) in weights.iter().filter(|_| !packed_only) {
                for precision in [ActivationPrecision::Int8, ActivationPrecision::F32] {
                    if precision == ActivationPrecision::Int8 && !aihal_cpu::has_int8_activation_path(*format) {
                        continue;
                    }
                    let options = MatmulOptions {
                        activations: precision,
                        output: None,
                    };
                    // Check the timed path against the scalar reference first (one matrix).
                    let mut y = vec![0.0f32; m * n];
                    matmul_into(Activations::F32(&x), m, &mats[0], options, &mut y)?;
                    check(&x, m, &mats[0], &y, precision)?;
                    let tag = if precision == ActivationPrecision::Int8 {
                        "x int8"
                    } else {
                        "x f32"
                    };
                    let x = &x;
                    formats.push(Some(*format));
                    rows.push(Timed {
                        name: format!("aihal {format} ({tag})"),
                        bytes: *bytes,
                        copies: mats.len(),
                        run: Box::new(move |i| {
                            matmul_into(Activations::F32(black_box(x)), m, &mats[i], options, &mut y).expect("matmul");
                            black_box(&y);
                        }),
                    });
                }
            }
            let packed_rows = packed.iter().flat_map(|(format, bytes, huge, small)| {
                let small = (m == 1 && !small.is_empty()).then_some((format, bytes, small, ", 4 KiB pages"));
                std::iter::once((format, bytes, huge, "")).chain(small)
            });
            for (format, bytes, mats, pages) in packed_rows {
                let options = MatmulOptions::default();
                let mut y = vec![0.0f32; m * n];
                matmul_packed_into(Activations::F32(&x), m, &mats[0], options, &mut y)?;
                // Packed FP8 rounds the activations to bf16 where the CPU has AVX-512 BF16.
                let path = mats[0].activation_path(options.activations);
                let precision = if path == "f32" {
                    ActivationPrecision::F32
                } else {
                    ActivationPrecision::Int8
                };
                check(&x, m, &mats[0].to_quantized(), &y, precision)?;
                let x = &x;
                formats.push(Some(*format));
                rows.push(Timed {
                    name: format!("aihal {format} packed{pages} (x {path})"),
                    bytes: *bytes,
                    copies: mats.len(),
                    run: Box::new(move |i| {
                        matmul_packed_into(Activations::F32(black_box(x)), m, &mats[i], options, &mut y)
                            .expect("matmul");
                        black_box(&y);
                    }),
                });
            }
            let per_row = Duration::from_millis(if m == 1 { 1500 } else { 2500 });
            let budget = per_row * rows.len() as u32;
            let times = time_passes(&mut rows, budget);
            // Every figure is a median over the passes; the ratios are taken pass by pass
            // (both rows of a ratio ran within seconds of each other) before the median.
            let rate = |r: usize, p: usize| rows[r].bytes as f64 / times[r][p];
            let passes = times[0].len();
            let floors: Vec<f64> = (0..passes).map(|p| rate(0, p)).collect();
            let (lo, hi) = floors
                .iter()
                .fold((f64::MAX, 0.0f64), |(a, b), &f| (a.min(f), b.max(f)));
            println!(
                "\nread floor, {n} x {k}, M = {m}: median {:.1} GB/s over {passes} passes ({:.1} to {:.1}; rotating {} MB buffers)\n",
                median(floors.clone()) / 1e9,
                lo / 1e9,
                hi / 1e9,
                floor_bytes / 1_000_000,
            );
            for (r, row) in rows.iter().enumerate().skip(1) {
                let seconds = median(times[r].clone());
                let of_floor = median((0..passes).map(|p| rate(r, p) / floors[p]).collect());
                let vs = |peer: Option<usize>| match peer {
                    Some(peer) if r >= peers => format!(
                        "{:.2}x",
                        median((0..passes).map(|p| times[peer][p] / times[r][p]).collect())
                    ),
                    _ => String::new(),
                };
                let same = formats[r].and_then(candle_dtype).and_then(peer);
                println!(
                    "| {n} x {k} | {m} | {} | {:.3} | {:.1} | {:.0}% | {:.0} | {} | {} | {} | {} |",
                    row.name,
                    seconds * 1e3,
                    row.bytes as f64 / seconds / 1e9,
                    100.0 * of_floor,
                    flops / seconds / 1e9,
                    vs(peer(GgmlDType::Q4_0)),
                    vs(peer(GgmlDType::Q8_0)),
                    vs(peer(GgmlDType::Q4K)),
                    vs(same),
                );
            }
        }
        accuracy(&w, n, k, &mut rng)?;
    }
    Ok(())
}

/// Whether `format`'s blocks divide rows of `k` values.
fn fits(format: QuantFormat, k: usize) -> bool {
    match format {
        QuantFormat::Tq2_0
        | QuantFormat::Q4K
        | QuantFormat::Q6K
        | QuantFormat::Q2K
        | QuantFormat::Q3K
        | QuantFormat::Q5K
        | QuantFormat::Iq4Xs => k.is_multiple_of(256),
        _ => k.is_multiple_of(32),
    }
}

/// candle's type for the same blocks, where candle has one.
fn candle_dtype(format: QuantFormat) -> Option<GgmlDType> {
    Some(match format {
        QuantFormat::Q4_0 => GgmlDType::Q4_0,
        QuantFormat::Q8_0 => GgmlDType::Q8_0,
        QuantFormat::Q4_1 => GgmlDType::Q4_1,
        QuantFormat::Q5_0 => GgmlDType::Q5_0,
        QuantFormat::Q4K => GgmlDType::Q4K,
        QuantFormat::Q6K => GgmlDType::Q6K,
        QuantFormat::Q5_1 => GgmlDType::Q5_1,
        QuantFormat::Q2K => GgmlDType::Q2K,
        QuantFormat::Q3K => GgmlDType::Q3K,
        QuantFormat::Q5K => GgmlDType::Q5K,
        _ => return None,
    })
}

/// The timed output against the scalar reference (the reference takes seconds on big
/// shapes, so only the first 64 output features are checked).
fn check(
    x: &[f32],
    m: usize,
    w: &QuantizedTensor,
    y: &[f32],
    p: ActivationPrecision,
) -> Result<(), Box<dyn std::error::Error>> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let rows = n.min(64);
    let (format, _, data, scales) = w.clone().into_parts();
    let bytes_per_row = data.len() / n;
    let sub = if scales.len() == n || scales.len() % n == 0 && scales.len() > 1 {
        let per = scales.len() / n;
        QuantizedTensor::from_parts(
            format,
            vec![rows, k],
            data[..rows * bytes_per_row].to_vec(),
            scales[..rows * per].to_vec(),
        )?
    } else {
        QuantizedTensor::from_parts(format, vec![rows, k], data[..rows * bytes_per_row].to_vec(), scales)?
    };
    let want = reference::matmul(x, m, &sub)?;
    let tol = if p == ActivationPrecision::Int8 { 2e-2 } else { 1e-4 };
    for i in 0..m {
        for j in 0..rows {
            let (a, b) = (y[i * n + j], want[i * rows + j]);
            let scale: f32 = want[i * rows..(i + 1) * rows]
                .iter()
                .map(|v| v.abs())
                .fold(0.0, f32::max);
            if (a - b).abs() > tol * scale.max(1.0) {
                return Err(format!("{format} m={m}: y[{i}][{j}] = {a}, reference {b}").into());
            }
        }
    }
    Ok(())
}

/// The accuracy cost of int8 activations: relative RMS difference from the f32-activation path
/// (same weights) on Gaussian-ish activations, per format.
fn accuracy(w: &[f32], n: usize, k: usize, rng: &mut Rng) -> Result<(), Box<dyn std::error::Error>> {
    let m = 8;
    // Sum of 4 uniforms: bell-shaped activations, plus an outlier channel as LLMs have.
    let mut x: Vec<f32> = (0..m * k)
        .map(|_| rng.f32() + rng.f32() + rng.f32() + rng.f32())
        .collect();
    for i in 0..m {
        x[i * k + 7] = 40.0;
    }
    println!("\nreduced-precision activation error on {n} x {k}, M = {m} (relative RMS vs the f32-activation path, same weights):");
    for format in [
        QuantFormat::Q4_0,
        QuantFormat::Q8_0,
        QuantFormat::Int8PerChannel,
        QuantFormat::Tq2_0,
        QuantFormat::Q4_1,
        QuantFormat::Q5_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
    ] {
        if !fits(format, k) {
            continue;
        }
        let q = quantize(format, w, &[n, k])?;
        let exact = aihal_cpu::matmul_with(x.as_slice().into(), m, &q, MatmulOptions::exact())?;
        let fast = aihal_cpu::matmul_with(x.as_slice().into(), m, &q, MatmulOptions::default())?;
        let num: f64 = exact.iter().zip(&fast).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let den: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
        println!("  {format}: {:.2e}", (num / den).sqrt());
    }
    // Packed FP8's reduced path rounds the activations to bf16 (where the CPU has AVX-512 BF16).
    for format in [QuantFormat::Fp8E4M3 { block_size: None }] {
        let p = PackedWeights::new(&quantize(format, w, &[n, k])?)?;
        let path = p.activation_path(ActivationPrecision::Int8);
        if path == "f32" {
            continue;
        }
        let exact = matmul_packed(x.as_slice().into(), m, &p, MatmulOptions::exact())?;
        let fast = matmul_packed(x.as_slice().into(), m, &p, MatmulOptions::default())?;
        let num: f64 = exact.iter().zip(&fast).map(|(a, b)| f64::from(a - b).powi(2)).sum();
        let den: f64 = exact.iter().map(|a| f64::from(*a).powi(2)).sum();
        println!("  {format} packed (x {path}): {:.2e}", (num / den).sqrt());
    }
    println!();
    Ok(())
}
