//! One documented composition order for GRPO / Dr. GRPO / GSPO / DAPO / D³S / HAPO / RMT
//! (spec §6). The trainer calls, per training step:
//!
//! 1. rollout — with HAPO temperatures from [`AlgoState::hapo_stats`](crate::schedule::AlgoState::hapo_stats) (previous step) and RMT
//!    prompts/budgets from [`AlgoState::rmt_budget`](crate::schedule::AlgoState::rmt_budget) / [`AlgoState::rmt_tier_distribution`](crate::schedule::AlgoState::rmt_tier_distribution);
//! 2. rewards — [`shape_rewards`] (DAPO overlong shaping; RMT's composite reward is the
//!    `[reward]` section's), then [`group_filter`] on the verifier's correctness (`acc`) or the
//!    shaped reward (`score`) and [`crate::dapo::refill_action`] until the batch is full
//!    (filtering before D³S so its budget is not spent on all-equal groups);
//! 3. one no-grad forward of the rollout policy: `old_logp` and `H_old` `[N, T]`;
//! 4. [`compute_step_plan`]: HAPO statistics over all valid tokens of `H_old` → advantages on
//!    full groups (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline or HAPO token-level) → rollout
//!    correction (TIS weights / MIS mask from `old_logp` vs `rollout_logp`) → DAPO overlong
//!    filter → D³S rows
//!    (max variance) → D³S tokens (top-K of `|A|·H_old`, advantages *before* HAPO
//!    redistribution, which depends on the ratio) → h̃ and per-token clip widths;
//! 5. for every optimizer step (mini-batch): [`StepPlan::normaliser`] over its rows, then per
//!    micro-batch [`policy_loss`] on [`StepPlan::micro_batch`] (HAPO redistribution, clipped
//!    surrogate or CISPO, rollout-correction weights, KL, aggregation) and `backward`; RMT adds
//!    [`crate::rmt::ntp_loss`] to the same optimizer step;
//! 6. [`AlgoState::advance`](crate::schedule::AlgoState::advance) with [`StepPlan::hapo_stats`].
//!
//! Shapes: `N = B·G` rows (groups contiguous), `T` response positions. Everything in the plan is
//! detached; only `logp` in [`PolicyInputs`] carries gradient.
//!
//! Files: this one holds the stage-2 reward helpers, `plan.rs` the per-step plan (stage 4) and
//! `loss.rs` the per-micro-batch loss (stage 5).

use tch::Tensor;

use crate::config::{AlgorithmConfig, FilterMetric};
use crate::dapo::{group_keep_mask, overlong_penalty};
use crate::error::Result;

mod loss;
mod plan;

#[cfg(test)]
use crate::schedule::AlgoState;
pub use loss::{policy_loss, PolicyInputs, PolicyLoss};
pub use plan::{
    compute_advantages, compute_step_plan, CorrectionSummary, MicroBatchPlan, PlanSummary,
    StepInputs, StepPlan,
};

/// Stage 2: the reward the advantages see. Adds DAPO's overlong penalty to `scores[N]` when
/// `algorithm.dapo.overlong` is set (`lengths[N]` = valid response tokens incl. EOS;
/// `max_response_len` is the default `L_max`). Returns `[N]` in f64 for f64 scores, else f32.
pub fn shape_rewards(
    alg: &AlgorithmConfig,
    scores: &Tensor,
    lengths: &Tensor,
    max_response_len: u64,
) -> Tensor {
    let kind = crate::advantage::float_kind(scores);
    let scores = scores.detach().to_kind(kind);
    match &alg.dapo.overlong {
        Some(o) => {
            let max_len = o.max_len.unwrap_or(max_response_len);
            scores
                + overlong_penalty(lengths, max_len, o.cache_len, o.penalty_factor)
                    .to_device(lengths.device())
                    .to_kind(kind)
        }
        None => scores,
    }
}

/// Stage 2: DAPO group filter on the configured metric (`acc[N]` or `score[N]`); `[B]` bool,
/// or `None` when `algorithm.dapo.filter_groups` is off.
pub fn group_filter(
    alg: &AlgorithmConfig,
    acc: &Tensor,
    score: &Tensor,
    g: i64,
) -> Result<Option<Tensor>> {
    match &alg.dapo.filter_groups {
        None => Ok(None),
        Some(f) => {
            let metric = match f.metric {
                FilterMetric::Acc => acc,
                FilterMetric::Score => score,
            };
            group_keep_mask(metric, g).map(Some)
        }
    }
}

/// RMT's weighted NTP term `λ·L_NTP` for one micro-batch (`logp`, `ntp_mask`: `[rows, S]`,
/// teacher-forced), normalised by `step_ntp_tokens`, the NTP tokens of the whole optimizer step;
/// `None` when `algorithm.rmt` is off. Add it to the policy loss of the same optimizer step.
pub fn rmt_ntp_loss(
    alg: &AlgorithmConfig,
    logp: &Tensor,
    ntp_mask: &Tensor,
    step_ntp_tokens: f64,
) -> Option<Tensor> {
    alg.rmt
        .as_ref()
        .map(|r| crate::rmt::ntp_loss(logp, ntp_mask, r.ntp_weight, r.ntp_norm, step_ntp_tokens))
}

#[cfg(test)]
mod tests;
