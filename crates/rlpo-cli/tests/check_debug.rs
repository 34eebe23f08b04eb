//! `rlpo check` and `rlpo debug` through the binary: a bad `[reward]` regex and an over-budget
//! memory plan exit non-zero naming the key and the budget; `--gpu-mem` is parsed; `debug logits`
//! writes the model's logits (full forward and the cached decode path) for given ids.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Kind, Tensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    let dir = repo().join(".cache/fixtures/tiny-qwen2");
    assert!(dir.join("model.safetensors").exists(), "fixture {} missing: run scripts/setup.sh", dir.display());
    dir
}

fn rlpo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rlpo")).args(args).output().expect("rlpo runs")
}

/// A fresh scratch directory (no tempfile dependency: the binary's tests only need std).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rlpo-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn recipe(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("r.toml");
    let body = format!(
        "[model]\npath = \"{}\"\n[data]\nsource = \"synthetic\"\n[trainer]\nprompts_per_step = 2\n[rollout]\ngroup_size = 2\nmax_new_tokens = 8\n[reward]\n[[reward.fns]]\nkind = \"math\"\n{extra}",
        tiny().display()
    );
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn check_refuses_bad_rewards_and_plans_over_budget() {
    let tmp = scratch("check");
    let good = recipe(&tmp, "");
    let out = rlpo(&["check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("peak per device"), "{}", text(&out.stdout));

    let out = rlpo(&["check", good.to_str().unwrap(), "--gpu-mem", "1MiB"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("does not fit") && err.contains("biggest item"), "{err}");
    let out = rlpo(&["check", good.to_str().unwrap(), "--gpu-mem", "lots"]);
    assert!(!out.status.success() && text(&out.stderr).contains("--gpu-mem"), "{}", text(&out.stderr));
    let out = rlpo(&["check", good.to_str().unwrap(), "--gpu-mem", "80GiB", "--set", "model.device=cuda:0"]);
    assert!(out.status.success(), "a GPU that is not here is a warning: {}", text(&out.stderr));

    let bad = recipe(&tmp, "[[reward.fns]]\nkind = \"format\"\npattern = \"(<think>\"\n");
    let out = rlpo(&["check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("reward.fns[1].pattern"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn debug_logits_match_the_library_forward() {
    let tmp = scratch("debug");
    let model_dir = tiny();
    let model_arg = model_dir.to_str().unwrap();
    let out = rlpo(&["debug", "device"]);
    assert!(out.status.success() && text(&out.stdout).contains("\"cuda_devices\""), "{}", text(&out.stdout));

    let ids = Tensor::from_slice(&[0i64, 0, 5, 9, 11, 40, 7, 3, 12, 13, 14, 15, 16, 17, 18, 19]).view([2, 8]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 8]);
    let inputs = tmp.join("in.safetensors");
    Tensor::write_safetensors(&[("input_ids", &ids), ("attention_mask", &mask)], &inputs).unwrap();
    let model = rlpo_model::CausalLm::load(&tiny(), &Default::default()).unwrap();
    let want = tch::no_grad(|| model.forward(&ids, &mask));
    for decoder in ["plain", "fast"] {
        let outp = tmp.join(format!("{decoder}.safetensors"));
        let args = ["debug", "logits", "--model", model_arg, "--inputs", inputs.to_str().unwrap(), "--out", outp.to_str().unwrap(), "--decode-from", "5", "--decoder", decoder];
        let out = rlpo(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&outp).unwrap().into_iter().collect();
        let full = &got["logits"];
        let m = mask.to_kind(Kind::Float).unsqueeze(-1);
        assert!(((full - &want).abs() * &m).max().double_value(&[]) < 1e-6, "full forward differs");
        // The cached path gives positions 4..8 (prefill of 5 tokens, then 3 steps).
        let dec = &got["decode_logits"];
        assert_eq!(dec.size(), vec![2, 4, model.config.vocab_size]);
        let d = (dec - want.narrow(1, 4, 4)).abs().max().double_value(&[]);
        assert!(d < 1e-4, "{decoder}: cached decode differs by {d}");
    }
    // Padding after the prefix is refused, naming the rule.
    let bad = tmp.join("bad.safetensors");
    let mask2 = mask.copy();
    let _ = mask2.get(1).get(7).fill_(0);
    Tensor::write_safetensors(&[("input_ids", &ids), ("attention_mask", &mask2)], &bad).unwrap();
    let out = rlpo(&["debug", "logits", "--model", model_arg, "--inputs", bad.to_str().unwrap(), "--out", "/dev/null", "--decode-from", "5"]);
    assert!(!out.status.success() && text(&out.stderr).contains("only the prefix may be padded"), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&tmp);
}
