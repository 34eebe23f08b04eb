//! Recipe-load-time checks for `[algorithm]` and `[loss]`. Every error names the full recipe key
//! (`algorithm.d3s.token_keep_init must be in (0, 1], got 1.5`), so a user can fix the file
//! without reading code. Checks that need the rollout group size `G` take it as an argument.

use crate::aggregate::AggMode;
use crate::config::{
    AlgorithmConfig, BaseLoss, D3sConfig, DapoConfig, HapoConfig, LossConfig, RmtConfig,
};
use crate::error::{config_err, Result};

/// Tolerance for "sums to 1".
const SUM_TOL: f64 = 1e-6;

fn finite(key: &str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(config_err(key, format!("must be a finite number, got {v}")))
    }
}

fn at_least(key: &str, v: f64, min: f64) -> Result<()> {
    finite(key, v)?;
    if v >= min {
        Ok(())
    } else {
        Err(config_err(key, format!("must be >= {min}, got {v}")))
    }
}

/// `v` in the interval written as `lo`/`hi` with open (`false`) or closed (`true`) ends.
fn in_range(key: &str, v: f64, lo: f64, lo_closed: bool, hi: f64, hi_closed: bool) -> Result<()> {
    let ok = v.is_finite()
        && (if lo_closed { v >= lo } else { v > lo })
        && (if hi_closed { v <= hi } else { v < hi });
    if ok {
        Ok(())
    } else {
        let (l, r) = (
            if lo_closed { '[' } else { '(' },
            if hi_closed { ']' } else { ')' },
        );
        Err(config_err(
            key,
            format!("must be in {l}{lo}, {hi}{r}, got {v}"),
        ))
    }
}

fn distribution(key: &str, p: &[f64; 3]) -> Result<()> {
    if p.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(config_err(
            key,
            format!("must have entries >= 0, got {p:?}"),
        ));
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > SUM_TOL {
        // Rounded so that 0.5 + 0.3 + 0.1 reads "0.9", not "0.9000000000000001".
        let shown = format!("{sum:.6}");
        let shown = shown.trim_end_matches('0').trim_end_matches('.');
        return Err(config_err(
            key,
            format!("must sum to 1, got {shown} ({p:?})"),
        ));
    }
    Ok(())
}

impl LossConfig {
    /// Checks `[loss]` on its own.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = self.clip_widths();
        // ε_lo ≥ 1 would make the lower clip bound 1 − ε_lo ≤ 0, i.e. no lower clip at all.
        in_range("loss.clip_low", lo, 0.0, true, 1.0, false)?;
        at_least("loss.clip_high", hi, 0.0)?;
        // `inf` (positive) switches the dual clip off; otherwise verl requires c > 1.
        let valid =
            self.dual_clip == f64::INFINITY || (self.dual_clip.is_finite() && self.dual_clip > 1.0);
        if !valid {
            return Err(config_err(
                "loss.dual_clip",
                format!(
                    "must be > 1 (or inf to switch it off), got {}",
                    self.dual_clip
                ),
            ));
        }
        at_least("loss.kl_coef", self.kl_coef, 0.0)?;
        if self.agg_mode() == AggMode::ConstantNorm {
            match self.norm_len {
                None => {
                    return Err(config_err(
                        "loss.norm_len",
                        "must be set (the max generation length) when loss.agg = \"constant_norm\"",
                    ))
                }
                Some(0) => return Err(config_err("loss.norm_len", "must be >= 1, got 0")),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl DapoConfig {
    /// Checks `[algorithm.dapo]`.
    pub fn validate(&self) -> Result<()> {
        if let Some(o) = &self.overlong {
            if o.cache_len == 0 {
                return Err(config_err(
                    "algorithm.dapo.overlong.cache_len",
                    "must be >= 1, got 0",
                ));
            }
            if let Some(max_len) = o.max_len {
                if o.cache_len >= max_len {
                    return Err(config_err(
                        "algorithm.dapo.overlong.cache_len",
                        format!(
                            "must be < algorithm.dapo.overlong.max_len = {max_len}, got {}",
                            o.cache_len
                        ),
                    ));
                }
            }
            at_least(
                "algorithm.dapo.overlong.penalty_factor",
                o.penalty_factor,
                0.0,
            )?;
        }
        if let Some(f) = &self.filter_groups {
            // Every step must end: an unlimited refill with constant rewards never would.
            if f.max_num_gen_batches < 1 {
                return Err(config_err(
                    "algorithm.dapo.filter_groups.max_num_gen_batches",
                    format!("must be >= 1, got {}", f.max_num_gen_batches),
                ));
            }
        }
        Ok(())
    }
}

impl D3sConfig {
    /// Checks `[algorithm.d3s]` against the rollout group size `g`.
    pub fn validate(&self, g: usize) -> Result<()> {
        let (n_init, n_final) = self.samples(g);
        for (key, n) in [
            ("algorithm.d3s.samples_init", n_init),
            ("algorithm.d3s.samples_final", n_final),
        ] {
            if n == 0 {
                return Err(config_err(key, "must be >= 1, got 0"));
            }
            if n > g {
                return Err(config_err(
                    key,
                    format!("must be <= the group size G = {g} (rollouts per prompt), got {n}"),
                ));
            }
        }
        in_range(
            "algorithm.d3s.token_keep_init",
            self.token_keep_init,
            0.0,
            false,
            1.0,
            true,
        )?;
        in_range(
            "algorithm.d3s.token_keep_final",
            self.token_keep_final,
            0.0,
            false,
            1.0,
            true,
        )?;
        Ok(())
    }
}

impl HapoConfig {
    /// Checks `[algorithm.hapo]`.
    pub fn validate(&self) -> Result<()> {
        in_range(
            "algorithm.hapo.quantile",
            self.quantile,
            0.0,
            true,
            1.0,
            true,
        )?;
        // τ ≥ 1 would allow a temperature ≤ 0 for the lowest-entropy tokens.
        in_range("algorithm.hapo.tau", self.tau, 0.0, true, 1.0, false)?;
        at_least("algorithm.hapo.alpha", self.alpha, 0.0)?;
        at_least("algorithm.hapo.beta", self.beta, 0.0)?;
        if self.fallback_threshold.is_nan() || self.fallback_threshold <= 0.0 {
            return Err(config_err(
                "algorithm.hapo.fallback_threshold",
                format!("must be > 0, got {}", self.fallback_threshold),
            ));
        }
        Ok(())
    }
}

impl RmtConfig {
    /// Checks `[algorithm.rmt]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.rollout_cap >= 0.0 && self.rollout_cap.is_finite()) {
            return Err(config_err("algorithm.rmt.rollout_cap", format!("must be >= 0 (0 = no cap), got {}", self.rollout_cap)));
        }
        if !self.instruction.contains("{prefix}") {
            return Err(config_err("algorithm.rmt.instruction", "must contain {prefix} (where the document text goes)"));
        }
        if self.min_prefix_tokens < 1 || self.max_prefix_tokens < self.min_prefix_tokens {
            return Err(config_err(
                "algorithm.rmt.max_prefix_tokens",
                format!("need 1 <= min_prefix_tokens ({}) <= max_prefix_tokens ({})", self.min_prefix_tokens, self.max_prefix_tokens),
            ));
        }
        if self.max_doc_tokens <= self.min_prefix_tokens {
            return Err(config_err(
                "algorithm.rmt.max_doc_tokens",
                format!("must be > min_prefix_tokens = {}, got {}", self.min_prefix_tokens, self.max_doc_tokens),
            ));
        }
        if self.budget_min < 1 {
            return Err(config_err(
                "algorithm.rmt.budget_min",
                "must be >= 1, got 0",
            ));
        }
        if self.budget_init < self.budget_min {
            return Err(config_err(
                "algorithm.rmt.budget_init",
                format!(
                    "must be >= algorithm.rmt.budget_min = {}, got {}",
                    self.budget_min, self.budget_init
                ),
            ));
        }
        in_range(
            "algorithm.rmt.budget_decay",
            self.budget_decay,
            0.0,
            false,
            1.0,
            true,
        )?;
        if !(self.r_max > 0.0 && self.r_max.is_finite()) {
            return Err(config_err(
                "algorithm.rmt.r_max",
                format!("must be > 0, got {}", self.r_max),
            ));
        }
        in_range(
            "algorithm.rmt.length_weight",
            self.length_weight,
            0.0,
            true,
            1.0,
            true,
        )?;
        in_range(
            "algorithm.rmt.curriculum_start",
            self.curriculum_start,
            0.0,
            false,
            1.0,
            false,
        )?;
        in_range(
            "algorithm.rmt.curriculum_end",
            self.curriculum_end,
            0.0,
            false,
            1.0,
            false,
        )?;
        if self.curriculum_start >= self.curriculum_end {
            return Err(config_err(
                "algorithm.rmt.curriculum_end",
                format!(
                    "must be > algorithm.rmt.curriculum_start = {}, got {}",
                    self.curriculum_start, self.curriculum_end
                ),
            ));
        }
        distribution("algorithm.rmt.tiers_start", &self.tiers_start)?;
        distribution("algorithm.rmt.tiers_end", &self.tiers_end)?;
        at_least("algorithm.rmt.ntp_weight", self.ntp_weight, 0.0)?;
        Ok(())
    }
}

impl AlgorithmConfig {
    /// Checks `[algorithm]` and its subsections; `g` is the rollout group size (responses per
    /// prompt), needed for D³S budgets.
    pub fn validate(&self, g: usize) -> Result<()> {
        if g == 0 {
            return Err(config_err("algorithm", "needs a group size G >= 1, got 0"));
        }
        at_least("algorithm.adv_eps", self.adv_eps, 0.0)?;
        self.dapo.validate()?;
        if let Some(d3s) = &self.d3s {
            d3s.validate(g)?;
        }
        if let Some(hapo) = &self.hapo {
            hapo.validate()?;
        }
        if let Some(rmt) = &self.rmt {
            rmt.validate()?;
        }
        Ok(())
    }
}

/// Validates both sections and their interactions. Call once at recipe load.
pub fn validate_sections(alg: &AlgorithmConfig, loss: &LossConfig, g: usize) -> Result<()> {
    alg.validate(g)?;
    loss.validate()?;
    // Sequence-level GSPO needs one advantage per row; HAPO's redistribution makes it per token.
    if loss.base == BaseLoss::Gspo && alg.hapo.as_ref().is_some_and(|h| h.redistribution) {
        return Err(config_err(
            "loss.base",
            "= \"gspo\" needs one advantage per sequence, but algorithm.hapo.redistribution \
             makes advantages per token; use loss.base = \"gspo_token\"",
        ));
    }
    if loss.base == BaseLoss::Gspo && alg.hapo.as_ref().is_some_and(|h| h.adaptive_clip) {
        return Err(config_err(
            "loss.base",
            "= \"gspo\" has one clip range per sequence, but algorithm.hapo.adaptive_clip makes \
             it per token; use loss.base = \"gspo_token\"",
        ));
    }
    Ok(())
}
