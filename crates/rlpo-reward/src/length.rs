//! Length-based rewards:
//!
//! - [`OverlongReward`] (`kind = "overlong"`): DAPO soft overlong punishment (algorithms.md §2.3):
//!   `R_len = 0` if `|y| ≤ L_max − L_cache`; `((L_max − L_cache) − |y|) / L_cache` inside the
//!   buffer; `−1` beyond `L_max`; the reward is `factor · R_len` and is meant to be *added* to the
//!   correctness reward (weight 1 in the recipe).
//! - [`TriangularLengthReward`] (`kind = "length"`): RMT triangular reward (§5.3):
//!   `r_max · ℓ/B` for `ℓ ≤ B`, `r_max · (2B − ℓ)/B` for `B < ℓ ≤ 2B`, 0 beyond. The RMT composite
//!   `(1 − w)·match + w·r_len` is two entries with weights `1 − w` and `w`.
//!
//! Lengths are token counts supplied by the trainer (`RewardInput::response_len`), because this
//! crate has no tokenizer.

use crate::types::{RewardFn, RewardInput, RewardOutput};

/// DAPO `R_len` for a response of `len` tokens, limit `l_max`, buffer `l_cache` (`0 < l_cache ≤ l_max`).
pub fn overlong_penalty(len: usize, l_max: usize, l_cache: usize) -> f64 {
    let soft = l_max.saturating_sub(l_cache);
    if len <= soft {
        0.0
    } else if len <= l_max {
        // Computed in integers first so that e.g. 1024/4096 is exactly -0.25.
        -((len - soft) as f64) / l_cache as f64
    } else {
        -1.0
    }
}

/// RMT triangular reward for length `len` and budget `budget` (≥ 1).
pub fn triangular(len: usize, budget: usize, r_max: f64) -> f64 {
    if len <= budget {
        r_max * len as f64 / budget as f64
    } else if len <= budget.saturating_mul(2) {
        r_max * (budget.saturating_mul(2) - len) as f64 / budget as f64
    } else {
        0.0
    }
}

/// DAPO overlong shaping.
#[derive(Debug, Clone)]
pub struct OverlongReward {
    /// `L_max`; `None` takes each sample's `max_len`.
    pub max_len: Option<usize>,
    /// `L_cache`, the soft buffer before `L_max` (> 0).
    pub cache_len: usize,
    /// Penalty factor `f` (DAPO: 1.0).
    pub factor: f64,
}

impl OverlongReward {
    /// Scores one sample; a missing or too small limit is an error status, not a zero.
    pub fn score_one(&self, s: &RewardInput) -> RewardOutput {
        let l_max = self.max_len.unwrap_or(s.max_len);
        if l_max == 0 {
            return RewardOutput::error(
                "overlong: no length limit (set `max_len` in the recipe or pass RewardInput::max_len)",
            );
        }
        if self.cache_len == 0 || self.cache_len > l_max {
            return RewardOutput::error(format!(
                "overlong: cache_len {} must be in 1..={l_max} (max_len)",
                self.cache_len
            ));
        }
        RewardOutput::ok(self.factor * overlong_penalty(s.response_len, l_max, self.cache_len))
    }
}

impl RewardFn for OverlongReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|s| self.score_one(s)).collect()
    }
}

/// RMT triangular length reward.
#[derive(Debug, Clone)]
pub struct TriangularLengthReward {
    /// Peak reward at `ℓ = B`.
    pub r_max: f64,
    /// Fixed budget `B`; `None` reads `metadata.budget` per sample (RMT's `B_t` changes per step).
    pub budget: Option<usize>,
}

/// A non-negative integer metadata field: `Ok(None)` if absent, `Err` if present but not one.
fn meta_usize(s: &RewardInput, key: &str) -> Result<Option<usize>, String> {
    match s.metadata.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("length: metadata.{key} = {v} is not a non-negative integer")),
    }
}

impl TriangularLengthReward {
    /// Scores one sample. `ℓ` is `metadata.think_len` when present (tokens inside the think block,
    /// counted by the trainer), else `response_len`.
    pub fn score_one(&self, s: &RewardInput) -> RewardOutput {
        let budget = match self.budget {
            Some(b) => Some(b),
            None => match meta_usize(s, "budget") {
                Ok(b) => b,
                Err(e) => return RewardOutput::error(e),
            },
        };
        let Some(budget) = budget.filter(|&b| b >= 1) else {
            return RewardOutput::error(
                "length: no budget ≥ 1 (set `budget` in the recipe or metadata.budget per sample)",
            );
        };
        let len = match meta_usize(s, "think_len") {
            Ok(l) => l.unwrap_or(s.response_len),
            Err(e) => return RewardOutput::error(e),
        };
        RewardOutput::ok(triangular(len, budget, self.r_max))
    }
}

impl RewardFn for TriangularLengthReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|s| self.score_one(s)).collect()
    }
}

#[cfg(test)]
#[path = "length_tests.rs"]
mod tests;
