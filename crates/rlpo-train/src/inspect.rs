//! `rlpo inspect`: what a checkpoint holds and whether it is intact.
//!
//! Reads `trainer_state.json` (step, weight version, metrics of the step at save time),
//! `recipe.resolved.toml` (a summary read key by key, so recipes of older builds still show) and
//! `manifest.json`, lists file sizes by part, and verifies every file's size and sha256. Nothing
//! here fails on a damaged checkpoint: the damage is part of the report ([`Inspection::ok`]).

use crate::checkpoint::{self, TrainerState};
use crate::error::Result;
use crate::recipe::Recipe;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The report of [`inspect`].
#[derive(Debug)]
pub struct Inspection {
    /// The checkpoint directory inspected.
    pub dir: PathBuf,
    /// Its trainer state, or why it could not be read.
    pub state: std::result::Result<TrainerState, String>,
    /// `(key, value)` lines summarising the recipe, or why it could not be read.
    pub recipe: std::result::Result<Vec<(String, String)>, String>,
    /// `(path, bytes on disk)` of the manifest's files and the manifest; `None` = missing.
    pub files: Vec<(String, Option<u64>)>,
    /// `Ok` or the first file that does not match the manifest (or the manifest's own problem).
    pub verified: std::result::Result<(), String>,
}

impl Inspection {
    /// Whether the checkpoint verifies and its state and recipe are readable.
    pub fn ok(&self) -> bool {
        self.verified.is_ok() && self.state.is_ok() && self.recipe.is_ok()
    }
}

fn lookup<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let mut parts = key.split('.');
    let mut v = t.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

fn show(v: Option<&toml::Value>) -> String {
    match v {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "(not set)".into(),
    }
}

/// The value in force for `key` of a recipe that parses (what training used), for keys whose
/// resolved form leaves them unset (`None` = the algorithm's default).
fn effective(r: &Recipe, key: &str) -> Option<String> {
    Some(match key {
        "loss.agg" => crate::check::spelled(&r.loss.agg_mode()),
        "loss.clip" => {
            let (lo, hi) = r.loss.clip_widths();
            format!("[{lo}, {hi}]")
        }
        "data.prompt_format" => match r.data.prompt_format {
            Some(f) => f.name().to_string(),
            None => "unset (chat when the model has a chat template)".into(),
        },
        _ => return None,
    })
}

/// `(key, value)` lines of the checkpoint's recipe: the values training used (defaults resolved),
/// read key by key so that a recipe of an older build still shows what it can.
fn recipe_summary(dir: &Path) -> std::result::Result<Vec<(String, String)>, String> {
    let path = dir.join("recipe.resolved.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = Recipe::from_toml(&text, &path, &[]).ok();
    let keys = [
        "run.name",
        "model.path",
        "model.dtype",
        "data.prompt_format",
        "algorithm.advantage",
        "loss.base",
        "loss.agg",
        "loss.clip",
        "trainer.total_steps",
        "trainer.prompts_per_step",
        "rollout.group_size",
        "optim.lr",
        "checkpoint.save_optimizer",
    ];
    let mut out: Vec<(String, String)> = keys
        .iter()
        .map(|k| {
            let v = match lookup(&t, k) {
                Some(v) => show(Some(v)),
                None => parsed.as_ref().and_then(|r| effective(r, k)).unwrap_or_else(|| show(None)),
            };
            (k.to_string(), v)
        })
        .collect();
    // DAPO's table is always spelled out; its parts are on when present as tables or `true`.
    let mut parts: Vec<String> = lookup(&t, "algorithm.dapo")
        .and_then(toml::Value::as_table)
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_table() || v.as_bool() == Some(true))
        .map(|(k, _)| format!("dapo.{k}"))
        .collect();
    parts.extend(["d3s", "hapo", "rmt"].into_iter().filter(|p| lookup(&t, &format!("algorithm.{p}")).is_some()).map(String::from));
    out.push(("algorithm parts".into(), if parts.is_empty() { "none".into() } else { parts.join(", ") }));
    Ok(out)
}

/// Inspect `path`: a checkpoint, or a run directory / its `checkpoints/` (the newest complete
/// checkpoint, verified or not). `Err` only when no checkpoint is found there.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let dir = checkpoint::resolve(path, false)?;
    let verified = checkpoint::verify(&dir).map_err(|e| e.to_string());
    let mut files = Vec::new();
    if let Ok(m) = checkpoint::read_manifest(&dir) {
        for f in m.files {
            let size = std::fs::metadata(dir.join(&f.path)).ok().map(|md| md.len());
            files.push((f.path, size));
        }
    }
    files.push(("manifest.json".into(), std::fs::metadata(dir.join("manifest.json")).ok().map(|md| md.len())));
    Ok(Inspection { state: checkpoint::read_state(&dir).map_err(|e| e.to_string()), recipe: recipe_summary(&dir), files, verified, dir })
}

/// The run directory of `path`: a run directory itself, or the run of a checkpoint
/// (`<run>/checkpoints/step-NNNNNN`) or of its `checkpoints/`.
pub fn run_dir_of(path: &Path) -> PathBuf {
    if path.join("manifest.json").is_file() {
        if let Some(run) = path.parent().and_then(Path::parent) {
            return run.to_path_buf();
        }
    }
    if path.file_name().is_some_and(|n| n == "checkpoints") {
        if let Some(run) = path.parent() {
            return run.to_path_buf();
        }
    }
    path.to_path_buf()
}

/// `rlpo inspect RUN --samples STEP`: the rows `<run>/rollouts*.jsonl` holds for `step` (`None` =
/// the newest step logged), grouped by prompt. `Err` when there are none, saying which steps
/// there are.
pub fn samples(path: &Path, step: Option<u64>, full: bool) -> Result<String> {
    let run = run_dir_of(path);
    let (found, rows) = crate::report::rollouts::rows_of_step(&run, step);
    if rows.is_empty() {
        let (all, _) = crate::report::rollouts::read_rows(&run);
        let (lo, hi) = (all.iter().map(|r| r.step).min(), all.iter().map(|r| r.step).max());
        let have = match (lo, hi) {
            (Some(a), Some(b)) => format!("it has steps {a}..={b}"),
            _ => "it has none (metrics.samples_jsonl = false and metrics.text_samples = 0, or no step finished yet)".into(),
        };
        return Err(crate::error::TrainError::Aborted(format!(
            "{}: no logged rollouts for step {}; {have}",
            run.join(crate::report::ROLLOUTS_FILE).display(),
            found.or(step).map_or("(latest)".into(), |s| s.to_string())
        )));
    }
    let kept = rows.iter().filter(|r| r.kept).count();
    let dropped = rows.iter().filter(|r| r.dropped_by.is_some()).count();
    let mut out = format!(
        "step {} of {}: {} rows ({kept} in the loss, {dropped} in groups dropped before it)\n",
        found.unwrap_or(0),
        run.display(),
        rows.len()
    );
    out += &crate::report::rollouts::render_rows(&rows, full);
    Ok(out)
}

/// Bytes as `12.3 MB` (decimal units).
pub fn human_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

/// The part a checkpoint file belongs to: `model`, `adapter` (LoRA), `optimizer`, `manifest` or
/// `state`.
pub fn part_of(path: &str) -> &'static str {
    if path.starts_with("model/") {
        "model"
    } else if path.starts_with("adapter/") || path == "base_model.json" {
        "adapter"
    } else if path == "optimizer.safetensors" {
        "optimizer"
    } else if path == "manifest.json" {
        "manifest"
    } else {
        "state"
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(s, "checkpoint      {}", self.dir.display());
        match &self.state {
            Ok(st) => {
                let _ = writeln!(s, "step            {}", st.step);
                let _ = writeln!(s, "policy version  {}", st.version);
                let _ = writeln!(s, "optimizer steps {}", st.optimizer_step);
                let [samples, errors, timeouts, restarts] = st.reward_counters;
                let _ = writeln!(s, "reward calls    {samples} samples, {errors} errors, {timeouts} timeouts, {restarts} restarts");
                let opt = if st.optimizer_saved {
                    "saved (resumable bit-exactly)"
                } else {
                    "not saved (checkpoint.save_optimizer = false): weights only, start a new run from it with `train --init-from`"
                };
                let _ = writeln!(s, "optimizer state {opt}");
            }
            Err(e) => {
                let _ = writeln!(s, "trainer state   UNREADABLE: {e}");
            }
        }
        match &self.recipe {
            Ok(lines) => {
                let _ = writeln!(s, "recipe:");
                for (k, v) in lines {
                    let _ = writeln!(s, "  {k:<20} {v}");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "recipe          UNREADABLE: {e}");
            }
        }
        if let Ok(st) = &self.state {
            if st.metrics.is_empty() {
                let _ = writeln!(s, "metrics         none recorded (no step ran in the saving process, or an older checkpoint)");
            } else {
                let _ = writeln!(s, "metrics of step {} (at save time):", st.step);
                for (k, v) in &st.metrics {
                    let _ = writeln!(s, "  {k:<34} {}", v.map_or("non-finite".to_string(), |x| format!("{x}")));
                }
            }
        }
        let _ = writeln!(s, "files:");
        let mut parts: std::collections::BTreeMap<&str, u64> = Default::default();
        for (p, size) in &self.files {
            let _ = writeln!(s, "  {p:<40} {}", size.map_or("MISSING".to_string(), human_bytes));
            *parts.entry(part_of(p)).or_default() += size.unwrap_or(0);
        }
        let total: u64 = parts.values().sum();
        let by_part: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {}", human_bytes(*v))).collect();
        let _ = writeln!(s, "  total {} ({})", human_bytes(total), by_part.join(", "));
        match &self.verified {
            Ok(()) => {
                let _ = writeln!(s, "manifest        OK ({} files, sizes and sha256 verified)", self.files.len().saturating_sub(1));
            }
            Err(e) => {
                let _ = writeln!(s, "manifest        FAILED: {e}");
            }
        }
        f.write_str(&s)
    }
}
