//! Shared helpers for the model tests: fixture paths (written by scripts/setup.sh) and tensor
//! comparison.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub const TINY_MODELS: &[&str] = &["tiny-llama-tied", "tiny-llama3-rope-untied", "tiny-qwen2", "tiny-qwen2-tied", "tiny-qwen3"];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn fixtures() -> PathBuf {
    let dir = repo_root().join(".cache/fixtures");
    assert!(dir.join("smollm2_reference.json").exists(), "fixtures missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn smollm2_dir() -> PathBuf {
    let dir = repo_root().join(".cache/models/SmolLM2-135M-Instruct");
    assert!(dir.join("model.safetensors").exists(), "SmolLM2 missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

pub fn read_tensors(path: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// max |a - b| over positions where `mask [B,T]` is 1; a, b `[B,T,V]`.
pub fn max_diff_masked(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    ((a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs() * m).max().double_value(&[])
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}
