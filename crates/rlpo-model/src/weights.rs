//! Fill a model's `VarStore` from HF safetensors: `model.safetensors` or shards listed in
//! `model.safetensors.index.json` (whose file names must be plain names inside the model directory:
//! no separators, no `..`, so an index cannot point a load at, or an export's clean-up of stale
//! shards at, a file elsewhere). Every parameter must be filled exactly once with the right shape;
//! otherwise loading fails naming the tensor and the file. Source dtypes (f32/bf16/f16) are converted
//! to the model's dtype.

use crate::error::{ModelError, Result};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// The weight files of a model directory, in load order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::config(&index, e.to_string()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::config(&index, "missing object weight_map"))?;
        let mut files: BTreeSet<&str> = BTreeSet::new();
        for (tensor, f) in map {
            let name = f.as_str().ok_or_else(|| ModelError::config(&index, format!("weight_map[{tensor:?}] is not a file name: {f}")))?;
            if !is_plain_file_name(name) {
                return Err(ModelError::config(
                    &index,
                    format!("weight_map[{tensor:?}] = {name:?} is not a plain file name inside the model directory"),
                ));
            }
            files.insert(name);
        }
        let files: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
        for f in &files {
            if !f.exists() {
                return Err(ModelError::Weights(format!(
                    "shard {} listed in {} is missing",
                    f.display(),
                    index.display()
                )));
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(ModelError::MissingFile { path: single, what: "model weights (model.safetensors or model.safetensors.index.json)" })
}

/// A name that stays inside its directory: not empty, not `.` or `..`, no `/`, `\\` or NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Map a safetensors dtype to a tch kind (float types only: these are weights).
fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F16 => Some(Kind::Half),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

/// Read-only view of a file's bytes. Memory-mapped so that multi-GB shards are not copied into RAM
/// before being copied into parameters.
fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the mapping is read-only and dropped before this function's caller returns; a file
    // truncated concurrently by another process could fault, which is the usual mmap caveat that
    // every safetensors loader (transformers, candle) accepts.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
    Ok(map)
}

/// Tensors that may appear in a checkpoint without being parameters here.
fn ignorable(name: &str, tied: bool) -> bool {
    name.ends_with("rotary_emb.inv_freq") || (tied && name == "lm_head.weight")
}

/// Load every parameter of `vs` from the safetensors files in `dir`.
pub fn load_into(vs: &VarStore, dir: &Path, tied: bool) -> Result<()> {
    let vars: HashMap<String, Tensor> = vs.variables();
    let mut filled: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in weight_files(dir)? {
        let bytes = map_file(&file)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| ModelError::Safetensors { path: file.clone(), msg: e.to_string() })?;
        let mut names = st.names();
        names.sort();
        for name in names {
            if ignorable(name, tied) {
                continue;
            }
            let Some(var) = vars.get(name) else {
                return Err(ModelError::Weights(format!(
                    "unexpected tensor {name} in {} (not a parameter of the model config.json describes)",
                    file.display()
                )));
            };
            let view = st.tensor(name).map_err(|e| ModelError::Safetensors { path: file.clone(), msg: format!("{name}: {e}") })?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                return Err(ModelError::Weights(format!(
                    "tensor {name} in {} has shape {shape:?}, the model expects {:?}",
                    file.display(),
                    var.size()
                )));
            }
            let kind = kind_of(view.dtype()).ok_or_else(|| {
                ModelError::Weights(format!("tensor {name} in {} has unsupported dtype {:?}", file.display(), view.dtype()))
            })?;
            let src = Tensor::f_from_data_size(view.data(), &shape, kind)?;
            if let Some(prev) = filled.insert(name.to_string(), file.clone()) {
                return Err(ModelError::Weights(format!("tensor {name} appears in both {} and {}", prev.display(), file.display())));
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(&src))?;
        }
    }
    let mut missing: Vec<&String> = vars.keys().filter(|k| !filled.contains_key(*k)).collect();
    if !missing.is_empty() {
        missing.sort();
        let shown: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        return Err(ModelError::Weights(format!(
            "{} parameter(s) missing from the weights in {}: {}{}",
            missing.len(),
            dir.display(),
            shown.join(", "),
            if missing.len() > 5 { ", ..." } else { "" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_file_names() {
        for ok in ["model-00001-of-00002.safetensors", "a", "..x", "x..", "mödel.safetensors"] {
            assert!(is_plain_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../model.safetensors", "/etc/passwd", "sub/model.safetensors", "a\\b", "a\0b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn index_entries_outside_the_directory_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside.safetensors");
        std::fs::write(&outside, b"x").expect("write");
        let model = tmp.path().join("model");
        std::fs::create_dir(&model).expect("mkdir");
        for bad in ["../outside.safetensors", outside.to_str().expect("utf-8"), ".."] {
            let index = serde_json::json!({"weight_map": {"lm_head.weight": bad}});
            std::fs::write(model.join("model.safetensors.index.json"), index.to_string()).expect("write");
            let err = weight_files(&model).expect_err(bad).to_string();
            assert!(err.contains("not a plain file name") && err.contains("lm_head.weight"), "{bad}: {err}");
        }
        let index = serde_json::json!({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}});
        std::fs::write(model.join("model.safetensors.index.json"), index.to_string()).expect("write");
        std::fs::write(model.join("s1.safetensors"), b"x").expect("write");
        assert_eq!(weight_files(&model).expect("plain names"), [model.join("s1.safetensors")]);
    }
}
