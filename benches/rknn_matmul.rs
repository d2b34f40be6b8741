//! NPU matrix products through `RknnMatMul` (run on a board; on another machine point
//! `RUST_AI_RKNN_LIB` at the emulator, whose numbers measure only host overhead).
//!
//! ```sh
//! cargo bench --features rknn --bench rknn_matmul
//! ```
//!
//! Each iteration writes A into NPU memory, runs the product (blocking), and reads C back:
//! the full cost a caller pays per product with B already on the NPU.

use std::hint::black_box;

use aihal::rknn::{BOrder, MatMulType, RknnLibrary, RknnMatMul};
use criterion::{Criterion, Throughput};
use half::f16;

/// `(M, K, N)`: a decode step and a short prompt through a 4096-wide projection.
const SHAPES: [(usize, usize, usize); 3] = [(1, 4096, 4096), (8, 4096, 4096), (64, 2048, 2048)];

fn bench(c: &mut Criterion, lib: &RknnLibrary) -> aihal::rknn::Result<()> {
    let device = format!("rknn {}", lib.version()?);
    let mut group = c.benchmark_group("rknn_matmul");
    for (m, k, n) in SHAPES {
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let mut mm = RknnMatMul::new(lib, m, k, n, MatMulType::Int8ToInt32)?;
        mm.set_b_i8(&vec![3i8; k * n], BOrder::NxK)?;
        let a = vec![-2i8; m * k];
        group.bench_function(format!("{device}/i8i8i32/{m}x{k}x{n}"), |b| {
            b.iter(|| black_box(mm.run_i8(black_box(&a)).expect("NPU matmul")));
        });
        let mut mm = RknnMatMul::new(lib, m, k.min(2048), n, MatMulType::Float16ToFloat32)?;
        let k = k.min(2048);
        mm.set_b_f16(&vec![f16::from_f32(0.5); k * n], BOrder::NxK)?;
        let a = vec![f16::from_f32(0.25); m * k];
        group.bench_function(format!("{device}/f16f16f32/{m}x{k}x{n}"), |b| {
            b.iter(|| black_box(mm.run_f16(black_box(&a)).expect("NPU matmul")));
        });
    }
    group.finish();
    Ok(())
}

fn main() {
    let lib = match RknnLibrary::load() {
        Ok(lib) => lib,
        Err(e) => {
            eprintln!("rknn_matmul bench skipped: {e}");
            return;
        }
    };
    let mut c = Criterion::default().configure_from_args();
    if let Err(e) = bench(&mut c, &lib) {
        eprintln!("rknn_matmul bench failed: {e}");
        std::process::exit(1);
    }
    c.final_summary();
}
