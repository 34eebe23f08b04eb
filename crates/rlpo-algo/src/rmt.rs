//! RMT, reinforcement mid-training (spec §5): the decaying think-token budget, the easy-to-hard
//! curriculum over entropy tiers, and the next-token-prediction (NTP) loss on the positions not
//! used for RL. The composite reward (`(1 − w)·match + w·r_len`, triangular `r_len`) is the
//! `[reward]` section's `match` and `length` functions (`rlpo-reward`), not computed here.
//!
//! Scalars for the per-rollout and per-step quantities (the trainer calls them while building
//! prompts and scoring); tensors only for the NTP loss: teacher-forced `logp[rows, S]` and
//! masks `[rows, S]`. Randomness comes from the caller (a closure returning uniforms in [0, 1)),
//! so the trainer's checkpointed RNG stays the single source of randomness.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{NtpNorm, RmtConfig};

/// Difficulty tier of a candidate position (by entropy: low = easy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Lowest-entropy third.
    Easy,
    /// Middle third.
    Medium,
    /// Highest-entropy third.
    Hard,
}

impl Tier {
    /// All tiers in distribution order (easy, medium, hard).
    pub const ALL: [Tier; 3] = [Tier::Easy, Tier::Medium, Tier::Hard];

    /// Position in (easy, medium, hard).
    pub fn index(self) -> usize {
        self as usize
    }
}

fn progress(step: u64, total_steps: u64) -> f64 {
    if total_steps == 0 {
        0.0
    } else {
        step as f64 / total_steps as f64
    }
}

/// `B_t = max(B_min, ⌊B_0 · γ^{t/T}⌋)` (spec §5.3 step 2). The floor tolerates 1e-9 of float
/// error so that exact integers (800 · 0.2 = 160) are not rounded down.
pub fn token_budget(step: u64, total_steps: u64, cfg: &RmtConfig) -> u64 {
    let raw = cfg.budget_init as f64 * cfg.budget_decay.powf(progress(step, total_steps));
    ((raw + 1e-9).floor() as u64).max(cfg.budget_min).max(1)
}

/// Curriculum tier distribution `p_t` (spec §5.3 step 6): `p_{t1}` before `t_1`, linear to
/// `p_{t2}` between `t_1` and `t_2`, `p_{t2}` after; `t_k = curriculum_{start,end} · T`.
pub fn tier_distribution(step: u64, total_steps: u64, cfg: &RmtConfig) -> [f64; 3] {
    let t = step as f64;
    let (t1, t2) = (
        cfg.curriculum_start * total_steps as f64,
        cfg.curriculum_end * total_steps as f64,
    );
    let (p1, p2) = (cfg.tiers_start, cfg.tiers_end);
    if t < t1 {
        p1
    } else if t >= t2 {
        p2
    } else {
        let u = (t - t1) / (t2 - t1);
        [0, 1, 2].map(|i| (1.0 - u) * p1[i] + u * p2[i])
    }
}

/// `p` renormalised over the tiers with `sizes[i] > 0`; `None` if every tier is empty or has
/// zero probability.
pub fn renormalise_nonempty(p: &[f64; 3], sizes: &[usize; 3]) -> Option<[f64; 3]> {
    let q = [0, 1, 2].map(|i| if sizes[i] > 0 { p[i] } else { 0.0 });
    let sum: f64 = q.iter().sum();
    (sum > 0.0).then(|| q.map(|x| x / sum))
}

/// Inverse-CDF draw of a tier from `p` with one uniform `u` in [0, 1).
pub fn sample_tier(p: &[f64; 3], u: f64) -> Tier {
    let sum: f64 = p.iter().sum();
    let mut acc = 0.0;
    for (i, tier) in Tier::ALL.iter().enumerate() {
        acc += p[i] / sum;
        if u < acc && p[i] > 0.0 {
            return *tier;
        }
    }
    // u rounding to ≥ the last cumulative value: the last tier with mass.
    *Tier::ALL
        .iter()
        .rev()
        .find(|t| p[t.index()] > 0.0)
        .unwrap_or(&Tier::Hard)
}

/// PROPOSAL tiering: rank the candidates by entropy (stable) and split into thirds, so tiers
/// are the 1/3 and 2/3 quantiles of the candidate pool. `entropies[i]` → tier of candidate i.
pub fn assign_tiers(entropies: &[f64]) -> Vec<Tier> {
    let n = entropies.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| entropies[a].total_cmp(&entropies[b]));
    let mut tiers = vec![Tier::Easy; n];
    for (rank, &i) in order.iter().enumerate() {
        tiers[i] = Tier::ALL[(3 * rank / n).min(2)];
    }
    tiers
}

/// Draws up to `count` distinct RL positions: repeatedly a tier from `p` renormalised over the
/// tiers that still have positions, then a position uniformly within it (without replacement,
/// so a position is never both RL and NTP twice). `uniform()` must return values in [0, 1).
/// Returns indices into `tiers`, in draw order.
pub fn sample_rl_positions(
    tiers: &[Tier],
    p: &[f64; 3],
    count: usize,
    mut uniform: impl FnMut() -> f64,
) -> Vec<usize> {
    let mut pools: [Vec<usize>; 3] = Default::default();
    for (i, t) in tiers.iter().enumerate() {
        pools[t.index()].push(i);
    }
    let mut out = Vec::with_capacity(count.min(tiers.len()));
    while out.len() < count {
        let sizes = [pools[0].len(), pools[1].len(), pools[2].len()];
        let Some(q) = renormalise_nonempty(p, &sizes) else {
            break;
        };
        let tier = sample_tier(&q, uniform()).index();
        let j = ((uniform() * sizes[tier] as f64) as usize).min(sizes[tier] - 1);
        out.push(pools[tier].swap_remove(j));
    }
    out
}

/// NTP mask `m_pos = valid · (1 − rl)`: `valid[rows, S]` (0/1 or bool), `rl_positions[rows, S]`
/// bool → `[rows, S]` f32.
pub fn ntp_mask(valid: &Tensor, rl_positions: &Tensor) -> Tensor {
    valid.to_kind(Kind::Float)
        * rl_positions
            .to_kind(Kind::Bool)
            .logical_not()
            .to_kind(Kind::Float)
}

/// Weighted NTP loss of one micro-batch, `λ · (−Σ m·logp) / D`, with `D` = the NTP tokens of
/// the whole optimizer step (`token_mean`, PROPOSAL) or 1 (`sum`). Summing over micro-batches
/// gives the step value; an empty step gives a graph-connected zero.
pub fn ntp_loss(
    logp: &Tensor,
    mask: &Tensor,
    weight: f64,
    norm: NtpNorm,
    step_tokens: f64,
) -> Tensor {
    let kind = logp.kind();
    let sum = -(logp * mask.to_kind(kind).detach()).sum(kind);
    let denom = match norm {
        NtpNorm::TokenMean => step_tokens,
        NtpNorm::Sum => 1.0,
    };
    if denom > 0.0 {
        sum * (weight / denom)
    } else {
        sum * 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advantage::{group_advantages, GroupNormOptions};

    /// Spec §5.6 example 1: the budget schedule.
    #[test]
    fn spec_5_6_budget() {
        let cfg = RmtConfig {
            budget_init: 800,
            budget_decay: 0.2,
            budget_min: 1,
            ..Default::default()
        };
        for (t, want) in [
            (0, 800),
            (100, 681),
            (250, 534),
            (500, 357),
            (750, 239),
            (1000, 160),
        ] {
            assert_eq!(token_budget(t, 1000, &cfg), want, "t = {t}");
        }
        let floor = RmtConfig {
            budget_init: 10,
            budget_decay: 0.01,
            budget_min: 3,
            ..Default::default()
        };
        assert_eq!(token_budget(1000, 1000, &floor), 3);
    }

    /// Spec §5.6 example 3: the curriculum distribution.
    #[test]
    fn spec_5_6_curriculum() {
        let cfg = RmtConfig::default(); // t1 = 30 %, t2 = 70 %, (0.6, 0.3, 0.1) → (0.1, 0.3, 0.6)
        let cases = [
            (0, [0.6, 0.3, 0.1]),
            (299, [0.6, 0.3, 0.1]),
            (400, [0.475, 0.3, 0.225]),
            (500, [0.35, 0.3, 0.35]),
            (700, [0.1, 0.3, 0.6]),
            (1000, [0.1, 0.3, 0.6]),
        ];
        for (t, want) in cases {
            let got = tier_distribution(t, 1000, &cfg);
            for i in 0..3 {
                assert!((got[i] - want[i]).abs() < 1e-12, "t = {t}: {got:?}");
            }
        }
    }

    /// Spec §5.6 example 4: GRPO advantages of composite rewards (4 decimals).
    #[test]
    fn spec_5_6_advantages() {
        let a = group_advantages(
            &Tensor::from_slice(&[1.0, 0.75, 0.5, 0.0]),
            4,
            &GroupNormOptions::grpo(),
        )
        .unwrap();
        let a = Vec::<f64>::try_from(&a).unwrap();
        for (g, w) in a.iter().zip([1.0247, 0.4392, -0.1464, -1.3175]) {
            assert!((g - w).abs() < 5e-5, "{a:?}");
        }
    }

    #[test]
    fn tiers_and_sampling() {
        let tiers = assign_tiers(&[0.9, 0.1, 0.5, 0.2, 2.0, 0.7]);
        use Tier::*;
        assert_eq!(tiers, vec![Hard, Easy, Medium, Easy, Hard, Medium]);
        assert_eq!(sample_tier(&[0.6, 0.3, 0.1], 0.0), Easy);
        assert_eq!(sample_tier(&[0.6, 0.3, 0.1], 0.65), Medium);
        assert_eq!(sample_tier(&[0.6, 0.3, 0.1], 0.95), Hard);
        let q = renormalise_nonempty(&[0.6, 0.3, 0.1], &[0, 2, 2]).unwrap();
        assert!(
            q[0] == 0.0 && (q[1] - 0.75).abs() < 1e-12 && (q[2] - 0.25).abs() < 1e-12,
            "{q:?}"
        );
        assert_eq!(renormalise_nonempty(&[0.6, 0.3, 0.1], &[0, 0, 0]), None);
        // Scripted uniforms: (tier u, position u) pairs.
        let mut us = [0.0, 0.0, 0.99, 0.99, 0.0, 0.5, 0.3, 0.0, 0.3, 0.0, 0.3, 0.0].into_iter();
        let pos = sample_rl_positions(&tiers, &[0.6, 0.3, 0.1], 10, || us.next().unwrap_or(0.0));
        // Easy pool [1, 3] → 1; Hard pool [0, 4] → 4; Easy [3] → 3; then Easy is empty and
        // p renormalises to (0, 0.75, 0.25): u = 0.3 → Medium [2, 5] → 2, then 5; Hard [0] → 0.
        assert_eq!(pos, vec![1, 4, 3, 2, 5, 0]);
    }

    #[test]
    fn ntp_loss_and_mask() {
        let logp = Tensor::from_slice(&[-1.0, -2.0, -3.0, -4.0]).view([1, 4]);
        let valid = Tensor::from_slice(&[1.0, 1.0, 1.0, 0.0]).view([1, 4]);
        let rl = Tensor::from_slice(&[false, true, false, false]).view([1, 4]);
        let m = ntp_mask(&valid, &rl);
        assert_eq!(
            Vec::<f32>::try_from(&m.view([-1])).unwrap(),
            vec![1.0, 0.0, 1.0, 0.0]
        );
        let tm = ntp_loss(&logp, &m, 0.1, NtpNorm::TokenMean, 2.0).double_value(&[]);
        assert!((tm - 0.1 * 4.0 / 2.0).abs() < 1e-12);
        let s = ntp_loss(&logp, &m, 0.1, NtpNorm::Sum, 2.0).double_value(&[]);
        assert!((s - 0.4).abs() < 1e-12);
        assert_eq!(
            ntp_loss(&logp, &m.zeros_like(), 0.1, NtpNorm::TokenMean, 0.0).double_value(&[]),
            0.0
        );
    }
}
