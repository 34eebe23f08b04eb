//! What a rollout returns: per row a [`Completion`] (token ids plus, per token, the sampled
//! logprob, the base-temperature logprob, the entropy and the temperature; per row the finish
//! reason, policy version, prompt and sample index), grouped by prompt into [`Group`]s.
//!
//! Per-token vectors all have the row's length `L` (the EOS or stop token included, like the
//! spec's response mask). [`pad_responses`] turns completions into the learner's `[N, T]` tensors.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Sampled an EOS id (or an extra stop token id); the token is the row's last.
    Eos,
    /// The decoded response contains a stop string.
    Stop,
    /// The row's own token budget (RMT), smaller than `max_new_tokens`, was used up.
    Budget,
    /// `max_new_tokens` or the model's context length was reached.
    MaxLength,
}

/// One generated response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// Index of the prompt (as given in the request's `prompt_indices`).
    pub prompt_index: u64,
    /// Sample index g in `0..G` within the prompt's group.
    pub sample_index: u64,
    /// Number of prompt tokens.
    pub prompt_len: usize,
    /// Generated token ids `[L]`.
    pub tokens: Vec<i64>,
    /// `ln p(token)` under the distribution actually sampled from (temperature, truncation;
    /// 0 for greedy) `[L]`.
    pub logprobs: Vec<f32>,
    /// `log_softmax(z / T_base)[token]`, what the learner recomputes as `old_logp` `[L]`.
    pub base_logprobs: Vec<f32>,
    /// Full-vocabulary entropy of `softmax(z / T_base)` at each position `[L]` (nats).
    pub entropies: Vec<f32>,
    /// Temperature each token was drawn at `[L]` (T_base unless HAPO adaptive temperature).
    pub temperatures: Vec<f32>,
    /// Why the row stopped.
    pub finish_reason: FinishReason,
    /// Version of the weights that generated it.
    pub policy_version: u64,
}

impl Completion {
    /// Number of generated tokens L.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token was generated (never the case for a finished rollout).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A prompt and its G completions (rows `b·G .. b·G + G` of the batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Prompt index (request order unless the request named indices).
    pub prompt_index: u64,
    /// The G completions, in sample-index order.
    pub completions: Vec<Completion>,
}

/// Timings and counters of one `generate` call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutStats {
    /// Seconds in the prompt prefill (including fan-out).
    pub prefill_s: f64,
    /// Seconds in decode forwards.
    pub decode_s: f64,
    /// Seconds copying logits to the host and sampling.
    pub sample_s: f64,
    /// Generated tokens (all rows).
    pub tokens: usize,
    /// Decode forwards run.
    pub steps: usize,
    /// Sum over steps of the decode batch size (rows that cost compute, finished or not).
    pub row_steps: usize,
    /// Times the batch was compacted.
    pub compactions: usize,
    /// Sampling ran on the model's device (`rollout.sampler`); then `decode_s` covers whole
    /// blocks of steps (forward, sampling and the wait for the device) and `sample_s` the host's
    /// reads of the sampled tokens.
    #[serde(default)]
    pub device_sampling: bool,
    /// Device→host reads of sampled tokens (device sampling; one per block of steps).
    #[serde(default)]
    pub syncs: usize,
}

/// All groups of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutBatch {
    /// One group per prompt, in request order.
    pub groups: Vec<Group>,
    /// Timings and counters.
    pub stats: RolloutStats,
}

impl RolloutBatch {
    /// All completions, row order `n = b·G + g`.
    pub fn completions(&self) -> impl Iterator<Item = &Completion> {
        self.groups.iter().flat_map(|g| g.completions.iter())
    }
}

/// Learner-side padded tensors of a list of completions: `ids [N, T]` (response tokens, right
/// padded with `pad_id`), `mask [N, T]` f32 (1 for generated tokens), `base_logprobs [N, T]` f32
/// (0 at padding), with T = the longest response.
pub fn pad_responses<'a>(completions: impl IntoIterator<Item = &'a Completion>, pad_id: i64) -> (Tensor, Tensor, Tensor) {
    let rows: Vec<&Completion> = completions.into_iter().collect();
    let t = rows.iter().map(|c| c.len()).max().unwrap_or(0).max(1);
    let n = rows.len();
    let mut ids = vec![pad_id; n * t];
    let mut mask = vec![0f32; n * t];
    let mut lp = vec![0f32; n * t];
    for (r, c) in rows.iter().enumerate() {
        ids[r * t..r * t + c.len()].copy_from_slice(&c.tokens);
        mask[r * t..r * t + c.len()].fill(1.0);
        lp[r * t..r * t + c.len()].copy_from_slice(&c.base_logprobs);
    }
    let shape = [n as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape),
        Tensor::from_slice(&mask).view(shape).to_kind(Kind::Float),
        Tensor::from_slice(&lp).view(shape),
    )
}
