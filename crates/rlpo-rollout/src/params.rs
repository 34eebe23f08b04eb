//! The recipe's `[rollout]` section: how many samples per prompt, how long, how they are sampled,
//! when they stop, and how many worker threads generate them.
//!
//! Sampling follows transformers' warper order: temperature, then top-k, then top-p (on the
//! top-k renormalised distribution), then min-p. `greedy = true` takes the argmax and ignores the
//! other sampling knobs. Per-row token budgets (RMT) and HAPO entropy statistics change every step,
//! so they travel with each request ([`crate::GenerateRequest`]), not in this section.

use crate::adaptive_temperature::AdaptiveTemperature;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[rollout]`: sampling, stopping and worker options. Every field has a default, so an empty
/// section is a valid plain-sampling setup (T = 1, no truncation, 512 new tokens, G = 8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// Samples per prompt, G (a prompt plus its G rows is a group). Default 8.
    pub group_size: usize,
    /// Upper bound on generated tokens per row (the EOS token counts). Default 512.
    pub max_new_tokens: usize,
    /// Base sampling temperature T_base (> 0). Recorded `base_logprob`s and entropies use it, as
    /// does the learner. Default 1.0.
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 = off. Tokens tied with the k-th are kept. Default 0.
    pub top_k: usize,
    /// Nucleus: keep the smallest set of most likely tokens whose mass reaches `top_p`;
    /// 1.0 = off. Default 1.0.
    pub top_p: f64,
    /// Keep tokens whose probability is at least `min_p` times the most likely one's; 0 = off.
    /// Default 0.0.
    pub min_p: f64,
    /// Take the argmax instead of sampling (evaluation). Default false.
    pub greedy: bool,
    /// Stop strings: a row stops as soon as its decoded response contains one (the tokens that
    /// complete it are kept). Needs a tokenizer at generate time. Default none.
    pub stop: Vec<String>,
    /// Extra stop token ids, on top of the tokenizer's EOS ids. Default none.
    pub stop_token_ids: Vec<i64>,
    /// Do not stop at EOS ids (benchmarks that must produce exactly `max_new_tokens`). Default false.
    pub ignore_eos: bool,
    /// HAPO adaptive temperature (`[rollout.adaptive_temperature]`); absent = off.
    pub adaptive_temperature: Option<AdaptiveTemperature>,
    /// Rollout worker threads. Default 1.
    pub workers: usize,
    /// LibTorch intra-op threads per worker; 0 = available cores / workers. Default 0.
    pub threads_per_worker: usize,
    /// Drop finished rows from the decode batch once at least this fraction of the batch has
    /// finished since the last compaction (0 = compact at every finish, 1 = never compact).
    /// Compaction copies the KV cache, so tiny fractions waste copies. Default 0.25.
    pub compact_fraction: f64,
    /// Where tokens are sampled: `auto` (on the device for CUDA models, on the host otherwise),
    /// `host` (logits `[B, V]` copied to the host each step) or `device` (tensor ops next to the
    /// logits; only ids and their log-probs/entropies are read back). Default auto.
    pub sampler: SamplerPlacement,
    /// Device sampling: decode steps between two reads of the sampled tokens (stop strings and
    /// compaction are applied at these reads; a finished row costs at most this many extra
    /// steps). Default 8.
    pub device_sync_steps: usize,
}

/// `rollout.sampler`: where sampling runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SamplerPlacement {
    /// On the device for CUDA models, on the host otherwise.
    #[default]
    Auto,
    /// On the host ([`crate::sampler`]).
    Host,
    /// On the model's device ([`crate::device_sampler`]).
    Device,
}

impl SamplerPlacement {
    /// Whether a model on `device` samples on the device.
    pub fn on_device(self, device: tch::Device) -> bool {
        match self {
            SamplerPlacement::Auto => device.is_cuda(),
            SamplerPlacement::Host => false,
            SamplerPlacement::Device => true,
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            group_size: 8,
            max_new_tokens: 512,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            greedy: false,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            adaptive_temperature: None,
            workers: 1,
            threads_per_worker: 0,
            compact_fraction: 0.25,
            sampler: SamplerPlacement::Auto,
            device_sync_steps: 8,
        }
    }
}

fn bad(key: &str, message: String) -> Error {
    Error::Config { key: format!("rollout.{key}"), message }
}

impl SamplingParams {
    /// Check ranges; errors name the recipe key (`rollout.top_p must be in (0, 1], got 0`).
    pub fn validate(&self) -> Result<()> {
        if self.group_size == 0 {
            return Err(bad("group_size", "must be at least 1, got 0".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(bad("max_new_tokens", "must be at least 1, got 0".into()));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(bad("temperature", format!("must be > 0 (use greedy = true for argmax), got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(bad("min_p", format!("must be in [0, 1], got {}", self.min_p)));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(bad("stop", "contains an empty string".into()));
        }
        if self.workers == 0 {
            return Err(bad("workers", "must be at least 1, got 0".into()));
        }
        if !(0.0..=1.0).contains(&self.compact_fraction) {
            return Err(bad("compact_fraction", format!("must be in [0, 1], got {}", self.compact_fraction)));
        }
        if self.device_sync_steps == 0 {
            return Err(bad("device_sync_steps", "must be at least 1, got 0".into()));
        }
        if let Some(a) = &self.adaptive_temperature {
            a.validate()?;
        }
        Ok(())
    }

    /// Whether any truncation (top-k, top-p, min-p) is active.
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0 || self.min_p > 0.0
    }

    /// Intra-op threads each worker should use on a machine with `cores` cores.
    pub fn worker_threads(&self, cores: usize) -> usize {
        if self.threads_per_worker > 0 {
            self.threads_per_worker
        } else {
            (cores / self.workers.max(1)).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gives_defaults_and_typos_are_rejected() {
        let p: SamplingParams = toml::from_str("").unwrap();
        assert_eq!(p, SamplingParams::default());
        p.validate().unwrap();
        let err = toml::from_str::<SamplingParams>("top_pp = 0.9").unwrap_err().to_string();
        assert!(err.contains("top_pp"), "{err}");
    }

    #[test]
    fn full_section_parses() {
        let p: SamplingParams = toml::from_str(
            r#"
            group_size = 16
            max_new_tokens = 1024
            temperature = 0.7
            top_k = 50
            top_p = 0.95
            min_p = 0.05
            stop = ["</answer>"]
            workers = 2
            [adaptive_temperature]
            tau = 0.05
            "#,
        )
        .unwrap();
        p.validate().unwrap();
        assert_eq!((p.group_size, p.top_k, p.workers), (16, 50, 2));
        assert_eq!(p.adaptive_temperature.unwrap().tau, 0.05);
        assert!(p.truncates());
    }

    #[test]
    fn validation_names_the_key() {
        let p = SamplingParams { top_p: 0.0, ..Default::default() };
        assert!(p.validate().unwrap_err().to_string().contains("rollout.top_p"));
        let p = SamplingParams { temperature: 0.0, ..Default::default() };
        assert!(p.validate().unwrap_err().to_string().contains("rollout.temperature"));
        let p = SamplingParams {
            adaptive_temperature: Some(AdaptiveTemperature { tau: 1.5 }),
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("rollout.adaptive_temperature.tau"));
    }
}
