//! Bit-exact resume on CPU: 6 steps in one go versus 3 steps, checkpoint, a fresh process-like
//! trainer resumed from it, 3 more steps — identical final weights (bitwise) and identical
//! non-timing metrics for steps 4-6, for GRPO, for DAPO + D³S and for HAPO (adaptive temperature,
//! token-level advantages). Also: a checkpoint with one flipped byte is detected and skipped, and
//! a changed recipe is refused with the key named.

use rlpo_train::metrics::StepMetrics;
use rlpo_train::{checkpoint, Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture missing at {}: run scripts/setup.sh", dir.display());
    dir
}

fn recipe(root: &Path, name: &str, algo: &str) -> Recipe {
    recipe_with(root, name, algo, &[])
}

/// The test recipe with `--set` overrides.
fn recipe_with(root: &Path, name: &str, algo: &str, sets: &[String]) -> Recipe {
    let text = format!(
        r#"
[run]
name = "{name}"
seed = 7
threads = 1
[model]
path = "{model}"
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
{algo}
[optim]
lr = 1e-3
[trainer]
total_steps = 6
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
[metrics]
console = false
tensorboard = false
"#,
        model = fixture("tiny-qwen2").display(),
        root = root.display()
    );
    Recipe::from_toml(&text, Path::new("resume-test.toml"), sets).unwrap()
}

fn weights(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.learner.model.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect()
}

fn comparable(m: &StepMetrics) -> BTreeMap<String, f64> {
    m.scalars.iter().filter(|(k, _)| !k.starts_with("timing/") && !k.starts_with("perf/")).map(|(k, v)| (k.clone(), *v)).collect()
}

fn check_resume(algo: &str) {
    check_resume_with(algo, &[]);
}

fn check_resume_with(algo: &str, sets: &[String]) {
    let recipe = |root: &Path, name: &str, algo: &str| recipe_with(root, name, algo, sets);
    let tmp = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(recipe(tmp.path(), "straight", algo)).unwrap();
    for _ in 0..6 {
        straight.step().unwrap();
    }
    let mut first = Trainer::new(recipe(tmp.path(), "split", algo)).unwrap();
    for _ in 0..3 {
        first.step().unwrap();
    }
    // With max_staleness = 1 the step-4 rollout is running on the workers: it is saved finished.
    first.finish_prefetch().unwrap();
    let ckpt = checkpoint::save(&first).unwrap();
    drop(first);
    let mut second = Trainer::new(recipe(tmp.path(), "split", algo)).unwrap();
    second.resume_from(&ckpt).unwrap();
    assert_eq!(second.state.step, 3);
    for _ in 0..3 {
        second.step().unwrap();
    }
    for (s, r) in straight.history[3..].iter().zip(&second.history) {
        assert_eq!(s.step, r.step);
        assert_eq!(comparable(s), comparable(r), "metrics of step {} differ", s.step);
    }
    let (a, b) = (weights(&straight), weights(&second));
    let mut changed = 0;
    for (k, w) in &a {
        assert!(w.equal(&b[k]), "{k} differs after resume");
        changed += 1;
    }
    assert!(changed > 0);
    // The run did train: weights moved away from the initial checkpoint.
    let init = rlpo_model::CausalLm::load(&fixture("tiny-qwen2"), &Default::default()).unwrap();
    let w0 = &init.var_store().variables()["model.layers.0.mlp.up_proj.weight"];
    assert!(!w0.equal(&a["model.layers.0.mlp.up_proj.weight"]));
}

#[test]
fn grpo_resume_is_bit_exact() {
    check_resume("");
}

#[test]
fn dapo_d3s_resume_is_bit_exact() {
    check_resume(
        r#"
[algorithm.dapo.overlong]
cache_len = 4
[algorithm.dapo.filter_groups]
metric = "acc"
max_num_gen_batches = 5
[algorithm.d3s]
samples_init = 2
samples_final = 4
token_keep_init = 0.5
token_keep_final = 1.0
[loss]
clip_high = 0.28
"#,
    );
}

/// RMT mid-training (budgets, entropy curriculum over document positions, NTP loss).
#[test]
fn rmt_mid_training_resume_is_bit_exact() {
    check_resume(
        r#"
[data]
source = "text"
path = "builtin:tiny"
require_answer = false
[algorithm.rmt]
budget_init = 8
budget_min = 2
rollout_cap = 0.5
answer_tokens = 2
ntp_weight = 0.1
"#,
    );
}

/// `max_staleness = 1`: step t+1's rollout runs on a worker thread during step t's update, with
/// the weights of before that update. The checkpoint holds the finished prefetched rollout, so
/// the resumed run trains on the same rows.
#[test]
fn async_max_staleness_one_resume_is_bit_exact() {
    let sets = ["trainer.max_staleness=1".to_string()];
    check_resume_with("", &sets);
    // The data really is one step stale after the first step, and training on it differs from
    // the on-policy run.
    let tmp = tempfile::tempdir().unwrap();
    let mut stale = Trainer::new(recipe_with(tmp.path(), "stale", "", &sets)).unwrap();
    let mut fresh = Trainer::new(recipe(tmp.path(), "fresh", "")).unwrap();
    for _ in 0..3 {
        stale.step().unwrap();
        fresh.step().unwrap();
    }
    let staleness: Vec<f64> = stale.history.iter().map(|m| m.get("train/staleness").unwrap()).collect();
    assert_eq!(staleness, [0.0, 1.0, 1.0]);
    assert_eq!(fresh.history[2].get("train/staleness"), Some(0.0));
    assert_eq!(comparable(&stale.history[0]), comparable(&fresh.history[0]), "step 1 is on-policy in both");
    assert_ne!(stale.history[2].get("actor/pg_loss"), fresh.history[2].get("actor/pg_loss"));
}

/// HAPO with its adaptive rollout temperature and token-level advantages: the entropy statistics
/// that drive the next rollout's temperature travel in the checkpoint.
#[test]
fn hapo_resume_is_bit_exact() {
    let hapo = r#"
[algorithm]
advantage = "hapo"
[algorithm.hapo]
adaptive_temperature = true
quantile = 0.8
tau = 0.05
alpha = 1.0
beta = 1.0
fallback_threshold = 5.0
[loss]
clip_low = 0.2
clip_high = 0.28
dual_clip = 10.0
"#;
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(recipe(tmp.path(), "hapo-probe", hapo)).unwrap();
    assert!(t.recipe.algorithm.hapo.as_ref().is_some_and(|h| h.adaptive_temperature));
    t.step().unwrap();
    let stats = t.state.hapo_stats.expect("HAPO statistics after a step");
    let ckpt = checkpoint::save(&t).unwrap();
    let mut back = Trainer::new(recipe(tmp.path(), "hapo-probe", hapo)).unwrap();
    assert!(back.state.hapo_stats.is_none());
    back.resume_from(&ckpt).unwrap();
    let got = back.state.hapo_stats.expect("HAPO statistics restored");
    assert_eq!((got.q, got.s, got.inv_h_pos, got.scale_neg), (stats.q, stats.s, stats.inv_h_pos, stats.scale_neg));
    check_resume(hapo);
}

#[test]
fn corrupted_checkpoint_is_skipped_and_changed_recipe_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(recipe(tmp.path(), "c", "")).unwrap();
    t.step().unwrap();
    let good = checkpoint::save(&t).unwrap();
    t.step().unwrap();
    let newest = checkpoint::save(&t).unwrap();
    let w = newest.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    std::fs::write(&w, bytes).unwrap();
    assert!(checkpoint::verify(&newest).unwrap_err().to_string().contains("optimizer.safetensors"));
    assert_eq!(checkpoint::newest_verified(&t.run_dir), Some(good.clone()));
    let changed = Recipe::from_toml(&recipe(tmp.path(), "c", "").to_toml(), Path::new("x.toml"), &["optim.lr=0.5".into()]).unwrap();
    let mut other = Trainer::new(changed).unwrap();
    let e = other.resume_from(&good).unwrap_err().to_string();
    assert!(e.contains("optim.lr"), "{e}");
    // Safe keys may change.
    let longer = Recipe::from_toml(&recipe(tmp.path(), "c", "").to_toml(), Path::new("x.toml"), &["trainer.total_steps=9".into()]).unwrap();
    let mut ok = Trainer::new(longer).unwrap();
    ok.resume_from(&good).unwrap();
    assert_eq!(ok.state.step, 1);
}

/// A resume with another `trainer.total_steps` moves every length-dependent schedule (cosine
/// learning rate, D³S progress) to the new length together: the resumed step has the values a
/// run planned for the new length has at that step (and the closed forms say so), not the old
/// plan's.
#[test]
fn changed_total_steps_moves_every_schedule_to_the_new_length() {
    let d3s = "[algorithm.d3s]\nsamples_init = 2\nsamples_final = 8\n";
    // G = 8 so the two plans differ in N_s at the resumed step (D³S needs N_s >= 2).
    let sets = |total: u64| {
        vec!["optim.schedule=\"cosine\"".to_string(), "optim.min_lr_ratio=0.1".into(), "rollout.group_size=8".into(), format!("trainer.total_steps={total}")]
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut long = Trainer::new(recipe_with(tmp.path(), "len", d3s, &sets(6))).unwrap();
    long.step().unwrap();
    long.step().unwrap();
    let ckpt = checkpoint::save(&long).unwrap();
    let mut short = Trainer::new(recipe_with(tmp.path(), "len", d3s, &sets(3))).unwrap();
    short.resume_from(&ckpt).unwrap();
    assert_eq!((short.state.step, short.state.total_steps), (2, 3));
    let resumed = short.step().unwrap();
    let mut fresh = Trainer::new(recipe_with(tmp.path(), "fresh", d3s, &sets(3))).unwrap();
    for _ in 0..3 {
        fresh.step().unwrap();
    }
    long.step().unwrap();
    let (planned3, planned6) = (&fresh.history[2], &long.history[2]);
    for k in ["optim/lr", "select/d3s_samples_per_group"] {
        assert_eq!(resumed.get(k), planned3.get(k), "{k}: resumed vs a run planned for 3 steps");
        assert_ne!(resumed.get(k), planned6.get(k), "{k}: still on the 6-step plan");
    }
    // Closed forms at the third step (2 of 3 done): cosine t = 2/3, N_s = round(1/3·2 + 2/3·8) = 6
    // (the 6-step plan has round(2/3·2 + 1/3·8) = 4).
    let lr = 1e-3 * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 2.0 / 3.0).cos()));
    assert!((resumed.get("optim/lr").unwrap() - lr).abs() < 1e-12, "{:?} vs {lr}", resumed.get("optim/lr"));
    assert_eq!(resumed.get("select/d3s_samples_per_group"), Some(6.0));
}

/// `--resume auto` hashes each file of the checkpoint it resumes once (selection and load share
/// one verification), and the next save's pruning does not hash it again.
#[test]
fn a_resume_hashes_each_file_once() {
    use rlpo_train::checkpoint::manifest::files_hashed_on_this_thread;
    let tmp = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(recipe(tmp.path(), "once", "")).unwrap();
    t.step().unwrap();
    let ckpt = checkpoint::save(&t).unwrap();
    drop(t);
    let files = checkpoint::read_manifest(&ckpt).unwrap().files.len() as u64;
    assert!(files >= 5);
    let mut back = Trainer::new(recipe(tmp.path(), "once", "")).unwrap();
    let before = files_hashed_on_this_thread();
    assert_eq!(back.resume_auto().unwrap(), Some(ckpt.clone()));
    assert_eq!(files_hashed_on_this_thread() - before, files, "files hashed by the resume");
    back.step().unwrap();
    let before = files_hashed_on_this_thread();
    let second = checkpoint::save(&back).unwrap();
    assert_eq!(files_hashed_on_this_thread() - before, files, "the save hashes its own files only");
    assert_eq!(checkpoint::list(&checkpoint::checkpoints_dir(&back.run_dir)).len(), 2);
    checkpoint::verify(&second).unwrap();
}

/// `[eval]` every 2 steps (and at step 0) on held-out synthetic problems.
const EVAL: &str = r#"
[eval]
every = 2
problems = 2
samples = 4
k = [1, 2, 4]
[eval.data]
seed = 99
"#;

/// `[eval]` during training: resume is still bit-exact (evaluation metrics of the resumed steps
/// included), and the run trains exactly as without evaluation (same weights, same training
/// metrics): evaluation touches no checkpointed state and draws no training randomness. Also
/// with `max_staleness = 1`, where evaluation waits for the running prefetch.
#[test]
fn eval_during_training_changes_nothing_and_resume_is_bit_exact() {
    check_resume(EVAL);
    check_resume_with(EVAL, &["trainer.max_staleness=1".to_string()]);
    for sets in [vec![], vec!["trainer.max_staleness=1".to_string()]] {
        let tmp = tempfile::tempdir().unwrap();
        let mut with = Trainer::new(recipe_with(tmp.path(), "with", EVAL, &sets)).unwrap();
        let mut without = Trainer::new(recipe_with(tmp.path(), "without", "", &sets)).unwrap();
        for _ in 0..4 {
            with.step().unwrap();
            without.step().unwrap();
        }
        let (a, b) = (weights(&with), weights(&without));
        for (k, w) in &a {
            assert!(w.equal(&b[k]), "{k}: evaluation changed training ({sets:?})");
        }
        for (s, r) in with.history.iter().zip(&without.history) {
            let train_only: BTreeMap<String, f64> = comparable(s).into_iter().filter(|(k, _)| !k.starts_with("eval/")).collect();
            assert_eq!(train_only, comparable(r), "step {} ({sets:?})", s.step);
        }
        // Evaluations ran at steps 0 (its own metrics line), 2 and 4, and only there.
        let evaluated: Vec<u64> = with.history.iter().filter(|m| m.get("eval/pass@1").is_some()).map(|m| m.step).collect();
        assert_eq!(evaluated, [2, 4]);
        let jsonl = std::fs::read_to_string(with.run_dir.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(first["step"], 0);
        assert!(first["metrics"]["eval/pass@4"].is_number(), "{first}");
        for step in [0, 2, 4] {
            assert!(with.run_dir.join(format!("eval/step-{step:06}.summary.json")).is_file());
        }
    }
}
