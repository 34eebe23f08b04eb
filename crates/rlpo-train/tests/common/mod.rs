//! Shared helpers for the trainer's integration tests: fixture paths (written by
//! scripts/setup.sh), recipe text for the tiny random-init model, weight snapshots and the
//! per-group arithmetic the tests check metrics against.
#![allow(dead_code, missing_docs)]

use rlpo_train::metrics::StepMetrics;
use rlpo_train::{Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `.cache/fixtures/<name>` (a tiny random-init HF model with a Qwen-style chat template).
pub fn fixture(name: &str) -> PathBuf {
    let dir = repo_root().join(".cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn python() -> PathBuf {
    repo_root().join(".venv/bin/python")
}

/// Prompts per step (B) and responses per prompt (G) of the small test recipes.
pub const B: usize = 2;
pub const G: usize = 4;
/// `rollout.max_new_tokens` of the test recipes (most random responses hit it).
pub const MAX_NEW: usize = 8;

/// `[rollout]` of the tests: G = 4, 8 new tokens, one thread (the CI machine is shared).
pub const ROLLOUT: &str = r#"
[rollout]
group_size = 4
max_new_tokens = 8
temperature = 1.0
threads_per_worker = 1
"#;

/// `[trainer]` of the tests: 3 steps of B = 2 prompts, one optimizer step each.
pub const TRAINER: &str = r#"
[trainer]
total_steps = 3
prompts_per_step = 2
"#;

/// Random text of the tiny model contains a digit in about half of the responses (measured
/// over 192 responses: 49 %), so ±1 for "has a digit" gives groups with non-zero variance.
pub const REWARD_DIGIT: &str = r#"
[reward]
on_error = "abort"
[[reward.fns]]
kind = "format"
name = "digit"
pattern = '[0-9]'
matched = 1.0
unmatched = -1.0
"#;

/// The sections every test recipe shares: run (1 thread), the model, AdamW without weight
/// decay (so "weights changed" means "the policy gradient moved them"), a checkpoint root in
/// `root`, metrics without the console bar. `body` adds `[rollout]`, `[reward]`,
/// `[algorithm]`, `[loss]`, `[trainer]`, `[data]` as needed.
pub fn recipe_text(model: &Path, root: &Path, name: &str, body: &str) -> String {
    format!(
        r#"
[run]
name = "{name}"
seed = 0
threads = 1

[model]
path = "{model}"
device = "cpu"
dtype = "f32"

[optim]
lr = 1e-3
weight_decay = 0.0
grad_clip = 1.0

[checkpoint]
root = "{root}"
save_final = false

[metrics]
console = false
text_samples = 2
{body}
"#,
        model = model.display(),
        root = root.display(),
    )
}

pub fn parse(text: &str) -> Recipe {
    Recipe::from_toml(text, Path::new("test-recipe.toml"), &[]).unwrap_or_else(|e| panic!("recipe rejected: {e}\n{text}"))
}

/// A copy of every parameter, by name.
pub fn snapshot(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.learner.model.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().to_kind(Kind::Float).copy())).collect()
}

/// Largest absolute change of any parameter since `before`.
pub fn max_change(before: &BTreeMap<String, Tensor>, t: &Trainer) -> f64 {
    let now = snapshot(t);
    assert_eq!(now.len(), before.len(), "parameter set changed");
    before
        .iter()
        .map(|(k, b)| {
            let a = now.get(k).unwrap_or_else(|| panic!("parameter {k} disappeared"));
            (a - b).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

pub fn scalar(m: &StepMetrics, key: &str) -> f64 {
    m.get(key).unwrap_or_else(|| panic!("step {}: metric {key} missing; have {:?}", m.step, m.scalars.keys().collect::<Vec<_>>()))
}

pub fn hist<'a>(m: &'a StepMetrics, key: &str) -> &'a [f64] {
    m.histograms.get(key).unwrap_or_else(|| panic!("step {}: histogram {key} missing", m.step))
}

/// GRPO advantages of `rewards` (groups of `g` contiguous rows): `(r − mean) / (std + eps)`
/// with the unbiased std, or `r − mean` when `scale` is false (Dr. GRPO).
pub fn group_advantages(rewards: &[f64], g: usize, scale: bool, eps: f64) -> Vec<f64> {
    rewards
        .chunks(g)
        .flat_map(|grp| {
            let n = grp.len() as f64;
            let mean = grp.iter().sum::<f64>() / n;
            let std = (grp.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            grp.iter().map(move |r| if scale { (r - mean) / (std + eps) } else { r - mean }).collect::<Vec<_>>()
        })
        .collect()
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ: {got:?} vs {want:?}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: {a} vs {b}\n got  {got:?}\n want {want:?}");
    }
}

pub mod oracle;

/// A trainer for `body` on tiny-qwen2 in a fresh temp dir (returned so it outlives the trainer),
/// keeping the tensors of every step (`record_steps`). `edit` may change the whole recipe text.
pub fn recorded_trainer(name: &str, body: &str, edit: impl Fn(String) -> String) -> (Trainer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(recipe_text(&fixture("tiny-qwen2"), dir.path(), name, body));
    let mut t = Trainer::new(parse(&text)).unwrap_or_else(|e| panic!("{name}: Trainer::new failed: {e}"));
    t.record_steps = true;
    (t, dir)
}

/// One step; panics naming the step on failure.
pub fn step(t: &mut Trainer) -> StepMetrics {
    let n = t.state.step + 1;
    t.step().unwrap_or_else(|e| panic!("{}: step {n} failed: {e}", t.recipe.run.name))
}

/// `[reward]` scoring with the test plugin `tests/plugins/fixed_rewards.py` (rewards fixed by
/// the sample's request id, so the groups are the same for every seed): `"alternating"` (every
/// group varies) or `"every_other_flat"` (every other group is constant).
pub fn reward_fixed(mode: &str) -> String {
    let plugin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/fixed_rewards.py");
    format!("\n[reward]\non_error = \"abort\"\n[[reward.fns]]\nkind = \"external\"\nname = \"fixed\"\ncommand = [\"python3\", \"{}\", \"{mode}\"]\n", plugin.display())
}
