//! `rlpo bench learner --model DIR --rows R --seq T`: tokens/s and MFU of the learner's update
//! on random tokens — the forward over `[R, T]` with chunked vocabulary log-probs (the learner's
//! `teacher_forced`), the backward (with activation checkpointing when asked), gradient clipping
//! and one AdamW step (fused or per parameter), as one training step runs them per micro-batch.
//!
//! One untimed warm-up step (allocations, kernel selection), then `--steps` timed steps, the
//! device synchronised before the clock stops. FLOPs per token: `6·N` (N = matmul parameters,
//! the LM head included) + `6·L·T·H·hd` (causal attention, forward and backward); recomputed
//! forwards are not counted, as MFU is defined. The peak is `--peak-tflops`, or this machine's
//! measured dense matmul rate in the model dtype (`rlpo_rollout::bench::measure_ceilings_on`).

use anyhow::Result;
use rlpo_algo::logprob::LogProbOptions;
use rlpo_model::{parse_device, parse_dtype, CausalLm, LoadOptions, ModelConfig};
use rlpo_train::learner::teacher_forced;
use rlpo_train::optim::AdamW;
use rlpo_train::recipe::OptimConfig;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Arguments of `rlpo bench learner`.
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// Rows per forward/backward (a micro-batch).
    #[arg(long, default_value_t = 4)]
    rows: i64,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    seq: i64,
    /// f32 or bf16 (bf16: fp32 master weights, as in training).
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timed steps after one warm-up step.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Recompute each decoder layer in the backward (`trainer.activation_checkpointing`).
    #[arg(long)]
    activation_checkpointing: bool,
    /// The per-parameter AdamW instead of the fused kernel (`optim.fused = false`).
    #[arg(long)]
    per_parameter_adamw: bool,
    /// Positions per vocabulary-projection chunk (`trainer.logit_chunk_positions`).
    #[arg(long, default_value_t = 1024)]
    logit_chunk: i64,
    /// Peak dense TFLOP/s of the device for MFU; 0 = measure this machine's matmul rate.
    #[arg(long, default_value_t = 0.0)]
    peak_tflops: f64,
    /// Also print the result as one JSON line.
    #[arg(long)]
    json: bool,
}

/// Matmul parameters (attention and MLP projections of every layer, plus the LM head).
fn matmul_params(c: &ModelConfig) -> f64 {
    let (d, q, kv) = (c.hidden_size as f64, (c.num_attention_heads * c.head_dim) as f64, (c.num_key_value_heads * c.head_dim) as f64);
    c.num_hidden_layers as f64 * (2.0 * d * q + 2.0 * d * kv + 3.0 * d * c.intermediate_size as f64) + c.vocab_size as f64 * d
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Run the benchmark and print the result.
pub fn run(a: Args) -> Result<()> {
    let device = parse_device(&a.device)?;
    let kind = parse_dtype(&a.dtype)?;
    anyhow::ensure!(a.rows > 0 && a.seq > 1 && a.steps > 0, "--rows, --seq (> 1) and --steps must be positive");
    let mut model = CausalLm::load(&a.model, &LoadOptions { device, kind })?;
    model.set_activation_checkpointing(a.activation_checkpointing);
    let cfg = model.config.clone();
    let params = model.var_store().variables().into_iter().filter(|(_, t)| t.requires_grad());
    let ocfg = OptimConfig { lr: 1e-7, fused: !a.per_parameter_adamw, ..OptimConfig::default() };
    let mut opt = AdamW::new(params, ocfg.clone());
    tch::manual_seed(0);
    let ids = Tensor::randint_low(3, cfg.vocab_size, [a.rows, a.seq], (Kind::Int64, device));
    let mask = ids.ones_like();
    let targets = ids.narrow(1, 1, a.seq - 1);
    let lp_opts = LogProbOptions { temperature: 1.0, chunk_positions: a.logit_chunk, with_entropy: false };
    let mut step = || -> Result<()> {
        opt.zero_grad();
        let out = teacher_forced(&model, &ids, &mask, 0, &targets, &lp_opts)?;
        out.logp.mean(Kind::Float).backward();
        model.backward_checkpointed();
        let norm = opt.grad_norm();
        opt.clip_grad(norm, 1.0)?;
        opt.step(ocfg.lr)?;
        sync(device);
        Ok(())
    };
    let t = Instant::now();
    step()?;
    let warmup_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..a.steps {
        step()?;
    }
    let secs = t.elapsed().as_secs_f64() / a.steps as f64;
    let tokens_per_s = (a.rows * a.seq) as f64 / secs;
    let attn = 6.0 * cfg.num_hidden_layers as f64 * a.seq as f64 * (cfg.num_attention_heads * cfg.head_dim) as f64;
    let flops_per_token = 6.0 * matmul_params(&cfg) + attn;
    let (peak, basis) = if a.peak_tflops > 0.0 {
        (a.peak_tflops * 1e12, format!("--peak-tflops {}", a.peak_tflops))
    } else {
        let c = rlpo_rollout::bench::measure_ceilings_on(kind, device);
        (c.matmul_flops, format!("measured {:?} matmul {:.1} TFLOP/s", kind, c.matmul_flops / 1e12))
    };
    let mfu = flops_per_token * tokens_per_s / peak;
    println!(
        "learner bench: {} | {} rows x {} tokens | {:?} on {:?} | activation checkpointing {} | {} AdamW",
        a.model.display(),
        a.rows,
        a.seq,
        kind,
        device,
        if a.activation_checkpointing { "on" } else { "off" },
        if ocfg.fused { "fused" } else { "per-parameter" }
    );
    println!("  warm-up           {warmup_s:9.3} s (untimed step)");
    println!("  step              {secs:9.3} s (forward + backward + AdamW, mean of {})", a.steps);
    println!("  tokens/s          {tokens_per_s:9.1}");
    println!("  MFU               {:9.1} % ({:.2} GFLOP per token; peak: {basis})", 100.0 * mfu, flops_per_token / 1e9);
    if a.json {
        println!(
            "{{\"impl\": \"rlpo-learner\", \"rows\": {}, \"seq\": {}, \"dtype\": \"{}\", \"activation_checkpointing\": {}, \"fused_adamw\": {}, \"warmup_s\": {warmup_s:.4}, \"step_s\": {secs:.4}, \"tokens_per_s\": {tokens_per_s:.2}, \"flops_per_token\": {flops_per_token:.4e}, \"peak_flops\": {peak:.4e}, \"mfu\": {mfu:.4}}}",
            a.rows, a.seq, a.dtype, a.activation_checkpointing, ocfg.fused
        );
    }
    Ok(())
}
