//! `rlpo bench checkpoint --model DIR [--dtype bf16|f32]`: seconds to save a full training
//! checkpoint (HF model + AdamW moments + fp32 masters for low-precision parameters + state,
//! fsynced, sha256 manifest, rename) and to verify and load it back into a trainer, with the bytes
//! of each part and MB/s. Runs in a scratch directory that is removed afterwards. The load reads
//! files the save just wrote, so it is measured with a warm page cache.

use anyhow::{Context, Result};
use rlpo_train::inspect::{human_bytes, part_of};
use rlpo_train::{checkpoint, Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `rlpo bench checkpoint`.
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// Parameter dtype of the trainer: bf16 (fp32 masters in the optimizer state) or f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Scratch directory (default: the system temp directory); a fresh subdirectory is used and removed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Timed save/load rounds (each reported).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// LibTorch threads (0 = default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

fn recipe(model: &Path, dtype: &str, root: &Path, threads: usize) -> Result<Recipe> {
    let text = format!(
        r#"
[run]
name = "bench-checkpoint"
threads = {threads}
[model]
path = "{model}"
dtype = "{dtype}"
[data]
source = "synthetic"
[reward]
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
[trainer]
total_steps = 1
prompts_per_step = 1
[checkpoint]
root = "{root}"
save_final = false
save_every = 0
[metrics]
tensorboard = false
jsonl = false
console = false
"#,
        model = model.display(),
        root = root.display()
    );
    Ok(Recipe::from_toml(&text, Path::new("bench-checkpoint.toml"), &[])?)
}

/// Bytes per part (`model`, `optimizer`, `state`, `manifest`) of a checkpoint directory.
fn part_bytes(dir: &Path) -> Result<BTreeMap<&'static str, u64>> {
    let m = checkpoint::read_manifest(dir)?;
    let mut parts = BTreeMap::new();
    for f in &m.files {
        *parts.entry(part_of(&f.path)).or_default() += f.size;
    }
    let mpath = dir.join("manifest.json");
    *parts.entry("manifest").or_default() += std::fs::metadata(&mpath).with_context(|| mpath.display().to_string())?.len();
    Ok(parts)
}

/// Run the benchmark and print one block per round.
pub fn run(args: Args) -> Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = base.join(format!("rlpo-bench-checkpoint-{}", std::process::id()));
    let result = bench(&args, &scratch);
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).with_context(|| format!("removing scratch directory {}", scratch.display()))?;
    }
    result
}

fn bench(args: &Args, scratch: &Path) -> Result<()> {
    let r = recipe(&args.model, &args.dtype, scratch, args.threads)?;
    let saver = Trainer::new(r.clone()).with_context(|| format!("loading {}", args.model.display()))?;
    let params: i64 = saver.learner.model.var_store().variables().values().map(|v| v.numel() as i64).sum();
    let masters = saver.learner.opt.master.len();
    println!(
        "checkpoint benchmark: {} ({:.1}M parameters, {} parameters; optimizer: AdamW moments fp32{})",
        args.model.display(),
        params as f64 / 1e6,
        args.dtype,
        if masters > 0 { format!(" + fp32 masters of {masters} tensors") } else { String::new() }
    );
    let mut loader = Trainer::new(r)?;
    for round in 1..=args.repeats.max(1) {
        let t0 = Instant::now();
        let dir = checkpoint::save(&saver)?;
        let save_s = t0.elapsed().as_secs_f64();
        let parts = part_bytes(&dir)?;
        let total: u64 = parts.values().sum();
        let t0 = Instant::now();
        checkpoint::verify(&dir)?;
        let verify_s = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        loader.resume_from(&dir)?;
        let load_s = t0.elapsed().as_secs_f64();
        let mb = total as f64 / 1e6;
        println!("round {round}:");
        println!("  save (write, fsync, sha256 manifest, rename)  {save_s:>7.2} s  {:>7.1} MB/s", mb / save_s);
        println!("  verify (sha256 of every file)                 {verify_s:>7.2} s  {:>7.1} MB/s", mb / verify_s);
        println!("  load (verify + read into the trainer)         {load_s:>7.2} s  {:>7.1} MB/s", mb / load_s);
        let by_part: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v} B ({})", human_bytes(*v))).collect();
        println!("  on disk: {} B ({}): {}", total, human_bytes(total), by_part.join(", "));
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}
