//! The recipe features that change the update itself, proven at trainer level on the tiny random
//! `tiny-qwen2` (each test fails if its feature is parsed but not applied in the training step):
//!
//! - several optimizer steps per training step (`ppo_epochs = 2`, `mini_batch_rows` < rows): one
//!   version per update, π_old recomputed (equal to the rollout's within 1e-4), the ratio away
//!   from 1 in the second epoch, `actor/pg_loss` and `actor/clip_frac` recomputed from the logged
//!   log-probs, and clipping once the learning rate is raised;
//! - KL (`kl_coef > 0`): the reference log-probs are the initial model's, `actor/kl` is k3 of the
//!   logged learner and reference log-probs (0 at step 1), and the KL term is in the gradient;
//! - `max_staleness = 1`: rows carry their generating version, and the stale step's loss
//!   recomputed against the rollout's own log-probs matches the trainer's;
//! - bf16 training on CPU: fp32 master weights move, the bf16 weights are their rounding, the
//!   rollout/learner log-prob gap is bounded, and resume is bit-exact.
//!
//! Rewards come from the test plugin (`alternating`: every group varies, so every step moves the
//! weights), so no check depends on the seed.

mod common;

use common::oracle::{forward_logprobs, grpo_token, k3, rows, vec1};
use common::*;
use rlpo_train::step_record::{OldLogpSource, StepRecord};
use rlpo_train::{checkpoint, Trainer};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Largest `|a − b|` over the tokens where `mask` is set.
fn max_diff(a: &[Vec<f64>], b: &[Vec<f64>], mask: &[Vec<f64>]) -> f64 {
    let mut worst = 0f64;
    for ((a, b), m) in a.iter().zip(b).zip(mask) {
        for ((x, y), m) in a.iter().zip(b).zip(m) {
            if *m > 0.0 {
                worst = worst.max((x - y).abs());
            }
        }
    }
    worst
}

/// Per optimizer step of `rec`: its policy-gradient loss and clip fraction recomputed from the
/// logged current log-probs against π_old `old` (`[N][T]`), with GRPO advantages of the logged
/// rewards and `token_mean` over the loss mask.
fn recomputed_losses(rec: &StepRecord, old: &[Vec<f64>], adv: &[f64]) -> Vec<(f64, f64)> {
    let keep = rows(&rec.plan.loss_mask);
    rec.updates
        .iter()
        .filter(|u| u.applied)
        .map(|u| {
            let (mut loss, mut clipped, mut tokens) = (0.0, 0.0, 0.0);
            for mb in &u.micro {
                let logp = rows(&mb.logp);
                for (i, r) in mb.rows.clone().enumerate() {
                    let r = r as usize;
                    for j in 0..logp[i].len() {
                        if keep[r][j] > 0.0 {
                            let (l, _, c) = grpo_token(adv[r], (logp[i][j] - old[r][j]).exp(), 0.2, 0.2, 3.0);
                            loss += l;
                            clipped += c as u8 as f64;
                            tokens += 1.0;
                        }
                    }
                }
            }
            (loss / tokens, clipped / tokens)
        })
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = v.collect();
    v.iter().sum::<f64>() / v.len() as f64
}

const EPOCHS: &str = "ppo_epochs = 2\nmini_batch_rows = 4\n";

#[test]
fn several_optimizer_steps_per_training_step() {
    let alt = reward_fixed("alternating");
    let body = format!("{ROLLOUT}{TRAINER}{EPOCHS}{alt}");
    let (mut t, _d) = recorded_trainer("epochs", &body, |s| s);
    assert_eq!(t.recipe.optimizer_steps_per_step(), 4);
    for k in 1..=2u64 {
        let m = step(&mut t);
        let rec = t.last_step.as_ref().expect("recorded");
        // One weights version per update: 2 epochs × 2 mini-batches.
        assert_eq!((rec.version_before, t.version), (4 * (k - 1), 4 * k), "step {k}");
        assert_eq!(scalar(&m, "optim/applied_steps"), 4.0);
        let plan: Vec<(usize, i64, bool)> = rec.updates.iter().map(|u| (u.epoch, u.rows.start, u.applied)).collect();
        assert_eq!(plan, [(0, 0, true), (0, 4, true), (1, 0, true), (1, 4, true)], "step {k}");
        // π_old: a learner forward before the update, equal to the rollout's within 1e-4.
        assert_eq!(rec.old_logp_source, OldLogpSource::Recomputed);
        let (old, mask) = (rows(rec.old_logp.as_ref().unwrap()), rows(&rec.batch.response_mask));
        let d_old = max_diff(&old, &rows(&rec.batch.rollout_logp), &mask);
        assert!(d_old <= 1e-4, "step {k}: recomputed old log-probs vs the rollout's: {d_old}");
        // The ratio is 1 before the first update and moves once the weights have.
        let ratio_gap = |u: usize| {
            let mb = &rec.updates[u].micro[0];
            let r0 = mb.rows.start as usize;
            max_diff(&rows(&mb.logp), &old[r0..r0 + mb.logp.size()[0] as usize], &mask[r0..])
        };
        let (first, second_epoch) = (ratio_gap(0), ratio_gap(2).max(ratio_gap(3)));
        eprintln!("step {k}: |logp − old| first update {first:.2e}, second epoch {second_epoch:.2e}");
        assert!(first <= 1e-5, "step {k}: ratio ≠ 1 before any update: {first}");
        assert!(second_epoch > 1e-4, "step {k}: the second epoch's ratio is still 1 ({second_epoch})");
        // The logged loss and clip fraction are those of the logged log-probs.
        let adv = group_advantages(&rec.scores, G, true, 1e-6);
        let per_update = recomputed_losses(rec, &old, &adv);
        let pg = mean(per_update.iter().map(|p| p.0));
        assert!((scalar(&m, "actor/pg_loss") - pg).abs() <= 1e-6, "step {k}: pg_loss {} vs {pg}", scalar(&m, "actor/pg_loss"));
        let cf = mean(per_update.iter().map(|p| p.1));
        assert!((scalar(&m, "actor/clip_frac") - cf).abs() <= 1e-6, "step {k}: clip_frac {} vs {cf}", scalar(&m, "actor/clip_frac"));
    }
}

#[test]
fn clip_frac_counts_clipped_tokens_when_the_learning_rate_is_raised() {
    let alt = reward_fixed("alternating");
    let body = format!("{ROLLOUT}{TRAINER}{EPOCHS}{alt}");
    let (mut t, _d) = recorded_trainer("epochs_hot", &body, |s| s.replace("lr = 1e-3", "lr = 2e-2"));
    let m = step(&mut t);
    let rec = t.last_step.as_ref().expect("recorded");
    let adv = group_advantages(&rec.scores, G, true, 1e-6);
    let cf = mean(recomputed_losses(rec, &rows(rec.old_logp.as_ref().unwrap()), &adv).iter().map(|p| p.1));
    let logged = scalar(&m, "actor/clip_frac");
    eprintln!("lr 2e-2: clip_frac {logged:.4} (recomputed {cf:.4})");
    assert!(logged > 0.0, "no token clipped at lr 2e-2");
    assert!((logged - cf).abs() <= 1e-6, "clip_frac {logged} vs {cf}");
}

#[test]
fn kl_in_training_is_k3_against_the_initial_policy() {
    let alt = reward_fixed("alternating");
    let beta = 0.1;
    let body = format!("{ROLLOUT}{TRAINER}{alt}\n[loss]\nkl_coef = {beta}\n");
    let (mut t, _d) = recorded_trainer("kl", &body, |s| s);
    let initial = rlpo_model::CausalLm::load(&fixture("tiny-qwen2"), &Default::default()).unwrap();
    for k in 1..=2 {
        let m = step(&mut t);
        let rec = t.last_step.as_ref().expect("recorded");
        let mask = rows(&rec.batch.response_mask);
        // The reference is the initial model, not the policy being trained.
        let reference = rows(rec.ref_logp.as_ref().expect("reference log-probs"));
        let d_ref = max_diff(&reference, &forward_logprobs(&initial, &rec.batch, 1.0), &mask);
        assert!(d_ref <= 1e-5, "step {k}: reference log-probs vs the initial model's: {d_ref}");
        let adv = vec1(&rec.plan.advantages);
        let keep = rows(&rec.plan.loss_mask);
        let norm: f64 = keep.iter().flatten().sum();
        let (mut kl, mut checked) = (0.0, 0);
        assert_eq!(rec.updates.len(), 1);
        for mb in &rec.updates[0].micro {
            let (logp, old, grad) = (rows(&mb.logp), rows(&mb.old_logp), rows(&mb.grad));
            for (i, r) in mb.rows.clone().enumerate() {
                let r = r as usize;
                for j in 0..logp[i].len() {
                    if keep[r][j] == 0.0 {
                        continue;
                    }
                    kl += k3(logp[i][j], reference[r][j]) / norm;
                    // ∂/∂logp of (GRPO term + β·k3) / Σmask; k3' = 1 − exp(ref − logp).
                    let ratio = (logp[i][j] - old[i][j]).exp();
                    let (_, slope, _) = grpo_token(adv[r], ratio, 0.2, 0.2, 3.0);
                    let want = (slope * ratio + beta * (1.0 - (reference[r][j] - logp[i][j]).exp())) / norm;
                    let g = grad[i][j];
                    assert!((g - want).abs() <= 1e-6 * want.abs() + 1e-9, "step {k}: row {r} token {j}: gradient {g}, want {want}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 0);
        let logged = scalar(&m, "actor/kl");
        eprintln!("step {k}: actor/kl {logged:.3e} (recomputed {kl:.3e})");
        assert!((logged - kl).abs() <= 1e-6 * kl.abs().max(1e-3), "step {k}: actor/kl {logged} vs k3 {kl}");
        if k == 1 {
            assert!(logged.abs() <= 1e-7, "step 1: the policy is the reference, KL {logged}");
        } else {
            assert!(logged > 1e-6, "step {k}: the policy moved, yet KL {logged}");
        }
    }
}

#[test]
fn stale_step_loss_is_taken_against_the_generating_policy() {
    let alt = reward_fixed("alternating");
    let body = format!("{ROLLOUT}{TRAINER}max_staleness = 1\n{alt}");
    let (mut t, _d) = recorded_trainer("stale", &body, |s| s);
    for k in 1..=3u64 {
        let m = step(&mut t);
        let rec = t.last_step.as_ref().expect("recorded");
        // Rows carry the version that generated them: step k's rows come from before step k − 1's update.
        let generated = k.saturating_sub(2);
        assert_eq!(rec.version_before, k - 1, "step {k}");
        assert!(rec.batch.versions.iter().all(|&v| v == generated), "step {k}: versions {:?}", rec.batch.versions);
        assert!(rec.groups.iter().flat_map(|g| &g.completions).all(|c| c.policy_version == generated));
        assert_eq!(scalar(&m, "train/staleness"), (k - 1 - generated) as f64);
        if k == 1 {
            continue;
        }
        // The loss against the generating policy: the rollout's own log-probs, row by row.
        let completions: Vec<_> = rec.groups.iter().flat_map(|g| &g.completions).collect();
        let width = rec.batch.response_width() as usize;
        let old: Vec<Vec<f64>> = completions
            .iter()
            .map(|c| (0..width).map(|j| c.base_logprobs.get(j).map_or(0.0, |&x| x as f64)).collect())
            .collect();
        let mask: Vec<Vec<f64>> = completions.iter().map(|c| (0..width).map(|j| (j < c.len()) as u8 as f64).collect()).collect();
        let adv = group_advantages(&rec.scores, G, true, 1e-6);
        let per_update = recomputed_losses(rec, &old, &adv);
        let logged = scalar(&m, "actor/pg_loss");
        assert!((logged - per_update[0].0).abs() <= 1e-6, "step {k}: pg_loss {logged} vs {} against the rollout's log-probs", per_update[0].0);
        let mb = &rec.updates[0].micro[0];
        let gap = max_diff(&rows(&mb.logp), &old, &mask);
        assert!(gap > 1e-4, "step {k}: stale rows with ratio 1 everywhere ({gap}): vacuous");
        assert_eq!(rec.old_logp_source, OldLogpSource::Rollout);
        assert_eq!(rows(rec.old_logp.as_ref().unwrap()), old, "step {k}: π_old is not the rollout's");
    }
}

/// fp32 master weights by name.
fn masters(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.learner.opt.master.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
}

fn comparable(m: &rlpo_train::metrics::StepMetrics) -> BTreeMap<String, u64> {
    m.scalars.iter().filter(|(k, _)| !k.starts_with("timing/") && !k.starts_with("perf/")).map(|(k, v)| (k.clone(), v.to_bits())).collect()
}

#[test]
fn bf16_training_moves_fp32_masters_and_resumes_bit_exactly() {
    let alt = reward_fixed("alternating");
    let body = format!("{ROLLOUT}{TRAINER}{alt}");
    let bf16 = |s: String| s.replace("dtype = \"f32\"", "dtype = \"bf16\"");
    let (mut t, dir) = recorded_trainer("bf16", &body, bf16);
    let params = t.learner.model.var_store().variables();
    assert!(params.values().all(|p| p.kind() == Kind::BFloat16));
    let mut before = masters(&t);
    assert_eq!(before.len(), params.len(), "one fp32 master per bf16 parameter");
    for k in 1..=2 {
        let m = step(&mut t);
        let now = masters(&t);
        let moved = now.iter().map(|(n, w)| (w - &before[n]).abs().max().double_value(&[])).fold(0.0, f64::max);
        assert!(moved > 0.0, "step {k}: the fp32 masters did not move");
        for (name, p) in &params {
            assert!(p.equal(&now[name].to_kind(Kind::BFloat16)), "step {k}: {name} is not the bf16 rounding of its master");
        }
        let gap = scalar(&m, "actor/rollout_logprob_gap");
        eprintln!("bf16 step {k}: rollout/learner log-prob gap {gap:.4}, master change {moved:.2e}");
        assert!(gap < 0.02, "step {k}: bf16 rollout vs learner log-prob gap {gap} (measured 0.006)");
        before = now;
    }
    // Resume: one step, checkpoint, a fresh trainer resumed, one more step == two straight steps.
    let text = |name: &str| bf16(recipe_text(&fixture("tiny-qwen2"), dir.path(), name, &body));
    let mut first = Trainer::new(parse(&text("bf16_split"))).unwrap();
    step(&mut first);
    let ckpt = checkpoint::save(&first).unwrap();
    drop(first);
    let mut second = Trainer::new(parse(&text("bf16_split"))).unwrap();
    second.resume_from(&ckpt).unwrap();
    let resumed = step(&mut second);
    assert_eq!(comparable(&resumed), comparable(&t.history[1]), "metrics of step 2 after resume");
    let (a, b) = (snapshot(&t), snapshot(&second));
    for (name, w) in &a {
        assert!(w.equal(&b[name]), "{name} differs after resume");
    }
    let (ma, mb) = (masters(&t), masters(&second));
    for (name, w) in &ma {
        assert!(w.equal(&mb[name]), "master {name} differs after resume");
    }
}
