//! `rlpo train [RECIPE] [--set section.key=value ...]`: run a recipe (the embedded CPU quickstart
//! when none is given). The run directory is locked (a second trainer on it is refused naming
//! the holder's pid) and leftovers of interrupted checkpoint writes are cleaned first. The first
//! Ctrl-C (SIGINT/SIGTERM) stops after the current step (or cuts a DAPO refill), saves a
//! checkpoint and prints how to resume (exit 0); a second one exits at once (code 130), leaving
//! the last complete checkpoint as it was. A failed step saves the last completed step and
//! exits 1 naming the cause, with the resume command (spelled with the name the binary was
//! invoked by).
//!
//! Before anything is written, a resume the checkpoint would refuse (changed training keys, a
//! weights-only checkpoint) is refused with the command that starts a new run from its weights
//! instead: `--init-from CKPT` (weights only; fresh optimizer, schedule and data order). A run
//! directory this command created is removed again when it ends before training began, so a
//! refused run leaves nothing behind. Before the first step it prints the prompt format and one
//! rendered prompt; `--show-samples N` prints N rollouts of every step.
//!
//! Several processes: `--nproc-per-node N` starts N local ranks (see `launch.rs`); torchrun and
//! srun set the environment themselves. Every rank trains its part of each step's global batch
//! (docs/distributed.md); rank 0 holds the run lock and writes the run directory, checkpoints
//! and metrics, and chooses the checkpoint `--resume auto` continues from.

use anyhow::Result;
use rlpo_train::checkpoint::init as init_from;
use rlpo_train::run_lock::RunLock;
use rlpo_train::{checkpoint, program, Recipe, RunEnd, TrainError, Trainer};
use std::path::{Path, PathBuf};
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
    /// Start a new run from the weights of a checkpoint, a run (its newest checkpoint) or an HF
    /// model directory (`final/`, an export), with a fresh optimizer, schedule and data order;
    /// the recipe may differ from the one that wrote it (e.g. a new learning rate).
    #[arg(long, value_name = "CKPT", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Print the first N rollouts of every step on the console (prompt, response, reward,
    /// advantage); all of them are in RUN/rollouts.jsonl.
    #[arg(long, value_name = "N", default_value_t = 0)]
    show_samples: usize,
    /// Start N ranks of this command on this node (torchrun's variables set for each, output
    /// prefixed with the rank, signals forwarded); see docs/distributed.md.
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
}

/// Removes a run directory this command created when it ends before training began (a refused
/// resume, a model that does not load, a plugin that does not start): a refused run leaves
/// nothing behind. Dropped while the run lock is still held.
struct FreshRunDir {
    dir: PathBuf,
    armed: bool,
}

impl Drop for FreshRunDir {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("note: could not remove {} after the failed start: {e}", self.dir.display());
            }
        }
    }
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
    let created = !run_dir.exists();
    // Before anything is written (Trainer::new creates the run directory and its logs).
    preflight(&args, &recipe, &run_dir, &ckpt_root)?;
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
    // Declared after the lock, so it is dropped (and the directory removed) while the lock is held.
    let mut fresh = FreshRunDir { dir: run_dir.clone(), armed: created && main_rank };
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
    let mut trainer = match &args.init_from {
        Some(dir) => Trainer::init_from(recipe, dir)?,
        None => Trainer::new(recipe)?,
    };
    trainer.stop = stop;
    trainer.show_samples = args.show_samples;
    if main_rank {
        eprintln!("{}", trainer.describe_paths());
        eprint!("{}", trainer.prompt_preview()?);
        if let Some(dir) = &args.init_from {
            let weights = init_from::weights_dir(dir)?;
            init_from::record(&run_dir, &weights)?;
            eprintln!("init: weights from {} (fresh optimizer, schedule and data order)", weights.display());
        }
    }
    if trainer.dist.is_distributed() {
        let d = &trainer.dist;
        d.barrier("start of training")?;
        if d.is_main() {
            let r = &trainer.recipe;
            eprintln!(
                "data-parallel: {} ranks, each rolling out about {} of the {} prompts of a step and training on its rows; gradients summed over ranks",
                d.world(),
                r.trainer.prompts_per_step.div_ceil(d.world()),
                r.trainer.prompts_per_step
            );
        }
    }
    let result = train(&mut trainer, &args, &run_dir, &ckpt_root, &mut fresh);
    if let Err(e) = &result {
        // The other ranks' next collective then names this failure (its first line: the
        // cause) instead of a dead peer.
        let text = format!("{e:#}");
        trainer.dist.report_failure(text.lines().next().unwrap_or_default());
    }
    result
}

/// What `rlpo train` checks before it writes anything: `--resume never` on a run with
/// checkpoints, `--init-from` on a run that already has some, a run started with `--init-from`
/// and stopped before its first checkpoint, and whether the checkpoint to resume accepts this
/// recipe (a refusal names `--init-from` as the way to start from its weights instead).
fn preflight(args: &Args, recipe: &Recipe, run_dir: &Path, ckpt_root: &Path) -> Result<()> {
    let have = checkpoint::list(ckpt_root);
    anyhow::ensure!(
        args.resume != "never" || have.is_empty(),
        "{} already has checkpoints; use --resume auto to continue it, or choose another run.name",
        run_dir.display()
    );
    if let Some(dir) = &args.init_from {
        anyhow::ensure!(
            have.is_empty(),
            "--init-from starts a new run, but {} already has checkpoints: continue it with `{}` (no --init-from), or choose another run.name (--set run.name=NEW)",
            run_dir.display(),
            resume_command(args, false)
        );
        init_from::weights_dir(dir)?;
        return Ok(());
    }
    if have.is_empty() {
        if let Some(from) = init_from::recorded(run_dir) {
            anyhow::bail!(
                "{} was started with --init-from {} and has no checkpoint yet: add `--init-from {}` again (or --resume never with another run.name to start from model.path)",
                run_dir.display(),
                from.display(),
                from.display()
            );
        }
    }
    let candidate = match args.resume.as_str() {
        "never" => None,
        // The checkpoint --resume auto will most likely take (it is verified later).
        "auto" => have.iter().map(|(_, d)| d.clone()).find(|d| d.join("manifest.json").is_file()),
        path => Some(PathBuf::from(path)),
    };
    if let Some(dir) = candidate {
        // Other errors (unreadable files): resume itself reports them (and --resume auto may
        // skip the checkpoint).
        if let Err(TrainError::ResumeRefused { dir, why }) = checkpoint::preflight(&dir, recipe) {
            return Err(refusal(args, &dir, &why));
        }
    }
    Ok(())
}

/// A refused resume, with the command that starts a new run from the checkpoint's weights.
fn refusal(args: &Args, dir: &Path, why: &str) -> anyhow::Error {
    let mut cmd = vec![format!("{} train", program::name())];
    if let Some(p) = &args.recipe {
        cmd.push(quote(&p.display().to_string()));
    }
    for s in &args.set {
        cmd.push(format!("--set {}", quote(s)));
    }
    cmd.push(format!("--init-from {}", quote(&dir.display().to_string())));
    cmd.push("--set run.name=NEW_NAME".into());
    anyhow::anyhow!(
        "refusing to resume {}: {why}\nto start a new run from its weights instead (fresh optimizer and schedule, this recipe): {}",
        dir.display(),
        cmd.join(" ")
    )
}

/// Resume as asked, train, report.
fn train(trainer: &mut Trainer, args: &Args, run_dir: &Path, ckpt_root: &Path, fresh: &mut FreshRunDir) -> Result<()> {
    let resume = |r: Result<(), TrainError>| -> Result<()> {
        match r {
            Err(TrainError::ResumeRefused { dir, why }) => Err(refusal(args, &dir, &why)),
            other => other.map_err(Into::into),
        }
    };
    match args.resume.as_str() {
        _ if args.init_from.is_some() => {}
        "never" => {}
        "auto" => {
            match trainer.resume_auto() {
                Ok(Some(dir)) => resumed(trainer, &dir)?,
                Ok(None) if !checkpoint::list(ckpt_root).is_empty() => {
                    anyhow::bail!("{} has checkpoints but none verifies; use --resume PATH or --resume never with a new run.name", run_dir.display());
                }
                Ok(None) => {}
                Err(e) => resume(Err(e))?,
            }
        }
        path => {
            let dir = PathBuf::from(path);
            resume(trainer.resume_from(&dir))?;
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
    if trainer.dist.is_main() {
        let p = program::name();
        let q = quote(&run_dir.display().to_string());
        let what = if trainer.recipe.metrics.samples_jsonl { "every row of every step" } else { "the first metrics.text_samples groups of each step" };
        eprintln!("samples: {p} inspect {q} --samples last ({what} is in rollouts.jsonl)");
        if trainer.recipe.metrics.tensorboard {
            eprintln!("curves:  {p} tensorboard {q}");
        }
    }
    // Training has begun: whatever happens now, the run directory is kept.
    fresh.armed = false;
    let completed = match trainer.run() {
        Ok(RunEnd::Completed) => true,
        Ok(RunEnd::Stopped { .. }) if !trainer.dist.is_main() => {
            eprintln!("rank {}: stopped at step {} (rank 0 saved the checkpoint)", trainer.dist.rank(), trainer.state.step);
            false
        }
        Ok(RunEnd::Stopped { checkpoint, cut }) => {
            if let Some(cut) = cut {
                eprintln!("interrupt: {cut}; the step is redone on resume");
            }
            eprintln!(
                "stopped at step {} of {}; checkpoint saved: {}\nresume with: {} (--resume auto is the default)",
                trainer.state.step,
                trainer.recipe.trainer.total_steps,
                checkpoint.as_deref().map_or("(none: no step completed)".into(), |d| d.display().to_string()),
                resume_command(args, checkpoint.is_none())
            );
            false
        }
        Err(TrainError::StepFailed(f)) if !trainer.dist.is_main() => {
            anyhow::bail!("{f}\n(rank 0 writes the checkpoints and prints how to resume)");
        }
        Err(TrainError::StepFailed(f)) => {
            let mut lines = vec![f.to_string()];
            lines.extend(f.notes.iter().map(|n| format!("note: {n}")));
            lines.push(match &f.checkpoint {
                Some((step, dir)) if f.emergency => format!("checkpoint of the last completed step saved: {} (step {step})", dir.display()),
                Some((step, dir)) => format!("the last checkpoint is {} (step {step})", dir.display()),
                None => "no checkpoint: the run has not completed a step that could be saved".into(),
            });
            lines.push(format!("resume with: {}", resume_command(args, f.checkpoint.is_none())));
            anyhow::bail!("{}", lines.join("\n"));
        }
        Err(e) => return Err(e.into()),
    };
    if !trainer.dist.is_main() {
        return Ok(());
    }
    let last: Vec<f64> = trainer.history.iter().rev().take(5).filter_map(|m| m.get("reward/mean")).collect();
    if !last.is_empty() {
        eprintln!("mean reward of the last {} step(s): {:.3}", last.len(), last.iter().sum::<f64>() / last.len() as f64);
    }
    let a = trainer.learner.model.attention_counts();
    eprintln!(
        "attention calls: {} SDPA per sequence (packed learner rows), {} SDPA is_causal (packed rows), {} SDPA with a mask (fallback), {} grouped decode steps",
        a.sdpa_varlen, a.sdpa_causal, a.sdpa_masked, a.grouped_decode
    );
    eprintln!("run directory: {} ({})", trainer.run_dir.display(), outputs(&trainer.run_dir, completed && trainer.recipe.checkpoint.save_final).join(", "));
    let report = trainer.run_dir.join("report.html");
    if report.is_file() {
        eprintln!("report: {} (open it in a browser; `{} report {}` rewrites it)", report.display(), program::name(), quote(&trainer.run_dir.display().to_string()));
    }
    Ok(())
}

/// The outputs of a run directory that exist, for the end-of-run line; `final/` only when this
/// run wrote it (it completed with `checkpoint.save_final`).
fn outputs(run_dir: &Path, wrote_final: bool) -> Vec<String> {
    let mut v: Vec<String> = ["metrics.jsonl", "rollouts.jsonl", "reward.log", "tensorboard", "checkpoints", "report.html"]
        .into_iter()
        .filter(|f| run_dir.join(f).exists())
        .map(|f| if run_dir.join(f).is_dir() { format!("{f}/") } else { f.to_string() })
        .collect();
    if wrote_final && run_dir.join("final").is_dir() {
        v.push("final/".into());
    }
    v
}

/// Report a resume and drop `metrics.jsonl` lines of steps after the checkpoint (they belong to
/// the interrupted attempt and are logged again).
fn resumed(trainer: &Trainer, dir: &std::path::Path) -> Result<()> {
    if !trainer.dist.is_main() {
        return Ok(());
    }
    eprintln!("resumed from {} (step {})", dir.display(), trainer.state.step);
    let dropped = checkpoint::trim_metrics_log(&trainer.run_dir, trainer.state.step)?;
    if dropped > 0 {
        eprintln!("metrics.jsonl: dropped {dropped} line(s) of steps after {} from the interrupted attempt", trainer.state.step);
    }
    rlpo_train::report::rollouts::trim_after(&trainer.run_dir, trainer.state.step)?;
    Ok(())
}

/// A shell word as typed: bare when safe, single-quoted otherwise.
fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command line that continues this run, with the name the binary was invoked by;
/// `with_init`: repeat `--init-from` (no checkpoint of the new run exists yet).
fn resume_command(args: &Args, with_init: bool) -> String {
    let mut parts = vec![format!("{} train", program::name())];
    if let Some(p) = &args.recipe {
        parts.push(quote(&p.display().to_string()));
    }
    for s in &args.set {
        parts.push(format!("--set {}", quote(s)));
    }
    if let Some(dir) = args.init_from.as_ref().filter(|_| with_init) {
        parts.push(format!("--init-from {}", quote(&dir.display().to_string())));
    }
    parts.join(" ")
}
