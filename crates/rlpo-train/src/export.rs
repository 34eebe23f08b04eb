//! `rlpo export`: a checkpoint's policy as a standalone HF model directory.
//!
//! The checkpoint (or a run directory's newest verified checkpoint) is verified against its
//! manifest first; its `model/` is then loaded in its stored dtype and written with
//! [`rlpo_model::CausalLm::save`] in the requested dtype: `model.safetensors`, `config.json` with
//! `torch_dtype` updated, tokenizer files, chat template and `generation_config.json` (derived from
//! the config's token ids when the source model had none).
//!
//! `rlpo export` never deletes what it did not write:
//! - everything is first written into a fresh, uniquely named sibling of `out`
//!   (`.<name>.export-<pid>-<nanos>`, created exclusively), which is removed afterwards;
//! - `out` must not exist or be empty, and is then replaced by the new directory in one rename;
//! - with `overwrite`, `out` must already be a model directory (it has `config.json`), and only
//!   the files the export writes are replaced, one rename each; a stale
//!   `model.safetensors.index.json` and the shards it names (plain file names only) are removed,
//!   because loaders would otherwise read the old weights. Everything else — a cloned repository's
//!   `.git`, its README, other files — stays as it was;
//! - `out` may not be the working directory or one of its ancestors (`--out .`, `--out ..`), nor
//!   inside the checkpoint or contain it, checked on the real paths even when `out` does not
//!   exist yet.

use crate::checkpoint;
use crate::error::{io, Result, TrainError};
use rlpo_model::{CausalLm, LoadOptions};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The checkpoint exported (a `step-NNNNNN` directory).
    pub checkpoint: PathBuf,
    /// Its training step.
    pub step: u64,
    /// The HF directory written.
    pub out: PathBuf,
    /// Weight dtype written.
    pub kind: Kind,
    /// Files written with their sizes, sorted by name.
    pub files: Vec<(String, u64)>,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "exported {} (step {}) -> {} ({})", self.checkpoint.display(), self.step, self.out.display(), rlpo_model::device::hf_dtype_name(self.kind))?;
        for (name, size) in &self.files {
            writeln!(f, "  {name:<28} {size:>12} bytes")?;
        }
        Ok(())
    }
}

/// The dtype a model directory's `config.json` declares (`torch_dtype` or `dtype`); f32 when
/// absent or unknown.
fn stored_kind(model_dir: &Path) -> Result<Kind> {
    let cfg = rlpo_model::ModelConfig::from_dir(model_dir)?;
    let name = ["torch_dtype", "dtype"].iter().find_map(|k| cfg.raw.get(*k).and_then(|v| v.as_str()).map(str::to_string));
    Ok(name.and_then(|n| rlpo_model::parse_dtype(&n).ok()).unwrap_or(Kind::Float))
}

/// `path` made absolute with symlinks resolved as far as it exists (the rest appended as is,
/// with `.` and `..` applied lexically), so that paths that do not exist yet compare correctly.
fn real_path(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path).map_err(|e| io(path, e))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().map_err(|e| io(existing, e))?;
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    // `absolute` keeps `..`; resolve it lexically (the canonical prefix has none).
    let mut norm = PathBuf::new();
    for c in out.components() {
        match c {
            std::path::Component::ParentDir => {
                norm.pop();
            }
            std::path::Component::CurDir => {}
            other => norm.push(other),
        }
    }
    Ok(norm)
}

fn refuse(out: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::Aborted(format!("--out {}: {why}", out.display()))
}

fn check_out_dir(out: &Path, overwrite: bool, ckpt: &Path) -> Result<()> {
    let (o, c) = (real_path(out)?, real_path(ckpt)?);
    if o.starts_with(&c) || c.starts_with(&o) {
        return Err(refuse(out, format_args!("must not contain or be inside the checkpoint {}", ckpt.display())));
    }
    let cwd = real_path(Path::new("."))?;
    if cwd.starts_with(&o) || o.parent().is_none() {
        return Err(refuse(out, "is the working directory or one of its parents; name a new directory for the model"));
    }
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(refuse(out, "exists and is not a directory"));
    }
    let empty = std::fs::read_dir(out).map_err(|e| io(out, e))?.next().is_none();
    if empty || (overwrite && out.join("config.json").is_file()) {
        return Ok(());
    }
    Err(refuse(
        out,
        format_args!(
            "exists and is not empty; choose a new directory{}",
            if out.join("config.json").is_file() { " or pass --overwrite to replace this model directory's model files" } else { "" }
        ),
    ))
}

/// A fresh, exclusively created sibling directory of `out` for the export to be written into.
fn staging_dir(out: &Path) -> Result<PathBuf> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
    let name = out.file_name().map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    for attempt in 0..100u32 {
        let dir = parent.join(format!(".{name}.export-{}-{nanos}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&dir, e)),
        }
    }
    Err(TrainError::Aborted(format!("--out {}: could not create a unique temporary directory beside it", out.display())))
}

/// `--overwrite`: move every file of `new` into the model directory `out`, replacing files of
/// the same name; remove a stale shard index and its (plain-named) shards, which the single
/// `model.safetensors` replaces. Nothing else in `out` is touched.
fn replace_model_files(new: &Path, out: &Path) -> Result<()> {
    let index = out.join("model.safetensors.index.json");
    if index.is_file() && !new.join("model.safetensors.index.json").exists() {
        let shards = rlpo_model::weights::weight_files(out).unwrap_or_default();
        for shard in shards.iter().filter(|f| f.parent() == Some(out) && f.extension().is_some_and(|e| e == "safetensors")) {
            std::fs::remove_file(shard).map_err(|e| io(shard, e))?;
        }
        std::fs::remove_file(&index).map_err(|e| io(&index, e))?;
    }
    let mut names: Vec<_> = std::fs::read_dir(new).map_err(|e| io(new, e))?.collect::<std::io::Result<Vec<_>>>().map_err(|e| io(new, e))?;
    // config.json last: until it is replaced the directory still describes the old weights' model.
    names.sort_by_key(|e| (e.file_name() == "config.json", e.file_name()));
    for e in names {
        let to = out.join(e.file_name());
        std::fs::rename(e.path(), &to).map_err(|err| io(&to, err))?;
    }
    Ok(())
}

/// `generation_config.json` from the config's bos/eos/pad token ids, for models shipped without one.
fn write_generation_config(out: &Path, raw: &serde_json::Value) -> Result<()> {
    let path = out.join("generation_config.json");
    if path.exists() {
        return Ok(());
    }
    let mut g = serde_json::Map::new();
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = raw.get(k).filter(|v| !v.is_null()) {
            g.insert(k.to_string(), v.clone());
        }
    }
    g.insert("transformers_version".into(), "4.0.0".into());
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(g)).map_err(|e| TrainError::Aborted(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))
}

/// Export the policy of `path` (a checkpoint, a run directory or its `checkpoints/`) to `out` as
/// an HF directory with weights in `kind` (default: the dtype the policy was trained in).
pub fn export(path: &Path, out: &Path, kind: Option<Kind>, overwrite: bool) -> Result<ExportReport> {
    let ckpt = checkpoint::resolve(path, true)?;
    let manifest = checkpoint::read_manifest(&ckpt)?;
    check_out_dir(out, overwrite, &ckpt)?;
    let model_dir = ckpt.join("model");
    let stored = stored_kind(&model_dir)?;
    let kind = kind.unwrap_or(stored);
    let model = CausalLm::load(&model_dir, &LoadOptions { device: Device::Cpu, kind: stored })?;
    let staging = staging_dir(out)?;
    let written = (|| {
        let new = staging.join("model");
        model.save(&new, Some(kind))?;
        write_generation_config(&new, &model.config.raw)?;
        if out.is_dir() && std::fs::read_dir(out).map_err(|e| io(out, e))?.next().is_some() {
            replace_model_files(&new, out)
        } else {
            // Absent or empty: one rename (over an empty directory, which rename(2) replaces).
            std::fs::rename(&new, out).map_err(|e| io(out, e))
        }
    })();
    // Only our own staging directory is removed, whatever happened.
    let cleaned = std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e));
    written?;
    cleaned?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(out).map_err(|e| io(out, e))? {
        let e = e.map_err(|e| io(out, e))?;
        let size = e.metadata().map_err(|err| io(e.path(), err))?.len();
        files.push((e.file_name().to_string_lossy().into_owned(), size));
    }
    files.sort();
    Ok(ExportReport { checkpoint: ckpt, step: manifest.step, out: out.to_path_buf(), kind, files })
}
