//! One evaluation pass: n samples for every problem through the rollout engine, scored by a
//! [`RewardSet`], one [`SampleRecord`] per sample (problem-major, sample order within a problem).
//!
//! Problems are generated in batches of at most `rows_per_batch` rows (whole problems; the
//! trainer uses its own step's row count, which is known to fit in memory). Every row is seeded
//! by its problem's global index and sample index under the evaluation seed, so the samples do
//! not depend on the batching, and every evaluation of a run draws the same uniforms (common
//! random numbers: differences between evaluation points come from the weights, not the dice).

use crate::error::{invalid, io, Result};
use crate::prompts::{self, PromptBatch};
use rlpo_data::{DataConfig, Dataset};
use rlpo_model::TextTokenizer;
use rlpo_reward::{AnswerInfo, FnConfig, RewardConfig, RewardInput, RewardSet};
use rlpo_rollout::{GenerateRequest, RolloutBatch, RolloutSeed, SamplingParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything recorded about one evaluation sample (one line of `samples.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Problem index in the evaluation set (0-based).
    pub problem: usize,
    /// The dataset row's id.
    pub id: String,
    /// Dataset name (`data_source`; `default` when the rows have none).
    pub data_source: String,
    /// Sample index within the problem (0-based).
    pub sample: usize,
    /// The prompt as the model saw it (chat template applied).
    pub prompt: String,
    /// The decoded response.
    pub response: String,
    /// The reference answer.
    pub ground_truth: Option<String>,
    /// Total reward (`None` when the reward failed; see `status`).
    pub reward: Option<f64>,
    /// `ok`, `error: ...` or `timeout`.
    pub status: String,
    /// Reward parts (unweighted), as in training.
    pub parts: BTreeMap<String, f64>,
    /// The final answer the vote uses (the first verifier's normal form), if one was found.
    pub answer: Option<String>,
    /// Judged correct: by the first verifier (`math`/`countdown`) of the reward set, or, when the
    /// set has none, `reward > 0` (the trainer's pass rate).
    pub correct: bool,
    /// Every verifier's account of the answer, by reward function name.
    pub answers: BTreeMap<String, AnswerInfo>,
    /// Generated tokens (EOS included).
    pub tokens: usize,
    /// Why generation stopped (`eos`, `stop`, `max_length`, ...).
    pub finish_reason: String,
}

/// The name of the reward function whose verdict decides correctness: the first `math` or
/// `countdown` entry of `[reward]`, or `None` (then correctness is `reward > 0`).
pub fn verifier_of(cfg: &RewardConfig) -> Option<String> {
    cfg.fns.iter().find(|f| matches!(f, FnConfig::Math(_) | FnConfig::Countdown(_))).map(|f| f.name_and_weight().0.to_string())
}

/// The first `n` problems of `data` (epoch-0 order; fewer when the data has fewer rows), rendered
/// with the chat template. Relative paths resolve against the working directory.
pub fn load_problems(data: &DataConfig, n: usize, tokenizer: &TextTokenizer, system_prompt: Option<&str>, key: &str) -> Result<PromptBatch> {
    let cwd = std::env::current_dir().map_err(|e| io(".", e))?;
    let mut ds = Dataset::from_config(data, &cwd).map_err(|e| invalid(key, e.to_string()))?;
    let take = n.min(ds.len());
    prompts::build(tokenizer, ds.next_batch(take), system_prompt)
}

/// How to sample an evaluation.
#[derive(Debug, Clone)]
pub struct EvalSampling {
    /// Sampling options; `group_size` is n, the samples per problem.
    pub params: SamplingParams,
    /// The evaluation seed ([`super::config::eval_seed`]).
    pub seed: RolloutSeed,
    /// Rows per generation batch (rounded down to whole problems, at least one problem).
    pub rows_per_batch: usize,
    /// Weights version stamped on the rows.
    pub policy_version: u64,
}

/// Generate and score every sample of `problems`. `generate` runs one request (the trainer's
/// rollout backend, or an engine on a loaded model); `progress(done, total)` is called after
/// each batch with counts of problems.
pub fn run(
    problems: &PromptBatch,
    sampling: &EvalSampling,
    rewards: &RewardSet,
    verifier: Option<&str>,
    tokenizer: &TextTokenizer,
    generate: &mut dyn FnMut(&GenerateRequest) -> Result<RolloutBatch>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SampleRecord>> {
    let n = sampling.params.group_size;
    let per_batch = (sampling.rows_per_batch / n.max(1)).max(1);
    let mut out = Vec::with_capacity(problems.len() * n);
    let mut start = 0;
    while start < problems.len() {
        let end = (start + per_batch).min(problems.len());
        let mut req = GenerateRequest::new(problems.ids[start..end].to_vec(), sampling.params.clone());
        req.prompt_indices = Some((start as u64..end as u64).collect());
        req.seed = sampling.seed;
        req.policy_version = sampling.policy_version;
        let batch = generate(&req)?;
        out.extend(score_batch(problems, start, &batch, rewards, verifier, tokenizer, sampling.params.max_new_tokens)?);
        progress(end, problems.len());
        start = end;
    }
    Ok(out)
}

/// Decode and score the groups of one batch whose first problem is `start`.
fn score_batch(
    problems: &PromptBatch,
    start: usize,
    batch: &RolloutBatch,
    rewards: &RewardSet,
    verifier: Option<&str>,
    tokenizer: &TextTokenizer,
    max_len: usize,
) -> Result<Vec<SampleRecord>> {
    let mut inputs = Vec::new();
    let mut meta = Vec::new();
    for (gi, g) in batch.groups.iter().enumerate() {
        let p = start + gi;
        let s = &problems.samples[p];
        for c in &g.completions {
            let text = tokenizer.decode(&c.tokens, true)?;
            inputs.push(RewardInput {
                prompt: problems.texts[p].clone(),
                response: text,
                ground_truth: s.answer.clone(),
                metadata: s.metadata.clone(),
                response_len: c.tokens.len(),
                max_len,
            });
            // The serde name (`max_length`), as everywhere else in rlpo's JSON.
            let finish = serde_json::to_value(c.finish_reason).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            meta.push((p, c.sample_index as usize, c.tokens.len(), finish));
        }
    }
    let scored = rewards.score_all(&inputs)?;
    let mut out = Vec::with_capacity(inputs.len());
    for ((input, o), (p, sample, tokens, finish)) in inputs.into_iter().zip(scored.outputs).zip(meta) {
        let s = &problems.samples[p];
        let reward = o.value.is_finite().then_some(o.value);
        let judged = verifier.and_then(|v| o.answers.get(v));
        let correct = match verifier {
            Some(_) => o.is_ok() && judged.is_some_and(|a| a.correct),
            None => reward.is_some_and(|r| r > 0.0),
        };
        out.push(SampleRecord {
            problem: p,
            id: s.id.clone(),
            data_source: s.data_source.clone().unwrap_or_else(|| "default".into()),
            sample,
            prompt: input.prompt,
            response: input.response,
            ground_truth: input.ground_truth,
            reward,
            status: o.status.to_string(),
            parts: o.parts,
            answer: judged.map(|a| a.answer.clone()),
            correct,
            answers: o.answers,
            tokens,
            finish_reason: finish,
        });
    }
    Ok(out)
}
