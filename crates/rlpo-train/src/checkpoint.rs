//! Atomic, verified checkpoints and resume.
//!
//! A checkpoint is `<run>/checkpoints/step-NNNNNN/`:
//! - `model/` — the policy as an HF directory (transformers loads it as is);
//! - `optimizer.safetensors` — AdamW moments (`exp_avg/<name>`, `exp_avg_sq/<name>`) and fp32
//!   master weights (`master/<name>`);
//! - `trainer_state.json` — step, weight version, algorithm state (D³S progress, HAPO statistics),
//!   data cursor, reward counters, non-finite streak;
//! - `recipe.resolved.toml` — the recipe it was trained with;
//! - `manifest.json` — size and sha256 of every other file.
//!
//! It is written under a temporary name, every file fsynced, then renamed: a crash mid-write leaves
//! only a `.tmp` directory, never a partial `step-*`. Resume verifies the manifest and skips (with a
//! warning naming it) any checkpoint that fails.

use crate::error::{io, Result, TrainError};
use crate::trainer::Trainer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Format version of this file.
    pub format: u32,
    /// Completed training steps.
    pub step: u64,
    /// Weight version.
    pub version: u64,
    /// Algorithm schedule state.
    pub algo: rlpo_algo::AlgoState,
    /// Where the dataset continues.
    pub data_cursor: rlpo_data::DataCursor,
    /// AdamW updates applied.
    pub optimizer_step: u64,
    /// Non-finite updates in a row at save time.
    pub nonfinite_in_a_row: u32,
    /// Cumulative reward counters `(samples, errors, timeouts, restarts)`.
    pub reward_counters: [u64; 4],
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    step: u64,
    files: Vec<ManifestEntry>,
}

/// Directory holding a run's checkpoints.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let digest = Sha256::digest(&bytes);
    Ok((bytes.len() as u64, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

fn files_under(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let p = entry.map_err(|e| io(dir, e))?.path();
        if p.is_dir() {
            files_under(&p, base, out)?;
        } else {
            out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
        }
    }
    Ok(())
}

fn fsync(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| io(path, e))
}

/// Save the trainer's full state as `step-NNNNNN` and apply `keep_last` / `keep_every`.
pub fn save(t: &Trainer) -> Result<PathBuf> {
    let root = checkpoints_dir(&t.run_dir);
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let name = format!("step-{:06}", t.state.step);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    t.learner.model.save(&tmp.join("model"), None)?;
    let opt = &t.learner.opt;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (prefix, map) in [("exp_avg", &opt.exp_avg), ("exp_avg_sq", &opt.exp_avg_sq), ("master", &opt.master)] {
        for (n, v) in map {
            tensors.push((format!("{prefix}/{n}"), v.shallow_clone()));
        }
    }
    let opt_path = tmp.join("optimizer.safetensors");
    Tensor::write_safetensors(&tensors, &opt_path)?;
    let m = t.rewards_metrics();
    let state = TrainerState {
        format: 1,
        step: t.state.step,
        version: t.version,
        algo: t.state,
        data_cursor: t.data_cursor(),
        optimizer_step: opt.step,
        nonfinite_in_a_row: t.learner.nonfinite_in_a_row,
        reward_counters: [m.samples, m.errors, m.timeouts, m.restarts],
    };
    let state_path = tmp.join("trainer_state.json");
    let text = serde_json::to_string_pretty(&state).map_err(|e| TrainError::Aborted(e.to_string()))?;
    std::fs::write(&state_path, text).map_err(|e| io(&state_path, e))?;
    let recipe_path = tmp.join("recipe.resolved.toml");
    std::fs::write(&recipe_path, t.recipe.to_toml()).map_err(|e| io(&recipe_path, e))?;
    let mut files = Vec::new();
    files_under(&tmp, &tmp, &mut files)?;
    files.sort();
    let mut entries = Vec::new();
    for f in files {
        let full = tmp.join(&f);
        fsync(&full)?;
        let (size, sha256) = sha256_file(&full)?;
        entries.push(ManifestEntry { path: f.to_string_lossy().into_owned(), size, sha256 });
    }
    let manifest = Manifest { step: t.state.step, files: entries };
    let mpath = tmp.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| TrainError::Aborted(e.to_string()))?;
    std::fs::write(&mpath, text).map_err(|e| io(&mpath, e))?;
    fsync(&mpath)?;
    if let Ok(dir) = std::env::var("RLPO_TEST_PAUSE_BEFORE_RENAME") {
        // Test hook: lets a test SIGKILL the trainer while a checkpoint is half published.
        std::fs::write(Path::new(&dir).join("paused"), b"1").ok();
        std::thread::sleep(std::time::Duration::from_secs(600));
    }
    let final_dir = root.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
    }
    std::fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
    fsync(&root)?;
    prune(&root, t.recipe.checkpoint.keep_last, t.recipe.checkpoint.keep_every)?;
    Ok(final_dir)
}

/// Complete checkpoints under `root`, newest first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0));
    out
}

fn prune(root: &Path, keep_last: usize, keep_every: u64) -> Result<()> {
    for (i, (step, path)) in list(root).into_iter().enumerate() {
        let kept_by_every = keep_every > 0 && step % keep_every == 0;
        if i >= keep_last.max(1) && !kept_by_every {
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// Check every file of a checkpoint against its manifest; `Err` says which file is wrong.
pub fn verify(dir: &Path) -> Result<()> {
    let mpath = dir.join("manifest.json");
    let text = std::fs::read_to_string(&mpath).map_err(|e| io(&mpath, e))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| TrainError::Aborted(format!("{}: unreadable manifest: {e}", mpath.display())))?;
    for f in &manifest.files {
        let p = dir.join(&f.path);
        let (size, sha) = sha256_file(&p)?;
        if size != f.size || sha != f.sha256 {
            return Err(TrainError::Aborted(format!("{}: size or sha256 differs from manifest.json", p.display())));
        }
    }
    Ok(())
}

/// The newest checkpoint of `run_dir` that verifies; corrupted ones are skipped with a warning.
pub fn newest_verified(run_dir: &Path) -> Option<PathBuf> {
    for (_, dir) in list(&checkpoints_dir(run_dir)) {
        match verify(&dir) {
            Ok(()) => return Some(dir),
            Err(e) => eprintln!("warning: skipping checkpoint {}: {e}", dir.display()),
        }
    }
    None
}

/// Keys whose change is safe when resuming: run length, logging and checkpoint cadence.
const SAFE_TO_CHANGE: &[&str] = &["trainer.total_steps", "metrics.", "checkpoint.save_every", "checkpoint.keep_last", "checkpoint.keep_every", "run.threads"];

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Keys that differ between the checkpoint's recipe and `now`, other than the safe ones.
pub fn recipe_differences(saved: &str, now: &str) -> Vec<String> {
    let parse = |s: &str| s.parse::<toml::Table>().map(toml::Value::Table).unwrap_or(toml::Value::Table(Default::default()));
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &parse(saved), &mut a);
    flatten("", &parse(now), &mut b);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .filter(|k| !SAFE_TO_CHANGE.iter().any(|s| if s.ends_with('.') { k.starts_with(s) } else { k.as_str() == *s }))
        .map(|k| format!("{k}: {} -> {}", a.get(k).map_or("(unset)", String::as_str), b.get(k).map_or("(unset)", String::as_str)))
        .collect()
}

/// Load a verified checkpoint into `t`, refusing a changed recipe or a different model.
pub fn load(t: &mut Trainer, dir: &Path) -> Result<()> {
    verify(dir)?;
    let saved_recipe = std::fs::read_to_string(dir.join("recipe.resolved.toml")).map_err(|e| io(dir.join("recipe.resolved.toml"), e))?;
    let diffs = recipe_differences(&saved_recipe, &t.recipe.to_toml());
    if !diffs.is_empty() {
        return Err(TrainError::Aborted(format!(
            "refusing to resume {}: the recipe changed in keys that affect training:\n  {}\n(safe to change: {})",
            dir.display(),
            diffs.join("\n  "),
            SAFE_TO_CHANGE.join(", ")
        )));
    }
    let saved_cfg = rlpo_model::ModelConfig::from_dir(&dir.join("model"))?;
    let now_cfg = &t.learner.model.config;
    if saved_cfg.num_parameters() != now_cfg.num_parameters() || saved_cfg.family != now_cfg.family || saved_cfg.vocab_size != now_cfg.vocab_size {
        return Err(TrainError::Aborted(format!(
            "refusing to resume {}: its model ({:?}, {} parameters) is not the recipe's model ({:?}, {} parameters)",
            dir.display(),
            saved_cfg.family,
            saved_cfg.num_parameters(),
            now_cfg.family,
            now_cfg.num_parameters()
        )));
    }
    rlpo_model::weights::load_into(t.learner.model.var_store(), &dir.join("model"), now_cfg.tie_word_embeddings)?;
    let opt_path = dir.join("optimizer.safetensors");
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(&opt_path)?.into_iter().collect();
    let opt = &mut t.learner.opt;
    for (prefix, map) in [("exp_avg", &mut opt.exp_avg), ("exp_avg_sq", &mut opt.exp_avg_sq), ("master", &mut opt.master)] {
        for (n, v) in map.iter_mut() {
            let key = format!("{prefix}/{n}");
            let src = saved.get(&key).ok_or_else(|| TrainError::Aborted(format!("{}: missing tensor {key}", opt_path.display())))?;
            tch::no_grad(|| v.f_copy_(src))?;
        }
    }
    let spath = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&spath).map_err(|e| io(&spath, e))?;
    let st: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::Aborted(format!("{}: {e}", spath.display())))?;
    opt.step = st.optimizer_step;
    t.restore_state(&st)?;
    Ok(())
}
