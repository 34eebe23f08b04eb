//! `rlpo-algo`: the RL post-training algorithms of rlpo as plain functions over `tch` tensors,
//! selected by serde enums from the recipe's `[algorithm]` and `[loss]` sections.
//!
//! | module | owns |
//! | --- | --- |
//! | [`config`], [`validate`] | recipe sections, defaults, load-time checks |
//! | [`surrogate`] | §0.2 ratio and clipped surrogate (scalar or per-token clip, dual clip), CISPO |
//! | [`kl`] | §0.4 KL estimators k1, k2, k3 |
//! | [`mod@aggregate`] | §0.3 loss aggregation with a step-wide normaliser |
//! | [`logprob`] | chunked log-softmax gather and entropy |
//! | [`advantage`] | §1 GRPO / Dr. GRPO group advantages, RLOO, REINFORCE++-baseline |
//! | [`gspo`] | §1.7 GSPO and GSPO-token |
//! | [`rollout_corr`] | rollout correction (TIS / MIS) and the rollout-vs-learner mismatch |
//! | [`dapo`] | §2 overlong shaping, group filter, refill decision |
//! | [`d3s`] | §3 max-variance rows, top-K tokens, schedule |
//! | [`hapo`] | §4 normalised entropy, token-level advantages, adaptive clip, redistribution, temperatures |
//! | [`rmt`] | §5 budget, curriculum, NTP loss |
//! | [`compose`] | §6 the composition order the trainer calls |
//! | [`schedule`] | resumable step/progress/HAPO state |
//! | [`seeded`] | seeded random tensors for tests and benchmarks (never LibTorch's global generator) |
//!
//! Conventions: `N = B·G` rows with each group's rows contiguous, `T` response positions,
//! masks are 1 for generated tokens including EOS. Nothing here touches a model: the learner
//! supplies log-probs and entropies. Section numbers refer to the algorithm specification
//! (`docs/algorithms.md` explains the recipe keys).

pub mod advantage;
pub mod aggregate;
pub mod compose;
pub mod config;
pub mod d3s;
pub mod dapo;
pub mod error;
pub mod gspo;
pub mod hapo;
pub mod kl;
pub mod logprob;
pub mod rmt;
pub mod rollout_corr;
pub mod schedule;
pub mod seeded;
pub mod surrogate;
pub mod validate;

pub use aggregate::{aggregate, AggMode, Aggregation, LossNormaliser};
pub use compose::{
    compute_advantages, compute_step_plan, group_filter, policy_loss, rmt_ntp_loss, shape_rewards,
    CorrectionSummary, MicroBatchPlan, PolicyInputs, PolicyLoss, StepInputs, StepPlan,
};
pub use config::{AlgorithmConfig, LossConfig};
pub use error::{Error, Result};
pub use hapo::HapoStats;
pub use rollout_corr::{MismatchStats, RolloutCorrectionConfig};
pub use schedule::AlgoState;
pub use surrogate::{ClipRange, ClipWidth};
pub use validate::validate_sections;
