//! `rlpo_train::export`: two training steps of a tiny recipe, a checkpoint, then an HF export.
//! f32: transformers (scripts/logits_oracle.py) computes the same logits as rlpo's trained policy
//! (≤ 1e-5) and clearly different ones from the untrained model. bf16: the weights are exactly the
//! trained ones rounded to bf16, config.json says bfloat16, and transformers loads it as bf16.
//! Also: a non-empty `--out` and a corrupted checkpoint are refused, naming the path at fault.

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions};
use rlpo_train::{checkpoint, export, Trainer};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use tch::{Kind, Tensor};

fn read_tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

/// max |a − b| over positions where `mask [B,T]` is 1; a, b `[B,T,V]`.
fn max_diff_masked(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    let m = mask.to_kind(Kind::Float).unsqueeze(-1);
    ((a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs() * m).max().double_value(&[])
}

fn config_dtype(dir: &Path) -> String {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    v["torch_dtype"].as_str().unwrap_or_else(|| panic!("no torch_dtype in {}", dir.display())).to_string()
}

fn transformers_logits(model: &Path, ids: &Tensor, mask: &Tensor, tmp: &Path) -> Tensor {
    let inputs = tmp.join("inputs.safetensors");
    Tensor::write_safetensors(&[("input_ids", ids), ("attention_mask", mask)], &inputs).unwrap();
    let out = tmp.join("logits.safetensors");
    let status = Command::new(python())
        .arg(repo_root().join("scripts/logits_oracle.py"))
        .args(["--model".as_ref(), model.as_os_str(), "--inputs".as_ref(), inputs.as_os_str(), "--out".as_ref(), out.as_os_str()])
        .status()
        .expect("run scripts/logits_oracle.py with the venv python");
    assert!(status.success(), "transformers failed to load {}", model.display());
    read_tensors(&out).remove("logits").unwrap()
}

#[test]
fn exported_checkpoint_matches_the_trained_policy_in_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = fixture("tiny-qwen2");
    let text = recipe_text(&model_dir, tmp.path(), "export", &format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}"));
    let mut t = Trainer::new(parse(&text)).unwrap();
    let before = snapshot(&t);
    t.step().unwrap();
    t.step().unwrap();
    assert!(max_change(&before, &t) > 1e-5, "two steps did not move the weights");
    let ckpt = checkpoint::save(&t).unwrap();

    // f32 from the run directory: its newest verified checkpoint is picked.
    let out32 = tmp.path().join("hf-f32");
    let rep = export::export(&t.run_dir, &out32, Some(Kind::Float), false).unwrap();
    assert_eq!((rep.step, rep.checkpoint.clone()), (2, ckpt.clone()));
    for f in ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        assert!(out32.join(f).is_file(), "{f} missing from the export: {rep}");
    }
    assert_eq!(config_dtype(&out32), "float32");
    let r = read_tensors(&model_dir.join("reference.safetensors"));
    let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
    let hf = transformers_logits(&out32, ids, mask, tmp.path());
    let ours = tch::no_grad(|| t.learner.model.forward(ids, mask));
    let d = max_diff_masked(&ours, &hf, mask);
    println!("export f32: max |Δlogit| transformers vs trained policy = {d:.2e}");
    assert!(d <= 1e-5, "exported logits differ from the trained policy's by {d}");
    let init = CausalLm::load(&model_dir, &LoadOptions::default()).unwrap();
    let d0 = max_diff_masked(&tch::no_grad(|| init.forward(ids, mask)), &hf, mask);
    assert!(d0 > 1e-4, "the export looks like the untrained model (max |Δlogit| {d0})");

    // bf16 from the step directory: exactly the trained weights rounded to bf16.
    let out16 = tmp.path().join("hf-bf16");
    export::export(&ckpt, &out16, Some(Kind::BFloat16), false).unwrap();
    assert_eq!(config_dtype(&out16), "bfloat16");
    let saved = read_tensors(&out16.join("model.safetensors"));
    let vars = t.learner.model.var_store().variables();
    assert_eq!(saved.len(), vars.len(), "tensor count");
    for (name, v) in &vars {
        let s = saved.get(name).unwrap_or_else(|| panic!("{name} missing from the bf16 export"));
        assert_eq!(s.kind(), Kind::BFloat16, "{name}");
        assert!(s.equal(&v.to_kind(Kind::BFloat16)), "{name} is not the trained weight in bf16");
    }
    let probe = "import sys, torch\nfrom transformers import AutoModelForCausalLM\n\
                 m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype='auto')\n\
                 x = torch.tensor([[1, 2, 3]])\n\
                 print(next(m.parameters()).dtype, m(input_ids=x).logits.dtype, bool(m(input_ids=x).logits.isfinite().all()))";
    let o = Command::new(python()).args(["-c", probe]).arg(&out16).output().unwrap();
    assert!(o.status.success(), "transformers failed on the bf16 export: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "torch.bfloat16 torch.bfloat16 True");

    // Refusals name the path at fault.
    let e = export::export(&ckpt, &out16, Some(Kind::Float), false).unwrap_err().to_string();
    assert!(e.contains("hf-bf16") && e.contains("--overwrite"), "{e}");
    export::export(&ckpt, &out16, Some(Kind::Float), true).unwrap();
    assert_eq!(config_dtype(&out16), "float32");
    let w = ckpt.join("model/model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x10;
    std::fs::write(&w, bytes).unwrap();
    let e = export::export(&ckpt, &tmp.path().join("x"), None, false).unwrap_err().to_string();
    assert!(e.contains("model/model.safetensors"), "{e}");
    let e = export::export(&t.run_dir, &tmp.path().join("x"), None, false).unwrap_err().to_string();
    assert!(e.contains("no verified checkpoint"), "{e}");
    assert!(!tmp.path().join("x").exists());
}
