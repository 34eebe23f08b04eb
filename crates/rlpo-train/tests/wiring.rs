//! The recipe features that change what the rollout samples and what the loss sees, proven at
//! trainer level on the tiny random `tiny-qwen2` (each test fails if its feature is parsed but
//! not applied in the training step):
//!
//! - HAPO adaptive temperature: from step 2 every sampled token's temperature is
//!   `T_base·(1 + τ·h̃(H))` under the statistics the previous step stored, recomputed here from
//!   the spec; `T_base` exactly with adaptive temperature off;
//! - D³S: the loss gradient is exactly zero on response tokens outside the D³S mask and
//!   `−A·ρ/Σmask` inside; `N_s = G` with token keep 1.0 is bit for bit the step without D³S;
//! - HAPO advantages: the token-level group average of the logged rewards and lengths (GRPO
//!   fallback at the threshold), not GRPO's.
//!
//! The step's tensors come from `Trainer::record_steps` (`rlpo_train::step_record`); the numbers
//! they are checked against from `common::oracle`, written from the spec. Rewards come from the
//! test plugin (`alternating`: every group varies), so no check depends on the seed.

mod common;

use common::oracle::{grpo_token, hapo_stats, hapo_temperature, rows, token_level_advantages, vec1};
use common::*;

/// HAPO with its adaptive rollout temperature, τ = 0.1 (a visible modulation) at T_base = 0.8.
const HAPO_TEMPERATURE: &str = r#"
[algorithm]
advantage = "hapo"
[algorithm.hapo]
adaptive_temperature = true
quantile = 0.8
tau = 0.1
"#;

fn rollout_at(t_base: f64) -> String {
    ROLLOUT.replace("temperature = 1.0", &format!("temperature = {t_base}"))
}

#[test]
fn hapo_temperature_reaches_every_sampled_token() {
    let alt = reward_fixed("alternating");
    let (t_base, tau) = (0.8, 0.1);
    let body = format!("{}{TRAINER}{alt}{HAPO_TEMPERATURE}", rollout_at(t_base));
    let (mut t, _d) = recorded_trainer("hapo_temperature", &body, |s| s);
    for k in 1..=3 {
        // The statistics the rollout of step k is given: those stored by step k − 1.
        let stats = t.state.hapo_stats;
        assert_eq!(stats.is_some(), k > 1, "step {k}: statistics before the rollout");
        step(&mut t);
        let rec = t.last_step.as_ref().expect("recorded");
        let mut moved = 0f64;
        for c in rec.groups.iter().flat_map(|g| &g.completions) {
            assert_eq!(c.temperatures.len(), c.tokens.len());
            for (i, (&temp, &h)) in c.temperatures.iter().zip(&c.entropies).enumerate() {
                let want = match &stats {
                    None => t_base,
                    Some(s) => hapo_temperature(h as f64, s.q, s.s, s.inv_h_pos, s.scale_neg, t_base, tau),
                };
                let (p, g) = (c.prompt_index, c.sample_index);
                assert!((temp as f64 - want).abs() <= 1e-6, "step {k}, row ({p}, {g}), token {i}: T = {temp}, want {want} (H = {h})");
                moved = moved.max((want - t_base).abs());
            }
        }
        if k > 1 {
            assert!(moved > 1e-2, "step {k}: the statistics move no token's temperature (max |T − T_base| = {moved}): vacuous");
        }
        // What the next rollout gets: the statistics of this step's entropies over its valid tokens.
        let s = t.state.hapo_stats.expect("statistics stored for the next rollout");
        let (ent, mask) = (rows(&rec.batch.rollout_entropy), rows(&rec.batch.response_mask));
        let valid: Vec<f64> = ent.iter().flatten().zip(mask.iter().flatten()).filter(|(_, m)| **m > 0.0).map(|(h, _)| *h).collect();
        let (q, sd, inv_pos, neg) = hapo_stats(&valid, 0.8);
        for (name, got, want) in [("q", s.q, q), ("s", s.s, sd), ("inv_h_pos", s.inv_h_pos, inv_pos), ("scale_neg", s.scale_neg, neg)] {
            assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "step {k}: statistic {name} = {got}, want {want}");
        }
    }
}

#[test]
fn hapo_temperature_is_the_base_with_adaptive_temperature_off() {
    let alt = reward_fixed("alternating");
    let t_base = 0.8;
    let body = format!("{}{TRAINER}{alt}{HAPO_TEMPERATURE}", rollout_at(t_base)).replace("adaptive_temperature = true", "adaptive_temperature = false");
    let (mut t, _d) = recorded_trainer("hapo_no_temperature", &body, |s| s);
    for k in 1..=2 {
        step(&mut t);
        assert!(t.state.hapo_stats.is_some(), "HAPO still computes its statistics");
        let rec = t.last_step.as_ref().expect("recorded");
        for c in rec.groups.iter().flat_map(|g| &g.completions) {
            assert!(c.temperatures.iter().all(|&x| x == t_base as f32), "step {k}: {:?}", c.temperatures);
        }
    }
}

/// D³S keeping 2 of G = 4 rows per group and half of their tokens.
const D3S_HALF: &str = r#"
[algorithm.d3s]
samples_init = 2
samples_final = 2
token_keep_init = 0.5
token_keep_final = 0.5
"#;

#[test]
fn d3s_mask_gates_the_loss_gradient() {
    let alt = reward_fixed("alternating");
    let body = format!("{ROLLOUT}{TRAINER}{alt}{D3S_HALF}");
    let (mut t, _d) = recorded_trainer("d3s_gradient", &body, |s| s);
    let (mut outside, mut inside) = (0, 0);
    for k in 1..=2 {
        let m = step(&mut t);
        assert_eq!(scalar(&m, "select/d3s_samples_per_group"), 2.0);
        let rec = t.last_step.as_ref().expect("recorded");
        let (keep, valid, adv) = (rows(&rec.plan.loss_mask), rows(&rec.batch.response_mask), vec1(&rec.plan.advantages));
        let norm: f64 = keep.iter().flatten().sum();
        assert_eq!(rec.updates.len(), 1, "one optimizer step");
        for mb in &rec.updates[0].micro {
            let (grad, logp, old) = (rows(&mb.grad), rows(&mb.logp), rows(&mb.old_logp));
            for (i, r) in mb.rows.clone().enumerate() {
                let r = r as usize;
                for j in 0..grad[i].len() {
                    let g = grad[i][j];
                    if keep[r][j] == 0.0 {
                        assert_eq!(g, 0.0, "step {k}: row {r} token {j} outside the D³S mask has gradient {g}");
                        outside += (valid[r][j] > 0.0 && adv[r] != 0.0) as usize;
                        continue;
                    }
                    // token_mean: ∂ℓ/∂logp = (∂ℓ/∂ρ)·ρ / Σmask, with ρ = 1 in a one-update step.
                    let ratio = (logp[i][j] - old[i][j]).exp();
                    let (_, slope, _) = grpo_token(adv[r], ratio, 0.2, 0.2, 3.0);
                    let want = slope * ratio / norm;
                    assert!((g - want).abs() <= 1e-6 * want.abs() + 1e-9, "step {k}: row {r} token {j}: gradient {g}, want {want}");
                    inside += (want != 0.0) as usize;
                }
            }
        }
    }
    // Tokens D³S dropped would have had a gradient: the mask is what zeroes it.
    assert!(outside > 0 && inside > 0, "vacuous: {outside} dropped tokens with an advantage, {inside} kept");
}

#[test]
fn d3s_keeping_everything_is_bit_exactly_the_plain_step() {
    let alt = reward_fixed("alternating");
    let all = "[algorithm.d3s]\nsamples_init = 4\nsamples_final = 4\ntoken_keep_init = 1.0\ntoken_keep_final = 1.0\n";
    let (mut d3s, _d1) = recorded_trainer("d3s_all", &format!("{ROLLOUT}{TRAINER}{alt}{all}"), |s| s);
    let (mut plain, _d2) = recorded_trainer("plain", &format!("{ROLLOUT}{TRAINER}{alt}"), |s| s);
    for _ in 0..2 {
        let (a, b) = (step(&mut d3s), step(&mut plain));
        assert_eq!(scalar(&a, "select/d3s_samples_per_group"), G as f64, "D³S ran");
        assert_eq!(scalar(&a, "actor/pg_loss").to_bits(), scalar(&b, "actor/pg_loss").to_bits(), "step {}", a.step);
    }
    let (wa, wb) = (snapshot(&d3s), snapshot(&plain));
    for (k, w) in &wa {
        assert!(w.equal(&wb[k]), "{k} differs between N_s = G, K = 1 and no D³S");
    }
}

#[test]
fn hapo_advantages_are_token_level_group_averages_of_rewards_and_lengths() {
    let alt = reward_fixed("alternating");
    // Stop strings end random responses at different lengths, so the token weighting matters.
    let rollout = ROLLOUT.replace("threads_per_worker = 1", "threads_per_worker = 1\nstop = [\"e\", \"a\"]");
    let hapo = "[algorithm]\nadvantage = \"hapo\"\n[algorithm.hapo]\nfallback_threshold = 5.0\n";
    let body = format!("{rollout}{TRAINER}{alt}{hapo}").replace("total_steps = 3", "total_steps = 4");
    let (mut t, _d) = recorded_trainer("hapo_advantages", &body, |s| s);
    let mut differs = 0f64;
    for _ in 0..4 {
        let m = step(&mut t);
        let (r, lens) = (hist(&m, "reward/values"), hist(&m, "response/lengths"));
        let (want, fallback) = token_level_advantages(r, lens, G, 1e-6, 5.0);
        assert_close(hist(&m, "advantage/values"), &want, 1e-5, "hapo advantages");
        assert_eq!(scalar(&m, "select/hapo_fallback_groups"), fallback as f64, "step {}", m.step);
        let grpo = group_advantages(r, G, true, 1e-6);
        differs = want.iter().zip(&grpo).map(|(a, b)| (a - b).abs()).fold(differs, f64::max);
        if differs > 1e-3 && m.step >= 2 {
            break;
        }
    }
    assert!(differs > 1e-3, "no group's lengths changed its advantages in 4 steps: the check cannot tell HAPO from GRPO");
}
