//! Write a model as an HF directory that transformers loads as is: `model.safetensors` (HF names,
//! tied `lm_head` omitted), `config.json` (the loaded config with `torch_dtype` updated), and the
//! tokenizer / chat template / generation config files copied from the source directory.
//! Files are written into a temporary sibling directory, fsynced and renamed into place, so a crash
//! never leaves a half-written model under the final name.

use crate::device::hf_dtype_name;
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use safetensors::{Dtype, View};
use std::borrow::Cow;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Files besides weights and config that make a directory usable on its own.
pub const COMPANION_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn to_host(t: &Tensor, kind: Kind) -> Result<HostTensor> {
    let t = t.f_to_device(Device::Cpu)?.f_to_kind(kind)?.f_contiguous()?;
    let dtype = match kind {
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Double => Dtype::F64,
        _ => Dtype::F32,
    };
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * kind.elt_size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel)?;
    Ok(HostTensor { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), bytes })
}

/// Save `model` to `out` in `kind` (default: the model's dtype).
pub fn save_hf_dir(model: &CausalLm, out: &Path, kind: Option<Kind>) -> Result<()> {
    let kind = kind.unwrap_or(model.kind());
    let tmp = out.with_extension("tmp-save");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;

    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (name, var) in model.var_store().variables() {
        tensors.push((name, to_host(&var, kind)?));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = tmp.join("model.safetensors");
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta), &weights)
        .map_err(|e| ModelError::Safetensors { path: weights.clone(), msg: e.to_string() })?;

    let mut config = model.config.raw.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), hf_dtype_name(kind).into());
        obj.remove("dtype");
    }
    let config_text = serde_json::to_string_pretty(&config).map_err(|e| ModelError::Invalid(e.to_string()))?;
    write_file(&tmp.join("config.json"), config_text.as_bytes())?;

    if let Some(src) = &model.source_dir {
        for name in COMPANION_FILES {
            let from = src.join(name);
            if from.exists() {
                let bytes = std::fs::read(&from).map_err(|e| ModelError::io(&from, e))?;
                write_file(&tmp.join(name), &bytes)?;
            }
        }
    }
    sync_file(&weights)?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| ModelError::io(out, e))?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| ModelError::io(path, e))?;
    sync_file(path)
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| ModelError::io(path, e))
}
