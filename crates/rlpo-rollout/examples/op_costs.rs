//! Per-op cost table for the decode step's shapes (SmolLM2, batch 16), to see where a step's
//! non-matmul time goes. `cargo run --release -p rlpo-rollout --example op_costs -- [threads]`

use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn time<F: FnMut()>(name: &str, mut f: F) {
    for _ in 0..20 {
        f();
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    println!("{name:40} {:8.2} us", 1e6 * t.elapsed().as_secs_f64() / n as f64);
}

fn main() {
    let threads: i32 = std::env::args().nth(1).map_or(2, |s| s.parse().unwrap());
    tch::set_num_threads(threads);
    let _g = tch::no_grad_guard();
    for kind in [Kind::BFloat16, Kind::Float] {
        println!("--- {kind:?}, {threads} threads");
        let o = (kind, Device::Cpu);
        let x = Tensor::randn([16, 576], o);
        let w = Tensor::randn([576], o);
        let x32 = x.to_kind(Kind::Float);
        time("add [16,576]", || {
            let _ = &x + &x;
        });
        time("rms_norm [16,576]", || {
            let _ = x.rms_norm([576], Some(&w), 1e-5);
        });
        time("rms_norm manual (f32 math)", || {
            let v = x32.square().mean_dim(-1, true, Kind::Float);
            let _ = (&x32 * (v + 1e-5).rsqrt()).to_kind(kind) * &w;
        });
        time("to_kind bf16<->f32 [16,576]", || {
            let _ = x.to_kind(if kind == Kind::Float { Kind::BFloat16 } else { Kind::Float });
        });
        let qkv = Tensor::randn([16, 960], o);
        let cos = Tensor::randn([16, 1, 1, 64], o);
        time("rope (narrow,view,mul,roll,addcmul_)", || {
            let qk = qkv.narrow(1, 0, 768).view([16, 12, 1, 64]);
            let _ = (&qk * &cos).addcmul_(&qk.roll([32], [3]), &cos);
        });
        let mut cache = Tensor::zeros([16, 3, 300, 64], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([16, 3, 1, 64], o);
        time("cache slot copy_ (to f32)", || {
            cache.narrow(2, 150, 1).copy_(&k);
        });
        let g = Tensor::randn([16, 3072], o);
        time("silu(narrow) * narrow", || {
            let _ = g.narrow(1, 0, 1536).silu() * g.narrow(1, 1536, 1536);
        });
        let wo = Tensor::randn([576, 576], o).tr();
        let a = Tensor::randn([16, 576], o);
        time("addmm o_proj [16,576]x[576,576]", || {
            let _ = x.addmm(&a, &wo);
        });
        let wgu = Tensor::randn([3072, 576], o);
        time("linear gate_up (warm cache)", || {
            let _ = x.linear::<&Tensor>(&wgu, None);
        });
        time("gate_up W@x^T (warm cache)", || {
            let _ = wgu.matmul(&x.tr());
        });
        let q = Tensor::randn([48, 3, 64], tch::kind::FLOAT_CPU);
        let keys = cache.narrow(2, 0, 120).reshape([48, 120, 64]);
        let bias = Tensor::zeros([48, 1, 120], tch::kind::FLOAT_CPU);
        time("attention f32 S=120 (baddbmm,softmax,bmm)", || {
            let s = bias.baddbmm(&q, &keys.transpose(1, 2), 1.0, 0.125);
            let _ = s.softmax(-1, Kind::Float).bmm(&keys);
        });
        time("narrow+view (no kernel)", || {
            let _ = qkv.narrow(1, 0, 768).view([16, 12, 1, 64]);
        });
    }
}
