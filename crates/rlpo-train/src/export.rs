//! `rlpo export`: a checkpoint's policy as a standalone HF model directory.
//!
//! The checkpoint (or a run directory's newest verified checkpoint) is verified against its
//! manifest first; its `model/` is then loaded in its stored dtype and written with
//! [`rlpo_model::CausalLm::save`] in the requested dtype: `model.safetensors`, `config.json` with
//! `torch_dtype` updated, tokenizer files, chat template and `generation_config.json` (derived from
//! the config's token ids when the source model had none). The output directory must not exist
//! or be empty, or, with `overwrite`, already be a model directory (it has `config.json`).

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

fn check_out_dir(out: &Path, overwrite: bool, ckpt: &Path) -> Result<()> {
    if let (Ok(o), Ok(c)) = (out.canonicalize(), ckpt.canonicalize()) {
        if o.starts_with(&c) || c.starts_with(&o) {
            return Err(TrainError::Aborted(format!("--out {}: must not contain or be inside the checkpoint {}", out.display(), ckpt.display())));
        }
    }
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        return Err(TrainError::Aborted(format!("--out {}: exists and is not a directory", out.display())));
    }
    let empty = std::fs::read_dir(out).map_err(|e| io(out, e))?.next().is_none();
    if empty || (overwrite && out.join("config.json").is_file()) {
        return Ok(());
    }
    Err(TrainError::Aborted(format!(
        "--out {}: exists and is not empty; choose a new directory{}",
        out.display(),
        if out.join("config.json").is_file() { " or pass --overwrite to replace this model directory" } else { "" }
    )))
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
    model.save(out, Some(kind))?;
    write_generation_config(out, &model.config.raw)?;
    let mut files = Vec::new();
    for e in std::fs::read_dir(out).map_err(|e| io(out, e))? {
        let e = e.map_err(|e| io(out, e))?;
        let size = e.metadata().map_err(|err| io(e.path(), err))?.len();
        files.push((e.file_name().to_string_lossy().into_owned(), size));
    }
    files.sort();
    Ok(ExportReport { checkpoint: ckpt, step: manifest.step, out: out.to_path_buf(), kind, files })
}
