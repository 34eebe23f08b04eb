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
mod tests {
    use super::*;
    use crate::surrogate::clipped_surrogate;
    use crate::testutil::SplitMix;
    use tch::Device;

    fn vecf(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    fn close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < tol, "{got:?} vs {want:?}");
        }
    }

    fn tla(r: &[f64], l: &[f64], g: i64) -> TokenLevelAdvantages {
        token_level_group_average(
            &Tensor::from_slice(r),
            &Tensor::from_slice(l),
            g,
            &TokenLevelOptions::default(),
        )
        .unwrap()
    }

    /// Spec §4.6 example 1 a–c: token-level group average and its fallback.
    #[test]
    fn spec_4_6_token_level_group_average() {
        let a = tla(&[1.0, 0.0], &[2.0, 4.0], 2);
        let av = vecf(&a.advantages);
        close(&av, &[1.414211, -0.707105], 1e-5);
        // Token sum 2·A_1 + 4·A_2 = 0.
        assert!((2.0 * av[0] + 4.0 * av[1]).abs() < 1e-9);
        let b = tla(&[1.0, 0.0, 0.0, 1.0], &[10.0, 20.0, 30.0, 40.0], 4);
        close(
            &vecf(&b.advantages),
            &[0.999998, -0.999998, -0.999998, 0.999998],
            1e-5,
        );
        let mut r = vec![0.0; 16];
        r[0] = 1.0;
        let mut l = vec![1000.0; 16];
        l[0] = 1.0;
        let c = tla(&r, &l, 16);
        let mut want = vec![-0.249999; 16];
        want[0] = 3.749985;
        close(&vecf(&c.advantages), &want, 1e-5);
        assert_eq!(Vec::<bool>::try_from(&c.fallback).unwrap(), vec![true]);
        assert_eq!(Vec::<bool>::try_from(&a.fallback).unwrap(), vec![false]);
    }

    /// Spec §4.6 example 2: normalised entropy (intended and released code) and temperatures.
    #[test]
    fn spec_4_6_normalised_entropy() {
        let h = Tensor::from_slice(&[0.05, 0.1, 0.2, 0.4, 0.8, 1.6]).view([1, 6]);
        let mask = h.ones_like();
        let st = entropy_stats(&h, &mask, 0.8, false).unwrap();
        assert!((st.q - (-0.223144)).abs() < 1e-6);
        assert!((st.s - 1.575545).abs() < 1e-6);
        let raw: Vec<f64> = vecf(&h).iter().map(|e| (e.ln() - st.q) / st.s).collect();
        close(
            &raw,
            &[-1.7598, -1.3198, -0.8799, -0.4399, 0.0, 0.4399],
            1e-4,
        );
        close(
            &vecf(&normalised_entropy(&h, &mask, &st)),
            &[-1.0, -0.75, -0.5, -0.25, 0.0, 1.0],
            1e-5,
        );
        let code = entropy_stats(&h, &mask, 0.8, true).unwrap();
        close(
            &vecf(&normalised_entropy(&h, &mask, &code)),
            &[1.0, 0.75, 0.5, 0.25, 0.0, 1.0],
            1e-5,
        );
        for (ht, want) in [
            (1.0, 1.05),
            (0.5, 1.025),
            (0.0, 1.0),
            (-0.5, 0.975),
            (-1.0, 0.95),
        ] {
            assert!((temperature_from_h_tilde(ht, 1.0, 0.05) - want).abs() < 1e-12);
        }
        // From entropies through the rollout formula (its 1e-6 terms move h̃ by < 1e-5).
        let temps: Vec<f64> = [0.05, 0.2, 0.8, 1.6]
            .iter()
            .map(|&e| token_temperature(e, &st, 1.0, 0.05))
            .collect();
        close(&temps, &[0.95, 0.975, 1.0, 1.05], 1e-5);
        close(
            &vecf(&token_temperatures(
                &Tensor::from_slice(&[0.05, 1.6]),
                &st,
                1.0,
                0.05,
            )),
            &[0.95, 1.05],
            1e-5,
        );
    }

    /// Spec §4.6 example 3: the clip-bounds and redistribution table (ε_L = ε_H = 0.2,
    /// α = β = 1, c = 10), plus the ε_H = 0.28 variant of its first row.
    #[test]
    fn spec_4_6_clip_and_redistribution_table() {
        // (A, h̃, ρ, ε_L(t), ε_H(t), in zone, A', loss, ε_H base)
        let rows = [
            (1.0, 0.5, 1.0, 0.2, 0.3, true, 1.0, -1.0, 0.2),
            (1.0, 0.5, 1.3, 0.2, 0.3, false, 1.5, -1.95, 0.2),
            (1.0, -0.5, 1.0, 0.3, 0.2, true, 0.5, -0.5, 0.2),
            (1.0, -0.5, 0.8, 0.3, 0.2, false, 1.0, -0.8, 0.2),
            (-1.0, 0.5, 0.8, 0.2, 0.3, false, -1.5, 1.2, 0.2),
            (-1.0, -1.0, 1.0, 0.4, 0.2, true, 0.0, 0.0, 0.2),
            (1.0, 0.5, 1.2, 0.2, 0.42, true, 1.0, -1.2, 0.28),
        ];
        for (i, &(a, ht, rho, el, eh, zone, a2, loss, eh_base)) in rows.iter().enumerate() {
            let (a_t, ht_t, rho_t) = (
                Tensor::from_slice(&[a]),
                Tensor::from_slice(&[ht]),
                Tensor::from_slice(&[rho]),
            );
            let clip = adaptive_clip(&ht_t, 0.2, eh_base, 1.0);
            let (ClipWidth::PerToken(lo), ClipWidth::PerToken(hi)) = (&clip.low, &clip.high) else {
                unreachable!()
            };
            assert!((lo.double_value(&[0]) - el).abs() < 1e-12, "row {i}: ε_L");
            assert!((hi.double_value(&[0]) - eh).abs() < 1e-12, "row {i}: ε_H");
            assert_eq!(
                rho > 1.0 - el / 2.0 && rho < 1.0 + eh / 2.0,
                zone,
                "row {i}: zone"
            );
            let a_new = redistribute_advantages(&a_t, &ht_t, &rho_t, &clip, 1.0);
            assert!((a_new.double_value(&[0]) - a2).abs() < 1e-12, "row {i}: A'");
            let l = clipped_surrogate(&rho_t, &a_new, &clip, Some(10.0)).double_value(&[0]);
            assert!((l - loss).abs() < 1e-9, "row {i}: loss {l} vs {loss}");
        }
    }

    /// Property: without fallback, token-level advantages sum to zero over each group's tokens.
    #[test]
    fn token_level_advantages_sum_to_zero() {
        let mut rng = SplitMix(9);
        let (b, g) = (40, 8);
        let r: Vec<f64> = (0..b * g)
            .map(|_| if rng.uniform() < 0.5 { 1.0 } else { -1.0 } - rng.uniform() * 0.3)
            .collect();
        let l: Vec<f64> = (0..b * g)
            .map(|_| 1.0 + (rng.next_u64() % 300) as f64)
            .collect();
        let out = token_level_group_average(
            &Tensor::from_slice(&r),
            &Tensor::from_slice(&l),
            g as i64,
            &TokenLevelOptions::default(),
        )
        .unwrap();
        let a = vecf(&out.advantages);
        let fb = Vec::<bool>::try_from(&out.fallback).unwrap();
        assert!(
            fb.iter().filter(|f| !**f).count() > b / 2,
            "most groups should not fall back"
        );
        for grp in 0..b {
            if fb[grp] {
                continue;
            }
            let s: f64 = (0..g).map(|i| l[grp * g + i] * a[grp * g + i]).sum();
            let scale: f64 = (0..g).map(|i| l[grp * g + i] * a[grp * g + i].abs()).sum();
            assert!(s.abs() <= 1e-9 * scale.max(1.0), "group {grp}: Σ L·A = {s}");
        }
    }

    #[test]
    fn padding_check_and_empty_stats() {
        // Row lengths [1, 1]: μ = 0.5; with padding to T = 4 the padded value −μ/σ = −1 is small.
        let opts = TokenLevelOptions {
            padded_len: Some(4),
            fallback_threshold: 0.9,
            ..Default::default()
        };
        let out = token_level_group_average(
            &Tensor::from_slice(&[1.0, 0.0]),
            &Tensor::from_slice(&[1.0, 1.0]),
            2,
            &opts,
        )
        .unwrap();
        // |A| = 0.999998 ≥ 0.9 already → fallback regardless.
        assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![true]);
        let opts = TokenLevelOptions {
            padded_len: Some(4),
            fallback_threshold: 1.5,
            ..Default::default()
        };
        // R = [1, 0, 0], L = [1, 1, 1]: A = [1.414, −0.707, −0.707], padded −μ/σ = −0.707 → no fallback.
        let out = token_level_group_average(
            &Tensor::from_slice(&[1.0, 0.0, 0.0]),
            &Tensor::from_slice(&[1.0, 1.0, 1.0]),
            3,
            &opts,
        )
        .unwrap();
        assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![false]);
        // R = [5, 5, 2], L = [1, 1, 1]: A ≈ [0.707, 0.707, −1.414] (all below 1.5), but the
        // padded value −μ/σ = −4/1.414 = −2.83 trips the released-code check.
        let (r, l) = (
            Tensor::from_slice(&[5.0, 5.0, 2.0]),
            Tensor::from_slice(&[1.0, 1.0, 1.0]),
        );
        let out = token_level_group_average(&r, &l, 3, &opts).unwrap();
        assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![true]);
        let valid_only = TokenLevelOptions {
            padded_len: None,
            ..opts
        };
        let out = token_level_group_average(&r, &l, 3, &valid_only).unwrap();
        assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![false]);
        let none = entropy_stats(
            &Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
            0.8,
            false,
        );
        assert!(none.is_none());
        // All entropies equal: s clamps to 1e-4, h = 0, h̃ = 0.
        let flat = Tensor::full([1, 4], 0.3, (Kind::Float, Device::Cpu));
        let st = entropy_stats(&flat, &flat.ones_like(), 0.8, false).unwrap();
        assert!((st.s - 1e-4).abs() < 1e-12);
        assert_eq!(
            vecf(&normalised_entropy(&flat, &flat.ones_like(), &st)),
            vec![0.0; 4]
        );
    }
}
