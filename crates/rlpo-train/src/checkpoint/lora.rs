//! LoRA checkpoints (`[model.lora]`): instead of `model/`, a checkpoint holds
//! - `adapter/` — the adapters as a PEFT directory (`adapter_config.json`,
//!   `adapter_model.safetensors`), loadable by `peft` onto the base model as is;
//! - `base_model.json` — the base model's directory and the sha256 of each of its weight files,
//!   checked on resume and export so adapters are never applied to another base.
//!
//! `optimizer.safetensors` (written by the caller) then holds the adapters' AdamW state only.
//! The base hashes are computed once per process per base directory.

use crate::error::{io, Result, TrainError};
use crate::trainer::Trainer;
use rlpo_model::{CausalLm, LoadOptions, LoraConfig};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind};

/// The adapter directory inside a checkpoint.
pub const ADAPTER_DIR: &str = "adapter";
/// The base-model reference inside a checkpoint.
pub const BASE_FILE: &str = "base_model.json";
/// The files a LoRA checkpoint's manifest must list besides the common ones.
pub const REQUIRED: &[&str] = &["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "base_model.json"];

/// `base_model.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModelRef {
    /// The base model's directory as the recipe named it (`model.path`).
    pub path: PathBuf,
    /// sha256 of each weight file, by file name.
    pub weights_sha256: BTreeMap<String, String>,
}

static HASHES: Mutex<Option<HashMap<PathBuf, BTreeMap<String, String>>>> = Mutex::new(None);

/// sha256 of the weight files of the model directory `dir` (cached per process).
pub fn base_hashes(dir: &Path) -> Result<BTreeMap<String, String>> {
    let key = dir.canonicalize().map_err(|e| io(dir, e))?;
    let mut cache = HASHES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = cache.get_or_insert_with(HashMap::new).get(&key) {
        return Ok(h.clone());
    }
    let mut out = BTreeMap::new();
    for f in rlpo_model::weights::weight_files(dir)? {
        let (_, sha) = super::manifest::hash_file(&f)?;
        out.insert(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), sha);
    }
    cache.get_or_insert_with(HashMap::new).insert(key, out.clone());
    Ok(out)
}

/// Whether the checkpoint `dir` is a LoRA checkpoint.
pub fn is_lora(dir: &Path) -> bool {
    dir.join(ADAPTER_DIR).is_dir()
}

/// Write the adapters and the base reference of `t` into the checkpoint being written at `tmp`.
pub fn save(t: &Trainer, tmp: &Path) -> Result<()> {
    let base = &t.recipe.model.path;
    t.learner.model.save_adapter_dir(&tmp.join(ADAPTER_DIR), &base.to_string_lossy())?;
    let r = BaseModelRef { path: base.clone(), weights_sha256: base_hashes(base)? };
    let path = tmp.join(BASE_FILE);
    let text = serde_json::to_string_pretty(&r).map_err(|e| TrainError::Aborted(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))
}

fn read_base(dir: &Path) -> Result<BaseModelRef> {
    let path = dir.join(BASE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Aborted(format!("{}: {e}", path.display())))
}

/// Refuse adapters trained on another base: the weight files of `base` must hash as recorded.
fn check_base(dir: &Path, base: &Path) -> Result<()> {
    let saved = read_base(dir)?;
    let now = base_hashes(base)?;
    if saved.weights_sha256 != now {
        return Err(TrainError::Aborted(format!(
            "refusing {}: its adapters were trained on the base model {} whose weights differ from {} (sha256 of the weight files)",
            dir.display(),
            saved.path.display(),
            base.display()
        )));
    }
    Ok(())
}

/// Load the adapters of the LoRA checkpoint `dir` into `t` (after checking the base) and merge.
pub fn load(t: &mut Trainer, dir: &Path) -> Result<()> {
    if t.learner.model.lora().is_none() {
        return Err(TrainError::Aborted(format!("{} is a LoRA checkpoint but the recipe has no [model.lora]", dir.display())));
    }
    check_base(dir, &t.recipe.model.path)?;
    let file = dir.join(ADAPTER_DIR).join("adapter_model.safetensors");
    let saved: HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&file)?.into_iter().collect();
    t.learner.model.load_adapter_tensors(&saved, &file)?;
    Ok(())
}

/// `[model.lora]` of a PEFT `adapter_config.json`.
pub fn read_adapter_config(adapter: &Path) -> Result<LoraConfig> {
    let path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::Aborted(format!("{}: {e}", path.display())))?;
    let bad = |k: &str| TrainError::Aborted(format!("{}: missing or invalid {k}", path.display()));
    let targets = v["target_modules"].as_array().ok_or_else(|| bad("target_modules"))?;
    let init = match &v["init_lora_weights"] {
        serde_json::Value::String(s) if s == "gaussian" => rlpo_model::lora::LoraInit::Gaussian,
        _ => rlpo_model::lora::LoraInit::Default,
    };
    Ok(LoraConfig {
        rank: v["r"].as_i64().ok_or_else(|| bad("r"))?,
        alpha: v["lora_alpha"].as_f64().ok_or_else(|| bad("lora_alpha"))?,
        dropout: v["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules: targets.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        init,
    })
}

/// The merged policy of the LoRA checkpoint `ckpt`: its base (checked against the recorded
/// hashes) with the adapters applied, on the CPU in `kind` (default: the base's stored dtype).
pub fn merged_model(ckpt: &Path, kind: Option<Kind>) -> Result<(CausalLm, Kind)> {
    let base = read_base(ckpt)?.path;
    check_base(ckpt, &base)?;
    let cfg = rlpo_model::ModelConfig::from_dir(&base)?;
    let name = ["torch_dtype", "dtype"].iter().find_map(|k| cfg.raw.get(*k).and_then(|v| v.as_str()).map(str::to_string));
    let stored = name.and_then(|n| rlpo_model::parse_dtype(&n).ok()).unwrap_or(Kind::Float);
    let mut model = CausalLm::load(&base, &LoadOptions { device: Device::Cpu, kind: stored })?;
    let adapter = ckpt.join(ADAPTER_DIR);
    // The saved adapters replace the initial A right after (seed irrelevant).
    model.enable_lora(&read_adapter_config(&adapter)?, 0)?;
    let file = adapter.join("adapter_model.safetensors");
    let saved: HashMap<String, tch::Tensor> = tch::Tensor::read_safetensors(&file)?.into_iter().collect();
    model.load_adapter_tensors(&saved, &file)?;
    Ok((model, kind.unwrap_or(stored)))
}
