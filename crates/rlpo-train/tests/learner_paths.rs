//! The GPU-shaped learner and rollout paths change nothing but speed and memory, checked on CPU
//! through whole training steps: activation checkpointing and the per-parameter AdamW give the
//! same weights and metrics, bit for bit, as the default run (fused AdamW, no checkpointing); the
//! colocated LibTorch rollout (`rollout_decoder = "torch"`, the fast decode step on the learner's
//! tensors) with device sampling trains, and its recorded log-probs match the learner's.

use rlpo_train::metrics::StepMetrics;
use rlpo_train::{Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture missing at {}: run scripts/setup.sh", dir.display());
    dir
}

fn recipe(root: &Path, name: &str, sets: &[&str]) -> Recipe {
    let text = format!(
        r#"
[run]
name = "{name}"
seed = 11
threads = 1
[model]
path = "{model}"
[rollout]
group_size = 4
max_new_tokens = 8
[reward]
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
matched = 1.0
unmatched = -1.0
[optim]
lr = 1e-3
[trainer]
total_steps = 2
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
    Recipe::from_toml(&text, Path::new("learner-paths.toml"), &sets).unwrap()
}

fn train(root: &Path, name: &str, sets: &[&str]) -> Trainer {
    let mut t = Trainer::new(recipe(root, name, sets)).unwrap();
    t.run().unwrap();
    t
}

fn weights(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.learner.model.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn comparable(m: &StepMetrics) -> BTreeMap<String, f64> {
    m.scalars.iter().filter(|(k, _)| !k.starts_with("timing/") && !k.starts_with("perf/")).map(|(k, v)| (k.clone(), *v)).collect()
}

fn assert_same_run(a: &Trainer, b: &Trainer, what: &str) {
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(comparable(x), comparable(y), "{what}: metrics of step {} differ", x.step);
    }
    let (wa, wb) = (weights(a), weights(b));
    for (k, w) in &wa {
        assert!(w.equal(&wb[k]), "{what}: {k} differs");
    }
}

#[test]
fn checkpointing_and_the_per_parameter_optimizer_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = train(tmp.path(), "base", &[]);
    assert!(base.learner.opt.fused(), "fused AdamW is the default");
    assert_eq!(base.history.len(), 2);
    // The run trained: weights moved.
    let init = rlpo_model::CausalLm::load(&fixture("tiny-qwen2"), &Default::default()).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    assert!(!init.var_store().variables()[name].equal(&weights(&base)[name]));
    let ckpt = train(tmp.path(), "ckpt", &["trainer.activation_checkpointing=true"]);
    assert!(ckpt.learner.model.activation_checkpointing());
    assert_same_run(&base, &ckpt, "activation checkpointing");
    let per_param = train(tmp.path(), "per-param", &["optim.fused=false"]);
    assert_same_run(&base, &per_param, "per-parameter AdamW");
    // save_at_end = false: the finished run wrote no checkpoint.
    assert!(rlpo_train::checkpoint::list(&rlpo_train::checkpoint::checkpoints_dir(&base.run_dir)).is_empty());
}

#[test]
fn colocated_torch_rollout_with_device_sampling_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let sets = ["trainer.rollout_decoder=\"torch\"", "rollout.sampler=\"device\"", "rollout.device_sync_steps=3"];
    let t = train(tmp.path(), "torch-device", &sets);
    assert!(t.describe_paths().contains("BoundFastDecoder") && t.describe_paths().contains("sampling on the device"), "{}", t.describe_paths());
    for m in &t.history {
        // The rollout's recorded log-probs are those of the learner's weights (same step).
        let gap = m.get("actor/rollout_logprob_gap").expect("logprob gap metric");
        assert!(gap < 1e-4, "step {}: |learner - rollout| logprob gap {gap}", m.step);
    }
    let a = t.learner.model.attention_counts();
    assert!(a.sdpa_causal > 0 && a.sdpa_masked == 0, "{a:?}: learner forwards and prefills run packed");
}
