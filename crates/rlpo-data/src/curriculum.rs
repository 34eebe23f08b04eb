//! Difficulty tiers and a seeded, resumable tier sampler for curricula (RMT §5.3 items 1 and 6).
//!
//! Tiers are cut at the 1/3 and 2/3 quantiles of the values (linear interpolation, as numpy's
//! default): `easy` is `x <= q1`, `medium` is `q1 < x <= q2`, `hard` is `x > q2`. Ties stay in one
//! tier (the lower one), so with few distinct values a tier can be empty; the sampler then
//! renormalises the tier probabilities over the non-empty tiers. The probabilities themselves
//! (the schedule `p_t`) come from the algorithm crate; this module only draws.
//!
//! The same functions serve per-sample difficulty ([`difficulty_tiers`]) and per-token entropies
//! computed by the trainer ([`tiers_by_quantile`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::{derive_seed, domain, SplitMix64};
use crate::sample::Sample;

/// Indices grouped into easy / medium / hard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tiers {
    /// Member indices of `[easy, medium, hard]`, each in increasing order.
    pub members: [Vec<usize>; 3],
    /// The cut points `[q1, q2]`.
    pub thresholds: [f64; 2],
}

impl Tiers {
    /// Sizes of `[easy, medium, hard]`.
    pub fn sizes(&self) -> [usize; 3] {
        [
            self.members[0].len(),
            self.members[1].len(),
            self.members[2].len(),
        ]
    }
}

fn curriculum_err(reason: impl Into<String>) -> Error {
    Error::Curriculum {
        reason: reason.into(),
    }
}

/// The `q`-quantile of sorted values with linear interpolation between order statistics.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Buckets `values[i]` (index `i`) into tiers by the 1/3 and 2/3 quantiles.
pub fn tiers_by_quantile(values: &[f64]) -> Result<Tiers> {
    if values.is_empty() {
        return Err(curriculum_err("no values to split into tiers"));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(curriculum_err(format!(
            "value {i} is {}, not a finite number",
            values[i]
        )));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let (q1, q2) = (quantile(&sorted, 1.0 / 3.0), quantile(&sorted, 2.0 / 3.0));
    let mut members: [Vec<usize>; 3] = Default::default();
    for (i, &v) in values.iter().enumerate() {
        let tier = if v <= q1 {
            0
        } else if v <= q2 {
            1
        } else {
            2
        };
        members[tier].push(i);
    }
    Ok(Tiers {
        members,
        thresholds: [q1, q2],
    })
}

/// Tiers of samples by their `difficulty`; every sample must have one (the error names the first
/// that does not). Indices are positions in `samples`.
pub fn difficulty_tiers(samples: &[Sample]) -> Result<Tiers> {
    let values = samples
        .iter()
        .map(|s| {
            s.difficulty.ok_or_else(|| {
                curriculum_err(format!(
                    "sample `{}` has no difficulty (set data.fields.difficulty to the column holding it)",
                    s.id
                ))
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    tiers_by_quantile(&values)
}

/// `probs` restricted to non-empty tiers and scaled to sum to 1.
pub fn renormalise(probs: [f64; 3], sizes: [usize; 3]) -> Result<[f64; 3]> {
    if let Some(p) = probs.iter().find(|p| !p.is_finite() || **p < 0.0) {
        return Err(curriculum_err(format!(
            "tier probabilities {probs:?} contain {p}; need finite values >= 0"
        )));
    }
    let mut out = [0.0; 3];
    for t in 0..3 {
        if sizes[t] > 0 {
            out[t] = probs[t];
        }
    }
    let total: f64 = out.iter().sum();
    if total <= 0.0 {
        return Err(curriculum_err(format!(
            "tier probabilities {probs:?} put no mass on a non-empty tier (tier sizes {sizes:?})"
        )));
    }
    Ok(out.map(|p| p / total))
}

/// Resumable state of a [`TierSampler`]; store it in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSamplerState {
    /// PRNG state.
    pub rng_state: u64,
    /// Draws made so far (for logs; not needed to resume).
    pub draws: u64,
    /// Tier sizes when saved, to catch restoring onto different tiers.
    pub sizes: [usize; 3],
}

/// Draws indices: a tier from the (renormalised) tier probabilities, then a member uniformly within
/// it; draws are independent (with replacement), as in RMT's curriculum.
#[derive(Debug, Clone)]
pub struct TierSampler {
    tiers: Tiers,
    rng: SplitMix64,
    draws: u64,
}

impl TierSampler {
    /// A sampler over `tiers` seeded from `seed`; errors if every tier is empty.
    pub fn new(tiers: Tiers, seed: u64) -> Result<Self> {
        if tiers.sizes().iter().all(|&n| n == 0) {
            return Err(curriculum_err("all tiers are empty"));
        }
        Ok(Self {
            tiers,
            rng: SplitMix64::new(derive_seed(seed, domain::CURRICULUM, 0)),
            draws: 0,
        })
    }

    /// The tiers drawn from.
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// Draws `n` indices with tier probabilities `probs = [easy, medium, hard]`.
    pub fn sample(&mut self, probs: [f64; 3], n: usize) -> Result<Vec<usize>> {
        let p = renormalise(probs, self.tiers.sizes())?;
        // Rounding can leave sum(p) a hair under 1; fall back to the last tier with mass.
        let last = (0..3)
            .rev()
            .find(|&t| p[t] > 0.0)
            .expect("renormalise guarantees mass");
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let u = self.rng.next_f64();
            let mut acc = 0.0;
            let tier = (0..3)
                .find(|&t| {
                    acc += p[t];
                    p[t] > 0.0 && u < acc
                })
                .unwrap_or(last);
            let members = &self.tiers.members[tier];
            out.push(members[self.rng.below(members.len() as u64) as usize]);
        }
        self.draws += n as u64;
        Ok(out)
    }

    /// Current state for checkpointing.
    pub fn state(&self) -> TierSamplerState {
        TierSamplerState {
            rng_state: self.rng.state,
            draws: self.draws,
            sizes: self.tiers.sizes(),
        }
    }

    /// Resumes from a saved state; the tiers must have the sizes they had when it was saved.
    pub fn restore(&mut self, state: &TierSamplerState) -> Result<()> {
        if state.sizes != self.tiers.sizes() {
            return Err(curriculum_err(format!(
                "sampler state saved for tier sizes {:?}, these tiers have {:?}",
                state.sizes,
                self.tiers.sizes()
            )));
        }
        self.rng = SplitMix64::new(state.rng_state);
        self.draws = state.draws;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_numpy_linear() {
        // numpy's linear method by hand: h = (n - 1) q, interpolate between sorted[floor h] and the
        // next. [1, 2, 3, 4]: h = 1, 2 -> 2, 3. [1, 2, 4, 8, 16]: h = 4/3 -> 2 + 2/3 = 8/3;
        // h = 8/3 -> 4 + 4 * 2/3 = 20/3.
        let q = |v: &[f64], p| quantile(v, p);
        assert!((q(&[1.0, 2.0, 3.0, 4.0], 1.0 / 3.0) - 2.0).abs() < 1e-12);
        assert!((q(&[1.0, 2.0, 3.0, 4.0], 2.0 / 3.0) - 3.0).abs() < 1e-12);
        assert!((q(&[1.0, 2.0, 4.0, 8.0, 16.0], 1.0 / 3.0) - 8.0 / 3.0).abs() < 1e-12);
        assert!((q(&[1.0, 2.0, 4.0, 8.0, 16.0], 2.0 / 3.0) - 20.0 / 3.0).abs() < 1e-12);
        assert_eq!(q(&[5.0], 0.5), 5.0);
    }
}
