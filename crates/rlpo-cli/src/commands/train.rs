//! `rlpo train [RECIPE] [--set section.key=value ...]`: run a recipe (the embedded CPU quickstart
//! when none is given). The run directory is locked (a second trainer on it is refused naming
//! the holder's pid) and leftovers of interrupted checkpoint writes are cleaned first. The first
//! Ctrl-C (SIGINT/SIGTERM) stops after the current step (or cuts a DAPO refill), saves a
//! checkpoint and prints how to resume (exit 0); a second one exits at once (code 130), leaving
//! the last complete checkpoint as it was. A failed step saves the last completed step and
//! exits 1 naming the cause, with the resume command.
//!
//! Several processes: `--nproc-per-node N` starts N local ranks (see `launch.rs`); torchrun and
//! srun set the environment themselves. Rank 0 holds the run lock and writes the run directory.
//! Phase 1 of the data-parallel step (issue 14): every rank loads, rendezvouses and passes a
//! barrier; then rank 0 trains the full global batch alone and ranks > 0 exit 0 (the step's
//! reductions are not wired yet).

use anyhow::Result;
use rlpo_train::run_lock::RunLock;
use rlpo_train::{checkpoint, Recipe, RunEnd, TrainError, Trainer};
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
    /// Start N ranks of this command on this node (torchrun's variables set for each, output
    /// prefixed with the rank, signals forwarded); see docs/distributed.md.
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
}

/// Load, train, report where the outputs are.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    let name = args.recipe.as_ref().map_or("embedded quickstart".to_string(), |p| p.display().to_string());
    // Relative recipe paths are relative to the working directory; say where this run writes.
    let run_dir = std::path::absolute(recipe.run_dir())?;
    eprintln!("rlpo train: {name} -> {}", run_dir.display());
    if let Some(n) = args.nproc_per_node {
        // The recipe loaded once here, so a typo is reported once, not by every rank.
        let code = crate::launch::launch(n)?;
        if code != 0 {
            std::process::exit(code);
        }
        return Ok(());
    }
    // Rank 0 alone owns the run directory (lock, leftovers); the other ranks write nothing there.
    let main_rank = rlpo_dist::LaunchEnv::from_env()?.rank == 0;
    let ckpt_root = checkpoint::checkpoints_dir(&run_dir);
    // Before anything is written (Trainer::new creates the run directory and its logs).
    anyhow::ensure!(
        args.resume != "never" || checkpoint::list(&ckpt_root).is_empty(),
        "{} already has checkpoints; use --resume auto to continue it, or choose another run.name",
        run_dir.display()
    );
    // One trainer per run directory; held until this function returns.
    let _lock = if main_rank {
        let (lock, stale) = RunLock::acquire(&run_dir)?;
        if let Some(note) = stale {
            eprintln!("note: {note}");
        }
        // Under the lock, leftovers of interrupted checkpoint writes are nobody's live work.
        for msg in checkpoint::clean_leftovers(&ckpt_root)? {
            eprintln!("note: {msg}");
        }
        Some(lock)
    } else {
        None
    };
    // Installed before the trainer starts its reward plugins: they run in their own process
    // groups, so an interrupt during start-up must reach this handler (not kill rlpo outright and
    // orphan them). A first interrupt then stops before the first step.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // Second signal: leave now; nothing half-written is published under a final name.
            // Reward plugins run in their own process groups (the terminal's signal does not
            // reach them) and exit() skips their destructors: stop them here.
            rlpo_reward::external::kill_all_groups();
            eprintln!("second interrupt: exiting immediately");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current step (press Ctrl-C again to exit at once)");
    })?;
    let mut trainer = Trainer::new(recipe)?;
    trainer.stop = stop;
    if trainer.dist.is_main() {
        eprintln!("{}", trainer.describe_paths());
    }
    if trainer.dist.is_distributed() {
        let d = &trainer.dist;
        d.barrier("start of training")?;
        if !d.is_main() {
            eprintln!("rank {} of {}: rendezvous and barrier done; the data-parallel step is not wired yet (issue 14 phase 2): rank 0 trains alone", d.rank(), d.world());
            return Ok(());
        }
        eprintln!("rank 0 of {}: rendezvous and barrier done; training the full global batch on this rank (issue 14 phase 1)", d.world());
    }
    let result = train(&mut trainer, &args, &run_dir, &ckpt_root);
    if let Err(e) = &result {
        // The other ranks' next collective then names this failure instead of a dead peer.
        trainer.dist.report_failure(&format!("{e:#}"));
    }
    result
}

/// Resume as asked, train, report.
fn train(trainer: &mut Trainer, args: &Args, run_dir: &std::path::Path, ckpt_root: &std::path::Path) -> Result<()> {
    match args.resume.as_str() {
        "never" => {}
        "auto" => {
            if let Some(dir) = trainer.resume_auto()? {
                resumed(trainer, &dir)?;
            } else if !checkpoint::list(ckpt_root).is_empty() {
                anyhow::bail!("{} has checkpoints but none verifies; use --resume PATH or --resume never with a new run.name", run_dir.display());
            }
        }
        path => {
            let dir = PathBuf::from(path);
            trainer.resume_from(&dir)?;
            resumed(trainer, &dir)?;
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
    match trainer.run() {
        Ok(RunEnd::Completed) => {}
        Ok(RunEnd::Stopped { checkpoint, cut }) => {
            if let Some(cut) = cut {
                eprintln!("interrupt: {cut}; the step is redone on resume");
            }
            eprintln!(
                "stopped at step {} of {}; checkpoint saved: {}\nresume with: {} (--resume auto is the default)",
                trainer.state.step,
                trainer.recipe.trainer.total_steps,
                checkpoint.as_deref().map_or("(none: no step completed)".into(), |d| d.display().to_string()),
                resume_command(args)
            );
        }
        Err(TrainError::StepFailed(f)) => {
            let mut lines = vec![f.to_string()];
            lines.extend(f.notes.iter().map(|n| format!("note: {n}")));
            lines.push(match &f.checkpoint {
                Some((step, dir)) if f.emergency => format!("checkpoint of the last completed step saved: {} (step {step})", dir.display()),
                Some((step, dir)) => format!("the last checkpoint is {} (step {step})", dir.display()),
                None => "no checkpoint: the run has not completed a step that could be saved".into(),
            });
            lines.push(format!("resume with: {}", resume_command(args)));
            anyhow::bail!("{}", lines.join("\n"));
        }
        Err(e) => return Err(e.into()),
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
    let report = trainer.run_dir.join("report.html");
    if report.is_file() {
        eprintln!("report: {} (open it in a browser; rlpo report RUN rewrites it)", report.display());
    }
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
    checkpoint::trim_step_log(&trainer.run_dir.join(rlpo_train::report::ROLLOUTS_FILE), trainer.state.step)?;
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
