//! Packed-GEMM throughput at decode shapes (SmolLM2 projections, 30 layers, cold weights) and the
//! machine's read bandwidth, to tell compute- from memory-bound.
//! `cargo run --release -p rlpo-rollout --example gemm_bench -- [rows]`

use rlpo_rollout::gemm::{matmul, GemmScratch, PackedMatrix};
use std::time::Instant;

fn main() {
    let m: usize = std::env::args().nth(1).map_or(16, |s| s.parse().unwrap());
    let shapes = [(960usize, 576usize), (576, 576), (3072, 576), (576, 1536)];
    for bf16 in [true, false] {
        let layers: Vec<Vec<PackedMatrix>> = (0..30)
            .map(|l| shapes.iter().map(|&(n, k)| PackedMatrix::new(&vec![0.01 * (l as f32 + 1.0); n * k], n, k, bf16)).collect())
            .collect();
        let bytes: usize = layers.iter().flatten().map(|p| p.bytes()).sum();
        let xs: Vec<Vec<f32>> = shapes.iter().map(|&(_, k)| vec![0.5f32; m * k]).collect();
        let mut out = Vec::new();
        let mut s = GemmScratch::default();
        let mut run = || {
            for l in &layers {
                for (p, x) in l.iter().zip(&xs) {
                    matmul(x, m, p, &mut out, &mut s);
                }
            }
        };
        run();
        let n = 10;
        let t = Instant::now();
        for _ in 0..n {
            run();
        }
        let dt = t.elapsed().as_secs_f64() / n as f64;
        let flops: f64 = shapes.iter().map(|&(n, k)| 2.0 * (m * n * k) as f64).sum::<f64>() * 30.0;
        println!("bf16={bf16} rows {m}: {:.2} ms per 30 layers, {:.1} GB/s of weights, {:.1} GFLOP/s", 1e3 * dt, bytes as f64 / dt / 1e9, flops / dt / 1e9);
        // warm: one layer's gate_up repeatedly
        let p = &layers[0][2];
        let t = Instant::now();
        for _ in 0..300 {
            matmul(&xs[2], m, p, &mut out, &mut s);
        }
        let dt = t.elapsed().as_secs_f64() / 300.0;
        println!("   warm gate_up: {:.1} us, {:.1} GFLOP/s", 1e6 * dt, 2.0 * (m * 3072 * 576) as f64 / dt / 1e9);
    }
    // read bandwidth: sum a 512 MiB buffer with rayon
    use rayon::prelude::*;
    let big = vec![1.0f32; 128 << 20];
    let _: f32 = big.par_chunks(1 << 16).map(|c| c.iter().sum::<f32>()).sum();
    let t = Instant::now();
    let s: f32 = big.par_chunks(1 << 16).map(|c| {
        let mut acc = [0f32; 16];
        for ch in c.chunks_exact(16) { for l in 0..16 { acc[l] += ch[l]; } }
        acc.iter().sum::<f32>()
    }).sum();
    println!("read bandwidth {:.1} GB/s ({s})", 512.0 * 1.048576e6 / t.elapsed().as_secs_f64() / 1e9);
}
