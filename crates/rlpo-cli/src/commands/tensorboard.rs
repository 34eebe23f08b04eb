//! `rlpo tensorboard RUN [-- TENSORBOARD_ARGS...]`: start TensorBoard on a run directory (or on
//! `checkpoints/` to compare runs). TensorBoard is installed in the project's venv by
//! `scripts/setup.sh`, not on PATH, so it is looked up in order: `$RLPO_TENSORBOARD`, the active
//! venv (`$VIRTUAL_ENV/bin`), the repository's `.venv/bin` next to this binary
//! (`<repo>/target/<profile>/rlpo`, symlinks resolved, so an installed `rlpo` finds it too), then
//! PATH. The process is replaced by TensorBoard (`exec`), so Ctrl-C stops it directly.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Arguments of `rlpo tensorboard`.
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (`checkpoints/NAME`) or a directory of runs (`checkpoints`).
    run: PathBuf,
    /// Arguments passed on to TensorBoard after `--`, e.g. `-- --port 6007 --bind_all`.
    #[arg(last = true)]
    extra: Vec<String>,
}

/// The TensorBoard executable (see the module docs), or why none was found.
fn find() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("RLPO_TENSORBOARD") {
        return Ok(PathBuf::from(p));
    }
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        candidates.push(Path::new(&v).join("bin/tensorboard"));
    }
    if let Ok(exe) = std::env::current_exe().and_then(|e| e.canonicalize()) {
        // target/<profile>/rlpo, target/<dir>/<profile>/rlpo.
        for up in [2, 3] {
            if let Some(repo) = exe.ancestors().nth(up + 1) {
                candidates.push(repo.join(".venv/bin/tensorboard"));
            }
        }
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("tensorboard");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    tried.push("tensorboard on PATH".into());
    anyhow::bail!(
        "TensorBoard not found (tried {}); run scripts/setup.sh (it installs it into .venv), or set RLPO_TENSORBOARD to its path",
        tried.join(", ")
    )
}

/// Exec TensorBoard on the run.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.run.is_dir(), "{}: not a directory (expected a run directory such as checkpoints/NAME, or checkpoints)", args.run.display());
    let has_events = args.run.join("tensorboard").is_dir()
        || std::fs::read_dir(&args.run).into_iter().flatten().flatten().any(|e| e.path().join("tensorboard").is_dir());
    if !has_events {
        eprintln!(
            "warning: {} has no tensorboard/ directory (metrics.tensorboard = false, or no step finished yet); TensorBoard will show nothing until one appears",
            args.run.display()
        );
    }
    let tb = find()?;
    let mut cmd = std::process::Command::new(&tb);
    cmd.arg("--logdir").arg(&args.run).args(&args.extra);
    eprintln!("starting {} --logdir {} {} (Ctrl-C stops it)", tb.display(), args.run.display(), args.extra.join(" "));
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("starting {}", tb.display()))
}
