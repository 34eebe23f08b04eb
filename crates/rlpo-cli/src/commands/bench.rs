//! `rlpo bench rollout --model DIR --batch B --new-tokens N`: rollout throughput against this
//! machine's own ceilings (see `rlpo_rollout::bench`); `scripts/bench_hf_generate.py` is the
//! transformers baseline it is compared with.

use anyhow::Result;
use rlpo_rollout::bench::{bench_rollout, BenchOptions, DecoderKind};
use rlpo_rollout::SamplerPlacement;
use std::path::PathBuf;

/// `rlpo bench ...`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Seconds and MB/s to save and load+verify a full training checkpoint, bytes per part.
    Checkpoint(super::bench_checkpoint::Args),
    /// Seconds per GRPO training step on a real model, per stage (TRL side by side:
    /// scripts/trl_bench_step.py).
    Step(super::bench_step::Args),
    /// Tokens/s, ms per decode step and fraction of the machine's ceiling for one rollout batch.
    Rollout {
        /// HF model directory.
        #[arg(long)]
        model: PathBuf,
        /// Rows decoded together.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Tokens generated per row.
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        /// f32 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Samples per prompt sharing one prefill (1 = distinct prompts).
        #[arg(long, default_value_t = 1)]
        group_size: usize,
        /// LibTorch threads (0 = default).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Decode path: cpu (host kernels), fast (fused tch) or plain (CausalLm).
        #[arg(long, default_value = "cpu")]
        decoder: String,
        /// Timed repetitions (best reported).
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// cpu, cuda or cuda:N (GPUs take the fast or plain decoder).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Where tokens are sampled: auto (on the device for CUDA), host or device.
        #[arg(long, default_value = "auto")]
        sampler: String,
        /// New tokens of the untimed warm-up run (0 = as many as the timed run).
        #[arg(long, default_value_t = 8)]
        warmup_tokens: usize,
        /// Also print the result as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Learner tokens/s and MFU: forward + backward + AdamW on random tokens.
    Learner(super::bench_learner::Args),
}

/// Dispatch.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Checkpoint(args) => super::bench_checkpoint::run(args),
        Command::Step(args) => super::bench_step::run(args),
        Command::Learner(args) => super::bench_learner::run(args),
        Command::Rollout { model, batch, new_tokens, dtype, group_size, threads, decoder, repeats, device, sampler, warmup_tokens, json } => {
            let mut o = BenchOptions::new(model);
            o.batch = batch;
            o.new_tokens = new_tokens;
            o.group_size = group_size;
            o.threads = threads;
            o.repeats = repeats;
            o.dtype = rlpo_model::parse_dtype(&dtype)?;
            o.device = rlpo_model::parse_device(&device)?;
            o.decoder = match decoder.as_str() {
                "cpu" => DecoderKind::Cpu,
                "fast" => DecoderKind::Fast,
                "plain" => DecoderKind::Plain,
                other => anyhow::bail!("--decoder must be cpu, fast or plain, got {other}"),
            };
            o.sampler = match sampler.as_str() {
                "auto" => SamplerPlacement::Auto,
                "host" => SamplerPlacement::Host,
                "device" => SamplerPlacement::Device,
                other => anyhow::bail!("--sampler must be auto, host or device, got {other}"),
            };
            o.warmup_tokens = if warmup_tokens == 0 { new_tokens } else { warmup_tokens };
            let report = bench_rollout(&o)?;
            println!("{report}");
            if json {
                println!("{}", report.to_json());
            }
            Ok(())
        }
    }
}
