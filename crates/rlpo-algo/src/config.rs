//! Recipe sections owned by this crate: `[algorithm]` ([`AlgorithmConfig`]) and `[loss]`
//! ([`LossConfig`]). Plain serde structs with `deny_unknown_fields` and the spec's defaults, so a
//! typo in a recipe fails at load time. Range checks live in `validate.rs`
//! ([`validate_sections`](crate::validate_sections)).
//!
//! `[loss]` lives in `config/loss.rs` ([`LossConfig`]).
//!
//! Shape of the recipe (every key optional; defaults are a plain GRPO baseline):
//!
//! ```toml
//! [algorithm]
//! advantage = "grpo"            # grpo | dr_grpo | rloo | reinforce_plus_plus_baseline | hapo
//! std = "unbiased"              # unbiased | population
//! adv_eps = 1e-6
//! singleton_advantage = "reward" # reward (verl) | zero (PROPOSAL)
//! [algorithm.dapo]              # overlong shaping, group filter, overlong filter (all off)
//! [algorithm.d3s]               # present = D3S on
//! [algorithm.hapo]              # present = HAPO entropy components on
//! [algorithm.rmt]               # present = RMT schedules on
//! [algorithm.rollout_correction] # present = TIS / MIS against the rollout's log-probs
//!
//! [loss]
//! base = "grpo"                 # grpo | gspo | gspo_token | cispo
//! clip_low = 0.2                # default 0.2 (grpo), 3e-4 (gspo*), 10 (cispo)
//! clip_high = 0.2               # default 0.2 (grpo, cispo), 4e-4 (gspo*); DAPO uses 0.28
//! dual_clip = 3.0               # grpo only; inf switches it off
//! agg = "token_mean"            # token losses (not read by gspo)
//! gspo_agg = "seq_mean"         # gspo only: seq_mean (paper) | token_mean (verl)
//! kl_coef = 0.0
//! kl_estimator = "k3"
//! ```
//!
//! See `docs/algorithms.md` for every key.

use serde::{Deserialize, Serialize};

use crate::advantage::StdKind;
use crate::rollout_corr::RolloutCorrectionConfig;

mod loss;
pub use loss::{BaseLoss, GspoAgg, GspoRatioTokens, LossConfig};

/// Which advantage estimator runs on full groups (spec §1.3, §4.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvantageKind {
    /// `(r − mean) / (std + eps)` per group.
    #[default]
    Grpo,
    /// `r − mean` (no std scaling).
    DrGrpo,
    /// RLOO: `r − mean of the other G − 1 rewards` = `G/(G − 1)·(r − mean)` (verl
    /// `compute_rloo_outcome_advantage`).
    Rloo,
    /// REINFORCE++-baseline: `r − group mean`, then whitened over every valid token of the step
    /// (verl `compute_reinforce_plus_plus_baseline_outcome_advantage`).
    ReinforcePlusPlusBaseline,
    /// HAPO token-level group average with the GRPO fallback.
    Hapo,
}

/// What a group of a single response gets as advantage (spec §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SingletonAdvantage {
    /// verl: mean 0, std 1, so `A = r` (no baseline).
    #[default]
    Reward,
    /// PROPOSAL: `A = 0` (no baseline exists, so no signal).
    Zero,
}

/// `[algorithm]`: advantage estimator and the optional algorithm sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlgorithmConfig {
    /// Advantage estimator. Default `grpo`.
    pub advantage: AdvantageKind,
    /// Std used by GRPO (and by HAPO's GRPO fallback). Default `unbiased` (verl).
    pub std: StdKind,
    /// Added to the std before dividing. Default `1e-6` (verl).
    pub adv_eps: f64,
    /// Advantage of a group with one response. Default `reward` (verl).
    pub singleton_advantage: SingletonAdvantage,
    /// DAPO reward shaping and group filtering. Default: everything off.
    pub dapo: DapoConfig,
    /// D³S down-sampling; `None` = off.
    pub d3s: Option<D3sConfig>,
    /// HAPO entropy components; `None` = off.
    pub hapo: Option<HapoConfig>,
    /// RMT schedules and NTP loss; `None` = off.
    pub rmt: Option<RmtConfig>,
    /// Rollout correction (TIS / MIS between the rollout's and the learner's log-probs);
    /// `None` = off (the mismatch metrics are logged anyway).
    pub rollout_correction: Option<RolloutCorrectionConfig>,
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        Self {
            advantage: AdvantageKind::Grpo,
            std: StdKind::Unbiased,
            adv_eps: 1e-6,
            singleton_advantage: SingletonAdvantage::Reward,
            dapo: DapoConfig::default(),
            d3s: None,
            hapo: None,
            rmt: None,
            rollout_correction: None,
        }
    }
}

/// `[algorithm.dapo]`: DAPO's reward shaping and dynamic sampling (spec §2). Clip-higher is
/// `loss.clip_high = 0.28`; token-mean is `loss.agg = "token_mean"`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DapoConfig {
    /// Soft overlong punishment added to the reward; `None` = off.
    pub overlong: Option<OverlongConfig>,
    /// Dynamic sampling (drop groups whose metric is constant); `None` = off.
    pub filter_groups: Option<FilterGroupsConfig>,
    /// Mask the loss of truncated responses (no EOS). Default `false` (DAPO's best runs and
    /// verl do not use it).
    pub overlong_filter: bool,
}

/// `[algorithm.dapo.overlong]`: `r += f · clamp(((L_max − L_cache) − |y|) / L_cache, −1, 0)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OverlongConfig {
    /// `L_max`; `None` = the rollout's max response length (verl).
    pub max_len: Option<u64>,
    /// `L_cache`, the buffer before `L_max`. Default 4096.
    pub cache_len: u64,
    /// Penalty factor `f`. Default 1.0.
    pub penalty_factor: f64,
}

impl Default for OverlongConfig {
    fn default() -> Self {
        Self {
            max_len: None,
            cache_len: 4096,
            penalty_factor: 1.0,
        }
    }
}

/// Which per-response value the DAPO group filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMetric {
    /// The correctness flag (verl default); ignores length shaping.
    #[default]
    Acc,
    /// The final shaped reward.
    Score,
}

/// What to do when dynamic sampling hits `max_num_gen_batches` with too few groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Stop the run with an error (verl).
    #[default]
    Error,
    /// PROPOSAL: train on the groups collected so far (skip the step if none).
    TrainAvailable,
}

/// `[algorithm.dapo.filter_groups]`: dynamic sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterGroupsConfig {
    /// Metric whose group std must be > 0. Default `acc`.
    pub metric: FilterMetric,
    /// Cap on generation batches per step, >= 1 (every step must end). Default 10.
    pub max_num_gen_batches: i64,
    /// Behaviour at the cap. Default `error`.
    pub on_exhausted: OnExhausted,
    /// Prompts per generation batch as a multiple of `trainer.prompts_per_step` (rounded up):
    /// oversampling so that one batch usually yields enough groups. Default 3 (verl's DAPO
    /// recipe: `gen_batch_size = 3 · train_batch_size`).
    pub gen_batch_factor: f64,
}

impl Default for FilterGroupsConfig {
    fn default() -> Self {
        Self {
            metric: FilterMetric::Acc,
            max_num_gen_batches: 10,
            on_exhausted: OnExhausted::Error,
            gen_batch_factor: 3.0,
        }
    }
}

/// D³S sample-selection level (spec §3.3 step 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum D3sLevel {
    /// `N_s` rows per group ("D3S-I").
    IntraGroup,
    /// `B · N_s` rows from the pooled batch (the full D³S; budget reading is a PROPOSAL).
    #[default]
    CrossGroup,
}

/// `[algorithm.d3s]`: dynamic dual-level down-sampling (spec §3). All numeric defaults are
/// PROPOSALs (the paper's values were not found).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct D3sConfig {
    /// Sample-selection level. Default `cross_group`.
    pub level: D3sLevel,
    /// `N_init`, rows kept per group at progress 0, >= 2; `None` = round(G/4), at least 2.
    pub samples_init: Option<usize>,
    /// `N_final`, rows kept per group at progress 1, >= 2; `None` = round(3G/4), at least 2.
    pub samples_final: Option<usize>,
    /// `K_init`, fraction of tokens kept at progress 0, in (0, 1]. Default 0.2.
    pub token_keep_init: f64,
    /// `K_final`, fraction of tokens kept at progress 1, in (0, 1]. Default 0.6.
    pub token_keep_final: f64,
    /// PROPOSAL: exclude groups whose advantages are all equal before selecting. Default false.
    pub drop_zero_variance_groups: bool,
}

impl Default for D3sConfig {
    fn default() -> Self {
        Self {
            level: D3sLevel::CrossGroup,
            samples_init: None,
            samples_final: None,
            token_keep_init: 0.2,
            token_keep_final: 0.6,
            drop_zero_variance_groups: false,
        }
    }
}

impl D3sConfig {
    /// `(N_init, N_final)` for group size `g`, filling the G-relative defaults (a subset of one
    /// row has no variance to maximise, so a default is at least 2, or `g` when smaller).
    pub fn samples(&self, g: usize) -> (usize, usize) {
        let quarter = |f: f64| ((g as f64 * f).round() as usize).max(2).min(g.max(1));
        (
            self.samples_init.unwrap_or(quarter(0.25)),
            self.samples_final.unwrap_or(quarter(0.75)),
        )
    }
}

/// Over which tokens HAPO's entropy statistics (q, s, h⁺, h⁻) are taken in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HapoStatsScope {
    /// PROPOSAL: once per step over all valid tokens, from the `old_logp` forward's entropies;
    /// independent of micro-batching.
    #[default]
    Step,
    /// Released code: per micro-batch from the current policy's entropies.
    MicroBatch,
}

/// `[algorithm.hapo]`: HAPO's entropy-driven components (spec §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HapoConfig {
    /// Entropy pivot quantile ρ in [0, 1]. Default 0.8.
    pub quantile: f64,
    /// Temperature strength τ in [0, 1). Default 0.05 (code; the paper note says 0.1).
    pub tau: f64,
    /// Clip-adaptation strength α ≥ 0. Default 1.0.
    pub alpha: f64,
    /// Advantage-redistribution strength β in [0, 1] (β > 1 would flip the sign of low-entropy
    /// tokens' advantages, `1 + β·h̃ < 0`). Default 1.0.
    pub beta: f64,
    /// Reproduce the released code's h̃ (sign flip: every token gets h̃ ≥ 0). Default false.
    pub code_compat: bool,
    /// Token set of the loss-side statistics. Default `step` (PROPOSAL).
    pub stats_scope: HapoStatsScope,
    /// A group falls back to GRPO advantages if any |A| reaches this. Default 5.0.
    pub fallback_threshold: f64,
    /// Also test the padded-position value in the fallback check (released code). Default
    /// false (PROPOSAL: valid tokens only).
    pub fallback_check_padding: bool,
    /// Divide the token-level advantage by the token-weighted std. Default true.
    pub norm_by_std: bool,
    /// Publish statistics for per-token rollout temperature. Default true.
    pub adaptive_temperature: bool,
    /// Entropy-dependent asymmetric clip widths. Default true.
    pub adaptive_clip: bool,
    /// Differential advantage redistribution. Default true.
    pub redistribution: bool,
}

impl Default for HapoConfig {
    fn default() -> Self {
        Self {
            quantile: 0.8,
            tau: 0.05,
            alpha: 1.0,
            beta: 1.0,
            code_compat: false,
            stats_scope: HapoStatsScope::Step,
            fallback_threshold: 5.0,
            fallback_check_padding: false,
            norm_by_std: true,
            adaptive_temperature: true,
            adaptive_clip: true,
            redistribution: true,
        }
    }
}

/// Normalisation of RMT's NTP term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NtpNorm {
    /// PROPOSAL: divide by the number of NTP tokens in the optimizer step.
    #[default]
    TokenMean,
    /// As written in the source note: plain sum.
    Sum,
}

/// `[algorithm.rmt]`: reinforcement mid-training (spec §5). The composite reward
/// `(1 − w)·match + w·r_len` is not configured here: it is the `[reward]` section's `match` and
/// `length` functions with weights `1 − w` and `w` (the `length` function owns `r_max`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmtConfig {
    /// `B_0`, the initial think budget in tokens. Default 800.
    pub budget_init: u64,
    /// `B_min ≥ 1`, the budget floor. Default 1.
    pub budget_min: u64,
    /// `γ` in (0, 1]: `B_t = max(B_min, ⌊B_0 γ^{t/T}⌋)`. Default 0.2.
    pub budget_decay: f64,
    /// `t_1 / T`, start of the tier-mix ramp. Default 0.3.
    pub curriculum_start: f64,
    /// `t_2 / T`, end of the tier-mix ramp. Default 0.7.
    pub curriculum_end: f64,
    /// `p_{t1}` over (easy, medium, hard). Default (0.6, 0.3, 0.1) (PROPOSAL).
    pub tiers_start: [f64; 3],
    /// `p_{t2}` over (easy, medium, hard). Default (0.1, 0.3, 0.6) (PROPOSAL).
    pub tiers_end: [f64; 3],
    /// λ, weight of the NTP loss. Default 0.1.
    pub ntp_weight: f64,
    /// NTP normalisation. Default `token_mean` (PROPOSAL).
    pub ntp_norm: NtpNorm,
    /// Rollout length cap as a multiple of `B_t` (the triangular length reward is 0 beyond
    /// `2·B_t`, so longer reasoning only costs time): each row stops at
    /// `min(rollout.max_new_tokens, ⌈cap·B_t⌉ + answer_tokens)`. 0 = no cap. Default 2.0 (PROPOSAL).
    pub rollout_cap: f64,
    /// Tokens allowed after the think block for the answer (see `rollout_cap`). Default 16.
    pub answer_tokens: u64,
    /// Mid-training (`data.source = "text"`): the user message built for one RL position;
    /// `{prefix}` is the document text before it, `{budget}` the budget `B_t`. On RL datasets,
    /// `{budget}` inside a prompt is replaced by `B_t` too.
    pub instruction: String,
    /// Mid-training: the prefix shown is at most this many tokens (the end of the text before
    /// the position). Default 256.
    pub max_prefix_tokens: usize,
    /// Mid-training: RL positions need at least this many tokens before them. Default 4.
    pub min_prefix_tokens: usize,
    /// Mid-training: documents are cut to this many tokens (entropy pass and NTP loss). Default 512.
    pub max_doc_tokens: usize,
    /// RL datasets: metadata key of a reference solution; rows that have one add the NTP loss on
    /// the solution tokens (teacher-forced after the prompt). Default `solution`.
    pub solution_field: String,
}

impl Default for RmtConfig {
    fn default() -> Self {
        Self {
            budget_init: 800,
            budget_min: 1,
            budget_decay: 0.2,
            curriculum_start: 0.3,
            curriculum_end: 0.7,
            tiers_start: [0.6, 0.3, 0.1],
            tiers_end: [0.1, 0.3, 0.6],
            ntp_weight: 0.1,
            ntp_norm: NtpNorm::TokenMean,
            rollout_cap: 2.0,
            answer_tokens: 16,
            instruction: "{prefix}\n\nThink about how this text continues inside <think></think> in about {budget} tokens, then give only the next word.".into(),
            max_prefix_tokens: 256,
            min_prefix_tokens: 4,
            max_doc_tokens: 512,
            solution_field: "solution".into(),
        }
    }
}

