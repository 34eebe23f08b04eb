//! Throughput of an external plugin: 10,000 GSM8K-like samples through
//! `reward_fns/gsm8k_reward.py` (or any command) over the JSON-lines protocol, for several
//! concurrency limits.
//!
//! Run: `CARGO_TARGET_DIR=target/reward cargo build --release -p rlpo-reward --example bench_plugin &&
//!       target/reward/release/examples/bench_plugin [samples] [command ...]`
//! Without a command: `python3 reward_fns/gsm8k_reward.py` (math-verify if importable, else the
//! fallback). E.g. `... 10000 python3 reward_fns/gsm8k_reward.py --no-math-verify`, or a venv's
//! python that has math-verify. Prints numbers; asserts nothing about time.

#[path = "common/gen.rs"]
mod gen;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlpo_reward::external::{ExternalOptions, ExternalReward};
use rlpo_reward::log::RewardLog;
use rlpo_reward::math::MathReward;
use rlpo_reward::metrics::RewardCounters;
use rlpo_reward::RewardFn;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let mut command: Vec<String> = args.collect();
    if command.is_empty() {
        let script = format!("{}/../../reward_fns/gsm8k_reward.py", env!("CARGO_MANIFEST_DIR"));
        command = vec!["python3".into(), script];
    }
    let batch = gen::gsm8k_like(n, 7, 4);
    println!("{n} samples through {}", command.join(" "));
    // Cross-check against the built-in verifier: the two checkers should agree on this data.
    let builtin = MathReward::default().score(&batch);

    for concurrency in [1, 16, 64, 256] {
        let mut opts = ExternalOptions::new("plugin", command.clone());
        opts.concurrency = concurrency;
        opts.timeout = Duration::from_secs(60);
        let log = RewardLog::new();
        let counters = Arc::new(RewardCounters::default());
        let plugin = ExternalReward::start(opts, log.clone(), counters.clone())?;
        // Warm-up: interpreter start and imports are not part of steady-state throughput.
        plugin.score(&batch[..100.min(n)]);
        let t = Instant::now();
        let out = plugin.score(&batch);
        let secs = t.elapsed().as_secs_f64();
        let failed = out.iter().filter(|o| !o.is_ok()).count();
        let correct = out.iter().filter(|o| o.is_ok()).map(|o| o.value).sum::<f64>() / n as f64;
        println!(
            "concurrency {concurrency:>3}: {:>8.0} samples/s ({secs:.2} s), failed {failed}, fraction correct {correct:.3}, restarts {}",
            n as f64 / secs,
            counters.snapshot().restarts
        );
        let disagree: Vec<usize> =
            (0..n).filter(|&i| out[i].is_ok() && out[i].value != builtin[i].value).collect();
        if !disagree.is_empty() {
            let s = &batch[disagree[0]];
            let tail: String = s.response.chars().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
            println!(
                "  disagrees with the built-in verifier on {} samples, e.g. #{}: …{tail:?} vs {:?}",
                disagree.len(),
                disagree[0],
                s.ground_truth
            );
        }
        for line in log.drain() {
            println!("  log: {line}");
        }
    }
    Ok(())
}
