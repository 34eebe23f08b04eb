//! `rlpo bench step`: seconds per GRPO training step on a real model, split by stage, with the
//! settings of TRL's side-by-side script (`scripts/trl_bench_step.py`): B prompts x G responses
//! of the built-in single-digit arithmetic task, at most N new tokens, T = 1, lr 1e-5, no KL,
//! token-mean clipped surrogate, one optimizer step per training step. `--lora-rank R` trains
//! LoRA adapters (alpha 2R, every projection), the peer of `trl_bench_step.py --lora-rank R`.
//!
//! One warm-up step is run and not counted (first-touch allocations, packing), then `--steps`
//! timed steps; the report gives per-stage means and the generated tokens, because step time
//! depends on how long the sampled responses are.
//!
//! `--nproc-per-node N`: the same global batch over N data-parallel ranks (the launcher of
//! `rlpo train`); rank 0 prints the table with the time each rank spent in collectives
//! (`timing/collectives_s`: all-reduces, gathers and waiting for the slower rank) and the bytes it
//! sent. `scripts/bench_dp_step.sh` runs 1 process and 2 ranks in a row and prints the ratio.

use anyhow::Result;
use rlpo_train::{Recipe, Trainer};
use std::path::{Path, PathBuf};

/// Arguments of `rlpo bench step`.
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long, default_value = ".cache/models/SmolLM2-135M-Instruct")]
    model: PathBuf,
    /// Parameter dtype: f32, or bf16 (bf16 parameters and matmuls, fp32 master weights).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Prompts per step.
    #[arg(long, default_value_t = 4)]
    prompts: usize,
    /// Responses per prompt.
    #[arg(long, default_value_t = 4)]
    group_size: usize,
    /// Maximum new tokens per response.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: u64,
    /// LibTorch threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Rollout decode path: auto, host or torch.
    #[arg(long, default_value = "auto")]
    decoder: String,
    /// LoRA adapters of this rank on every projection (alpha 2r, `[model.lora]`); 0 = full training.
    #[arg(long, default_value_t = 0)]
    lora_rank: i64,
    /// Learner micro-batches by a token budget (`trainer.micro_batch_tokens`); 0 = one micro-batch.
    #[arg(long, default_value_t = 0)]
    micro_batch_tokens: usize,
    /// The padded learner forward (`trainer.packed_rows = false`), for comparing with packed rows.
    #[arg(long)]
    padded: bool,
    /// Write the per-step metrics here as JSON lines (besides the printed table).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start N data-parallel ranks on this node (global batch unchanged).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
}

fn recipe_text(a: &Args, root: &Path) -> String {
    format!(
        r#"
[run]
name = "bench-step"
seed = 0
threads = {threads}
[model]
path = "{model}"
dtype = "{dtype}"
{lora}
[data]
source = "synthetic"
[data.synthetic]
task = "arithmetic"
min_digits = 1
max_digits = 1
min_operators = 1
max_operators = 1
operators = ["+", "-", "*"]
prompt_template = "What is {{expression}}? Answer with just the number."
[rollout]
group_size = {g}
max_new_tokens = {n}
temperature = 1.0
[reward]
[[reward.fns]]
kind = "math"
extract = "last_number"
[algorithm]
advantage = "grpo"
[loss]
clip_low = 0.2
clip_high = 0.28
agg = "token_mean"
[optim]
lr = 1e-5
weight_decay = 0.0
grad_clip = 1.0
[trainer]
total_steps = {total}
prompts_per_step = {b}
rollout_decoder = "{decoder}"
micro_batch_tokens = {mbt}
packed_rows = {packed}
shared_prompt = {packed}
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
[metrics]
console = false
tensorboard = false
jsonl = false
"#,
        threads = a.threads,
        model = a.model.display(),
        dtype = a.dtype,
        g = a.group_size,
        n = a.new_tokens,
        total = a.steps + 1,
        b = a.prompts,
        decoder = a.decoder,
        root = root.display(),
        lora = if a.lora_rank > 0 { format!("[model.lora]\nrank = {}\nalpha = {}", a.lora_rank, 2 * a.lora_rank) } else { String::new() },
        mbt = a.micro_batch_tokens,
        packed = !a.padded,
    )
}

/// Stages reported, in step order.
const STAGES: [&str; 6] = ["rollout", "reward", "old_logprob", "plan", "update", "step"];

/// Run the benchmark and print the table.
pub fn run(a: Args) -> Result<()> {
    if let Some(n) = a.nproc_per_node {
        let code = crate::launch::launch(n)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    anyhow::ensure!(a.model.join("config.json").exists(), "--model {}: no config.json (an HF model directory is expected)", a.model.display());
    // The run directory only receives the resolved recipe; keep it out of the user's tree.
    let root = std::env::temp_dir().join(format!("rlpo-bench-step-{}", std::process::id()));
    let ranks = rlpo_dist::LaunchEnv::from_env()?.world;
    let recipe = Recipe::from_toml(&recipe_text(&a, &root), Path::new("<bench step>"), &[])?;
    let mut trainer = Trainer::new(recipe)?;
    let main = trainer.dist.is_main();
    if main {
        eprintln!("warm-up step ...");
    }
    trainer.step()?;
    let comm0 = trainer.dist.stats();
    let mut rows = Vec::new();
    for i in 0..a.steps {
        let m = trainer.step()?;
        if main {
            eprintln!("step {}/{}: {:.2} s", i + 1, a.steps, m.get("timing/step_s").unwrap_or(f64::NAN));
        }
        rows.push(m);
    }
    let comm = trainer.dist.stats();
    // Rank 0's collective time and the largest over ranks (the slowest rank waits least).
    let mut per_step = [(comm.seconds - comm0.seconds) / a.steps.max(1) as f64];
    let mut most = per_step;
    trainer.dist.max_f64("collective seconds", &mut most)?;
    let _ = std::fs::remove_dir_all(&root);
    if !main {
        return Ok(());
    }
    let mean = |k: &str| rows.iter().filter_map(|m| m.get(k)).sum::<f64>() / rows.len().max(1) as f64;
    println!(
        "rlpo bench step: {} ({}{}), {} prompts x G = {}, <= {} new tokens, T = 1, {} timed step(s) after 1 warm-up, {ranks} rank(s)",
        a.model.display(),
        a.dtype,
        if a.lora_rank > 0 { format!(", LoRA rank {}", a.lora_rank) } else { String::new() },
        a.prompts,
        a.group_size,
        a.new_tokens,
        a.steps
    );
    println!("{:<14} {:>10}", "stage", "mean s");
    for s in STAGES {
        println!("{:<14} {:>10.3}", s, mean(&format!("timing/{s}_s")));
    }
    if ranks > 1 {
        let per = |x: u64| x as f64 / a.steps.max(1) as f64;
        per_step[0] = per_step[0].max(0.0);
        println!("{:<14} {:>10.3}", "collectives", per_step[0]);
        println!("{:<14} {:>10.3}", "coll. max rk", most[0]);
        println!("{:<14} {:>10.1}", "coll. calls", per(comm.calls - comm0.calls));
        println!("{:<14} {:>10.1}", "coll. MB sent", per(comm.bytes - comm0.bytes) / 1e6);
    }
    println!("{:<14} {:>10.1}", "gen tokens", mean("perf/rollout_tokens"));
    println!("{:<14} {:>10.1}", "tokens/s gen", mean("perf/rollout_tokens_per_s"));
    println!("{:<14} {:>10.3}", "reward mean", mean("reward/mean"));
    if let Some(out) = &a.out {
        let mut text = String::new();
        for m in &rows {
            text.push_str(&serde_json::to_string(&serde_json::json!({"step": m.step, "metrics": m.scalars}))?);
            text.push('\n');
        }
        std::fs::write(out, text).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    }
    Ok(())
}
