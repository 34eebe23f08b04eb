//! Three training steps of each algorithm recipe (GRPO, Dr. GRPO, DAPO, D³S, HAPO, RMT) on the
//! tiny random-init `tiny-qwen2` fixture, through the public API (`Recipe::from_toml` →
//! `Trainer::new` → `step()` ×3). A random model does not solve arithmetic, so the reward is
//! "the response contains a digit" (±1, true for about half of the random responses): groups
//! have non-zero variance and the policy gradient is not zero.
//!
//! Each test checks that losses are finite, that the weights moved, and that the step's
//! metrics agree with the recipe: advantages recomputed from the logged rewards, the D³S
//! schedule and budgets, the DAPO filter/refill invariants, HAPO's statistics.

mod common;

use common::*;
use rlpo_train::metrics::StepMetrics;
use rlpo_train::Trainer;

/// Build a trainer for `body` in a fresh temp dir (returned so it outlives the trainer).
fn trainer(name: &str, body: &str) -> (Trainer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = recipe_text(&fixture("tiny-qwen2"), dir.path(), name, body);
    let t = Trainer::new(parse(&text)).unwrap_or_else(|e| panic!("{name}: Trainer::new failed: {e}"));
    (t, dir)
}

/// Run `n` steps; check the checks every algorithm shares; return the metrics.
fn run_steps(t: &mut Trainer, n: usize) -> Vec<StepMetrics> {
    let before = snapshot(t);
    let mut out = Vec::new();
    for i in 0..n {
        let m = t.step().unwrap_or_else(|e| panic!("{}: step {} failed: {e}", t.recipe.run.name, i + 1));
        assert_eq!(m.step, i as u64 + 1);
        if m.get("select/skipped_step").is_none() {
            let pg = scalar(&m, "actor/pg_loss");
            assert!(pg.is_finite(), "step {}: actor/pg_loss = {pg}", m.step);
            assert!(scalar(&m, "actor/grad_norm").is_finite());
            assert_eq!(scalar(&m, "optim/skipped_nonfinite"), 0.0);
            for v in hist(&m, "advantage/values") {
                assert!(v.is_finite(), "step {}: non-finite advantage {v}", m.step);
            }
        }
        out.push(m);
    }
    assert_eq!(t.state.step, n as u64);
    let applied: f64 = out.iter().filter_map(|m| m.get("optim/applied_steps")).sum();
    assert!(applied >= 1.0, "{}: no optimizer step was applied in {n} steps", t.recipe.run.name);
    assert_eq!(t.version, applied as u64, "policy version counts applied optimizer steps");
    let moved = max_change(&before, t);
    assert!(moved > 1e-6, "{}: weights did not change (max |Δ| = {moved})", t.recipe.run.name);
    out
}

/// Without D³S or filters every valid token of every row enters the loss.
fn assert_keeps_everything(m: &StepMetrics) {
    let rows = (B * G) as f64;
    assert_eq!(scalar(m, "select/rows"), rows);
    assert_eq!(scalar(m, "select/kept_rows"), rows, "step {}: rows were dropped", m.step);
    assert_eq!(scalar(m, "select/kept_tokens"), scalar(m, "select/valid_tokens"));
    assert_eq!(scalar(m, "select/kept_token_frac"), 1.0);
    assert_eq!(scalar(m, "filter/gen_batches"), 1.0);
    assert_eq!(scalar(m, "filter/dropped_groups"), 0.0);
    let lens = hist(m, "response/lengths");
    assert_eq!(lens.iter().sum::<f64>(), scalar(m, "select/valid_tokens"));
    assert!(lens.iter().all(|&l| (1.0..=MAX_NEW as f64).contains(&l)), "lengths {lens:?}");
    assert!(m.get("select/d3s_samples_per_group").is_none());
}

#[test]
fn grpo_three_steps() {
    let body = format!(
        "{ROLLOUT}{TRAINER}{REWARD_DIGIT}
[algorithm]
advantage = \"grpo\"
[loss]
base = \"grpo\"
agg = \"token_mean\"
"
    );
    let (mut t, _dir) = trainer("grpo", &body);
    let ms = run_steps(&mut t, 3);
    for m in &ms {
        assert_keeps_everything(m);
        let r = hist(m, "reward/values");
        assert_eq!(r.len(), B * G);
        assert!(r.iter().all(|&v| v == 1.0 || v == -1.0), "{r:?}");
        // The advantages are GRPO's on the logged rewards (unbiased std, eps 1e-6).
        assert_close(hist(m, "advantage/values"), &group_advantages(r, G, true, 1e-6), 1e-4, "grpo advantages");
        // Every group whose rewards vary carries a learning signal (±1 rewards, G = 4: |A| ≥ 0.5/(1 + eps)).
        for (grp, adv) in r.chunks(G).zip(hist(m, "advantage/values").chunks(G)) {
            if grp.iter().any(|&v| v != grp[0]) {
                assert!(adv.iter().all(|a| a.abs() >= 0.49), "step {}: rewards {grp:?}, advantages {adv:?}", m.step);
            }
        }
        // Colocated, on-policy: the learner reproduces the rollout's log-probs.
        let gap = scalar(m, "actor/rollout_logprob_gap");
        assert!(gap < 1e-3, "step {}: learner vs rollout logprob gap {gap}", m.step);
    }
}

#[test]
fn dr_grpo_three_steps() {
    let body = format!(
        "{ROLLOUT}{TRAINER}{REWARD_DIGIT}
[algorithm]
advantage = \"dr_grpo\"
[loss]
agg = \"constant_norm\"
norm_len = 8
"
    );
    let (mut t, _dir) = trainer("dr_grpo", &body);
    for m in run_steps(&mut t, 3) {
        assert_keeps_everything(&m);
        // Dr. GRPO: r − mean, no std scaling.
        let r = hist(&m, "reward/values");
        assert_close(hist(&m, "advantage/values"), &group_advantages(r, G, false, 0.0), 1e-5, "dr_grpo advantages");
    }
}

/// DAPO: ±1 correctness fixed by the test plugin (`every_other_flat`: in every generation batch
/// of B = 2 groups the first is all-wrong and the second varies, so for every seed each step keeps
/// one group per batch and refills once), overlong shaping with `L_max = max_new_tokens = 8`,
/// `L_cache = 4`, clip-higher 0.28, dynamic sampling.
fn dapo() -> String {
    reward_fixed("every_other_flat") + DAPO
}

const DAPO: &str = r#"
[algorithm]
advantage = "grpo"
[algorithm.dapo.overlong]
cache_len = 4
penalty_factor = 1.0
[algorithm.dapo.filter_groups]
metric = "acc"
max_num_gen_batches = 10
on_exhausted = "error"
gen_batch_factor = 1.0      # B prompts per generation batch: keeps the refill arithmetic below simple

[loss]
clip_low = 0.2
clip_high = 0.28
agg = "token_mean"
"#;

fn overlong_penalty(len: f64) -> f64 {
    // L_max = 8, L_cache = 4, factor 1: clamp(((8 − 4) − len) / 4, −1, 0).
    ((4.0 - len) / 4.0).clamp(-1.0, 0.0)
}

#[test]
fn dapo_three_steps_with_filter_and_refill() {
    let body = format!("{ROLLOUT}{TRAINER}{}", dapo());
    let (mut t, _dir) = trainer("dapo", &body);
    assert_eq!(t.recipe.loss.clip_widths(), (0.2, 0.28));
    let ms = run_steps(&mut t, 3);
    let mut total_batches = 0.0;
    for m in &ms {
        let k = scalar(m, "filter/gen_batches");
        let dropped = scalar(m, "filter/dropped_groups");
        total_batches += k;
        assert!((1.0..=10.0).contains(&k), "gen_batches {k}");
        // The refill succeeded: exactly prompts_per_step groups train, surplus discarded.
        assert_eq!(scalar(m, "select/rows"), (B * G) as f64, "step {}", m.step);
        // Every batch has B groups; generation continues while fewer than B were kept, so
        // (k − 2)·B + 1 <= dropped <= (k − 1)·B for k >= 2, and nothing is dropped for k = 1.
        let b = B as f64;
        if k == 1.0 {
            assert_eq!(dropped, 0.0, "step {}", m.step);
        } else {
            assert!(dropped >= (k - 2.0) * b + 1.0 && dropped <= (k - 1.0) * b, "step {}: {dropped} dropped in {k} batches", m.step);
        }
        // Kept groups are the ones whose correctness varies.
        let r = hist(m, "reward/values");
        for (gi, grp) in r.chunks(G).enumerate() {
            assert!(grp.contains(&1.0) && grp.contains(&-1.0), "step {}: group {gi} has constant acc: {grp:?}", m.step);
        }
        // Overlong shaping: the advantages are GRPO's on score + penalty(length).
        let lens = hist(m, "response/lengths");
        let shaped: Vec<f64> = r.iter().zip(lens).map(|(s, l)| s + overlong_penalty(*l)).collect();
        let shaped_mean = shaped.iter().sum::<f64>() / shaped.len() as f64;
        assert!((scalar(m, "reward/shaped_mean") - shaped_mean).abs() < 1e-5, "step {}: shaped mean", m.step);
        assert!(scalar(m, "reward/shaped_mean") < scalar(m, "reward/mean"), "responses of 8 tokens are penalised");
        assert_close(hist(m, "advantage/values"), &group_advantages(&shaped, G, true, 1e-6), 1e-4, "dapo advantages");
        // No D³S: every valid token of the kept rows is in the loss.
        assert_eq!(scalar(m, "select/kept_tokens"), scalar(m, "select/valid_tokens"));
    }
    // The plugin's rewards make every step drop one group per batch: two batches per step.
    assert_eq!(total_batches, 6.0, "one refill per step");
}

/// A reward that is -1 for everything: every group is constant and is filtered out (there is no
/// correctness to filter on, so these recipes filter on the score).
const ALL_WRONG: &str = r#"
[reward]
[[reward.fns]]
kind = "format"
pattern = '.'
matched = -1.0
unmatched = -1.0
"#;

#[test]
fn dapo_filter_exhausted_skips_or_errors_as_configured() {
    // on_exhausted = "train_available" with nothing kept: the step is skipped, not trained.
    let body = format!(
        "{ROLLOUT}{TRAINER}{ALL_WRONG}
[algorithm.dapo.filter_groups]
metric = \"score\"
gen_batch_factor = 1.0
max_num_gen_batches = 2
on_exhausted = \"train_available\"
"
    );
    let (mut t, _dir) = trainer("dapo_skip", &body);
    let before = snapshot(&t);
    let m = t.step().expect("train_available skips an empty step");
    assert_eq!(scalar(&m, "select/skipped_step"), 1.0);
    // Both generation batches ran: more tokens than one batch can hold (B·G·max_new_tokens).
    let tokens = scalar(&m, "perf/rollout_tokens");
    assert!(tokens > (B * G * MAX_NEW) as f64 && tokens <= (2 * B * G * MAX_NEW) as f64, "{tokens} rollout tokens");
    // The filter counters of a skipped step (not logged by the trainer yet: see the report).
    if let Some(k) = m.get("filter/gen_batches") {
        assert_eq!(k, 2.0);
        assert_eq!(scalar(&m, "filter/dropped_groups"), 2.0 * B as f64);
    }
    assert!(m.get("actor/pg_loss").is_none(), "a skipped step has no update");
    assert_eq!(max_change(&before, &t), 0.0, "a skipped step must not touch the weights");
    assert_eq!((t.state.step, t.version), (1, 0));

    // on_exhausted = "error" (verl's default): the step fails and says why.
    let body = body.replace("train_available", "error");
    let (mut t, _dir) = trainer("dapo_error", &body);
    let err = t.step().expect_err("filter exhausted must stop the run").to_string();
    assert!(err.contains("max_num_gen_batches") && err.contains("0 of 2 groups"), "{err}");
}

/// `on_exhausted = "train_available"` with some groups kept trains on fewer than
/// `prompts_per_step` groups (B·G rows are not all there).
#[test]
fn dapo_train_available_partial_batch() {
    let body = format!("{ROLLOUT}{TRAINER}{}", dapo())
        .replace("max_num_gen_batches = 10", "max_num_gen_batches = 1")
        .replace("on_exhausted = \"error\"", "on_exhausted = \"train_available\"");
    let (mut t, _dir) = trainer("dapo_partial", &body);
    // One generation batch keeps one of its two groups (the plugin's rewards): every step trains
    // on G rows.
    for _ in 0..3 {
        let m = t.step().unwrap_or_else(|e| panic!("step {} failed: {e}", t.state.step + 1));
        assert_eq!(scalar(&m, "select/rows"), G as f64, "step {}", m.step);
        assert_eq!((scalar(&m, "filter/gen_batches"), scalar(&m, "filter/dropped_groups")), (1.0, 1.0));
        assert!(scalar(&m, "actor/pg_loss").is_finite());
        // The kept group is one whose correctness varies, and its advantages order its rows by
        // correctness whatever the lengths: the overlong penalty is in [−1, 0], so a correct
        // row's shaped reward (≥ 0) beats a wrong one's (≤ −1) for every seed.
        let (adv, r) = (hist(&m, "advantage/values"), hist(&m, "reward/values"));
        assert!(r.iter().any(|&x| x > 0.0) && r.iter().any(|&x| x < 0.0), "the kept group varies: rewards {r:?}");
        let worst_right = adv.iter().zip(r).filter(|(_, &x)| x > 0.0).map(|(a, _)| *a).fold(f64::INFINITY, f64::min);
        let best_wrong = adv.iter().zip(r).filter(|(_, &x)| x < 0.0).map(|(a, _)| *a).fold(f64::NEG_INFINITY, f64::max);
        assert!(worst_right > best_wrong, "step {}: advantages {adv:?} for rewards {r:?}", m.step);
    }
}

#[test]
fn d3s_three_steps_respects_its_schedule() {
    // N_s: 2 -> 4 rows per group (G = 4), K: 0.3 -> 0.9 over 3 steps, at progress
    // p = (step − 1)/3: N_s = round(2 + 2p) = 2, 3, 3 and K = 0.3 + 0.6p = 0.3, 0.5, 0.7.
    let body = format!(
        "{ROLLOUT}{TRAINER}{REWARD_DIGIT}
[algorithm]
advantage = \"grpo\"
[algorithm.d3s]
level = \"cross_group\"
samples_init = 2
samples_final = 4
token_keep_init = 0.3
token_keep_final = 0.9
[loss]
clip_high = 0.28
"
    );
    let (mut t, _dir) = trainer("d3s", &body);
    let expect = [(2.0, 0.3), (3.0, 0.5), (3.0, 0.7)];
    for (m, (n_s, k)) in run_steps(&mut t, 3).iter().zip(expect) {
        assert_eq!(scalar(m, "select/d3s_samples_per_group"), n_s, "step {}", m.step);
        assert!((scalar(m, "select/d3s_token_keep") - k).abs() < 1e-9, "step {}", m.step);
        let kept_rows = scalar(m, "select/kept_rows");
        assert!(kept_rows >= 1.0 && kept_rows <= B as f64 * n_s, "step {}: {kept_rows} rows kept, budget {}", m.step, B as f64 * n_s);
        // Top ceil(K·M) tokens of the kept rows' M <= valid tokens.
        let (kept, valid) = (scalar(m, "select/kept_tokens"), scalar(m, "select/valid_tokens"));
        assert!(kept >= 1.0 && kept <= (k * valid).ceil(), "step {}: {kept} of {valid} tokens kept at K = {k}", m.step);
        let frac = scalar(m, "select/kept_token_frac");
        assert!((frac - kept / valid).abs() < 1e-9 && frac <= k + 1.0 / valid, "step {}: kept_token_frac {frac}", m.step);
        assert!(kept < valid, "D³S must drop tokens below N_s = G and K = 1");
        // Advantages are still computed on the full groups (before selection).
        assert_close(hist(m, "advantage/values"), &group_advantages(hist(m, "reward/values"), G, true, 1e-6), 1e-4, "d3s advantages");
    }
}

/// HAPO as recommended on top of DAPO-style clipping, with the rollout's adaptive temperature.
const HAPO: &str = r#"
[rollout.adaptive_temperature]
tau = 0.05

[algorithm]
advantage = "hapo"
[algorithm.hapo]
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

fn check_hapo(t: &mut Trainer) {
    assert!(t.state.hapo_stats.is_none());
    for m in run_steps(t, 3) {
        let s = t.state.hapo_stats.unwrap_or_else(|| panic!("step {}: no HAPO statistics for the next rollout", m.step));
        for (name, v) in [("q", s.q), ("s", s.s), ("inv_h_pos", s.inv_h_pos), ("scale_neg", s.scale_neg)] {
            assert!(v.is_finite(), "step {}: HAPO statistic {name} = {v}", m.step);
        }
        let fb = scalar(&m, "select/hapo_fallback_groups");
        assert!((0.0..=B as f64).contains(&fb), "fallback groups {fb}");
        // HAPO selects no rows or tokens.
        assert_eq!(scalar(&m, "select/kept_tokens"), scalar(&m, "select/valid_tokens"));
    }
}

#[test]
fn hapo_three_steps() {
    let body = format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}{HAPO}");
    let (mut t, _dir) = trainer("hapo", &body);
    assert_eq!(t.recipe.rollout.adaptive_temperature.map(|a| a.tau), Some(0.05));
    check_hapo(&mut t);
}

#[test]
fn hapo_released_code_behaviour_with_micro_batches() {
    // code_compat + per-micro-batch statistics (the current policy's entropies in the update),
    // with gradient accumulation over two micro-batches of 4 rows.
    let body = format!("{ROLLOUT}{TRAINER}micro_batch_rows = 4\n{REWARD_DIGIT}{HAPO}").replace(
        "fallback_threshold = 5.0",
        "fallback_threshold = 5.0\ncode_compat = true\nstats_scope = \"micro_batch\"\nfallback_check_padding = true",
    );
    let (mut t, _dir) = trainer("hapo_code", &body);
    assert_eq!(t.recipe.micro_batch_rows(), 4);
    check_hapo(&mut t);
}

/// RMT mid-training on the built-in raw-text corpus (`source = "text"`): each prompt is one RL
/// position of a document chosen by the entropy curriculum, the rollout is capped at
/// `⌈rollout_cap·B_t⌉ + answer_tokens`, the `length` reward reads `B_t` from the sample metadata
/// (no fixed budget in the recipe: a missing budget would abort the run), and the NTP loss on the
/// documents' other positions enters the update.
#[test]
fn rmt_three_steps() {
    let body = format!(
        "{ROLLOUT}{TRAINER}
[data]
source = \"text\"
path = \"builtin:tiny\"
require_answer = false

[reward]
on_error = \"abort\"
[[reward.fns]]
kind = \"match\"
weight = 0.8
[[reward.fns]]
kind = \"length\"
r_max = 1.0
weight = 0.2

[algorithm]
advantage = \"grpo\"
[algorithm.rmt]
budget_init = 8
budget_min = 2
budget_decay = 0.5
rollout_cap = 0.5
answer_tokens = 0
curriculum_start = 0.3
curriculum_end = 0.7
tiers_start = [0.6, 0.3, 0.1]
tiers_end = [0.1, 0.3, 0.6]
ntp_weight = 0.1
ntp_norm = \"token_mean\"
max_prefix_tokens = 16
"
    );
    let (mut t, _dir) = trainer("rmt", &body);
    let vocab = t.learner.model.config.vocab_size as f64;
    let before = snapshot(&t);
    let ms = run_steps(&mut t, 3);
    // B_t = max(2, floor(8·0.5^(t/3))) at t = 0, 1, 2; rows capped at ceil(0.5·B_t).
    let budgets: Vec<f64> = ms.iter().map(|m| scalar(m, "rmt/budget")).collect();
    assert_eq!(budgets, [8.0, 6.0, 5.0]);
    for (i, (m, cap)) in ms.iter().zip([4.0, 3.0, 3.0]).enumerate() {
        assert!(scalar(m, "response/length_max") <= cap, "step {}: rows not capped at {cap}", m.step);
        assert_eq!(scalar(m, "reward/errors"), 0.0);
        assert!(m.get("reward/length_mean").is_some() && m.get("reward/match_mean").is_some());
        // p_easy moves from 0.6 to 0.1 between t/T = 0.3 and 0.7 (spec §5.3.6).
        let u = ((i as f64 / 3.0 - 0.3) / 0.4).clamp(0.0, 1.0);
        assert!((scalar(m, "rmt/p_easy") - (0.6 - 0.5 * u)).abs() < 1e-12);
        // One NTP document per prompt; λ·mean NLL of a random model is near λ·ln V.
        assert_eq!(scalar(m, "rmt/ntp_seqs"), B as f64);
        let ntp = scalar(m, "actor/ntp_loss") / 0.1;
        assert!(ntp > 0.5 * vocab.ln() && ntp < 2.0 * vocab.ln(), "NTP loss {ntp} far from ln V = {}", vocab.ln());
    }
    assert!(max_change(&before, &t) > 0.0);
}

/// The NTP term moves the weights on its own: with every RL advantage zero (constant reward),
/// a step with `ntp_weight > 0` changes the weights and one with `ntp_weight = 0` does not.
#[test]
fn rmt_ntp_loss_alone_trains() {
    let body = |w: f64| {
        format!(
            "{ROLLOUT}{TRAINER}
[data]
source = \"text\"
path = \"builtin:tiny\"
require_answer = false
[reward]
[[reward.fns]]
kind = \"format\"
pattern = '.*'
matched = 1.0
unmatched = 1.0
[algorithm]
advantage = \"grpo\"
[algorithm.rmt]
budget_init = 8
ntp_weight = {w}
"
        )
    };
    let (mut on, _d1) = trainer("rmt_ntp_on", &body(0.5));
    let (mut off, _d2) = trainer("rmt_ntp_off", &body(0.0));
    let (b_on, b_off) = (snapshot(&on), snapshot(&off));
    on.step().unwrap();
    off.step().unwrap();
    assert!(scalar(&on.history[0], "actor/ntp_loss") > 0.0);
    assert!(max_change(&b_on, &on) > 0.0, "NTP loss did not move the weights");
    assert_eq!(max_change(&b_off, &off), 0.0, "zero advantages and λ = 0 must not move the weights");
}

/// One HAPO temperature implementation (issue 12, item 6): the rollout engine's statistics type
/// is `rlpo_algo`'s, so the learner's statistics (including the released-code mode's sign) reach
/// the sampler unchanged, and the rollout computes `T_base·(1 + τ·h̃)` with `rlpo_algo`'s h̃.
#[test]
fn hapo_temperature_has_one_implementation() {
    use std::any::TypeId;
    assert_eq!(TypeId::of::<rlpo_rollout::EntropyStats>(), TypeId::of::<rlpo_algo::HapoStats>());
}
