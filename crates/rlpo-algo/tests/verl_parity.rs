//! Reference parity: rlpo-algo against verl 0.9.1's own functions (`verl_oracle.py`, started once),
//! on seeded random cases in float64. Values and gradients must agree within 1e-6 (relative above
//! magnitude 1). Families, at least 10 cases each, with ragged lengths, empty rows, singleton
//! groups and micro-batches summed into one optimizer step:
//!
//! | family | rlpo | verl 0.9.1 |
//! | --- | --- | --- |
//! | GRPO, Dr. GRPO | `advantage = "grpo"`, `"dr_grpo"` | `compute_grpo_outcome_advantage` |
//! | RLOO | `advantage = "rloo"` | `compute_rloo_outcome_advantage` |
//! | REINFORCE++-baseline | `advantage = "reinforce_plus_plus_baseline"` | `compute_reinforce_plus_plus_baseline_outcome_advantage` |
//! | vanilla surrogate × 4 aggregations | `base = "grpo"`, `loss.agg` | `compute_policy_loss_vanilla` + `agg_loss` |
//! | KL k1 / k2 / k3 | `loss.kl_coef`, `kl_estimator` | `kl_penalty` + `agg_loss` |
//! | GSPO | `base = "gspo"`, `gspo_agg` | `compute_policy_loss_gspo` |
//! | GSPO-token × 4 aggregations | `base = "gspo_token"` | `compute_policy_loss_gspo` |
//! | CISPO × 4 aggregations | `base = "cispo"` | `compute_policy_loss_cispo` |
//! | DAPO overlong penalty | `[algorithm.dapo.overlong]` | `DAPORewardManager` |
//! | rollout correction (token / sequence, TIS / MIS) | `[algorithm.rollout_correction]` | `compute_rollout_correction_and_rejection_mask` |
//!
//! Documented differences are asserted, not skipped: sequence means divide by the rows that have
//! loss tokens (verl's trainer: by all rows of the mini-batch), and the overlong penalty is
//! clamped at `−factor` beyond `max_len` (verl's grows without bound). Every clip branch (lower,
//! upper, dual clip, the ±20 log-ratio clamp, GSPO's clamp at 10) is counted and must occur.

mod parity;

use parity::cases::{self, AGGS};
use parity::{assert_rows_close, close, json_rows, json_vec, rlpo, run_oracle, Rng};
use rlpo_algo::config::AdvantageKind;
use rlpo_algo::kl::KlEstimator;
use rlpo_algo::AggMode;
use serde_json::Value;
use std::collections::BTreeMap;

const PER_FAMILY: usize = 12;

enum Case {
    Adv(cases::AdvCase),
    Policy(cases::PolicyCase),
    Corr(cases::CorrCase),
    Overlong(cases::OverlongCase),
}

impl Case {
    fn family(&self) -> String {
        match self {
            Case::Adv(c) => c.family.to_string(),
            Case::Policy(c) if c.rows_all => "difference: sequence mean over all rows".into(),
            Case::Policy(c) => c.family.split('/').next().unwrap().to_string() + &c.family.find("+kl").map_or(String::new(), |i| c.family[i..].to_string()),
            Case::Corr(_) => "rollout_corr".into(),
            Case::Overlong(_) => "overlong".into(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Case::Adv(c) => c.json(),
            Case::Policy(c) => c.json(),
            Case::Corr(c) => c.json(),
            Case::Overlong(c) => c.json(),
        }
    }
}

fn build_cases(rng: &mut Rng) -> Vec<Case> {
    let mut out = Vec::new();
    for (family, kind) in [
        ("grpo", AdvantageKind::Grpo),
        ("dr_grpo", AdvantageKind::DrGrpo),
        ("rloo", AdvantageKind::Rloo),
        ("rfpp_baseline", AdvantageKind::ReinforcePlusPlusBaseline),
    ] {
        out.extend(cases::advantage_cases(rng, family, kind, PER_FAMILY).into_iter().map(Case::Adv));
    }
    for i in 0..4 * PER_FAMILY {
        out.push(Case::Policy(cases::vanilla_case(rng, AGGS[i % 4], None, i)));
    }
    for (k, kl) in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3].into_iter().enumerate() {
        for i in 0..PER_FAMILY {
            out.push(Case::Policy(cases::vanilla_case(rng, AGGS[(i + k) % 4], Some(kl), i)));
        }
    }
    for i in 0..PER_FAMILY {
        out.push(Case::Policy(cases::gspo_case(rng, false, i, i)));
        out.push(Case::Policy(cases::gspo_case(rng, true, i, i)));
        out.push(Case::Policy(cases::cispo_case(rng, AGGS[i % 4], i)));
        out.push(Case::Corr(cases::corr_case(rng, i)));
        out.push(Case::Overlong(cases::overlong_case(rng)));
    }
    // Documented difference: sequence means over all rows (verl's trainer) vs rows with tokens.
    for i in 0..4 {
        let mut c = cases::vanilla_case(rng, [AGGS[1], AGGS[2], AGGS[3], AGGS[1]][i], None, 0);
        while !c.shape.has_empty_row() {
            c = cases::vanilla_case(rng, [AGGS[1], AGGS[2], AGGS[3], AGGS[1]][i], None, 0);
        }
        c.rows_all = true;
        out.push(Case::Policy(c));
    }
    out
}

fn check_policy(c: &cases::PolicyCase, r: &Value) {
    let (value, grad) = rlpo::policy(c);
    let (v_verl, g_verl) = (r["value"].as_f64().unwrap(), json_rows(&r["grad"]));
    if c.rows_all {
        let n = c.shape.n() as f64;
        let n_r = c.shape.lengths.iter().filter(|&&l| l > 0).count() as f64;
        assert!(n_r < n && c.loss.agg_mode() != AggMode::TokenMean, "a difference case needs an empty row");
        let scale = n_r / n;
        assert!(close(value * scale, v_verl), "{}: rlpo {value} · n_R/n = {} vs verl {v_verl}", c.family, value * scale);
        let scaled: Vec<Vec<f64>> = grad.iter().map(|row| row.iter().map(|g| g * scale).collect()).collect();
        assert_rows_close(&scaled, &g_verl, &format!("{} gradient · n_R/n", c.family));
        assert!(!close(value, v_verl) || value.abs() < 1e-9, "{}: the documented difference did not show", c.family);
        return;
    }
    assert!(close(value, v_verl), "{}: value rlpo {value} vs verl {v_verl}\n{c:?}", c.family);
    assert_rows_close(&grad, &g_verl, &format!("{} gradient", c.family));
}

fn check_overlong(c: &cases::OverlongCase, r: &Value, beyond: &mut usize) {
    let got = rlpo::overlong(c);
    let want = json_vec(&r["reward"]);
    for (i, (&len, (a, b))) in c.lengths.iter().zip(got.iter().zip(&want)).enumerate() {
        if len > c.max_len {
            // rlpo clamps the penalty at −factor (the paper's −1 beyond L_max); verl does not.
            *beyond += 1;
            assert!(close(*a, c.scores[i] - c.factor) && *b < *a, "row {i} len {len}: rlpo {a}, verl {b}");
        } else {
            assert!(close(*a, *b), "overlong row {i} (len {len}, {c:?}): rlpo {a} vs verl {b}");
        }
    }
}

#[test]
fn rlpo_algo_matches_verl() {
    let mut rng = Rng(0x5EED_0012);
    let all = build_cases(&mut rng);
    let results = run_oracle(&all.iter().map(Case::json).collect::<Vec<_>>());
    let mut per_family: BTreeMap<String, usize> = BTreeMap::new();
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let (mut empty_rows, mut singletons, mut multi_micro, mut beyond_max) = (0, 0, 0, 0);
    for (case, r) in all.iter().zip(&results) {
        *per_family.entry(case.family()).or_default() += 1;
        match case {
            Case::Adv(c) => {
                empty_rows += usize::from(c.shape.has_empty_row());
                singletons += usize::from(c.shape.g == 1);
                assert_rows_close(&rlpo::advantages(c), &json_rows(&r["adv"]), &format!("{} advantages (g = {})", c.family, c.shape.g));
            }
            Case::Policy(c) => {
                empty_rows += usize::from(c.shape.has_empty_row());
                multi_micro += usize::from(c.micro.len() > 1);
                rlpo::branches(c, &mut hits);
                check_policy(c, r);
            }
            Case::Corr(c) => {
                let out = rlpo::correction(c);
                let what = &c.policy.family;
                // Weights matter where the token stays in the loss.
                let masked = |w: &[Vec<f64>], m: &[Vec<f64>]| -> Vec<Vec<f64>> {
                    w.iter().zip(m).map(|(wr, mr)| wr.iter().zip(mr).map(|(a, b)| a * b).collect()).collect()
                };
                let verl_mask = json_rows(&r["mask"]);
                assert_rows_close(&out.mask, &verl_mask, &format!("{what} mask"));
                assert_rows_close(&masked(&out.weights, &out.mask), &masked(&json_rows(&r["weights"]), &verl_mask), &format!("{what} weights"));
                assert!(close(out.k3, r["k3_kl"].as_f64().unwrap()), "{what}: mismatch k3 {} vs verl {}", out.k3, r["k3_kl"]);
                assert!(close(out.value, r["value"].as_f64().unwrap()), "{what}: loss {} vs verl {}", out.value, r["value"]);
                assert_rows_close(&out.grad, &json_rows(&r["grad"]), &format!("{what} gradient"));
                *hits.entry(format!("corrected tokens ({what})")).or_default() +=
                    out.mask.iter().flatten().filter(|&&m| m == 0.0).count().min(1) + usize::from(out.weights.iter().flatten().any(|&w| w == c.cfg.threshold));
            }
            Case::Overlong(c) => check_overlong(c, r, &mut beyond_max),
        }
    }
    eprintln!("cases per family: {per_family:#?}\nbranches hit: {hits:#?}");
    for (family, n) in &per_family {
        assert!(*n >= 4 && (family.starts_with("difference") || *n >= 10), "family {family}: only {n} cases");
    }
    for branch in [
        "Grpo: lower clip",
        "Grpo: upper clip",
        "Grpo: dual clip",
        "Grpo: ±20 log-ratio clamp",
        "Cispo: upper clip",
        "Cispo: lower clip",
        "Cispo: ±20 log-ratio clamp",
        "gspo: lower clip",
        "gspo: upper clip",
        "gspo: log-ratio clamp at 10",
    ] {
        assert!(hits.get(branch).copied().unwrap_or(0) > 0, "no case hit the branch {branch:?}: {hits:?}");
    }
    assert!(empty_rows > 0 && singletons > 0 && multi_micro > 0 && beyond_max > 0, "coverage: {empty_rows} {singletons} {multi_micro} {beyond_max}");
}
