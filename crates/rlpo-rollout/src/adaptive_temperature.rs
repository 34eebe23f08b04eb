//! HAPO adaptive temperature sampling (spec `algorithms.md` §4.3.2, Liu et al. 2025): each token is
//! sampled at `T_tok = T_base · (1 + τ · h̃)`, where `h̃ ∈ [−1, 1]` is the token's normalised
//! entropy under statistics `(q, s, 1/h⁺, scale⁻)` that the learner computed over the previous
//! step's `old_logp` entropies (§4.3.1). Without statistics (the first step) `T_tok = T_base`.
//!
//! The entropy fed in is the full-vocabulary entropy of `softmax(z / T_base)` (what the engine
//! records and what the learner's statistics are computed from), so statistics and rollout measure
//! the same quantity; with the usual `T_base = 1` this is exactly the spec's `entropy(softmax(z))`.
//! Implements the paper's intended semantics (`scale⁻ = 1/|h⁻|`, low-entropy tokens get `h̃ < 0`
//! and a lower temperature), not the released code's sign bug (§4.3.1 item 6).

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

/// Entropy statistics from the learner (§4.3.1): pivot `q` (ρ-quantile of `ln H`), RMS scale `s`,
/// `inv_h_pos = 1/h⁺` and `scale_neg = 1/|h⁻|`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EntropyStats {
    /// Pivot `q`, in log-entropy units.
    pub q: f64,
    /// Scale `s` (RMS deviation of `ln H` around `q`).
    pub s: f64,
    /// `1/h⁺`: multiplies positive `h`.
    pub inv_h_pos: f64,
    /// `scale⁻ = 1/|h⁻|`: multiplies non-positive `h`.
    pub scale_neg: f64,
}

impl EntropyStats {
    /// Statistics over a set of token entropies (§4.3.1 steps 1–5) with pivot quantile `rho`
    /// (HAPO: 0.8). The learner (`rlpo-algo`) owns the training-time version; this one exists so
    /// the rollout side can be used and tested on its own. `None` for an empty set.
    pub fn from_entropies(entropies: &[f32], rho: f64) -> Option<Self> {
        if entropies.is_empty() {
            return None;
        }
        let mut lam: Vec<f64> = entropies.iter().map(|&h| (h as f64).max(1e-8).ln()).collect();
        let mut sorted = lam.clone();
        sorted.sort_by(f64::total_cmp);
        // "nearest" quantile: index round_half_even(rho * (n - 1)), as torch/numpy do.
        let idx = (rho * (sorted.len() - 1) as f64).round_ties_even() as usize;
        let q = sorted[idx.min(sorted.len() - 1)];
        for l in &mut lam {
            *l -= q;
        }
        let s = (lam.iter().map(|d| d * d).sum::<f64>() / lam.len() as f64).max(1e-8).sqrt();
        let h_pos = lam.iter().map(|d| d / s).filter(|&h| h > 0.0).fold(1e-8, f64::max);
        let h_neg = lam.iter().map(|d| d / s).filter(|&h| h < 0.0).fold(-1e-8, f64::min);
        Some(EntropyStats { q, s, inv_h_pos: 1.0 / h_pos, scale_neg: 1.0 / h_neg.abs() })
    }

    /// Normalised entropy `h̃ ∈ [−1, 1]` of a token whose distribution has entropy `entropy`
    /// (§4.3.2 steps 1–2, including its `1e-6` guards).
    pub fn normalized_entropy(&self, entropy: f64) -> f64 {
        let lam = entropy.max(1e-6).ln();
        let h = (lam - self.q) / (self.s + 1e-6);
        let ht = if h > 0.0 { h * self.inv_h_pos } else { h * self.scale_neg };
        ht.clamp(-1.0, 1.0)
    }
}

/// Per-token sampling temperature: `T_base · (1 + τ·h̃)` with statistics, `T_base` without.
pub fn token_temperature(entropy: f64, base: f64, tau: f64, stats: Option<&EntropyStats>) -> f64 {
    match stats {
        Some(st) => base * (1.0 + tau * st.normalized_entropy(entropy)),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §4.6 item 2 (numbers typed in from the spec, not computed here).
    const H: [f32; 6] = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6];

    #[test]
    fn statistics_match_the_worked_example() {
        let st = EntropyStats::from_entropies(&H, 0.8).unwrap();
        assert!((st.q - (-0.223144)).abs() < 1e-6, "q = {}", st.q);
        assert!((st.s - 1.575545).abs() < 1e-6, "s = {}", st.s);
        let want_h = [-1.7598, -1.3198, -0.8799, -0.4399, 0.0, 0.4399];
        let want_ht = [-1.0, -0.75, -0.5, -0.25, 0.0, 1.0];
        for ((&h, wh), wht) in H.iter().zip(want_h).zip(want_ht) {
            let raw = ((h as f64).ln() - st.q) / st.s;
            assert!((raw - wh).abs() < 1e-4, "h({h}) = {raw}, want {wh}");
            let ht = st.normalized_entropy(h as f64);
            assert!((ht - wht).abs() < 1e-5, "h~({h}) = {ht}, want {wht}");
        }
    }

    #[test]
    fn temperatures_match_the_worked_example() {
        let st = EntropyStats::from_entropies(&H, 0.8).unwrap();
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
        let st = EntropyStats::from_entropies(&[0.3; 5], 0.8).unwrap();
        assert!((token_temperature(0.3f32 as f64, 1.0, 0.05, Some(&st)) - 1.0).abs() < 1e-9);
        assert!(EntropyStats::from_entropies(&[], 0.8).is_none());
    }
}
