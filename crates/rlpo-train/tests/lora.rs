//! LoRA (`[model.lora]`): adapters exported by rlpo load in `peft` onto the base model in
//! transformers with rlpo's logits (within 1e-5; the merged export within 1e-4); training only
//! moves the adapters (the base is frozen, the merged weights follow); checkpoints hold the
//! adapters, their optimizer and the base's hashes, and resume is bit-exact; bad keys are named.

use rlpo_model::{CausalLm, LoadOptions, LoraConfig};
use rlpo_train::{checkpoint, export, Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    let dir = repo().join(".cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture missing at {}: run scripts/setup.sh", dir.display());
    dir
}

/// rlpo's logits with random adapters on `name` against peft's, via `tests/peft_oracle.py`.
fn peft_parity(name: &str, targets: &[&str]) {
    let base = fixture(name);
    let mut model = CausalLm::load(&base, &LoadOptions { device: Device::Cpu, kind: Kind::Float }).unwrap();
    let cfg = LoraConfig { rank: 4, alpha: 12.0, target_modules: targets.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    let mut rng = rlpo_algo::seeded::SplitMix(1);
    model.enable_lora(&cfg, 1).unwrap();
    // B starts at zero (the adapter is a no-op): give it values so the check means something.
    tch::no_grad(|| {
        for (n, v) in model.lora().unwrap().vs.variables() {
            if n.contains("lora_B") {
                v.shallow_clone().copy_(&(rng.randn(v.size(), (Kind::Float, Device::Cpu)) * 0.05));
            }
        }
    });
    model.merge_lora().unwrap();
    let vocab = model.config.vocab_size;
    let ids = rng.randint_low(0, vocab, [2, 7], (Kind::Int64, Device::Cpu));
    let logits = tch::no_grad(|| model.forward(&ids, &ids.ones_like()));
    let tmp = tempfile::tempdir().unwrap();
    let adapter = tmp.path().join("adapter");
    model.save_adapter_dir(&adapter, &base.to_string_lossy()).unwrap();
    let merged = tmp.path().join("merged");
    model.save(&merged, None).unwrap();
    let data = tmp.path().join("data.safetensors");
    Tensor::write_safetensors(&[("ids", &ids), ("logits", &logits)], &data).unwrap();
    let out = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("crates/rlpo-train/tests/peft_oracle.py"))
        .args([&base, &adapter, &data, &merged])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name}: peft disagrees with rlpo:\n{text}");
    eprintln!("{name}: {text}");
}

#[test]
fn peft_loads_rlpo_adapters_with_rlpo_logits() {
    peft_parity("tiny-qwen2", &["q", "k", "v", "o", "gate", "up", "down"]);
    peft_parity("tiny-llama-tied", &["q_proj", "v_proj"]);
    peft_parity("tiny-qwen3", &["o", "down"]);
}

fn recipe(root: &Path, name: &str, sets: &[&str]) -> Recipe {
    let text = format!(
        r#"
[run]
name = "{name}"
seed = 3
threads = 1
[model]
path = "{model}"
[model.lora]
rank = 4
alpha = 8
[rollout]
group_size = 4
max_new_tokens = 8
threads_per_worker = 1
[reward]
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
matched = 1.0
unmatched = -1.0
[optim]
lr = 1e-2
[trainer]
total_steps = 4
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
save_at_end = false
[metrics]
console = false
tensorboard = false
"#,
        model = fixture("tiny-qwen2").display(),
        root = root.display()
    );
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Recipe::from_toml(&text, Path::new("lora-test.toml"), &sets).unwrap()
}

fn tensors(t: &Trainer) -> BTreeMap<String, Tensor> {
    let m = &t.learner.model;
    let mut out: BTreeMap<String, Tensor> = m.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
    out.extend(m.adapter_tensors().into_iter().map(|(k, v)| (k, v.copy())));
    out
}

#[test]
fn lora_trains_adapters_only_and_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let init = CausalLm::load(&fixture("tiny-qwen2"), &LoadOptions::default()).unwrap();
    let w0: BTreeMap<String, Tensor> = init.var_store().variables().into_iter().collect();
    let mut straight = Trainer::new(recipe(tmp.path(), "straight", &[])).unwrap();
    assert!(straight.learner.opt.exp_avg.keys().all(|k| k.contains(".lora_")), "the optimizer holds non-adapter tensors");
    for _ in 0..4 {
        straight.step().unwrap();
    }
    let mut first = Trainer::new(recipe(tmp.path(), "split", &[])).unwrap();
    for _ in 0..2 {
        first.step().unwrap();
    }
    let ckpt = checkpoint::save(&first).unwrap();
    drop(first);
    assert!(ckpt.join("adapter/adapter_config.json").is_file() && ckpt.join("adapter/adapter_model.safetensors").is_file());
    assert!(ckpt.join("base_model.json").is_file() && !ckpt.join("model").exists(), "a LoRA checkpoint holds adapters, not the model");
    let opt: Vec<(String, Tensor)> = Tensor::read_safetensors(ckpt.join("optimizer.safetensors")).unwrap();
    assert!(!opt.is_empty() && opt.iter().all(|(k, _)| k.contains(".lora_")), "optimizer state beyond the adapters");
    let mut second = Trainer::new(recipe(tmp.path(), "split", &[])).unwrap();
    second.resume_from(&ckpt).unwrap();
    for _ in 0..2 {
        second.step().unwrap();
    }
    let (a, b) = (tensors(&straight), tensors(&second));
    for (k, w) in &a {
        assert!(w.equal(&b[k]), "{k} differs after resume");
    }
    // Frozen base: untargeted parameters never move; targeted weights hold the merged update.
    for k in ["model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"] {
        assert!(a[k].equal(&w0[k]), "{k} moved");
    }
    assert!(!a["model.layers.0.mlp.up_proj.weight"].equal(&w0["model.layers.0.mlp.up_proj.weight"]), "merged weights did not follow");
    let bkey = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
    assert!(a[bkey].abs().max().double_value(&[]) > 0.0, "lora_B never trained");

    // Exports of the final state: the adapter directory and the merged model.
    let last = checkpoint::save(&second).unwrap();
    let adir = tmp.path().join("adapter-out");
    export::export_adapter(&last, &adir, false).unwrap();
    let saved: BTreeMap<String, Tensor> = Tensor::read_safetensors(adir.join("adapter_model.safetensors")).unwrap().into_iter().collect();
    assert!(saved[bkey].equal(&b[bkey]));
    let mdir = tmp.path().join("merged-out");
    export::export(&last, &mdir, None, false).unwrap();
    let merged = CausalLm::load(&mdir, &LoadOptions::default()).unwrap();
    for (k, v) in merged.var_store().variables() {
        assert!(v.equal(&b[&k]), "merged export: {k} differs from the trainer's merged weights");
    }
}

#[test]
fn lora_keys_are_validated_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, key) in [
        ("model.lora.rank=0", "model.lora.rank"),
        ("model.lora.alpha=-1", "model.lora.alpha"),
        ("model.lora.dropout=1.0", "model.lora.dropout"),
        ("model.lora.target_modules=[\"q\",\"attn\"]", "model.lora.target_modules"),
    ] {
        let text = recipe(tmp.path(), "v", &[]).to_toml();
        let err = Recipe::from_toml(&text, Path::new("v.toml"), &[set.to_string()]).expect_err(set).to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
    let text = recipe(tmp.path(), "v", &[]).to_toml();
    let sets = ["model.lora.dropout=0.1".to_string(), "trainer.activation_checkpointing=true".to_string()];
    let err = Recipe::from_toml(&text, Path::new("v.toml"), &sets).expect_err("dropout + checkpointing").to_string();
    assert!(err.contains("model.lora.dropout"), "{err}");
}

/// `rlpo check`'s LoRA figure (from the config alone) equals the adapters a model really gets.
#[test]
fn check_counts_the_adapter_parameters_a_model_gets() {
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let mut model = CausalLm::load(&fixture(name), &LoadOptions::default()).unwrap();
        let cfg = LoraConfig { rank: 3, target_modules: vec!["q".into(), "v".into(), "down".into()], ..Default::default() };
        model.enable_lora(&cfg, 1).unwrap();
        let real: i64 = model.trainable_variables().iter().map(|(_, t)| t.numel() as i64).sum();
        let names = cfg.module_names().unwrap();
        let per_layer = rlpo_train::check::lean::lora_layer_shapes(&model.config, &names);
        let shapes: Vec<(i64, i64)> = per_layer.iter().copied().cycle().take(per_layer.len() * model.config.num_hidden_layers as usize).collect();
        assert_eq!(rlpo_model::lora::adapter_parameters(&shapes, 3), real, "{name}");
        assert!(real > 0);
    }
}

/// Activation checkpointing recomputes the adapted layers too: the same adapters, bit for bit.
#[test]
fn lora_with_activation_checkpointing_trains_the_same_adapters() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, sets: &[&str]| {
        let mut t = Trainer::new(recipe(tmp.path(), name, &[&["trainer.total_steps=2"], sets].concat())).unwrap();
        t.run().unwrap();
        t.learner.model.adapter_tensors()
    };
    let (a, b) = (run("plain", &[]), run("ckpt", &["trainer.activation_checkpointing=true"]));
    assert!(!a.is_empty());
    for (k, v) in &a {
        assert!(v.equal(&b[k]), "{k} differs with activation checkpointing");
    }
    assert!(a.iter().any(|(k, v)| k.contains("lora_B") && v.abs().max().double_value(&[]) > 0.0));
}
