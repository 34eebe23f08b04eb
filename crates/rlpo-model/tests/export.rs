//! Export round trip: rlpo saves a model as an HF directory, transformers loads it, and its logits
//! equal rlpo's (≤ 1e-5, fp32). Also: sharded checkpoints load to the same model.

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions};
use std::process::Command;
use tch::Tensor;

#[test]
fn saved_directory_loads_in_transformers_with_equal_logits() {
    for name in ["tiny-qwen2", "tiny-llama-tied", "tiny-qwen3"] {
        let model = CausalLm::load(&fixtures().join(name), &LoadOptions::default()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("export");
        model.save(&out, None).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            assert!(out.join(f).exists(), "{f} missing from export");
        }
        let r = read_tensors(&fixtures().join(name).join("reference.safetensors"));
        let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
        let inputs = tmp.path().join("inputs.safetensors");
        Tensor::write_safetensors(&[("input_ids", ids), ("attention_mask", mask)], &inputs).unwrap();
        let logits_path = tmp.path().join("logits.safetensors");
        let status = Command::new(python())
            .arg(repo_root().join("scripts/logits_oracle.py"))
            .args(["--model".as_ref(), out.as_os_str(), "--inputs".as_ref(), inputs.as_os_str(), "--out".as_ref(), logits_path.as_os_str()])
            .status()
            .expect("run scripts/logits_oracle.py with the venv python");
        assert!(status.success(), "transformers failed to load the exported {name}");
        let hf = read_tensors(&logits_path).remove("logits").unwrap();
        let ours = tch::no_grad(|| model.forward(ids, mask));
        let d = max_diff_masked(&ours, &hf, mask);
        println!("{name}: export round trip max |Δlogit| = {d:.2e}");
        assert!(d <= 1e-5, "{name}: {d}");
    }
}

#[test]
fn sharded_checkpoint_loads_to_the_same_logits() {
    let src = fixtures().join("tiny-llama3-rope-untied");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let tensors = read_tensors(&src.join("model.safetensors"));
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (shard, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let list: Vec<(&str, &Tensor)> = part.iter().map(|n| (n.as_str(), &tensors[*n])).collect();
        Tensor::write_safetensors(&list, dir.join(shard)).unwrap();
        for n in part {
            map.insert((*n).clone(), shard.into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = CausalLm::load(dir, &LoadOptions::default()).unwrap();
    let single = CausalLm::load(&src, &LoadOptions::default()).unwrap();
    let ids = Tensor::from_slice(&[5i64, 9, 17, 33]).view([1, 4]);
    let d = max_diff(&tch::no_grad(|| sharded.forward(&ids, &ids.ones_like())), &tch::no_grad(|| single.forward(&ids, &ids.ones_like())));
    assert_eq!(d, 0.0);
}
