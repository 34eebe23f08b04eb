//! Bad input gets a clear error naming the file or tensor at fault, never a panic: missing shard,
//! truncated safetensors file, tensor of the wrong shape, unknown `model_type`, missing
//! `tokenizer.json`, missing and unexpected tensors, missing config.

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions, TextTokenizer};
use std::path::Path;

fn copy_fixture(name: &str, to: &Path) {
    let src = fixtures().join(name);
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn load_err(dir: &Path) -> String {
    match CausalLm::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn truncated_safetensors_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    let w = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors") && e.contains("invalid safetensors"), "{e}");
    // A file cut inside its header is also reported, not a panic.
    std::fs::write(&w, &bytes[..20]).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn wrong_shape_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    edit_config(tmp.path(), |c| c["intermediate_size"] = 96.into());
    let e = load_err(tmp.path());
    assert!(e.contains("model.layers.0.mlp.") && e.contains("shape") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn unknown_model_type_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    edit_config(tmp.path(), |c| c["model_type"] = "mamba".into());
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("model_type \"mamba\""), "{e}");
}

#[test]
fn missing_and_unexpected_tensors_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    edit_config(tmp.path(), |c| c["num_hidden_layers"] = 3.into());
    let e = load_err(tmp.path());
    assert!(e.contains("missing") && e.contains("model.layers.2."), "{e}");
    edit_config(tmp.path(), |c| c["num_hidden_layers"] = 1.into());
    let e = load_err(tmp.path());
    assert!(e.contains("unexpected tensor model.layers.1."), "{e}");
}

#[test]
fn missing_shard_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let index = serde_json::json!({"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}});
    std::fs::write(tmp.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model-00001-of-00002.safetensors") && e.contains("missing"), "{e}");
}

#[test]
fn missing_weights_config_and_tokenizer_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture("tiny-qwen2", tmp.path());
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = TextTokenizer::from_dir(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("not found"), "{e}");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("model.safetensors") && e.contains("not found"), "{e}");
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let e = load_err(tmp.path());
    assert!(e.contains("config.json") && e.contains("not found"), "{e}");
}
