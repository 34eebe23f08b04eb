//! The packed learner forward (rows concatenated without padding, each group's prompt forwarded
//! once) gives the padded unshared forward's log-probs (within 1e-5) and gradients (within 1e-5
//! relative), on the tiny fixtures (Qwen2, tied Llama, Qwen3 with q/k norms) and SmolLM2, with
//! ragged prompts (left padding in the source batch) and ragged responses (right padding); and
//! micro-batches formed by a token budget give the same optimizer step as one big batch (1e-6).

use rlpo_algo::logprob::LogProbOptions;
use rlpo_model::{CausalLm, LoadOptions};
use rlpo_rollout::{Completion, FinishReason};
use rlpo_train::batch::LearnerBatch;
use rlpo_train::packed_rows::{micro_batches, packed_tokens, PackPlan};
use rlpo_train::{Learner, Recipe, Trainer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn model_dir(rel: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache").join(rel);
    assert!(dir.join("config.json").exists(), "model missing at {}: run scripts/setup.sh", dir.display());
    dir
}

fn completion(tokens: Vec<i64>) -> Completion {
    let n = tokens.len();
    Completion {
        prompt_index: 0,
        sample_index: 0,
        prompt_len: 0,
        tokens,
        logprobs: vec![0.0; n],
        base_logprobs: vec![0.0; n],
        entropies: vec![0.0; n],
        temperatures: vec![1.0; n],
        finish_reason: FinishReason::Eos,
        policy_version: 0,
    }
}

/// Two groups of three rows (prompts of 5 and 9 tokens, responses of 1..7 tokens) and a lone
/// row, ids drawn from a fixed generator below `vocab`.
fn batch(vocab: i64) -> LearnerBatch {
    let mut state = 12345u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as i64) % (vocab - 1) + 1
    };
    let p1: Vec<i64> = (0..5).map(|_| next()).collect();
    let p2: Vec<i64> = (0..9).map(|_| next()).collect();
    let p3: Vec<i64> = (0..3).map(|_| next()).collect();
    let mut rows: Vec<(Vec<i64>, Completion)> = Vec::new();
    for (p, lens) in [(&p1, [4, 1, 7]), (&p2, [3, 6, 2])] {
        for l in lens {
            rows.push((p.clone(), completion((0..l).map(|_| next()).collect())));
        }
    }
    rows.push((p3, completion((0..5).map(|_| next()).collect())));
    let refs: Vec<(&[i64], &Completion)> = rows.iter().map(|(p, c)| (p.as_slice(), c)).collect();
    LearnerBatch::new(&refs, 0, Device::Cpu)
}

fn grads(model: &CausalLm) -> BTreeMap<String, Tensor> {
    model.var_store().variables().into_iter().map(|(k, v)| (k, v.grad().copy())).collect()
}

fn zero_grads(model: &CausalLm) {
    for (_, v) in model.var_store().variables() {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// Log-probs `[n, T_k]` and parameter gradients of `Σ w · logp` (w fixed, response tokens only).
fn run(model: &CausalLm, b: &LearnerBatch, idx: &[i64], how: Option<bool>, w: &Tensor) -> (Tensor, BTreeMap<String, Tensor>) {
    let opts = LogProbOptions { temperature: 0.7, chunk_positions: 7, with_entropy: false };
    zero_grads(model);
    let (logp, t_k) = match how {
        None => {
            let (out, t_k) = Learner::forward_rows_padded(model, b, idx, &opts).unwrap();
            (out.logp, t_k)
        }
        Some(share) => {
            let plan = PackPlan::new(b, idx, share).unwrap();
            (plan.forward(model, b, &opts).unwrap().logp, plan.t_k)
        }
    };
    let index = Tensor::from_slice(idx);
    let mask = b.response_mask.index_select(0, &index).narrow(1, 0, t_k);
    let logp = logp * &mask;
    (&logp * w.index_select(0, &index).narrow(1, 0, t_k).to_kind(logp.kind())).sum(Kind::Double).backward();
    (logp.detach(), grads(model))
}

/// `tol`: the bound on the log-prob difference; `gtol`: on the gradients' (relative to the
/// tensor's largest; `None` = log-probs only); `subset`: also a micro-batch of one row per group.
fn check_model(dir: &Path, what: &str, kind: Kind, tol: f64, gtol: Option<f64>, subset: bool) {
    let model = CausalLm::load(dir, &LoadOptions { device: Device::Cpu, kind }).unwrap();
    let b = batch(model.config.vocab_size.min(5000));
    let idx: Vec<i64> = (0..b.rows()).collect();
    let w = rlpo_algo::seeded::SplitMix(0).rand([b.rows(), b.response_width()], (Kind::Float, Device::Cpu)) - 0.5;
    let (lp_pad, g_pad) = run(&model, &b, &idx, None, &w);
    for share in [false, true] {
        let (lp, g) = run(&model, &b, &idx, Some(share), &w);
        let diff = (&lp - &lp_pad).abs().max().double_value(&[]);
        let big = lp_pad.abs().max().double_value(&[]);
        eprintln!("{what} {kind:?} (shared prompt {share}): max |packed - padded| log-prob {diff:.3e} (max |logp| {big:.1})");
        assert!(diff <= tol, "{what} (shared prompt {share}): log-probs differ by {diff}");
        assert!(lp_pad.abs().sum(Kind::Double).double_value(&[]) > 1.0, "{what}: log-probs are all zero");
        let Some(gtol) = gtol else { continue };
        for (k, gp) in &g_pad {
            let scale = gp.abs().max().double_value(&[]).max(1e-30);
            let d = (&g[k] - gp).abs().max().double_value(&[]);
            assert!(d <= gtol * scale, "{what} (shared prompt {share}): gradient of {k} differs by {d} (max |g| {scale})");
        }
        assert!(g_pad.values().any(|g| g.abs().max().double_value(&[]) > 0.0), "{what}: no gradient at all");
    }
    if !subset {
        return;
    }
    // A subset with one row of each group: sharing within a micro-batch only.
    let sub = [1i64, 4, 6];
    let (lp_pad, _) = run(&model, &b, &sub, None, &w);
    let (lp, _) = run(&model, &b, &sub, Some(true), &w);
    assert!((&lp - &lp_pad).abs().max().double_value(&[]) <= tol, "{what}: subset log-probs differ");
}

#[test]
fn packed_and_shared_prompt_match_the_padded_forward_on_tiny_fixtures() {
    for name in ["tiny-qwen2", "tiny-llama-tied", "tiny-qwen3"] {
        check_model(&model_dir(&format!("fixtures/{name}")), name, Kind::Float, 1e-5, Some(1e-5), true);
    }
}

#[test]
fn packed_and_shared_prompt_match_the_padded_forward_on_smollm2() {
    tch::set_num_threads(2);
    // fp64: with rounding mostly out of the way the log-probs agree to 6e-14 and the gradients
    // to 1e-7 of the largest (RMSNorm computes in fp32 even in an fp64 model, and the shared
    // prompt's gradient is the group's sum cast once instead of per row). fp32 over 30 layers: log-probs of random tokens reach ~-27 and differ by rounding
    // alone, 2.7e-5 absolute (1e-6 relative). fp32 gradients differ by 1e-4 of the largest and
    // more in some runs (layer 1's k_proj, through the softmax backward's cancellation; the
    // GEMM's threading is not fixed under load): fp32 summation order, not layout, so the
    // gradient check is the fp64 one and this run bounds the fp32 log-probs.
    check_model(&model_dir("models/SmolLM2-135M-Instruct"), "SmolLM2-135M", Kind::Double, 1e-9, Some(1e-5), false);
    check_model(&model_dir("models/SmolLM2-135M-Instruct"), "SmolLM2-135M", Kind::Float, 5e-5, None, false);
}

#[test]
fn packing_counts_each_shared_prompt_once() {
    let b = batch(100);
    assert_eq!(b.prompt_group, vec![0, 0, 0, 1, 1, 1, 2]);
    // Rows 0..3: prompt 5 once + responses 4 + 1 + 7; unshared: 3 x 5 + 12.
    assert_eq!(packed_tokens(&b, &[0, 1, 2], true), 17);
    assert_eq!(packed_tokens(&b, &[0, 1, 2], false), 27);
    let plan = PackPlan::new(&b, &[0, 1, 2, 3], true).unwrap();
    assert_eq!(plan.seqs.total(), 5 + 12 + 9 + 3);
}

fn recipe(root: &Path, name: &str, sets: &[&str]) -> Recipe {
    let text = format!(
        r#"
[run]
name = "{name}"
seed = 5
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
[optim]
lr = 1.0
eps = 1.0
weight_decay = 0.0
[trainer]
total_steps = 1
prompts_per_step = 3
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
save_at_end = false
[metrics]
console = false
tensorboard = false
"#,
        model = model_dir("fixtures/tiny-qwen2").display(),
        root = root.display()
    );
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Recipe::from_toml(&text, Path::new("packed-test.toml"), &sets).unwrap()
}

fn one_step(root: &Path, name: &str, sets: &[&str]) -> (BTreeMap<String, Tensor>, f64) {
    let mut t = Trainer::new(recipe(root, name, sets)).unwrap();
    t.run().unwrap();
    let w = t.learner.model.var_store().variables().into_iter().map(|(k, v)| (k, v.detach().copy())).collect();
    (w, t.history[0].scalars["actor/pg_loss"])
}

fn max_diff(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) -> f64 {
    a.iter().map(|(k, w)| (w - &b[k]).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// One optimizer step over 12 rows: a budget of 40 tokens splits them into several
/// micro-batches, and the step equals the one-micro-batch step (and the padded forward's).
/// AdamW with `eps = 1` and `lr = 1` makes the first update `g / (|g| + 1)`, about the gradient
/// itself (with the usual tiny eps it is ±lr for any gradient, which hides nothing but magnifies
/// rounding of near-zero gradients), so weights within 1e-6 mean gradients within ~1e-6.
#[test]
fn token_budget_micro_batches_give_the_big_batch_step() {
    let tmp = tempfile::tempdir().unwrap();
    let init = CausalLm::load(&model_dir("fixtures/tiny-qwen2"), &LoadOptions::default()).unwrap();
    let w0: BTreeMap<String, Tensor> = init.var_store().variables().into_iter().collect();
    let (big, loss_big) = one_step(tmp.path(), "big", &[]);
    assert!(max_diff(&big, &w0) > 1e-4, "the step did not move the weights");
    let r = recipe(tmp.path(), "probe", &["trainer.micro_batch_tokens=40"]);
    assert_eq!(r.trainer.micro_batch_tokens, 40);
    for (name, sets) in [
        ("tokens", vec!["trainer.micro_batch_tokens=40"]),
        ("tokens-unshared", vec!["trainer.micro_batch_tokens=40", "trainer.shared_prompt=false"]),
        ("padded", vec!["trainer.packed_rows=false", "trainer.shared_prompt=false"]),
        ("rows", vec!["trainer.micro_batch_rows=3"]),
    ] {
        let (w, loss) = one_step(tmp.path(), name, &sets);
        let d = max_diff(&w, &big);
        assert!(d <= 1e-6, "{name}: weights differ from the one-micro-batch step by {d}");
        assert!((loss - loss_big).abs() <= 1e-6, "{name}: pg_loss {loss} vs {loss_big}");
    }
}

#[test]
fn token_budget_forms_contiguous_micro_batches_within_the_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let b = batch(100);
    let keep = vec![true; 7];
    let r = recipe(tmp.path(), "x", &["trainer.micro_batch_tokens=20"]);
    let mbs = micro_batches(&r, &b, 0, 7, &keep);
    // Rows 0,1 (5 + 4 + 1 = 10), + row 2 (17) fits; row 3 starts a new one (9 + 3 = 12),
    // + row 4 (18), + row 5 (20); row 6 (3 + 5) its own.
    assert_eq!(mbs, vec![(0, 3), (3, 3), (6, 1)]);
    let covered: i64 = mbs.iter().map(|m| m.1).sum();
    assert_eq!(covered, 7);
    let both = Recipe::from_toml(&r.to_toml(), Path::new("x.toml"), &["trainer.micro_batch_rows=3".to_string()]);
    let err = both.expect_err("rows and tokens").to_string();
    assert!(err.contains("trainer.micro_batch_tokens"), "{err}");
}
