//! Trainer-level regression tests for the fidelity bugs of issue 12 (items 2 and 3 of "Found"),
//! on the tiny random-init `tiny-qwen2` fixture through the public API:
//!
//! - DAPO dynamic sampling with `metric = "acc"` reads the verifier's own correctness, not
//!   `score > 0`: with a format bonus every row scores > 0, yet a group of one right and one
//!   wrong-but-formatted answer is kept;
//! - with `metric = "score"` the filter sees the final shaped reward, overlong penalty included:
//!   equal raw scores with different lengths are kept;
//! - each generation batch of the refill loop has `gen_batch_factor · B` prompts;
//! - RMT: the NTP tokens entering the loss over one training step are exactly the step's NTP
//!   tokens, for mini-batches that split groups as well as for ones that do not;
//! - the rollout-vs-learner mismatch is logged whenever both log-probs exist, is near zero for
//!   rlpo's own fp32 engine, and is corrected (TIS / MIS) when it is not (a bf16 rollout).

mod common;

use common::*;
use rlpo_train::metrics::StepMetrics;
use rlpo_train::Trainer;

fn trainer(name: &str, body: &str) -> (Trainer, tempfile::TempDir) {
    trainer_with(name, body, |t| t)
}

/// [`trainer`] with an edit of the whole recipe text (e.g. keys of `[model]`).
fn trainer_with(name: &str, body: &str, edit: impl Fn(String) -> String) -> (Trainer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = edit(recipe_text(&fixture("tiny-qwen2"), dir.path(), name, body));
    let t = Trainer::new(parse(&text)).unwrap_or_else(|e| panic!("{name}: Trainer::new failed: {e}"));
    (t, dir)
}

fn steps(t: &mut Trainer, n: usize) -> Vec<StepMetrics> {
    (0..n).map(|i| t.step().unwrap_or_else(|e| panic!("{}: step {} failed: {e}", t.recipe.run.name, i + 1))).collect()
}

/// `[rollout]` with stop strings, so that random responses end at different lengths.
fn rollout_with_stops() -> String {
    ROLLOUT.replace("threads_per_worker = 1", "threads_per_worker = 1\nstop = [\"e\", \"a\"]")
}

/// A "math" verifier (here: the response has a digit, 1 / 0, about half of random responses)
/// plus a format bonus every response gets (0.1): every row scores > 0, the verifier says which
/// rows are right.
const MATH_PLUS_FORMAT: &str = r#"
[reward]
on_error = "abort"
[[reward.fns]]
kind = "format"
name = "math"
pattern = '[0-9]'
matched = 1.0
unmatched = 0.0
[[reward.fns]]
kind = "format"
name = "format"
pattern = '^'
matched = 0.1
unmatched = 0.1
"#;

#[test]
fn dapo_acc_comes_from_the_verifier_not_from_the_score() {
    let body = format!(
        "{ROLLOUT}{TRAINER}{MATH_PLUS_FORMAT}
[algorithm.dapo.filter_groups]
metric = \"acc\"
max_num_gen_batches = 10
on_exhausted = \"error\"
"
    );
    let (mut t, _dir) = trainer("dapo_acc", &body);
    for m in steps(&mut t, 3) {
        let r = hist(&m, "reward/values");
        assert_eq!(r.len(), B * G, "step {}: a full batch trains", m.step);
        assert!(r.iter().all(|&v| v > 0.0), "every row has the format bonus: {r:?}");
        for (gi, grp) in r.chunks(G).enumerate() {
            let right = grp.iter().filter(|&&v| v > 1.0).count();
            assert!(right > 0 && right < G, "step {}: group {gi} kept with constant correctness {grp:?}", m.step);
        }
        // The pass rate is the verifier's, not the share of rows with reward > 0.
        let pass = r.iter().filter(|&&v| v > 1.0).count() as f64 / r.len() as f64;
        assert!((scalar(&m, "reward/pass_rate") - pass).abs() < 1e-12, "step {}: pass rate", m.step);
    }
}

#[test]
fn dapo_score_sees_the_overlong_penalty() {
    // Every raw score is 1; L_max = 8, L_cache = 7: the penalty clamp((1 − len)/7, −1, 0) differs
    // between any two lengths, so only groups whose rows all have the same length are dropped.
    let body = format!(
        "{}{TRAINER}
[reward]
on_error = \"abort\"
[[reward.fns]]
kind = \"format\"
pattern = '^'
matched = 1.0
unmatched = 1.0
[algorithm.dapo.overlong]
max_len = 8
cache_len = 7
[algorithm.dapo.filter_groups]
metric = \"score\"
max_num_gen_batches = 10
on_exhausted = \"error\"
",
        rollout_with_stops()
    );
    let (mut t, _dir) = trainer("dapo_score", &body);
    for m in steps(&mut t, 2) {
        assert!(hist(&m, "reward/values").iter().all(|&v| v == 1.0));
        let lens = hist(&m, "response/lengths");
        assert_eq!(lens.len(), B * G);
        for (gi, grp) in lens.chunks(G).enumerate() {
            assert!(grp.iter().any(|&l| l != grp[0]), "step {}: group {gi} has equal lengths {grp:?}", m.step);
        }
    }
}

#[test]
fn dapo_refill_generates_gen_batch_factor_times_b_prompts() {
    let body = format!(
        "{ROLLOUT}{TRAINER}{REWARD_DIGIT}
[algorithm.dapo.filter_groups]
metric = \"acc\"
gen_batch_factor = 2.5
max_num_gen_batches = 10
"
    );
    let (mut t, _dir) = trainer("dapo_factor", &body);
    for m in steps(&mut t, 2) {
        // ceil(2.5 · 2) = 5 prompts per generation batch.
        let k = scalar(&m, "filter/gen_batches");
        assert_eq!(scalar(&m, "filter/gen_prompts"), 5.0 * k, "step {}", m.step);
        let tokens = scalar(&m, "perf/rollout_tokens");
        assert!(tokens > ((k - 1.0) * 5.0 * G as f64) && tokens <= k * (5 * G * MAX_NEW) as f64, "{tokens} tokens");
        assert_eq!(scalar(&m, "select/rows"), (B * G) as f64);
    }
}

/// RMT mid-training with B = 3 prompts of G = 4 rows: mini-batches of 6 and 3 rows split groups
/// across optimizer steps, 12, 4 and 2 do not. Each NTP document must enter the loss once.
#[test]
fn rmt_ntp_tokens_enter_the_loss_once_per_step() {
    for mini in [12, 6, 4, 3, 2] {
        let body = format!(
            "{ROLLOUT}
[trainer]
total_steps = 2
prompts_per_step = 3
mini_batch_rows = {mini}
[data]
source = \"text\"
path = \"builtin:tiny\"
require_answer = false
{REWARD_DIGIT}
[algorithm.rmt]
budget_init = 8
max_prefix_tokens = 16
"
        );
        let (mut t, _dir) = trainer(&format!("rmt_ntp_{mini}"), &body);
        let m = t.step().unwrap_or_else(|e| panic!("mini {mini}: {e}"));
        let want = scalar(&m, "rmt/ntp_tokens");
        assert_eq!(scalar(&m, "rmt/ntp_seqs"), 3.0);
        assert!(want > 0.0);
        assert_eq!(scalar(&m, "rmt/ntp_tokens_trained"), want, "mini_batch_rows = {mini}: NTP tokens in the loss vs the step's");
    }
}

/// The mismatch metrics exist whenever the learner's old log-probs and the rollout's both exist:
/// from the update's own forward (on-policy, one optimizer step) or from the recomputing forward
/// that rollout correction implies. rlpo's fp32 engine is near zero; a bf16 rollout is not, and
/// MIS removes the tokens whose ratio leaves the bounds.
#[test]
fn rollout_mismatch_is_logged_and_corrected() {
    let base = format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}");
    let (mut t, _d) = trainer("mismatch_fp32", &base);
    for m in steps(&mut t, 2) {
        let (kl, max) = (scalar(&m, "rollout/mismatch_kl"), scalar(&m, "rollout/mismatch_max"));
        eprintln!("fp32 step {}: mismatch_kl {kl:.3e} max {max:.3e}", m.step);
        assert!((0.0..1e-5).contains(&kl) && max < 1e-2, "step {}: fp32 engine mismatch kl {kl}, max {max}", m.step);
        assert!(m.get("rollout/truncated_frac").is_none() && m.get("rollout/masked_frac").is_none());
    }
    let tis = format!("{base}\n[algorithm.rollout_correction]\nlevel = \"token\"\nmode = \"truncate\"\nthreshold = 2.0\n");
    let (mut t, _d) = trainer("tis_fp32", &tis);
    for m in steps(&mut t, 2) {
        assert!(scalar(&m, "rollout/mismatch_kl") < 1e-5, "step {}", m.step);
        assert_eq!(scalar(&m, "rollout/truncated_frac"), 0.0, "nothing to truncate at fp32");
        assert!(scalar(&m, "actor/pg_loss").is_finite());
    }
    // bf16 rollout on its own worker: a real mismatch; tight MIS bounds mask some tokens.
    let mis = format!("{base}\n[algorithm.rollout_correction]\nlevel = \"token\"\nmode = \"mask\"\nthreshold = 1.001\n");
    let bf16 = |t: String| t.replace("dtype = \"f32\"", "dtype = \"f32\"\nrollout_dtype = \"bf16\"");
    let (mut t, _d) = trainer_with("mis_bf16", &mis, bf16);
    let ms = steps(&mut t, 2);
    for m in &ms {
        let kl = scalar(m, "rollout/mismatch_kl");
        eprintln!("bf16 step {}: mismatch_kl {kl:.3e} max {:.3e} masked_frac {:.3}", m.step, scalar(m, "rollout/mismatch_max"), scalar(m, "rollout/masked_frac"));
        assert!(kl > 1e-7 && kl.is_finite(), "step {}: bf16 rollout mismatch kl {kl}", m.step);
        assert!(scalar(m, "actor/pg_loss").is_finite());
    }
    let masked: f64 = ms.iter().map(|m| scalar(m, "rollout/masked_frac")).sum();
    assert!(masked > 0.0, "MIS at [1/1.001, 1.001] masked nothing of a bf16 rollout");
    // One step stale (`max_staleness = 1`): step 2 trains on data of the weights before step 1's
    // update; the correction recomputes old log-probs, so the staleness shows as mismatch.
    let stale = tis.replace("prompts_per_step = 2", "prompts_per_step = 2\nmax_staleness = 1");
    let (mut t, _d) = trainer("tis_stale", &stale);
    let ms = steps(&mut t, 2);
    assert_eq!(scalar(&ms[1], "train/staleness"), 1.0);
    let (fresh, stale_kl) = (scalar(&ms[0], "rollout/mismatch_kl"), scalar(&ms[1], "rollout/mismatch_kl"));
    eprintln!("max_staleness = 1: mismatch_kl step 1 {fresh:.3e}, step 2 {stale_kl:.3e}");
    assert!(stale_kl > 1e-7 && stale_kl > 100.0 * fresh, "stale data: {stale_kl} vs fresh {fresh}");
    assert!(ms.iter().all(|m| m.get("rollout/truncated_frac").is_some()));
    assert!(ms.iter().all(|m| scalar(m, "actor/pg_loss").is_finite()));
}
