//! HAPO, heterogeneous adaptive policy optimisation (spec §4): entropy as a per-token control
//! signal.
//!
//! * [`entropy_stats`] / [`normalised_entropy`]: h̃ ∈ [−1, 1] from the log-entropy's position
//!   relative to its ρ-quantile (§4.3.1). Intended semantics by default; `code_compat`
//!   reproduces the released code, whose sign bug maps every token to h̃ ≥ 0.
//! * [`HapoStats`] + [`token_temperature`]: the per-token rollout temperature (§4.3.2); the
//!   stats are what the rollout engine needs and what resume must restore.
//! * [`token_level_group_average`]: token-weighted group advantages with the GRPO fallback
//!   (§4.3.3).
//! * [`adaptive_clip`] and [`redistribute_advantages`]: asymmetric per-token clip widths and
//!   differential advantage redistribution (§4.3.4–4.3.5), both detached.
//!
//! Shapes: entropies, masks, h̃, per-token advantages and ratios `[N, T]`; rewards and lengths
//! `[N]`; fallback flags `[B]`.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::advantage::{float_kind, group_advantages, group_view, GroupNormOptions};
use crate::error::{input_err, Result};
use crate::surrogate::{ClipRange, ClipWidth};

/// Entropy floor before the log in the loss-side statistics (released code).
const LOSS_ENTROPY_FLOOR: f64 = 1e-8;
/// Entropy floor and std epsilon of the rollout-side formula (patched vLLM sampler).
const ROLLOUT_EPS: f64 = 1e-6;

/// Entropy-normalisation statistics of one step: the pivot `q` (ρ-quantile of `ln H`), the RMS
/// deviation `s` around it, `1/h⁺` and the scale applied to `h ≤ 0` (`1/|h⁻|` intended,
/// `1/h⁻` with `code_compat`). Serialisable so the trainer can checkpoint it and ship it to the
/// rollout engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HapoStats {
    /// Pivot: ρ-quantile of `ln max(H, 1e-8)` over the valid tokens.
    pub q: f64,
    /// `sqrt(max(mean((λ − q)²), 1e-8))`.
    pub s: f64,
    /// `1 / h⁺`, `h⁺ = max(max h, 1e-8)`.
    pub inv_h_pos: f64,
    /// Multiplier of `h ≤ 0`: `1/|h⁻|` (intended) or `1/h⁻` (released code), `h⁻ = min(min h, −1e-8)`.
    pub scale_neg: f64,
}

/// Statistics over the tokens where `mask` is 1 (`entropy`, `mask`: `[N, T]`). `quantile` is ρ.
/// `None` when no token is valid.
pub fn entropy_stats(
    entropy: &Tensor,
    mask: &Tensor,
    quantile: f64,
    code_compat: bool,
) -> Option<HapoStats> {
    tch::no_grad(|| {
        let valid = mask.gt(0.0);
        let n = valid.sum(Kind::Int64).int64_value(&[]);
        if n == 0 {
            return None;
        }
        let kind = float_kind(entropy);
        let lam = entropy
            .detach()
            .to_kind(kind)
            .clamp_min(LOSS_ENTROPY_FLOOR)
            .log();
        // "nearest" quantile: index round(ρ·(n − 1)), halves to even (torch.quantile). Padding
        // is set to +inf so that the k-th smallest over all positions is the k-th smallest
        // valid value (avoids a masked_select copy of the valid entries).
        let idx = (quantile.clamp(0.0, 1.0) * (n - 1) as f64).round_ties_even() as i64;
        let pool = lam
            .masked_fill(&valid.logical_not(), f64::INFINITY)
            .reshape([-1]);
        let q = pool.kthvalue(idx + 1, 0, false).0.double_value(&[]);
        // Padding gets d = 0: no contribution to the sum of squares, and max/min of h are
        // clamped to ±1e-8 anyway, so a 0 cannot change them.
        let d = (lam - q).where_scalarother(&valid, 0.0);
        let mean_sq = d.square().sum(Kind::Double).double_value(&[]) / n as f64;
        let s = mean_sq.max(1e-8).sqrt();
        let h_pos = (d.max().double_value(&[]) / s).max(1e-8);
        let h_neg = (d.min().double_value(&[]) / s).min(-1e-8);
        let scale_neg = if code_compat {
            1.0 / h_neg
        } else {
            1.0 / h_neg.abs()
        };
        Some(HapoStats {
            q,
            s,
            inv_h_pos: 1.0 / h_pos,
            scale_neg,
        })
    })
}

/// h̃ `[N, T]` for every token under `stats` (loss-side formula), clamped to [−1, 1] and zero
/// where `mask` is 0. Detached.
pub fn normalised_entropy(entropy: &Tensor, mask: &Tensor, stats: &HapoStats) -> Tensor {
    tch::no_grad(|| {
        let kind = float_kind(entropy);
        let h = (entropy
            .detach()
            .to_kind(kind)
            .clamp_min(LOSS_ENTROPY_FLOOR)
            .log()
            - stats.q)
            / stats.s;
        let ht = (&h * stats.inv_h_pos).where_self(&h.gt(0.0), &(&h * stats.scale_neg));
        ht.clamp(-1.0, 1.0) * mask.to_kind(kind)
    })
}

/// Rollout-side h̃ of one position with entropy `entropy` (§4.3.2 step 2).
pub fn rollout_h_tilde(entropy: f64, stats: &HapoStats) -> f64 {
    let h = (entropy.max(ROLLOUT_EPS).ln() - stats.q) / (stats.s + ROLLOUT_EPS);
    let ht = if h > 0.0 {
        h * stats.inv_h_pos
    } else {
        h * stats.scale_neg
    };
    ht.clamp(-1.0, 1.0)
}

/// `T_base · (1 + τ·h̃)` (§4.3.2 step 3).
pub fn temperature_from_h_tilde(h_tilde: f64, t_base: f64, tau: f64) -> f64 {
    t_base * (1.0 + tau * h_tilde)
}

/// Per-token sampling temperature for a position whose full-vocabulary entropy (of the raw
/// logits, before temperature/top-k/top-p) is `entropy`, using the previous step's `stats`.
pub fn token_temperature(entropy: f64, stats: &HapoStats, t_base: f64, tau: f64) -> f64 {
    temperature_from_h_tilde(rollout_h_tilde(entropy, stats), t_base, tau)
}

/// Batched [`token_temperature`]: entropies of any shape → temperatures of the same shape.
pub fn token_temperatures(entropy: &Tensor, stats: &HapoStats, t_base: f64, tau: f64) -> Tensor {
    tch::no_grad(|| {
        let kind = float_kind(entropy);
        let h = (entropy.detach().to_kind(kind).clamp_min(ROLLOUT_EPS).log() - stats.q)
            / (stats.s + ROLLOUT_EPS);
        let ht = (&h * stats.inv_h_pos)
            .where_self(&h.gt(0.0), &(&h * stats.scale_neg))
            .clamp(-1.0, 1.0);
        (ht * tau + 1.0) * t_base
    })
}

/// Asymmetric adaptive clip widths (§4.3.4): `ε_L(t) = ε_L(1 − α h̃)` where `h̃ ≤ 0`,
/// `ε_H(t) = ε_H(1 + α h̃)` where `h̃ > 0`, the base widths elsewhere. `h_tilde[N, T]`.
pub fn adaptive_clip(h_tilde: &Tensor, eps_low: f64, eps_high: f64, alpha: f64) -> ClipRange {
    tch::no_grad(|| {
        let ht = h_tilde.detach();
        let high_ent = ht.gt(0.0);
        let low = (ht.neg() * alpha + 1.0) * eps_low;
        let low = ht.full_like(eps_low).where_self(&high_ent, &low);
        let high = (&ht * alpha + 1.0) * eps_high;
        let high = high.where_self(&high_ent, &ht.full_like(eps_high));
        ClipRange::per_token(low, high)
    })
}

/// Differential advantage redistribution (§4.3.5). `adv[N, T]` (or broadcastable), `h_tilde`
/// and the detached `ratio` `[N, T]`, `clip` = the (adapted) widths. Neutral zone
/// `Z = (1 − ε_L(t)/2, 1 + ε_H(t)/2)`; `A_ent = A(1 + β h̃)`. High-entropy tokens (h̃ > 0) get
/// `A_ent` outside the zone, low-entropy tokens (h̃ ≤ 0) get `A_ent` inside it; `A` otherwise.
pub fn redistribute_advantages(
    adv: &Tensor,
    h_tilde: &Tensor,
    ratio: &Tensor,
    clip: &ClipRange,
    beta: f64,
) -> Tensor {
    tch::no_grad(|| {
        let (adv, ht, rho) = (adv.detach(), h_tilde.detach(), ratio.detach());
        let half = |w: &ClipWidth| w.to_tensor(&rho) * 0.5;
        let in_zone = rho
            .gt_tensor(&(half(&clip.low).neg() + 1.0))
            .logical_and(&rho.lt_tensor(&(half(&clip.high) + 1.0)));
        let use_ent = ht.gt(0.0).logical_xor(&in_zone);
        let a_ent = &adv * (&ht * beta + 1.0);
        a_ent.where_self(&use_ent, &adv)
    })
}

/// Options of [`token_level_group_average`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLevelOptions {
    /// Divide by the token-weighted population std (plus `eps`).
    pub norm_by_std: bool,
    /// Added to the std. 1e-6.
    pub eps: f64,
    /// A group falls back to GRPO when any valid row has `|A| ≥` this. 5.0.
    pub fallback_threshold: f64,
    /// Released-code behaviour: with `Some(T)`, a group with any row shorter than `T` also
    /// tests the padded-position value `−μ/(σ + eps)` against the threshold.
    pub padded_len: Option<i64>,
    /// The GRPO advantages used by the fallback (unbiased std, 1e-6).
    pub fallback: GroupNormOptions,
}

impl Default for TokenLevelOptions {
    fn default() -> Self {
        Self {
            norm_by_std: true,
            eps: 1e-6,
            fallback_threshold: 5.0,
            padded_len: None,
            fallback: GroupNormOptions::grpo(),
        }
    }
}

/// Output of [`token_level_group_average`].
#[derive(Debug)]
pub struct TokenLevelAdvantages {
    /// One advantage per row (the same on each of its tokens), `[N]`.
    pub advantages: Tensor,
    /// Groups that fell back to GRPO advantages, `[B]` bool.
    pub fallback: Tensor,
}

/// Token Level Group Average (§4.3.3): with response scores `R[N]` and valid lengths `L[N]`,
/// `μ = Σ L R / Σ L`, `σ² = Σ L (R − μ)² / Σ L`, `A = (R − μ)/(σ + eps)`, so `Σ_i L_i A_i = 0`
/// per group. Groups with any `|A| ≥ threshold` (or no tokens at all) use GRPO advantages.
pub fn token_level_group_average(
    rewards: &Tensor,
    lengths: &Tensor,
    g: i64,
    opts: &TokenLevelOptions,
) -> Result<TokenLevelAdvantages> {
    let r = group_view(rewards, g, "rewards")?;
    let l = group_view(lengths, g, "lengths")?;
    if r.size() != l.size() {
        return Err(input_err(
            "lengths",
            format!("expected {:?}, got {:?}", rewards.size(), lengths.size()),
        ));
    }
    let grpo = group_advantages(rewards, g, &opts.fallback)?.view([-1, g]);
    Ok(tch::no_grad(|| {
        let (r, l) = (
            r.detach().to_kind(Kind::Double),
            l.detach().to_kind(Kind::Double),
        );
        let sum_l = l.sum_dim_intlist(1, true, Kind::Double);
        let safe = sum_l.clamp_min(1.0);
        let mu = (&l * &r).sum_dim_intlist(1, true, Kind::Double) / &safe;
        let sigma = ((&r - &mu).square() * &l).sum_dim_intlist(1, true, Kind::Double) / &safe;
        let sigma = sigma.sqrt();
        let scale = |x: Tensor| {
            if opts.norm_by_std {
                x / (&sigma + opts.eps)
            } else {
                x
            }
        };
        let adv = scale(&r - &mu);
        let any = |b: Tensor| b.to_kind(Kind::Float).amax([1], true).gt(0.0);
        let mut fallback = any(adv
            .abs()
            .ge(opts.fallback_threshold)
            .logical_and(&l.gt(0.0)));
        if let Some(t) = opts.padded_len {
            let pad_big = scale(mu.neg()).abs().ge(opts.fallback_threshold);
            fallback = fallback.logical_or(&any(l.lt(t as f64)).logical_and(&pad_big));
        }
        let fallback = fallback.logical_or(&sum_l.le(0.0));
        let out = grpo.to_kind(Kind::Double).where_self(&fallback, &adv);
        TokenLevelAdvantages {
            advantages: out.view([-1]).to_kind(float_kind(rewards)),
            fallback: fallback.view([-1]),
        }
    }))
}

#[cfg(test)]
mod tests;
