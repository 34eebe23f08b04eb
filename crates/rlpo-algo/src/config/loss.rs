//! `[loss]`: the base policy loss, its clip widths, the dual clip, the aggregation and the KL
//! penalty ([`LossConfig`]). Optional fields are `None` when the recipe leaves them out, so that
//! the base-dependent defaults are filled in one place and a key that the chosen base does not
//! read can be refused by `validate.rs` instead of being silently ignored.

use serde::{Deserialize, Serialize};

use crate::aggregate::{AggMode, Aggregation};
use crate::kl::KlEstimator;

/// The base policy loss (spec §0.2, §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseLoss {
    /// Token-level PPO/GRPO clipped surrogate (verl `compute_policy_loss_vanilla`).
    #[default]
    Grpo,
    /// GSPO: one length-normalised ratio per sequence (row-constant advantages only).
    Gspo,
    /// GSPO-token: sequence ratio value, token-level gradient and advantages (verl
    /// `compute_policy_loss_gspo`).
    GspoToken,
    /// CISPO (MiniMax-M1): `−sg(clip(ρ, 1−ε_lo, 1+ε_hi))·A·log π_θ`, the clipped importance
    /// weight without gradient, so every token keeps a gradient (verl
    /// `compute_policy_loss_cispo`).
    Cispo,
}

/// Which tokens enter GSPO's sequence ratio when a selection mask is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GspoRatioTokens {
    /// PROPOSAL: only the tokens kept by the loss mask (D³S / filters).
    #[default]
    Kept,
    /// Every valid response token.
    Response,
}

/// How `base = "gspo"` averages its per-sequence losses (`loss.gspo_agg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GspoAgg {
    /// The GSPO paper's objective: the mean over sequences, `(1/n_R) Σ_i ℓ_i`.
    #[default]
    SeqMean,
    /// verl's actor default (`loss_agg_mode = "token-mean"`): `Σ_i |y_i|·ℓ_i / Σ_i |y_i|`, i.e.
    /// sequences weighted by their length.
    TokenMean,
}

/// `[loss]`: per-token loss and its aggregation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Base loss. Default `grpo`.
    pub base: BaseLoss,
    /// `ε_lo`; `None` = 0.2 (grpo), 3e-4 (gspo*), 10 (cispo: no lower bound).
    pub clip_low: Option<f64>,
    /// `ε_hi`; `None` = 0.2 (grpo, cispo) or 4e-4 (gspo*). DAPO: 0.28.
    pub clip_high: Option<f64>,
    /// Dual-clip constant `c > 1` for negative advantages, `inf` = off; `None` = 3.0 (verl).
    /// Only `base = "grpo"` has a dual clip (GSPO and CISPO do not, in their papers and in verl).
    pub dual_clip: Option<f64>,
    /// Aggregation of token losses; `None` = `token_mean`. Not read by `base = "gspo"`.
    pub agg: Option<AggMode>,
    /// Aggregation of GSPO's sequence losses (`base = "gspo"` only); `None` = `seq_mean`.
    pub gspo_agg: Option<GspoAgg>,
    /// `L_const` for `agg = "constant_norm"` (Dr. GRPO: the max generation length).
    pub norm_len: Option<u64>,
    /// β, weight of the KL penalty in the loss. Default 0.0 (no reference model needed).
    pub kl_coef: f64,
    /// KL estimator. Default `k3`.
    pub kl_estimator: KlEstimator,
    /// GSPO ratio token set. Default `kept` (PROPOSAL).
    pub gspo_ratio_tokens: GspoRatioTokens,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            base: BaseLoss::Grpo,
            clip_low: None,
            clip_high: None,
            dual_clip: None,
            agg: None,
            gspo_agg: None,
            norm_len: None,
            kl_coef: 0.0,
            kl_estimator: KlEstimator::K3,
            gspo_ratio_tokens: GspoRatioTokens::Kept,
        }
    }
}

impl LossConfig {
    /// `(ε_lo, ε_hi)` with the base-dependent defaults filled in.
    pub fn clip_widths(&self) -> (f64, f64) {
        let (lo, hi) = match self.base {
            BaseLoss::Grpo => (0.2, 0.2),
            BaseLoss::Gspo | BaseLoss::GspoToken => (3e-4, 4e-4),
            // MiniMax-M1 sets no lower bound on the IS weight; verl's examples/cispo_trainer uses
            // clip_ratio_low = 10, clip_ratio_high = 0.2.
            BaseLoss::Cispo => (10.0, 0.2),
        };
        (self.clip_low.unwrap_or(lo), self.clip_high.unwrap_or(hi))
    }

    /// The dual-clip constant in use: `None` when switched off (`inf`) or when the base has none.
    pub fn dual_clip(&self) -> Option<f64> {
        match self.base {
            BaseLoss::Grpo => {
                let c = self.dual_clip.unwrap_or(3.0);
                c.is_finite().then_some(c)
            }
            BaseLoss::Gspo | BaseLoss::GspoToken | BaseLoss::Cispo => None,
        }
    }

    /// The aggregation mode with the base-dependent default filled in.
    pub fn agg_mode(&self) -> AggMode {
        match self.base {
            // One loss per sequence, repeated on its tokens: the sequence mean is the per-row
            // token mean averaged over rows; verl's token-mean weights rows by length.
            BaseLoss::Gspo => match self.gspo_agg.unwrap_or_default() {
                GspoAgg::SeqMean => AggMode::SeqMeanTokenMean,
                GspoAgg::TokenMean => AggMode::TokenMean,
            },
            BaseLoss::Grpo | BaseLoss::GspoToken | BaseLoss::Cispo => self.agg.unwrap_or(AggMode::TokenMean),
        }
    }

    /// The resolved aggregation (with `L_const`); call after validation.
    pub fn aggregation(&self) -> Aggregation {
        match self.agg_mode() {
            AggMode::TokenMean => Aggregation::TokenMean,
            AggMode::SeqMeanTokenMean => Aggregation::SeqMeanTokenMean,
            AggMode::SeqMeanTokenSum => Aggregation::SeqMeanTokenSum,
            AggMode::ConstantNorm => Aggregation::ConstantNorm {
                len: self.norm_len.unwrap_or(1).max(1) as f64,
            },
        }
    }
}
