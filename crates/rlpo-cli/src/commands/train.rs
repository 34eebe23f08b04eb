//! `rlpo train [RECIPE] [--set section.key=value ...]`: run a recipe (the embedded CPU quickstart
//! when none is given). The first Ctrl-C (SIGINT/SIGTERM) stops after the current step, saves a
//! checkpoint and prints how to resume (exit 0); a second one exits at once (code 130), leaving
//! the last complete checkpoint as it was.

use anyhow::Result;
use rlpo_train::{checkpoint, Recipe, Trainer};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Arguments of `rlpo train`.
#[derive(clap::Args)]
pub struct Args {
    /// Recipe TOML; omitted = the embedded recipes/quickstart.toml.
    recipe: Option<PathBuf>,
    /// Override a recipe value, e.g. `--set optim.lr=2e-5` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// `auto`: continue from the newest verified checkpoint of this run, if any; `never`: start
    /// fresh (fails if the run directory already has checkpoints); or a checkpoint directory.
    #[arg(long, default_value = "auto")]
    resume: String,
}

/// Load, train, report where the outputs are.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    let name = args.recipe.as_ref().map_or("embedded quickstart".to_string(), |p| p.display().to_string());
    eprintln!("rlpo train: {name} -> {}", recipe.run_dir().display());
    let run_dir = recipe.run_dir();
    let mut trainer = Trainer::new(recipe)?;
    eprintln!("{}", trainer.describe_paths());
    let existing = checkpoint::list(&checkpoint::checkpoints_dir(&run_dir));
    match args.resume.as_str() {
        "never" => anyhow::ensure!(
            existing.is_empty(),
            "{} already has checkpoints; use --resume auto to continue it, or choose another run.name",
            run_dir.display()
        ),
        "auto" => {
            if let Some(dir) = checkpoint::newest_verified(&run_dir) {
                trainer.resume_from(&dir)?;
                resumed(&trainer, &dir)?;
            } else if !existing.is_empty() {
                anyhow::bail!("{} has checkpoints but none verifies; use --resume PATH or --resume never with a new run.name", run_dir.display());
            }
        }
        path => {
            let dir = PathBuf::from(path);
            trainer.resume_from(&dir)?;
            resumed(&trainer, &dir)?;
        }
    }
    if trainer.state.step >= trainer.recipe.trainer.total_steps {
        eprintln!(
            "run {} is already complete at step {}: nothing to train (raise --set trainer.total_steps=N to continue, or use another run.name)",
            run_dir.display(),
            trainer.state.step
        );
        return Ok(());
    }
    let stop = trainer.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            // Second signal: leave now; nothing half-written is published under a final name.
            eprintln!("second interrupt: exiting immediately");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current step (press Ctrl-C again to exit at once)");
    })?;
    let done = trainer.run()?;
    if !done {
        let saved = checkpoint::list(&checkpoint::checkpoints_dir(&run_dir)).into_iter().next().map(|(_, d)| d.display().to_string());
        eprintln!(
            "stopped at step {} of {}; checkpoint saved: {}\nresume with: {} (--resume auto is the default)",
            trainer.state.step,
            trainer.recipe.trainer.total_steps,
            saved.as_deref().unwrap_or("(none)"),
            resume_command(&args)
        );
    }
    let last: Vec<f64> = trainer.history.iter().rev().take(5).filter_map(|m| m.get("reward/mean")).collect();
    if !last.is_empty() {
        eprintln!("mean reward of the last {} step(s): {:.3}", last.len(), last.iter().sum::<f64>() / last.len() as f64);
    }
    let a = trainer.learner.model.attention_counts();
    eprintln!(
        "attention calls: {} SDPA is_causal (packed rows), {} SDPA with a mask (fallback), {} grouped decode steps",
        a.sdpa_causal, a.sdpa_masked, a.grouped_decode
    );
    eprintln!("run directory: {} (metrics.jsonl, tensorboard/, final/)", trainer.run_dir.display());
    Ok(())
}

/// Report a resume and drop `metrics.jsonl` lines of steps after the checkpoint (they belong to
/// the interrupted attempt and are logged again).
fn resumed(trainer: &Trainer, dir: &std::path::Path) -> Result<()> {
    eprintln!("resumed from {} (step {})", dir.display(), trainer.state.step);
    let dropped = checkpoint::trim_metrics_log(&trainer.run_dir, trainer.state.step)?;
    if dropped > 0 {
        eprintln!("metrics.jsonl: dropped {dropped} line(s) of steps after {} from the interrupted attempt", trainer.state.step);
    }
    Ok(())
}

/// The command line that continues this run.
fn resume_command(args: &Args) -> String {
    let quote = |s: &str| {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c)) {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut parts = vec!["rlpo train".to_string()];
    if let Some(p) = &args.recipe {
        parts.push(quote(&p.display().to_string()));
    }
    for s in &args.set {
        parts.push(format!("--set {}", quote(s)));
    }
    parts.join(" ")
}
