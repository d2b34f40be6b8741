//! Criterion benches of aihal-cpu's transformer ops against what a candle user writes for
//! the same op on the CPU: `candle_nn::ops::rms_norm`, `candle_nn::ops::softmax_last_dim`,
//! `Tensor::silu`, `Tensor::gelu` (the tanh form), and attention composed of candle
//! matmuls, a causal mask and `softmax_last_dim` (keys and values repeated to the query
//! heads). Every timed output is first checked against aihal's scalar reference.
#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

mod common;

use std::hint::black_box;

use aihal_cpu::ops;
use aihal_reference::{self as reference, AttentionShape};
use candle_core::{DType, Device, Tensor};
use common::data;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs reference {w}"
        );
    }
}

/// An attention benchmark: heads, key/value heads, head_dim, and the (q_len, kv_len) pairs.
type Case = (usize, usize, usize, &'static [(usize, usize)]);

/// Causal GQA attention as a candle user writes it: q [q_len, H, d], k/v [kv_len, KV, d].
fn candle_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv_heads: usize, scale: f64) -> Tensor {
    let (q_len, _, d) = q.dims3().unwrap();
    let kv_len = k.dims3().unwrap().0;
    let rep = heads / kv_heads;
    let repeat = |t: &Tensor| {
        t.unsqueeze(2)
            .unwrap()
            .expand((kv_len, kv_heads, rep, d))
            .unwrap()
            .reshape((kv_len, heads, d))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (kh, vh) = (repeat(k), repeat(v));
    let qh = q.transpose(0, 1).unwrap().contiguous().unwrap();
    let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
    let scores = if q_len > 1 {
        let mask: Vec<f32> = (0..q_len)
            .flat_map(|t| (0..kv_len).map(move |j| if j > kv_len - q_len + t { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, q_len, kv_len), &Device::Cpu).unwrap();
        scores.broadcast_add(&mask).unwrap()
    } else {
        scores
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    probs
        .matmul(&vh)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
}

/// An elementwise op of ours (fast or reference).
type Ours = fn(&[f32]) -> Vec<f32>;
/// The same op in candle.
type Theirs = fn(&Tensor) -> candle_core::Result<Tensor>;

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    // RMSNorm over 128 rows of 4096 (a prompt's hidden states).
    let (rows, dim) = (128, 4096);
    let x = data(rows * dim, 1);
    let w = data(dim, 2);
    let want = reference::rms_norm(&x, dim, &w, 1e-5).unwrap();
    close("rms_norm", &ops::rms_norm(&x, dim, &w, 1e-5).unwrap(), &want);
    let xt = Tensor::from_vec(x.clone(), (rows, dim), &dev).unwrap();
    let wt = Tensor::from_vec(w.clone(), dim, &dev).unwrap();
    let theirs = candle_nn::ops::rms_norm(&xt, &wt, 1e-5).unwrap();
    close(
        "candle rms_norm",
        &theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &want,
    );
    let mut g = c.benchmark_group("rms_norm_128x4096");
    g.bench_function("aihal", |b| {
        b.iter(|| black_box(ops::rms_norm(black_box(&x), dim, &w, 1e-5).unwrap()));
    });
    g.bench_function("candle", |b| {
        b.iter(|| black_box(candle_nn::ops::rms_norm(black_box(&xt), &wt, 1e-5).unwrap()));
    });
    g.finish();

    // Softmax over 32 heads' scores for one query over 1024 cached positions (a decode step).
    let (rows, dim) = (32, 1024);
    let x: Vec<f32> = data(rows * dim, 6).iter().map(|v| v * 8.0).collect();
    let want = reference::softmax(&x, dim).unwrap();
    close("softmax", &ops::softmax(&x, dim).unwrap(), &want);
    let xt = Tensor::from_vec(x.clone(), (rows, dim), &dev).unwrap();
    close(
        "candle softmax",
        &candle_nn::ops::softmax_last_dim(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        &want,
    );
    let mut g = c.benchmark_group("softmax_32x1024");
    g.bench_function("aihal", |b| {
        b.iter(|| black_box(ops::softmax(black_box(&x), dim).unwrap()));
    });
    g.bench_function("candle", |b| {
        b.iter(|| black_box(candle_nn::ops::softmax_last_dim(black_box(&xt)).unwrap()));
    });
    g.finish();

    // SiLU and GELU over a 32-token prompt's MLP activations (32 x 11008, Llama-7B's width).
    let (rows, dim) = (32, 11008);
    let x: Vec<f32> = data(rows * dim, 7).iter().map(|v| v * 6.0).collect();
    let xt = Tensor::from_vec(x.clone(), (rows, dim), &dev).unwrap();
    let cases: [(&str, Ours, Ours, Theirs); 2] = [
        ("silu_32x11008", ops::silu, reference::silu, Tensor::silu),
        ("gelu_32x11008", ops::gelu, reference::gelu, Tensor::gelu),
    ];
    for (name, ours, reference, theirs) in cases {
        let want = reference(&x);
        close(name, &ours(&x), &want);
        let got = theirs(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        close(&format!("candle {name}"), &got, &want);
        let mut g = c.benchmark_group(name);
        g.bench_function("aihal", |b| b.iter(|| black_box(ours(black_box(&x)))));
        g.bench_function("candle", |b| b.iter(|| black_box(theirs(black_box(&xt)).unwrap())));
        g.finish();
    }

    // Causal GQA attention: 32 query heads over 8 key/value heads of 128, a prompt of 128
    // tokens and one decode step over 1024 cached positions; and one decode step of each real
    // model at 160 cached positions (SmolLM2: 9 heads over 3 of 64; Gemma 3 270M: 4 over 1 of
    // 256).
    let cases: [Case; 3] = [
        (32, 8, 128, &[(128, 128), (1, 1024)]),
        (9, 3, 64, &[(1, 160)]),
        (4, 1, 256, &[(1, 160)]),
    ];
    for (heads, kv_heads, d, lens) in cases {
        let shape = AttentionShape {
            n_heads: heads,
            n_kv_heads: kv_heads,
            head_dim: d,
        };
        let mut g = c.benchmark_group(format!("attention_{heads}x{kv_heads}x{d}"));
        g.sample_size(20);
        for &(q_len, kv_len) in lens {
            let q = data(q_len * heads * d, 3);
            let k = data(kv_len * kv_heads * d, 4);
            let v = data(kv_len * kv_heads * d, 5);
            let scale = 1.0 / (d as f32).sqrt();
            let want = reference::attention(&q, &k, &v, kv_len, shape, Some(scale)).unwrap();
            close(
                "attention",
                &ops::attention(&q, &k, &v, kv_len, shape, Some(scale)).unwrap(),
                &want,
            );
            let qt = Tensor::from_vec(q.clone(), (q_len, heads, d), &dev).unwrap();
            let kt = Tensor::from_vec(k.clone(), (kv_len, kv_heads, d), &dev).unwrap();
            let vt = Tensor::from_vec(v.clone(), (kv_len, kv_heads, d), &dev).unwrap();
            let theirs = candle_attention(&qt, &kt, &vt, heads, kv_heads, f64::from(scale));
            assert_eq!(theirs.dtype(), DType::F32);
            close(
                "candle attention",
                &theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                &want,
            );
            let id = format!("q{q_len}_kv{kv_len}");
            g.bench_function(BenchmarkId::new("aihal", &id), |b| {
                b.iter(|| black_box(ops::attention(black_box(&q), &k, &v, kv_len, shape, Some(scale)).unwrap()));
            });
            g.bench_function(BenchmarkId::new("candle", &id), |b| {
                b.iter(|| {
                    black_box(candle_attention(
                        black_box(&qt),
                        &kt,
                        &vt,
                        heads,
                        kv_heads,
                        f64::from(scale),
                    ))
                });
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
