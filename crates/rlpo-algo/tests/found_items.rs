//! Regression tests for the fidelity bugs of issue 12 ("Found" items 1, 4, 5, 7) at the level of
//! `rlpo-algo`: each failed before the fix. The trainer-level items (2, 3) are in
//! `crates/rlpo-train/tests/fidelity.rs`, item 6 (one HAPO temperature) in
//! `crates/rlpo-train/tests/algorithms.rs`.

use rlpo_algo::config::{AdvantageKind, HapoConfig};
use rlpo_algo::{compute_step_plan, policy_loss, validate_sections, AlgoState};
use rlpo_algo::{AlgorithmConfig, LossConfig, PolicyInputs, StepInputs};
use serde::Deserialize;
use tch::{Kind, Tensor};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Recipe {
    algorithm: AlgorithmConfig,
    loss: LossConfig,
}

fn load(src: &str, g: usize) -> Result<Recipe, String> {
    let r: Recipe = toml::from_str(src).map_err(|e| e.to_string())?;
    validate_sections(&r.algorithm, &r.loss, g).map_err(|e| e.to_string())?;
    Ok(r)
}

fn mat(v: &[f64], n: i64) -> Tensor {
    Tensor::from_slice(v).view([n, -1])
}

/// Item 1: GSPO has no dual clip (paper objective; verl `compute_policy_loss_gspo`). A row with
/// A < 0 and sequence ratio 5 keeps its loss `−A·5`; with the old default dual clip 3 it was
/// capped at `−3·A`.
#[test]
fn gspo_has_no_dual_clip() {
    let r = load("[loss]\nbase = \"gspo\"\n", 2).unwrap();
    let rewards = Tensor::from_slice(&[1.0f64, 0.0]);
    let mask = mat(&[1.0, 1.0, 1.0, 1.0], 2);
    let inputs = StepInputs {
        rewards: &rewards,
        response_mask: &mask,
        group_size: 2,
        entropy: None,
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan = compute_step_plan(&r.algorithm, &r.loss, &AlgoState::new(1), &inputs).unwrap();
    let adv = Vec::<f64>::try_from(&plan.advantages).unwrap();
    assert!(adv[0] > 0.0 && adv[1] < 0.0);
    // Row 0 at ratio 1, row 1 at sequence ratio 5.
    let old = mat(&[0.0; 4], 2);
    let l5 = 5f64.ln();
    let logp = mat(&[0.0, 0.0, l5, l5], 2);
    let pi = PolicyInputs { logp: &logp, old_logp: &old, ref_logp: None, entropy: None };
    let out = policy_loss(&r.algorithm, &r.loss, &plan.micro_batch(0, 2), &pi, &plan.normaliser(0, 2)).unwrap();
    // Sequence mean of [−A₀·1, −A₁·5].
    let want = 0.5 * (-adv[0] * 1.0 + -adv[1] * 5.0);
    let got = out.loss.double_value(&[]);
    assert!((got - want).abs() < 1e-9, "GSPO loss {got}, want {want} (no dual clip)");
}

/// Item 4: keys that nothing read are gone (RMT's composite reward is the `[reward]` section's)
/// or wired (HAPO's padding check).
#[test]
fn rmt_reward_keys_are_not_accepted() {
    for key in ["length_weight = 0.5", "r_max = 2.0"] {
        let e = load(&format!("[algorithm.rmt]\n{key}\n"), 8).unwrap_err();
        assert!(e.contains("unknown field"), "{key}: {e}");
    }
}

/// Item 4: `fallback_check_padding = true` makes a group fall back to GRPO when the padded
/// position's value `−μ/(σ + ε)` reaches the threshold (released code), `false` does not.
/// Rewards [1.0, 1.2], lengths [1, 4]: μ = 1.16, σ = 0.08, A = [−2, 0.5], padded value −14.5.
#[test]
fn hapo_fallback_check_padding_is_read() {
    let rewards = Tensor::from_slice(&[1.0f64, 1.2]);
    let mask = mat(&[1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0], 2);
    let entropy = mask.shallow_clone() * 0.5 + 0.1;
    let fallback = |check: bool| {
        let alg = AlgorithmConfig {
            advantage: AdvantageKind::Hapo,
            hapo: Some(HapoConfig { fallback_check_padding: check, ..Default::default() }),
            ..Default::default()
        };
        let inputs = StepInputs {
            rewards: &rewards,
            response_mask: &mask,
            group_size: 2,
            entropy: Some(&entropy),
            truncated: None,
            old_logp: None,
            rollout_logp: None,
        };
        let plan = compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(1), &inputs).unwrap();
        let fb = plan.hapo_fallback.unwrap().int64_value(&[0]);
        let adv = Vec::<f64>::try_from(&plan.advantages.to_kind(Kind::Double)).unwrap();
        (fb, adv)
    };
    let (fb_off, adv_off) = fallback(false);
    assert_eq!(fb_off, 0, "valid tokens only: |A| = 2 < 5");
    assert!((adv_off[0] + 2.0).abs() < 1e-4 && (adv_off[1] - 0.5).abs() < 1e-4, "{adv_off:?}");
    let (fb_on, adv_on) = fallback(true);
    assert_eq!(fb_on, 1, "padded value 14.5 >= 5 must trigger the fallback");
    // GRPO fallback: ±1/√2 with the unbiased std.
    assert!((adv_on[0] + std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-4, "{adv_on:?}");
}

/// Item 5: combinations that were accepted but wrong or silently changed are refused, naming
/// the key.
#[test]
fn silently_wrong_combinations_are_refused() {
    let cases: &[(&str, usize, &str)] = &[
        ("[loss]\nbase = \"gspo\"\nagg = \"token_mean\"", 8, "loss.agg"),
        ("[loss]\nbase = \"gspo\"\ndual_clip = 3.0", 8, "loss.dual_clip"),
        ("[algorithm.hapo]\nbeta = 1.5", 8, "algorithm.hapo.beta"),
        ("[algorithm.d3s]\nsamples_init = 1", 8, "algorithm.d3s.samples_init"),
    ];
    for (src, g, key) in cases {
        let e = load(src, *g).map(|_| ()).expect_err(src);
        assert!(e.starts_with(key), "recipe {src:?}: {e}");
    }
    // The defaults stay valid for small groups (round(G/4) = 1 is raised to 2 by default only).
    load("[algorithm.d3s]\n", 4).unwrap();
    load("[algorithm.hapo]\nbeta = 1.0", 8).unwrap();
}

/// Item 7: the aggregation table must not claim that verl's seq-mean-token-sum-norm omits
/// `1/n_R` (verl 0.9.1 divides by the non-empty rows times `loss_scale_factor`).
#[test]
fn docs_state_verl_constant_norm_correctly() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/algorithms.md")).unwrap();
    assert!(!doc.contains("omits `1/n_R`"), "docs/algorithms.md still says verl omits 1/n_R");
    assert!(doc.contains("seq-mean-token-sum-norm"), "docs/algorithms.md does not name verl's mode");
}
