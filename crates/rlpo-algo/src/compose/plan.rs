//! Stage 4 of the composition (see [`crate::compose`]): advantages on full groups, rollout
//! correction (weights, MIS mask, mismatch statistics), the DAPO overlong filter, D³S row and
//! token selection, and HAPO's h̃ and per-token clip widths, decided once per training step into
//! a [`StepPlan`]. Shapes: `N = B·G` rows, `T` positions.

use tch::{Kind, Tensor};

use crate::advantage::{group_advantages, reinforce_pp_baseline_advantages, rloo_advantages, GroupNormOptions};
use crate::aggregate::LossNormaliser;
use crate::config::{AdvantageKind, AlgorithmConfig, HapoConfig, HapoStatsScope, LossConfig};
use crate::d3s::{select_rows, select_tokens, D3sTargets};
use crate::dapo::overlong_filter;
use crate::error::{input_err, Error, Result};
use crate::hapo::{
    adaptive_clip, entropy_stats, normalised_entropy, token_level_group_average, HapoStats,
    TokenLevelOptions,
};
use crate::rollout_corr::{mismatch_stats, rollout_correction, CorrectionMode, MismatchStats};
use crate::schedule::AlgoState;
use crate::surrogate::{ClipRange, ClipWidth};

/// Per-step inputs of [`compute_step_plan`].
#[derive(Debug)]
pub struct StepInputs<'a> {
    /// Final (shaped) reward per response, `[N]`.
    pub rewards: &'a Tensor,
    /// Response mask `[N, T]` (1 for generated tokens incl. EOS).
    pub response_mask: &'a Tensor,
    /// Responses per prompt `G`.
    pub group_size: i64,
    /// `H_old[N, T]`, full-vocabulary entropy from the `old_logp` forward; needed by D³S/HAPO.
    pub entropy: Option<&'a Tensor>,
    /// `[N]` bool, responses cut at the length limit; needed by `dapo.overlong_filter`.
    pub truncated: Option<&'a Tensor>,
    /// The learner's `old_logp[N, T]` when known before the update (recomputed); with
    /// `rollout_logp` it gives the mismatch statistics and the rollout-correction weights.
    pub old_logp: Option<&'a Tensor>,
    /// The rollout engine's log-probs `[N, T]` of the same tokens.
    pub rollout_logp: Option<&'a Tensor>,
}

/// Everything the mini-batch loop needs, decided once per training step (all detached).
#[derive(Debug)]
pub struct StepPlan {
    /// Advantage per row from full groups, `[N]` (before HAPO redistribution).
    pub advantages: Tensor,
    /// The response mask, `[N, T]` f32.
    pub response_mask: Tensor,
    /// Final loss mask `mask · overlong_filter · D³S rows · D³S tokens`, `[N, T]` f32.
    pub loss_mask: Tensor,
    /// Rows that keep at least one candidate token after filtering and D³S rows, `[N]` bool.
    pub row_keep: Tensor,
    /// HAPO h̃ `[N, T]` (step-scope statistics only).
    pub h_tilde: Option<Tensor>,
    /// Clip widths: scalars, or per-token `[N, T]` (HAPO adaptive clip, step scope).
    pub clip: ClipRange,
    /// HAPO statistics of this step over all valid tokens of `H_old` (store with
    /// [`AlgoState::advance`] for the next rollout).
    pub hapo_stats: Option<HapoStats>,
    /// Groups whose HAPO advantages fell back to GRPO, `[B]` bool.
    pub hapo_fallback: Option<Tensor>,
    /// D³S budgets used this step.
    pub d3s: Option<D3sTargets>,
    /// Rollout-correction weights `[N, T]` (`algorithm.rollout_correction`), detached.
    pub is_weights: Option<Tensor>,
    /// Rollout-correction counts, when a correction was applied.
    pub correction: Option<CorrectionSummary>,
    /// `old_logp` vs `rollout_logp` over the response tokens, when both were given.
    pub mismatch: Option<MismatchStats>,
}

/// What the rollout correction did in one step (`rollout/truncated_frac`, `rollout/masked_frac`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CorrectionSummary {
    /// Truncation (TIS) or masking (MIS).
    pub mode: CorrectionMode,
    /// Valid tokens whose weight was truncated or that were masked.
    pub corrected_tokens: f64,
    /// Valid tokens.
    pub valid_tokens: f64,
}

/// Counts for the `select/*` metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanSummary {
    /// Rows in the step.
    pub rows: i64,
    /// Rows with at least one loss token.
    pub kept_rows: i64,
    /// Valid response tokens.
    pub valid_tokens: f64,
    /// Tokens in the loss mask.
    pub kept_tokens: f64,
    /// HAPO groups that fell back to GRPO.
    pub fallback_groups: i64,
}

/// The rows of a [`StepPlan`] that one micro-batch covers.
#[derive(Debug)]
pub struct MicroBatchPlan {
    /// `[n]`.
    pub advantages: Tensor,
    /// `[n, T]`.
    pub response_mask: Tensor,
    /// `[n, T]`.
    pub loss_mask: Tensor,
    /// `[n, T]` when HAPO uses step-scope statistics.
    pub h_tilde: Option<Tensor>,
    /// Scalars or `[n, T]`.
    pub clip: ClipRange,
    /// Rollout-correction weights `[n, T]`, multiplied into the policy-gradient loss.
    pub is_weights: Option<Tensor>,
}

impl StepPlan {
    /// Number of rows `N`.
    pub fn rows(&self) -> i64 {
        self.advantages.size()[0]
    }

    /// Loss normaliser of one optimizer step covering rows `start..start+len` (sum it across
    /// data-parallel ranks before use).
    pub fn normaliser(&self, start: i64, len: i64) -> LossNormaliser {
        LossNormaliser::from_mask(&self.loss_mask.narrow(0, start, len))
    }

    /// Views of rows `start..start+len` for one micro-batch.
    pub fn micro_batch(&self, start: i64, len: i64) -> MicroBatchPlan {
        MicroBatchPlan {
            advantages: self.advantages.narrow(0, start, len),
            response_mask: self.response_mask.narrow(0, start, len),
            loss_mask: self.loss_mask.narrow(0, start, len),
            h_tilde: self.h_tilde.as_ref().map(|h| h.narrow(0, start, len)),
            clip: ClipRange {
                low: self.clip.low.narrow_rows(start, len),
                high: self.clip.high.narrow_rows(start, len),
            },
            is_weights: self.is_weights.as_ref().map(|w| w.narrow(0, start, len)),
        }
    }

    /// The plan of rows `index` (`[n]` i64 on the plan's device, any order) cut to the first
    /// `width` positions: a data-parallel rank's part of the step's global plan, for its own
    /// batch of width `width` (its rows' valid positions all lie below it, so the cut drops
    /// only padding). Per-row and per-token fields follow the rows; the step-wide ones (HAPO
    /// statistics, D³S budgets, correction and mismatch counts) are copied; the per-group
    /// fallback flags stay with the global plan (`None` here: metrics read the global plan).
    pub fn select_rows(&self, index: &Tensor, width: i64) -> StepPlan {
        let cells = |t: &Tensor| t.index_select(0, index).narrow(1, 0, width);
        let clip = |w: &ClipWidth| match w {
            ClipWidth::Scalar(v) => ClipWidth::Scalar(*v),
            ClipWidth::PerToken(t) => ClipWidth::PerToken(cells(t)),
        };
        StepPlan {
            advantages: self.advantages.index_select(0, index),
            response_mask: cells(&self.response_mask),
            loss_mask: cells(&self.loss_mask),
            row_keep: self.row_keep.index_select(0, index),
            h_tilde: self.h_tilde.as_ref().map(cells),
            clip: ClipRange { low: clip(&self.clip.low), high: clip(&self.clip.high) },
            hapo_stats: self.hapo_stats,
            hapo_fallback: None,
            d3s: self.d3s,
            is_weights: self.is_weights.as_ref().map(cells),
            correction: self.correction,
            mismatch: self.mismatch,
        }
    }

    /// Counts for metrics (synchronises with the device).
    pub fn summary(&self) -> PlanSummary {
        let sum = |t: &Tensor| t.sum(Kind::Double).double_value(&[]);
        PlanSummary {
            rows: self.rows(),
            kept_rows: self
                .loss_mask
                .sum_dim_intlist(-1, false, Kind::Float)
                .gt(0.0)
                .sum(Kind::Int64)
                .int64_value(&[]),
            valid_tokens: sum(&self.response_mask),
            kept_tokens: sum(&self.loss_mask),
            fallback_groups: self
                .hapo_fallback
                .as_ref()
                .map_or(0, |f| f.sum(Kind::Int64).int64_value(&[])),
        }
    }
}

pub(super) fn need<'a>(
    t: Option<&'a Tensor>,
    name: &'static str,
    reason: &'static str,
) -> Result<&'a Tensor> {
    t.ok_or(Error::MissingInput { name, reason })
}

/// Stage 4: advantages on full groups, `[N]`, plus HAPO's fallback flags `[B]`. `lengths[N]`
/// are the valid response lengths, `padded_len` the step's response width `T` (HAPO's released
/// code also tests the padded positions when `fallback_check_padding` is set).
pub fn compute_advantages(
    alg: &AlgorithmConfig,
    rewards: &Tensor,
    lengths: &Tensor,
    g: i64,
    padded_len: i64,
) -> Result<(Tensor, Option<Tensor>)> {
    let grpo = GroupNormOptions {
        scale_by_std: true,
        std: alg.std,
        eps: alg.adv_eps,
        singleton: alg.singleton_advantage,
    };
    match alg.advantage {
        AdvantageKind::Grpo => Ok((group_advantages(rewards, g, &grpo)?, None)),
        AdvantageKind::DrGrpo => Ok((
            group_advantages(
                rewards,
                g,
                &GroupNormOptions {
                    scale_by_std: false,
                    ..grpo
                },
            )?,
            None,
        )),
        AdvantageKind::Rloo => Ok((rloo_advantages(rewards, g, alg.singleton_advantage)?, None)),
        AdvantageKind::ReinforcePlusPlusBaseline => Ok((
            reinforce_pp_baseline_advantages(rewards, lengths, g, alg.singleton_advantage)?,
            None,
        )),
        AdvantageKind::Hapo => {
            let h = alg.hapo.clone().unwrap_or_default();
            let opts = TokenLevelOptions {
                norm_by_std: h.norm_by_std,
                eps: alg.adv_eps,
                fallback_threshold: h.fallback_threshold,
                padded_len: h.fallback_check_padding.then_some(padded_len),
                fallback: grpo,
            };
            let out = token_level_group_average(rewards, lengths, g, &opts)?;
            Ok((out.advantages, Some(out.fallback)))
        }
    }
}

/// h̃ and clip widths under HAPO for tokens with entropies `entropy`, given statistics.
pub(super) fn hapo_token_terms(
    h: &HapoConfig,
    entropy: &Tensor,
    mask: &Tensor,
    stats: Option<&HapoStats>,
    base: &ClipRange,
    lo: f64,
    hi: f64,
) -> (Tensor, ClipRange) {
    let ht = match stats {
        Some(st) => normalised_entropy(entropy, mask, st),
        None => mask.zeros_like().to_kind(Kind::Float),
    };
    let clip = if h.adaptive_clip {
        adaptive_clip(&ht, lo, hi, h.alpha)
    } else {
        base.clone()
    };
    (ht, clip)
}

/// Stages 4 (advantages) to the end of selection: the [`StepPlan`] of one training step.
pub fn compute_step_plan(
    alg: &AlgorithmConfig,
    loss: &LossConfig,
    state: &AlgoState,
    inputs: &StepInputs,
) -> Result<StepPlan> {
    let g = inputs.group_size;
    let size = inputs.response_mask.size();
    if size.len() != 2 || inputs.rewards.size() != [size[0]] {
        return Err(input_err(
            "rewards",
            format!(
                "expected [N] with mask [N, T], got {:?} and {size:?}",
                inputs.rewards.size()
            ),
        ));
    }
    if let Some(h) = inputs.entropy {
        if h.size() != size {
            return Err(input_err(
                "entropy",
                format!("expected {size:?}, got {:?}", h.size()),
            ));
        }
    }
    let mask = inputs.response_mask.detach().to_kind(Kind::Float);
    let lengths = mask.sum_dim_intlist(-1, false, Kind::Float);
    let (lo, hi) = loss.clip_widths();
    let scalar_clip = ClipRange::new(lo, hi);

    // HAPO statistics over all valid tokens, before any selection, so they do not depend on it.
    let hapo_stats = match &alg.hapo {
        Some(h) => {
            let ent = need(inputs.entropy, "entropy", "algorithm.hapo is set")?;
            entropy_stats(ent, &mask, h.quantile, h.code_compat)
        }
        None => None,
    };
    let (advantages, hapo_fallback) = compute_advantages(alg, inputs.rewards, &lengths, g, size[1])?;

    // Rollout correction before any selection, so that D³S does not spend its budget on rows
    // that MIS removes.
    let mismatch = match (inputs.old_logp, inputs.rollout_logp) {
        (Some(o), Some(r)) => Some(mismatch_stats(o, r, &mask)?),
        _ => None,
    };
    let correction = match &alg.rollout_correction {
        Some(c) => {
            let reason = "algorithm.rollout_correction is set";
            let o = need(inputs.old_logp, "old_logp", reason)?;
            let r = need(inputs.rollout_logp, "rollout_logp", reason)?;
            Some((rollout_correction(o, r, &mask, c)?, c.mode))
        }
        None => None,
    };
    let mask_after_is = match &correction {
        Some((c, _)) => &mask * c.keep.to_kind(Kind::Float),
        None => mask.shallow_clone(),
    };

    let base_mask = if alg.dapo.overlong_filter {
        overlong_filter(
            &mask_after_is,
            need(
                inputs.truncated,
                "truncated",
                "algorithm.dapo.overlong_filter = true",
            )?,
        )?
    } else {
        mask_after_is
    };
    let candidates = base_mask.sum_dim_intlist(-1, false, Kind::Float).gt(0.0);

    let (loss_mask, row_keep, d3s) = match &alg.d3s {
        Some(d) => {
            let ent = need(inputs.entropy, "entropy", "algorithm.d3s is set")?;
            let targets = state.d3s_targets(d, g as usize);
            let rows = select_rows(
                &advantages,
                g,
                d.level,
                targets.samples_per_group,
                Some(&candidates),
                d.drop_zero_variance_groups,
            )?;
            let row_mask = &base_mask * rows.to_kind(Kind::Float).unsqueeze(-1);
            let tokens = select_tokens(&advantages, ent, &row_mask, targets.token_keep)?;
            let keep = tokens.sum_dim_intlist(-1, false, Kind::Float).gt(0.0);
            (tokens, keep, Some(targets))
        }
        None => (base_mask, candidates, None),
    };

    let (h_tilde, clip) = match &alg.hapo {
        Some(h) if h.stats_scope == HapoStatsScope::Step => {
            let ent = need(inputs.entropy, "entropy", "algorithm.hapo is set")?;
            let (ht, clip) =
                hapo_token_terms(h, ent, &mask, hapo_stats.as_ref(), &scalar_clip, lo, hi);
            (Some(ht), clip)
        }
        _ => (None, scalar_clip),
    };

    Ok(StepPlan {
        advantages,
        response_mask: mask,
        loss_mask,
        row_keep,
        h_tilde,
        clip,
        hapo_stats,
        hapo_fallback,
        d3s,
        correction: correction.as_ref().map(|(c, mode)| CorrectionSummary {
            mode: *mode,
            corrected_tokens: c.corrected_tokens,
            valid_tokens: c.valid_tokens,
        }),
        is_weights: correction.map(|(c, _)| c.weights),
        mismatch,
    })
}
