//! `rlpo train [RECIPE] [--set section.key=value ...]`: run a recipe (the embedded CPU quickstart
//! when none is given). Ctrl-C stops after the current step and still writes the final model.

use anyhow::Result;
use rlpo_train::{Recipe, Trainer};
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
}

/// Load, train, report where the outputs are.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    let name = args.recipe.as_ref().map_or("embedded quickstart".to_string(), |p| p.display().to_string());
    eprintln!("rlpo train: {name} -> {}", recipe.run_dir().display());
    let mut trainer = Trainer::new(recipe)?;
    let stop = trainer.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            // Second signal: leave now; nothing half-written is published under a final name.
            eprintln!("second interrupt: exiting immediately");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current step (press Ctrl-C again to exit at once)");
    })?;
    trainer.run()?;
    let last: Vec<f64> = trainer.history.iter().rev().take(5).filter_map(|m| m.get("reward/mean")).collect();
    if !last.is_empty() {
        eprintln!("mean reward of the last {} step(s): {:.3}", last.len(), last.iter().sum::<f64>() / last.len() as f64);
    }
    eprintln!("run directory: {} (metrics.jsonl, tensorboard/, final/)", trainer.run_dir.display());
    Ok(())
}
