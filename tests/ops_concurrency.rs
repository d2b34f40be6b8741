//! Eight threads share one `Linear` and one `Attention` op (each thread with its own KV
//! cache) for 1000 calls each; every result equals the one a single thread computes.

use std::sync::Arc;

use aihal::quantize::{quantize, QuantFormat};
use aihal::{Attention, AttentionKind, AttentionShape, Executor, Linear, Tensor};

const THREADS: usize = 8;
const CALLS: usize = 1000;

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// One thread's work: `CALLS` linear calls on rotating inputs, then `CALLS` decode steps of
/// attention through its own cache; returns every output's bits.
fn work(linear: &Linear, att: &Attention, shape: AttentionShape) -> Vec<u32> {
    let (m, k) = (2, linear.in_features());
    let inputs: Vec<Tensor> = (0..4)
        .map(|i| Tensor::from_vec(values(i, m * k), &[m, k]).unwrap())
        .collect();
    let mut bits = Vec::new();
    for c in 0..CALLS {
        let y = linear.forward(&inputs[c % 4]).unwrap();
        bits.extend(y.to_vec().unwrap().iter().map(|v| v.to_bits()));
    }
    let (qw, kw) = (shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim);
    let q = values(10, CALLS * qw);
    let kv = values(11, CALLS * kw);
    let mut cache = att.new_cache(1, CALLS).unwrap();
    for step in 0..CALLS {
        let qt = Tensor::from_vec(q[step * qw..][..qw].to_vec(), &[1, 1, shape.n_heads, shape.head_dim]).unwrap();
        let kt = Tensor::from_vec(
            kv[step * kw..][..kw].to_vec(),
            &[1, 1, shape.n_kv_heads, shape.head_dim],
        )
        .unwrap();
        let y = att.forward(&qt, &kt, &kt, &mut cache, None).unwrap();
        bits.extend(y.to_vec().unwrap().iter().map(|v| v.to_bits()));
    }
    bits
}

#[test]
fn eight_threads_sharing_one_linear_and_one_attention_equal_one_thread() {
    for p in aihal::builtin_providers() {
        let device = p.device();
        let exec: Arc<Executor> = Executor::builder()
            .provider(p)
            .device(device)
            .strict(true)
            .build()
            .unwrap();
        let (n, k) = (32, 128);
        let w = quantize(QuantFormat::Q4_0, &values(1, n * k), &[n, k]).unwrap();
        let linear = Linear::new(&exec, &w, None).unwrap();
        let shape = AttentionShape {
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 8,
        };
        let att = Attention::new(&exec, shape, AttentionKind::Causal, None).unwrap();
        let alone = work(&linear, &att, shape);
        let together: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS).map(|_| s.spawn(|| work(&linear, &att, shape))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (t, bits) in together.iter().enumerate() {
            assert!(bits == &alone, "thread {t} on {device} differs from one thread");
        }
        let report = exec.report();
        let runs = (THREADS as u64 + 1) * CALLS as u64;
        assert_eq!(report.calls(aihal::ops::OpKind::Linear, device), runs);
        assert_eq!(report.calls(aihal::ops::OpKind::Attention, device), runs);
    }
}

/// Callers that are themselves rayon tasks (on the global pool the CPU kernels use, and on a
/// pool of their own) share one large `Linear` whose kernels split their work into tasks:
/// no deadlock, and every result equals the one computed outside any pool.
#[test]
fn callers_running_on_rayon_pools_share_a_layer_without_deadlock() {
    use rayon::prelude::*;

    let exec = aihal::executor().unwrap();
    // Large enough that the CPU kernels split each call over their task runner.
    let (m, n, k) = (8, 512, 1024);
    let w = quantize(QuantFormat::Q8_0, &values(7, n * k), &[n, k]).unwrap();
    let linear = Linear::new(&exec, &w, None).unwrap();
    let inputs: Vec<Tensor> = (0..6)
        .map(|i| Tensor::from_vec(values(100 + i, m * k), &[m, k]).unwrap())
        .collect();
    let run = |x: &Tensor| -> Vec<u32> {
        let y = linear.forward(x).unwrap().to_vec().unwrap();
        y.iter().map(|v| v.to_bits()).collect()
    };
    let outside: Vec<Vec<u32>> = inputs.iter().map(run).collect();
    let on_global: Vec<Vec<u32>> = (0..24).into_par_iter().map(|i| run(&inputs[i % 6])).collect();
    let own = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let on_own: Vec<Vec<u32>> = own.install(|| (0..24).into_par_iter().map(|i| run(&inputs[i % 6])).collect());
    for i in 0..24 {
        assert!(on_global[i] == outside[i % 6], "call {i} on the global pool differs");
        assert!(on_own[i] == outside[i % 6], "call {i} on a pool of its own differs");
    }
}
