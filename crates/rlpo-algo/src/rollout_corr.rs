//! Rollout correction: the rollout engine's log-probs (`rollout_logp`, bf16 kernels, stale
//! weights) differ from the learner's `old_logp`, so the data were sampled from a policy that is
//! not the one PPO's ratio is anchored to. Following verl 0.9.1's decoupled mode
//! (`verl/trainer/ppo/rollout_corr_helper.py`, three policies π_rollout, π_old, π_θ), each token's
//! policy-gradient loss is multiplied by an importance weight `π_old / π_rollout`:
//!
//! * **TIS** (`mode = "truncate"`): the weight is truncated from above at `threshold`
//!   (verl `rollout_is = "token" | "sequence"`, `rollout_is_threshold = threshold`);
//! * **MIS** (`mode = "mask"`): the same truncated weight, and tokens (token level) or whole
//!   sequences (sequence level) whose ratio lies outside `[threshold_lower, threshold]` leave
//!   the loss mask, so they leave the denominator too (verl's Seq-MIS preset
//!   `decoupled_seq_is_rs`: `rollout_rs = "seq_sum_k1"`; token level: `rollout_rs = "token_k1"`).
//!
//! Token level: `w_t = exp(clamp(Δ_t, ±20))`; sequence level: `w = exp(clamp(Σ_t Δ_t, ±20))` on
//! every token of the row, with `Δ = old_logp − rollout_logp`. Weights are detached (they change
//! the measure, not the objective). Shapes: log-probs and masks `[N, T]`; weights `[N, T]`, 0 at
//! padding. [`mismatch_stats`] gives the `rollout/mismatch_*` metrics whether or not a correction
//! is applied.

use serde::{Deserialize, Serialize};
use std::ops::Add;
use tch::{Kind, Tensor};

use crate::advantage::float_kind;
use crate::error::{config_err, input_err, Result};

/// verl's `SAFETY_BOUND` on log-ratios before `exp`.
pub const SAFETY_BOUND: f64 = 20.0;

/// Whether one weight per token or one per sequence (verl `rollout_is`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsLevel {
    /// Per-token ratios (biased, low variance).
    Token,
    /// The product of the row's token ratios (unbiased, high variance); verl's default.
    #[default]
    Sequence,
}

/// Truncate large weights (TIS) or mask tokens/sequences outside the bounds (MIS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrectionMode {
    /// TIS: `w = min(ρ, threshold)`.
    #[default]
    Truncate,
    /// MIS: TIS weights, and tokens or sequences with `ρ ∉ [threshold_lower, threshold]` leave
    /// the loss mask.
    Mask,
}

/// `[algorithm.rollout_correction]` (present = on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutCorrectionConfig {
    /// Weight per token or per sequence. Default `sequence` (verl `RolloutCorrectionConfig`).
    pub level: IsLevel,
    /// `truncate` (TIS) or `mask` (MIS). Default `truncate`.
    pub mode: CorrectionMode,
    /// Upper bound of the weight (and of the kept ratios under MIS). Default 2.0 (verl).
    pub threshold: f64,
    /// MIS only: lower bound of the kept ratios; `None` = `1 / threshold` (verl's default for
    /// ratio bounds).
    pub threshold_lower: Option<f64>,
}

impl Default for RolloutCorrectionConfig {
    fn default() -> Self {
        Self { level: IsLevel::Sequence, mode: CorrectionMode::Truncate, threshold: 2.0, threshold_lower: None }
    }
}

impl RolloutCorrectionConfig {
    /// The MIS lower bound with its default filled in.
    pub fn lower(&self) -> f64 {
        self.threshold_lower.unwrap_or(1.0 / self.threshold)
    }

    /// Checks `[algorithm.rollout_correction]`: a bound that cuts ratio 1 (a token on which both
    /// policies agree) makes no sense.
    pub fn validate(&self) -> Result<()> {
        let key = "algorithm.rollout_correction";
        if !(self.threshold.is_finite() && self.threshold >= 1.0) {
            return Err(config_err(format!("{key}.threshold"), format!("must be a finite number >= 1, got {}", self.threshold)));
        }
        match (self.mode, self.threshold_lower) {
            (CorrectionMode::Truncate, Some(_)) => Err(config_err(
                format!("{key}.threshold_lower"),
                "is only read with mode = \"mask\" (truncation has no lower bound)",
            )),
            (CorrectionMode::Mask, Some(l)) if !(l > 0.0 && l <= 1.0) => {
                Err(config_err(format!("{key}.threshold_lower"), format!("must be in (0, 1], got {l}")))
            }
            _ => Ok(()),
        }
    }
}

/// Weights and mask of one step (all detached).
#[derive(Debug)]
pub struct RolloutCorrection {
    /// IS weights `[N, T]`, truncated at `threshold`, 0 at padding.
    pub weights: Tensor,
    /// `[N, T]` in the mask's float kind: 1 where the token stays in the loss (MIS), the
    /// response mask under TIS.
    pub keep: Tensor,
    /// Valid tokens whose weight was truncated (TIS) or that were masked (MIS).
    pub corrected_tokens: f64,
    /// Valid tokens.
    pub valid_tokens: f64,
}

fn check_shapes(old: &Tensor, rollout: &Tensor, mask: &Tensor) -> Result<()> {
    if old.size() != mask.size() || rollout.size() != mask.size() || mask.dim() != 2 {
        return Err(input_err(
            "rollout_logp",
            format!("old_logp {:?}, rollout_logp {:?} and mask {:?} must all be [N, T]", old.size(), rollout.size(), mask.size()),
        ));
    }
    Ok(())
}

/// TIS / MIS weights and keep-mask of `old_logp` against `rollout_logp` over `mask` (`[N, T]`).
pub fn rollout_correction(
    old_logp: &Tensor,
    rollout_logp: &Tensor,
    mask: &Tensor,
    cfg: &RolloutCorrectionConfig,
) -> Result<RolloutCorrection> {
    check_shapes(old_logp, rollout_logp, mask)?;
    Ok(tch::no_grad(|| {
        let kind = float_kind(old_logp);
        let m = mask.detach().to_kind(kind);
        let valid = m.gt(0.0);
        let delta = (old_logp.detach().to_kind(kind) - rollout_logp.detach().to_kind(kind)) * &m;
        let delta_safe = delta.clamp(-SAFETY_BOUND, SAFETY_BOUND);
        let raw = match cfg.level {
            IsLevel::Token => delta_safe.exp() * &m,
            IsLevel::Sequence => {
                let s = delta.sum_dim_intlist(-1, true, kind).clamp(-SAFETY_BOUND, SAFETY_BOUND);
                s.exp().expand_as(&delta) * &m
            }
        };
        let weights = raw.clamp_max(cfg.threshold);
        let (keep, corrected) = match cfg.mode {
            CorrectionMode::Truncate => (m.shallow_clone(), raw.gt(cfg.threshold).logical_and(&valid)),
            CorrectionMode::Mask => {
                let (lo, hi) = (cfg.lower().ln(), cfg.threshold.ln());
                // verl's k1 statistics sum the per-token clamped log-ratios.
                let stat = match cfg.level {
                    IsLevel::Token => delta_safe,
                    IsLevel::Sequence => delta_safe.sum_dim_intlist(-1, true, kind).expand_as(&delta),
                };
                let inside = stat.ge(lo).logical_and(&stat.le(hi));
                let keep = inside.to_kind(kind) * &m;
                (keep, inside.logical_not().logical_and(&valid))
            }
        };
        let count = |t: &Tensor| t.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]);
        RolloutCorrection {
            corrected_tokens: count(&corrected),
            valid_tokens: count(&valid),
            weights,
            keep: keep.to_kind(mask.kind()),
        }
    }))
}

/// Sums for the `rollout/mismatch_*` metrics; add the values of several micro-batches with `+`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MismatchStats {
    /// `Σ (e^Δ − Δ − 1)` over valid tokens, `Δ = old_logp − rollout_logp` (k3 estimate of
    /// `KL(π_rollout ‖ π_old)`, verl's `rollout_corr/k3_kl` numerator).
    pub k3_sum: f64,
    /// Valid tokens.
    pub tokens: f64,
    /// `max |Δ|` over valid tokens.
    pub max_abs: f64,
}

impl MismatchStats {
    /// Mean k3 per token (`rollout/mismatch_kl`); `None` without tokens.
    pub fn kl(&self) -> Option<f64> {
        (self.tokens > 0.0).then(|| self.k3_sum / self.tokens)
    }
}

impl Add for MismatchStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self { k3_sum: self.k3_sum + o.k3_sum, tokens: self.tokens + o.tokens, max_abs: self.max_abs.max(o.max_abs) }
    }
}

/// Mismatch statistics of `old_logp` against `rollout_logp` over `mask` (`[n, T]`).
pub fn mismatch_stats(old_logp: &Tensor, rollout_logp: &Tensor, mask: &Tensor) -> Result<MismatchStats> {
    check_shapes(old_logp, rollout_logp, mask)?;
    Ok(tch::no_grad(|| {
        let m = mask.detach().to_kind(Kind::Double);
        let delta = (old_logp.detach().to_kind(Kind::Double) - rollout_logp.detach().to_kind(Kind::Double)) * &m;
        let k3 = (delta.exp() - &delta - 1.0) * &m;
        MismatchStats {
            k3_sum: k3.sum(Kind::Double).double_value(&[]),
            tokens: m.sum(Kind::Double).double_value(&[]),
            max_abs: if m.numel() > 0 { delta.abs().max().double_value(&[]) } else { 0.0 },
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(v: &[f64], n: i64) -> Tensor {
        Tensor::from_slice(v).view([n, -1])
    }

    /// Hand-computed TIS and MIS on two rows (second row one token shorter).
    #[test]
    fn tis_and_mis_by_hand() {
        let l3 = 3f64.ln();
        let old = mat(&[l3, 0.0, 0.0, 0.1, -l3, 0.0], 2);
        let rollout = mat(&[0.0; 6], 2);
        let mask = mat(&[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], 2);
        let tok = |mode| RolloutCorrectionConfig { level: IsLevel::Token, mode, ..Default::default() };
        let c = rollout_correction(&old, &rollout, &mask, &tok(CorrectionMode::Truncate)).unwrap();
        let w = Vec::<f64>::try_from(&c.weights.view([-1])).unwrap();
        let want = [2.0, 1.0, 1.0, 0.1f64.exp(), 1.0 / 3.0, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
        assert_eq!((c.corrected_tokens, c.valid_tokens), (1.0, 5.0));
        // MIS at [0.5, 2]: ratio 3 and 1/3 leave the loss.
        let c = rollout_correction(&old, &rollout, &mask, &tok(CorrectionMode::Mask)).unwrap();
        let keep = Vec::<f64>::try_from(&c.keep.view([-1])).unwrap();
        assert_eq!(keep, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(c.corrected_tokens, 2.0);
        // Sequence level: row ratios 3 and e^0.1/3.
        let seq = RolloutCorrectionConfig { mode: CorrectionMode::Mask, ..Default::default() };
        let c = rollout_correction(&old, &rollout, &mask, &seq).unwrap();
        let w = Vec::<f64>::try_from(&c.weights.view([-1])).unwrap();
        assert!((w[0] - 2.0).abs() < 1e-12 && (w[3] - 0.1f64.exp() / 3.0).abs() < 1e-12 && w[5] == 0.0, "{w:?}");
        let keep = Vec::<f64>::try_from(&c.keep.view([-1])).unwrap();
        assert_eq!(keep, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "3 > 2 and 0.37 < 0.5");
        assert_eq!(c.corrected_tokens, 5.0);
    }

    #[test]
    fn mismatch_is_zero_for_equal_logprobs_and_adds_up() {
        let lp = mat(&[-1.0, -2.0, -3.0, -4.0], 2);
        let mask = mat(&[1.0, 1.0, 1.0, 0.0], 2);
        let s = mismatch_stats(&lp, &lp, &mask).unwrap();
        assert_eq!((s.k3_sum, s.tokens, s.max_abs), (0.0, 3.0, 0.0));
        let other = mat(&[-1.5, -2.0, -3.0, 9.0], 2);
        let s = mismatch_stats(&lp, &other, &mask).unwrap();
        let want = 0.5f64.exp() - 0.5 - 1.0;
        assert!((s.kl().unwrap() - want / 3.0).abs() < 1e-12 && s.max_abs == 0.5, "{s:?}");
        let both = s + s;
        assert_eq!((both.tokens, both.max_abs), (6.0, 0.5));
    }

    #[test]
    fn config_checks_name_the_key() {
        let bad = RolloutCorrectionConfig { threshold: 0.5, ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().starts_with("algorithm.rollout_correction.threshold"));
        let bad = RolloutCorrectionConfig { threshold_lower: Some(0.5), ..Default::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("mode = \"mask\""));
        let ok = RolloutCorrectionConfig { mode: CorrectionMode::Mask, threshold_lower: Some(0.5), ..Default::default() };
        ok.validate().unwrap();
        assert_eq!(RolloutCorrectionConfig::default().lower(), 0.5);
    }
}
