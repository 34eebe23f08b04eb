//! HAPO adaptive temperature sampling (spec `algorithms.md` §4.3.2, Liu et al. 2025): each token is
//! sampled at `T_tok = T_base · (1 + τ · h̃)`, where `h̃ ∈ [−1, 1]` is the token's normalised
//! entropy under statistics `(q, s, 1/h⁺, scale⁻)` that the learner computed over the previous
//! step's `old_logp` entropies (§4.3.1). Without statistics (the first step) `T_tok = T_base`.
//!
//! The entropy fed in is the full-vocabulary entropy of `softmax(z / T_base)` (what the engine
//! records and what the learner's statistics are computed from), so statistics and rollout measure
//! the same quantity; with the usual `T_base = 1` this is exactly the spec's `entropy(softmax(z))`.
//! The statistics and h̃ are `rlpo-algo`'s (one implementation of HAPO's temperature): the
//! paper's intended semantics by default (low-entropy tokens get `h̃ < 0` and a lower
//! temperature), the released code's sign with `algorithm.hapo.code_compat = true` (§4.3.1 item 6).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[rollout.adaptive_temperature]`: enables HAPO adaptive temperature with strength τ.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveTemperature {
    /// Strength τ in `[0, 1)`; HAPO's code uses 0.05 (default), the paper 0.1.
    pub tau: f64,
}

impl Default for AdaptiveTemperature {
    fn default() -> Self {
        AdaptiveTemperature { tau: 0.05 }
    }
}

impl AdaptiveTemperature {
    /// τ must be in `[0, 1)` so that `T_tok` stays positive.
    pub fn validate(&self) -> Result<()> {
        if !(self.tau >= 0.0 && self.tau < 1.0) {
            return Err(Error::Config {
                key: "rollout.adaptive_temperature.tau".into(),
                message: format!("must be in [0, 1), got {}", self.tau),
            });
        }
        Ok(())
    }
}

/// Entropy statistics from the learner (§4.3.1): the one type [`rlpo_algo::HapoStats`], so that
/// what the learner computes (with or without HAPO's released-code sign, `code_compat`) reaches
/// the sampler unchanged. `scale_neg` is `1/|h⁻|` (intended) or `1/h⁻` (released code: every h̃
/// ≥ 0, so temperatures never drop below `T_base`).
pub type EntropyStats = rlpo_algo::HapoStats;

/// Per-token sampling temperature: `T_base · (1 + τ·h̃)` with statistics (the learner's own
/// formula, [`rlpo_algo::hapo::token_temperature`]), `T_base` without.
pub fn token_temperature(entropy: f64, base: f64, tau: f64, stats: Option<&EntropyStats>) -> f64 {
    match stats {
        Some(st) => rlpo_algo::hapo::token_temperature(entropy, st, base, tau),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    /// Spec §4.6 item 2 (numbers typed in from the spec, not computed here).
    const H: [f32; 6] = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6];

    /// The learner's statistics over `h` (all tokens valid), intended or released-code sign.
    fn stats(h: &[f32], code_compat: bool) -> Option<EntropyStats> {
        let e = Tensor::from_slice(h).to_kind(tch::Kind::Double).view([1, -1]);
        rlpo_algo::hapo::entropy_stats(&e, &e.ones_like(), 0.8, code_compat)
    }

    #[test]
    fn statistics_match_the_worked_example() {
        let st = stats(&H, false).unwrap();
        assert!((st.q - (-0.223144)).abs() < 1e-6, "q = {}", st.q);
        assert!((st.s - 1.575545).abs() < 1e-6, "s = {}", st.s);
        let want_h = [-1.7598, -1.3198, -0.8799, -0.4399, 0.0, 0.4399];
        let want_ht = [-1.0, -0.75, -0.5, -0.25, 0.0, 1.0];
        for ((&h, wh), wht) in H.iter().zip(want_h).zip(want_ht) {
            let raw = ((h as f64).ln() - st.q) / st.s;
            assert!((raw - wh).abs() < 1e-4, "h({h}) = {raw}, want {wh}");
            let ht = rlpo_algo::hapo::rollout_h_tilde(h as f64, &st);
            assert!((ht - wht).abs() < 1e-5, "h~({h}) = {ht}, want {wht}");
        }
    }

    #[test]
    fn temperatures_match_the_worked_example() {
        let st = stats(&H, false).unwrap();
        // h~ = 1 -> 1.05 (H = 1.6), 0.5 -> 1.025 is not on the grid; -0.5 -> 0.975 (H = 0.2),
        // 0 -> 1.0 (H = 0.8), -1 -> 0.95 (H = 0.05), all with T_base = 1, tau = 0.05.
        for (h, want) in [(1.6, 1.05), (0.8, 1.0), (0.2, 0.975), (0.05, 0.95)] {
            let t = token_temperature(h, 1.0, 0.05, Some(&st));
            assert!((t - want).abs() < 1e-6, "T({h}) = {t}, want {want}");
        }
        // h~ = +0.5: an entropy halfway (in log units) between the pivot and h+.
        let h_half = (st.q + 0.5 * st.s / st.inv_h_pos).exp();
        assert!((token_temperature(h_half, 1.0, 0.05, Some(&st)) - 1.025).abs() < 1e-6);
        // No statistics yet (first step): the base temperature.
        assert_eq!(token_temperature(1.6, 0.7, 0.05, None), 0.7);
        // Clamped: far above h+ still gives T_base (1 + tau).
        assert!((token_temperature(100.0, 2.0, 0.1, Some(&st)) - 2.2).abs() < 1e-9);
    }

    #[test]
    fn equal_entropies_give_no_modulation() {
        let st = stats(&[0.3; 5], false).unwrap();
        assert!((token_temperature(0.3f32 as f64, 1.0, 0.05, Some(&st)) - 1.0).abs() < 1e-9);
        assert!(stats(&[], false).is_none());
    }

    /// The released code's sign (`code_compat`): every h̃ ≥ 0, so no token is sampled below
    /// `T_base`, and high-entropy tokens are still sampled hotter.
    #[test]
    fn released_code_mode_never_cools() {
        let st = stats(&H, true).unwrap();
        for &h in &H {
            let t = token_temperature(h as f64, 1.0, 0.05, Some(&st));
            assert!((1.0..=1.05 + 1e-12).contains(&t), "T({h}) = {t}");
        }
        assert!((token_temperature(1.6f32 as f64, 1.0, 0.05, Some(&st)) - 1.05).abs() < 1e-6);
        let intended = stats(&H, false).unwrap();
        assert!(token_temperature(0.05, 1.0, 0.05, Some(&intended)) < 1.0);
    }
}
