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

fn base_name(b: BaseLoss) -> &'static str {
    match b {
        BaseLoss::Grpo => "grpo",
        BaseLoss::Gspo => "gspo",
        BaseLoss::GspoToken => "gspo_token",
        BaseLoss::Cispo => "cispo",
    }
}

impl LossConfig {
    /// Checks `[loss]` on its own, including keys the chosen base would not read.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = self.clip_widths();
        if self.base == BaseLoss::Cispo {
            // CISPO clips an importance weight: ε_lo ≥ 1 is the paper's "no lower bound".
            at_least("loss.clip_low", lo, 0.0)?;
        } else {
            // ε_lo ≥ 1 would make the lower clip bound 1 − ε_lo ≤ 0, i.e. no lower clip at all.
            in_range("loss.clip_low", lo, 0.0, true, 1.0, false)?;
        }
        at_least("loss.clip_high", hi, 0.0)?;
        match (self.base, self.dual_clip) {
            // `inf` (positive) switches the dual clip off; otherwise verl requires c > 1.
            (BaseLoss::Grpo, Some(c)) if !(c == f64::INFINITY || (c.is_finite() && c > 1.0)) => {
                return Err(config_err("loss.dual_clip", format!("must be > 1 (or inf to switch it off), got {c}")));
            }
            (BaseLoss::Grpo, _) | (_, None) => {}
            (b, Some(_)) => {
                return Err(config_err(
                    "loss.dual_clip",
                    format!(
                        "is not read with loss.base = \"{}\": only the token-level PPO surrogate has a dual clip \
                         (neither the GSPO / CISPO papers nor verl's compute_policy_loss_gspo / _cispo have one)",
                        base_name(b)
                    ),
                ));
            }
        }
        match (self.base, self.agg, self.gspo_agg) {
            (BaseLoss::Gspo, Some(_), _) => {
                return Err(config_err(
                    "loss.agg",
                    "is not read with loss.base = \"gspo\" (one loss per sequence): set loss.gspo_agg = \"seq_mean\" \
                     (the GSPO paper, default) or \"token_mean\" (verl's actor default: sequences weighted by length)",
                ));
            }
            (b, _, Some(_)) if b != BaseLoss::Gspo => {
                return Err(config_err(
                    "loss.gspo_agg",
                    format!("is only read with loss.base = \"gspo\", got loss.base = \"{}\" (use loss.agg)", base_name(b)),
                ));
            }
            _ => {}
        }
        if self.norm_len.is_some() && self.agg_mode() != AggMode::ConstantNorm {
            return Err(config_err("loss.norm_len", "is only read with loss.agg = \"constant_norm\""));
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
            at_least("algorithm.dapo.filter_groups.gen_batch_factor", f.gen_batch_factor, 1.0)?;
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
        if g < 2 {
            return Err(config_err("algorithm.d3s", format!("needs groups of at least 2 rollouts (rollout.group_size), got G = {g}")));
        }
        let (n_init, n_final) = self.samples(g);
        for (key, n) in [
            ("algorithm.d3s.samples_init", n_init),
            ("algorithm.d3s.samples_final", n_final),
        ] {
            // A subset of one row has no variance to maximise; the schedule used to raise 1 to
            // 2 without a word.
            if n < 2 {
                return Err(config_err(key, format!("must be >= 2 (a single row has no variance to maximise), got {n}")));
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
        // β > 1 makes 1 + β·h̃ negative for h̃ near −1 and flips those tokens' advantages.
        in_range("algorithm.hapo.beta", self.beta, 0.0, true, 1.0, true)?;
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
        if let Some(c) = &self.rollout_correction {
            c.validate()?;
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
    // HAPO's adaptive clip and redistribution are defined on PPO's clipped surrogate (its
    // neutral zone is the clip range); CISPO keeps every token's gradient.
    if loss.base == BaseLoss::Cispo && alg.hapo.as_ref().is_some_and(|h| h.adaptive_clip || h.redistribution) {
        return Err(config_err(
            "loss.base",
            "= \"cispo\" does not combine with algorithm.hapo.adaptive_clip / redistribution (both act on \
             PPO's clipped surrogate); set them to false or use loss.base = \"grpo\"",
        ));
    }
    Ok(())
}
