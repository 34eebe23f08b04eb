//! Decode-only timing loop for profiling (`perf record` friendly): loads a model, prefills the
//! benchmark prompts, then runs `--steps` decode steps of the chosen path with no sampling.
//!
//! `cargo run --release -p rlpo-rollout --example profile_decode -- --model DIR [--batch 16]
//! [--dtype bf16] [--threads 2] [--steps 64] [--decoder cpu|fast|plain]`

use rlpo_model::{CausalLm, LoadOptions, TextTokenizer};
use rlpo_rollout::bench::bench_prompts;
use rlpo_rollout::{CpuDecoder, FastDecoder, RolloutModel};
use std::time::Instant;
use tch::{Device, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let num = |k: &str, d: usize| get(k).map_or(d, |v| v.parse().unwrap());
    let dir = std::path::PathBuf::from(get("--model").expect("--model DIR"));
    let (batch, steps) = (num("--batch", 16), num("--steps", 64));
    tch::set_num_threads(num("--threads", 2) as i32);
    let kind = rlpo_model::parse_dtype(&get("--dtype").unwrap_or_else(|| "bf16".into())).unwrap();
    let model = CausalLm::load(&dir, &LoadOptions { device: Device::Cpu, kind }).unwrap();
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let prompts = bench_prompts(&tok, batch, 1).unwrap();
    let width = prompts.iter().map(Vec::len).max().unwrap();
    let mut ids = vec![0i64; batch * width];
    let mut mask = vec![0i64; batch * width];
    for (i, p) in prompts.iter().enumerate() {
        ids[i * width + width - p.len()..(i + 1) * width].copy_from_slice(p);
        mask[i * width + width - p.len()..(i + 1) * width].fill(1);
    }
    let ids = Tensor::from_slice(&ids).view([batch as i64, width as i64]);
    let mask = Tensor::from_slice(&mask).view([batch as i64, width as i64]);
    let t_build = Instant::now();
    let dec: Box<dyn RolloutModel> = match get("--decoder").as_deref() {
        Some("plain") => Box::new(model),
        Some("fast") => Box::new(FastDecoder::new(model).unwrap()),
        _ => Box::new(CpuDecoder::new(model).unwrap()),
    };
    println!("decoder built in {:.0} ms", 1e3 * t_build.elapsed().as_secs_f64());
    tch::no_grad(|| {
        for round in 0..2 {
            let (_, mut cache) = dec.prefill(&ids, &mask, (width + steps + 1) as i64).unwrap();
            let next: Vec<i64> = (0..batch as i64).map(|i| 100 + i).collect();
            let t = Instant::now();
            for _ in 0..steps {
                let _ = dec.step(&next, &mut cache).unwrap();
            }
            if round == 1 {
                println!("{:?} batch {batch}: {:.2} ms/step", kind, 1e3 * t.elapsed().as_secs_f64() / steps as f64);
            }
        }
    });
}
