//! The algorithm state that lives across steps and must survive a resume: the step counter,
//! the planned number of steps (D³S progress, RMT budget and curriculum all derive from
//! `step / total_steps`), and HAPO's entropy statistics from the previous step (they drive the
//! next rollout's temperatures). Serialised into the checkpoint's trainer state.

use serde::{Deserialize, Serialize};

use crate::config::{AlgorithmConfig, D3sConfig, RmtConfig};
use crate::d3s::{d3s_schedule, D3sTargets};
use crate::hapo::HapoStats;
use crate::rmt::{tier_distribution, token_budget};

/// Schedule state of the learner. `step` counts completed training steps.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AlgoState {
    /// Completed training steps (0 before the first step).
    pub step: u64,
    /// Planned number of training steps.
    pub total_steps: u64,
    /// HAPO statistics of the last completed step, for the next rollout's temperatures
    /// (`None` before the first step: the first rollout uses the plain temperature).
    pub hapo_stats: Option<HapoStats>,
}

impl AlgoState {
    /// Fresh state for a run of `total_steps` steps.
    pub fn new(total_steps: u64) -> Self {
        Self {
            step: 0,
            total_steps,
            hapo_stats: None,
        }
    }

    /// Training progress `p = step / total_steps` in [0, 1].
    pub fn progress(&self) -> f64 {
        if self.total_steps == 0 {
            0.0
        } else {
            (self.step as f64 / self.total_steps as f64).min(1.0)
        }
    }

    /// Call after each training step: advances the counter and stores this step's HAPO
    /// statistics (a step without statistics keeps the previous ones).
    pub fn advance(&mut self, hapo_stats: Option<HapoStats>) {
        self.step += 1;
        if hapo_stats.is_some() {
            self.hapo_stats = hapo_stats;
        }
    }

    /// The statistics the rollout engine should use for HAPO's per-token temperature
    /// ([`crate::hapo::token_temperature`] with `algorithm.hapo.tau`), or `None` when HAPO or
    /// its adaptive temperature is off, or before the first step (plain temperature).
    pub fn rollout_temperature_stats(&self, alg: &AlgorithmConfig) -> Option<HapoStats> {
        alg.hapo
            .as_ref()
            .filter(|h| h.adaptive_temperature)
            .and(self.hapo_stats)
    }

    /// D³S `(N_s, K)` at the current progress, for group size `g`.
    pub fn d3s_targets(&self, cfg: &D3sConfig, g: usize) -> D3sTargets {
        d3s_schedule(cfg, self.progress(), g)
    }

    /// RMT think budget `B_t` at the current step.
    pub fn rmt_budget(&self, cfg: &RmtConfig) -> u64 {
        token_budget(self.step, self.total_steps, cfg)
    }

    /// RMT tier distribution `p_t` (easy, medium, hard) at the current step.
    pub fn rmt_tier_distribution(&self, cfg: &RmtConfig) -> [f64; 3] {
        tier_distribution(self.step, self.total_steps, cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_advances() {
        let mut st = AlgoState::new(1000);
        st.advance(Some(HapoStats {
            q: -0.2,
            s: 1.5,
            inv_h_pos: 2.0,
            scale_neg: 0.5,
        }));
        st.advance(None);
        assert_eq!(st.step, 2);
        assert_eq!(st.hapo_stats.unwrap().q, -0.2);
        let json = serde_json::to_string(&st).unwrap();
        let back: AlgoState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        // Old checkpoints without newer fields still load.
        let old: AlgoState = serde_json::from_str(r#"{"step": 5, "total_steps": 10}"#).unwrap();
        assert_eq!(old.progress(), 0.5);
        assert!(old.hapo_stats.is_none());
        let mut alg = AlgorithmConfig::default();
        assert!(st.rollout_temperature_stats(&alg).is_none());
        alg.hapo = Some(Default::default());
        assert_eq!(st.rollout_temperature_stats(&alg), st.hapo_stats);
        alg.hapo.as_mut().unwrap().adaptive_temperature = false;
        assert!(st.rollout_temperature_stats(&alg).is_none());
        let rmt = RmtConfig::default();
        let at = |step| AlgoState {
            step,
            ..AlgoState::new(1000)
        };
        assert_eq!(at(500).rmt_budget(&rmt), 357);
        assert_eq!(at(500).rmt_tier_distribution(&rmt)[1], 0.3);
        let d3s = D3sConfig::default(); // N from G/4 = 4 to 3G/4 = 12, K from 0.2 to 0.6
        let tg = at(500).d3s_targets(&d3s, 16);
        assert_eq!(tg.samples_per_group, 8);
        assert!((tg.token_keep - 0.4).abs() < 1e-12);
    }
}
