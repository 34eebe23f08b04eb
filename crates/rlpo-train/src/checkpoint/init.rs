//! `rlpo train RECIPE --init-from CKPT`: a new run that starts from a checkpoint's weights.
//!
//! Only the policy weights are taken: the optimizer, the learning-rate schedule, the data order,
//! the algorithm schedules (D³S, RMT) and the step count start fresh, as in any new run, so the
//! recipe may change anything (a new learning rate, another dataset). The KL reference model,
//! when `loss.kl_coef > 0`, stays `model.path`'s weights. `CKPT` is a checkpoint
//! (`<run>/checkpoints/step-NNNNNN`, verified first), a run directory (its newest verified
//! checkpoint) or an HF model directory such as a run's `final/` or an `rlpo export`; its model
//! must have the architecture of `model.path` (same family, vocabulary and parameter count).
//!
//! The run directory remembers where it started ([`INIT_FROM_FILE`]), so a run stopped before its
//! first checkpoint is not silently restarted from `model.path`.

use crate::error::{io, Result, TrainError};
use rlpo_model::{CausalLm, ModelConfig};
use std::path::{Path, PathBuf};

/// `<run>/init_from.txt`: the weights a run started from (one path).
pub const INIT_FROM_FILE: &str = "init_from.txt";

/// The HF model directory holding the weights `path` names: `<ckpt>/model` of a checkpoint or of
/// a run's newest verified checkpoint, or `path` itself when it is a model directory.
pub fn weights_dir(path: &Path) -> Result<PathBuf> {
    let is_model = |p: &Path| p.join("config.json").is_file();
    if is_model(path) && !path.join("manifest.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let ckpt = super::resolve(path, true).map_err(|e| {
        TrainError::Aborted(format!("--init-from {}: {e} (or give an HF model directory such as a run's final/)", path.display()))
    })?;
    Ok(ckpt.join("model"))
}

/// Load the weights of `path` (see [`weights_dir`]) into `model`, refusing another architecture.
/// Returns the model directory read.
pub fn load_weights(model: &CausalLm, path: &Path) -> Result<PathBuf> {
    let dir = weights_dir(path)?;
    let saved = ModelConfig::from_dir(&dir)?;
    let now = &model.config;
    if saved.family != now.family || saved.vocab_size != now.vocab_size || saved.num_parameters() != now.num_parameters() {
        return Err(TrainError::Aborted(format!(
            "--init-from {}: its model ({:?}, {} parameters, vocab {}) is not model.path's ({:?}, {} parameters, vocab {})",
            dir.display(),
            saved.family,
            saved.num_parameters(),
            saved.vocab_size,
            now.family,
            now.num_parameters(),
            now.vocab_size
        )));
    }
    rlpo_model::weights::load_into(model.var_store(), &dir, now.tie_word_embeddings)?;
    Ok(dir)
}

/// Record in `run_dir` that the run started from `dir`.
pub fn record(run_dir: &Path, dir: &Path) -> Result<()> {
    let path = run_dir.join(INIT_FROM_FILE);
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::write(&path, format!("{}\n", abs.display())).map_err(|e| io(&path, e))
}

/// The weights `run_dir` started from, if it was started with `--init-from`.
pub fn recorded(run_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(run_dir.join(INIT_FROM_FILE)).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}
