//! Throughput of the built-in math verifier on one thread (target: ≥ 100,000 samples/s).
//!
//! Run (release, pinned to one core):
//! `CARGO_TARGET_DIR=target/reward cargo build --release -p rlpo-reward --example bench_math &&
//!  taskset -c 0 target/reward/release/examples/bench_math [samples] [rounds]`
//!
//! Prints numbers; asserts nothing about time.

#[path = "common/gen.rs"]
mod gen;

use std::time::Instant;

use rlpo_reward::math::MathReward;
use rlpo_reward::{OnError, RewardFn, RewardSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    // Short (one reasoning paragraph) and long (four paragraphs, about the length of a real
    // GSM8K chain of thought) responses.
    for paragraphs in [1, 4] {
        bench(&gen::gsm8k_like(n, 42, paragraphs), rounds)?;
    }
    Ok(())
}

fn bench(batch: &[rlpo_reward::RewardInput], rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let n = batch.len();
    let mean_chars = batch.iter().map(|s| s.response.len()).sum::<usize>() as f64 / n as f64;
    println!("{n} GSM8K-like samples, mean response {mean_chars:.0} bytes, {rounds} rounds, 1 thread");

    let verifier = MathReward::default();
    let mut rates = Vec::new();
    let mut correct = 0.0;
    for _ in 0..rounds {
        let t = Instant::now();
        let out = verifier.score(batch);
        let secs = t.elapsed().as_secs_f64();
        correct = out.iter().map(|o| o.value).sum::<f64>() / n as f64;
        rates.push(n as f64 / secs);
    }
    report("MathReward::score", &mut rates);
    println!("  fraction correct: {correct:.3} (generator makes about 0.6 correct)");

    // Through a RewardSet: adds the combination (parts map, counters) on top of the verifier.
    let mut set = RewardSet::new(OnError::Abort);
    set.add("math", 1.0, Box::new(MathReward::default()))?;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let scored = set.score_all(batch)?;
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(&scored);
        rates.push(n as f64 / secs);
    }
    report("RewardSet::score_all (math only)", &mut rates);
    Ok(())
}

fn report(what: &str, rates: &mut [f64]) {
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let best = rates[rates.len() - 1];
    println!("{what}: median {median:.0} samples/s, best {best:.0} samples/s");
}
