//! What one training step trained on, kept when [`crate::Trainer::record_steps`] is set (tests
//! and debugging; off by default, since it keeps the step's tensors alive): the rollout's rows as
//! generated (tokens, per-token temperatures and entropies, generating versions), the learner
//! batch, π_old and where it came from, the reference log-probs, the step plan, and for every
//! optimizer step the current-policy log-probs the loss saw and the loss gradient with respect to
//! them. Tests recompute the step's numbers from these with their own arithmetic, so a feature
//! that is parsed but never reaches the training step shows up as a mismatch.
//!
//! Shapes: `N` rows, `T` response positions (the batch's width); micro-batch tensors are
//! `[n, T]` for the micro-batch's `n` rows.

use crate::batch::LearnerBatch;
use rlpo_algo::StepPlan;
use rlpo_rollout::Group;
use std::ops::Range;
use tch::Tensor;

/// Where the step's behaviour-policy log-probs (π_old of the ratio) came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldLogpSource {
    /// A no-grad forward of the learner before the update (`trainer.old_logprobs`, rollout
    /// correction, several optimizer steps on host-decoded rollouts).
    Recomputed,
    /// The rollout's recorded log-probs (stale rows, or several optimizer steps on rollouts of
    /// the learner's own kernels).
    Rollout,
    /// The learner's own detached log-probs from the update's forward (one optimizer step on
    /// on-policy rows): see each micro-batch's `old_logp`.
    LearnerFirstPass,
}

/// One micro-batch of one optimizer step.
#[derive(Debug)]
pub struct MicroBatchRecord {
    /// Its rows of the step, `u0..u0 + n`.
    pub rows: Range<i64>,
    /// Current-policy log-probs the loss saw `[n, T]` (detached; rows the learner did not forward,
    /// those outside the loss mask, hold π_old).
    pub logp: Tensor,
    /// π_old of the ratio `[n, T]`.
    pub old_logp: Tensor,
    /// `∂ loss / ∂ logp` `[n, T]` of this micro-batch's share of the optimizer step's loss.
    pub grad: Tensor,
}

/// One optimizer step (a mini-batch in one epoch).
#[derive(Debug)]
pub struct OptimizerStepRecord {
    /// 0-based pass over the step's data (`trainer.ppo_epochs`).
    pub epoch: usize,
    /// Its rows of the step, `m0..m0 + mini_batch_rows`.
    pub rows: Range<i64>,
    /// The micro-batches that forwarded at least one row, in row order.
    pub micro: Vec<MicroBatchRecord>,
    /// Its policy-gradient loss (the value `actor/pg_loss` averages).
    pub pg_loss: f64,
    /// Its KL term before β (0 without KL).
    pub kl: f64,
    /// Its clip fraction.
    pub clip_frac: f64,
    /// Whether the optimizer applied it (false: non-finite, skipped).
    pub applied: bool,
}

/// The tensors of one training step (see the module docs).
#[derive(Debug)]
pub struct StepRecord {
    /// 1-based step.
    pub step: u64,
    /// Weights version when the update started (`Trainer::version` before the step's updates).
    pub version_before: u64,
    /// The trained groups as the rollout returned them, in row order.
    pub groups: Vec<Group>,
    /// Reward per row (before shaping).
    pub scores: Vec<f64>,
    /// Shaped reward per row `[N]` (what the advantages are computed from).
    pub shaped: Tensor,
    /// The learner's rows.
    pub batch: LearnerBatch,
    /// Where π_old came from.
    pub old_logp_source: OldLogpSource,
    /// π_old `[N, T]` (`None` for [`OldLogpSource::LearnerFirstPass`]: see the micro-batches).
    pub old_logp: Option<Tensor>,
    /// Reference-policy log-probs `[N, T]` (`loss.kl_coef > 0`).
    pub ref_logp: Option<Tensor>,
    /// Advantages, masks and clip widths of the step.
    pub plan: StepPlan,
    /// Every optimizer step, in order (skipped empty mini-batches are absent).
    pub updates: Vec<OptimizerStepRecord>,
}
