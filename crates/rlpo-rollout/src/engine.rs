//! [`Engine::generate`]: GRPO group rollout on one model.
//!
//! 1. Prefill: the P unique prompts are left-padded into one batch `ids [P, L]`, `mask [P, L]` and
//!    run once; their next-token logits `[P, V]` give every row its first token.
//! 2. Fan-out: the prompt cache is gathered into rows `n = p·G + g` (`KvCache::select_rows`), so a
//!    prompt is prefilled once, not G times (nanochat's `engine.py`).
//! 3. Decode: one `step` per token for the rows still in the batch, logits `[B, V]` copied to the
//!    host once per step and sampled there ([`crate::sampler`]) with each row's own counter-based
//!    generator ([`crate::rng`]).
//! 4. Stop: EOS ids, stop strings, the row's own budget, `max_new_tokens`, the context length.
//!    Finished rows keep their batch slot (fed a dummy token, output ignored) until enough of them
//!    have finished, then the batch is compacted (`select_rows` on the unfinished rows) so they stop
//!    costing compute; compaction copies the cache, hence the threshold (`compact_fraction`).
//!
//! Because each token's uniform depends only on (seed, step, prompt, sample, position), the
//! output does not depend on batch composition or compaction timing (up to floating-point
//! differences between batch shapes in the forward pass itself).

use crate::adaptive_temperature::EntropyStats;
use crate::error::{Error, Result};
use crate::host_logits::HostLogits;
use crate::model::RolloutModel;
use crate::output::{Completion, FinishReason, Group, RolloutBatch, RolloutStats};
use crate::params::SamplingParams;
use crate::rng::{RolloutSeed, RowRng};
use crate::sampler::{Sampler, TokenSample};
use crate::stop::{Detokenizer, StopStrings};
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Tensor};

/// One rollout request: prompts, how to sample them, and the step's per-row inputs.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Prompt token ids, one `Vec` per prompt (chat-templated, no padding).
    pub prompts: Vec<Vec<i64>>,
    /// Global index of each prompt within the step (seeds its rows); `None` = `0..prompts.len()`.
    pub prompt_indices: Option<Vec<u64>>,
    /// Sampling and stopping options (`group_size` = G).
    pub params: SamplingParams,
    /// Run seed and training step.
    pub seed: RolloutSeed,
    /// Per-row token budgets (RMT), length `prompts.len() · G`, row `n = p·G + g`; `None` = only
    /// `max_new_tokens`.
    pub budgets: Option<Vec<usize>>,
    /// HAPO statistics from the learner's previous step; `None` on the first step (plain
    /// temperature) or when adaptive temperature is off.
    pub entropy_stats: Option<EntropyStats>,
    /// Version of the weights, copied into every completion.
    pub policy_version: u64,
}

impl GenerateRequest {
    /// A request for `prompts` with `params`, seed 0 / step 0, no budgets, version 0.
    pub fn new(prompts: Vec<Vec<i64>>, params: SamplingParams) -> Self {
        GenerateRequest {
            prompts,
            prompt_indices: None,
            params,
            seed: RolloutSeed::default(),
            budgets: None,
            entropy_stats: None,
            policy_version: 0,
        }
    }
}

/// Bookkeeping of one row while it decodes.
pub(crate) struct Row {
    pub(crate) prompt: usize,
    pub(crate) rng: RowRng,
    pub(crate) limit: usize,
    pub(crate) limit_reason: FinishReason,
    pub(crate) out: Completion,
    pub(crate) done: bool,
}

impl Row {
    pub(crate) fn push(&mut self, s: TokenSample) {
        let c = &mut self.out;
        c.tokens.push(s.token);
        c.logprobs.push(s.logprob);
        c.base_logprobs.push(s.base_logprob);
        c.entropies.push(s.entropy);
        c.temperatures.push(s.temperature);
    }
}

/// The rollout engine: stop rules plus reusable host buffers. Cheap to create; keep one per thread.
pub struct Engine {
    eos_ids: Vec<i64>,
    pub(crate) detokenizer: Option<Arc<dyn Detokenizer>>,
    host: HostLogits,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("eos_ids", &self.eos_ids).field("stop_strings", &self.detokenizer.is_some()).finish()
    }
}

impl Engine {
    /// An engine that stops rows at `eos_ids` (usually `TextTokenizer::eos_ids`).
    pub fn new(eos_ids: Vec<i64>) -> Self {
        Engine { eos_ids, detokenizer: None, host: HostLogits::default() }
    }

    /// An engine with the tokenizer's EOS ids that can also apply stop strings.
    pub fn with_tokenizer(tokenizer: Arc<rlpo_model::TextTokenizer>) -> Self {
        let eos = tokenizer.eos_ids.clone();
        Engine { eos_ids: eos, detokenizer: Some(tokenizer), host: HostLogits::default() }
    }

    /// Set the detokenizer used for stop strings.
    pub fn set_detokenizer(&mut self, detok: Arc<dyn Detokenizer>) {
        self.detokenizer = Some(detok);
    }

    /// The EOS ids rows stop at.
    pub fn eos_ids(&self) -> &[i64] {
        &self.eos_ids
    }

    /// Generate G completions for every prompt of `req` (see the module docs for the algorithm).
    pub fn generate<M: RolloutModel + ?Sized>(&mut self, model: &M, req: &GenerateRequest) -> Result<RolloutBatch> {
        tch::no_grad(|| self.generate_inner(model, req))
    }

    fn generate_inner<M: RolloutModel + ?Sized>(&mut self, model: &M, req: &GenerateRequest) -> Result<RolloutBatch> {
        let p = &req.params;
        p.validate()?;
        let mut rows = self.make_rows(model, req)?;
        let stop = StopStrings::new(&p.stop);
        if !stop.is_empty() && self.detokenizer.is_none() {
            return Err(Error::Input("rollout.stop is set but the engine has no tokenizer to decode with".into()));
        }
        let mut stop_ids: Vec<i64> = p.stop_token_ids.clone();
        if !p.ignore_eos {
            stop_ids.extend(&self.eos_ids);
        }
        let sampler = Sampler::new(p, req.entropy_stats);
        let g = p.group_size;
        if p.sampler.on_device(model.device()) {
            let (rows, stats) = self.generate_on_device(model, req, rows, &stop, &stop_ids, sampler)?;
            return Ok(into_batch(rows, g, req.prompts.len(), stats));
        }
        let mut stats = RolloutStats::default();

        // 1. Prefill the unique prompts, left-padded.
        let t0 = Instant::now();
        let (ids, mask, width) = left_pad(&req.prompts);
        let (ids, mask) = (ids.to_device(model.device()), mask.to_device(model.device()));
        let max_limit = rows.iter().map(|r| r.limit).max().unwrap_or(1);
        // The last sampled token is never fed back, hence `- 1`.
        let capacity = (width + max_limit - 1) as i64;
        let (logits, mut cache) = model.prefill(&ids, &mask, capacity)?;
        stats.prefill_s += t0.elapsed().as_secs_f64();

        // First token of every row from its prompt's logits.
        let t1 = Instant::now();
        self.host.load(logits)?;
        let prompt_of: Vec<usize> = rows.iter().map(|r| r.prompt).collect();
        let samples = self.host.sample_rows(&sampler, &prompt_of, &rows.iter().map(|r| r.rng.uniform(0)).collect::<Vec<_>>());
        for (row, s) in rows.iter_mut().zip(samples) {
            row.push(s);
        }
        self.finish_checks(&mut rows, &stop, &stop_ids, None);
        stats.sample_s += t1.elapsed().as_secs_f64();

        // 2. Fan out the prompt cache into the rows that continue.
        let t2 = Instant::now();
        let mut batch: Vec<usize> = (0..rows.len()).filter(|&r| !rows[r].done).collect();
        if !batch.is_empty() {
            let idx: Vec<i64> = batch.iter().map(|&r| rows[r].prompt as i64).collect();
            cache = cache.select_rows(&idx)?;
        }
        stats.prefill_s += t2.elapsed().as_secs_f64();

        // 3. Decode until every row is done.
        let compact_at = |len: usize| ((p.compact_fraction * len as f64).ceil() as usize).max(1);
        let mut done_in_batch = 0usize;
        while !batch.is_empty() {
            let t = Instant::now();
            let feed: Vec<i64> = batch.iter().map(|&r| *rows[r].out.tokens.last().unwrap_or(&0)).collect();
            let logits = model.step(&feed, &mut cache)?;
            stats.decode_s += t.elapsed().as_secs_f64();
            stats.steps += 1;
            stats.row_steps += batch.len();

            let t = Instant::now();
            self.host.load(logits)?;
            let live: Vec<usize> = (0..batch.len()).filter(|&j| !rows[batch[j]].done).collect();
            let us: Vec<f64> = live.iter().map(|&j| rows[batch[j]].rng.uniform(rows[batch[j]].out.tokens.len() as u64)).collect();
            let samples = self.host.sample_rows(&sampler, &live, &us);
            for (&j, s) in live.iter().zip(samples) {
                rows[batch[j]].push(s);
            }
            let newly = self.finish_checks(&mut rows, &stop, &stop_ids, Some(&batch));
            done_in_batch += newly;
            stats.sample_s += t.elapsed().as_secs_f64();

            if done_in_batch == batch.len() {
                break;
            }
            if p.compact_fraction < 1.0 && done_in_batch >= compact_at(batch.len()) {
                let t = Instant::now();
                let keep: Vec<i64> = (0..batch.len()).filter(|&j| !rows[batch[j]].done).map(|j| j as i64).collect();
                cache = cache.select_rows(&keep)?;
                batch = keep.iter().map(|&j| batch[j as usize]).collect();
                done_in_batch = 0;
                stats.compactions += 1;
                stats.decode_s += t.elapsed().as_secs_f64();
            }
        }

        Ok(into_batch(rows, g, req.prompts.len(), stats))
    }

    /// Validate the request and build one `Row` per (prompt, sample).
    pub(crate) fn make_rows<M: RolloutModel + ?Sized>(&self, model: &M, req: &GenerateRequest) -> Result<Vec<Row>> {
        let p = &req.params;
        let g = p.group_size;
        let n_rows = req.prompts.len() * g;
        if req.prompts.is_empty() {
            return Err(Error::Input("no prompts".into()));
        }
        if let Some(idx) = &req.prompt_indices {
            if idx.len() != req.prompts.len() {
                return Err(Error::Input(format!("{} prompt indices for {} prompts", idx.len(), req.prompts.len())));
            }
        }
        if let Some(b) = &req.budgets {
            if b.len() != n_rows {
                return Err(Error::Input(format!("{} budgets for {n_rows} rows (prompts × group_size)", b.len())));
            }
            if let Some(n) = b.iter().position(|&x| x == 0) {
                return Err(Error::Input(format!("row {n} has a token budget of 0")));
            }
        }
        let vocab = model.vocab_size();
        let max_pos = model.max_positions().max(0) as usize;
        let mut rows = Vec::with_capacity(n_rows);
        for (pi, prompt) in req.prompts.iter().enumerate() {
            if prompt.is_empty() {
                return Err(Error::Input(format!("prompt {pi} is empty")));
            }
            if let Some(&bad) = prompt.iter().find(|&&t| t < 0 || t >= vocab) {
                return Err(Error::Input(format!("prompt {pi} has token id {bad} outside the vocabulary (size {vocab})")));
            }
            if prompt.len() >= max_pos {
                return Err(Error::Input(format!("prompt {pi} has {} tokens, the model's context is {max_pos}", prompt.len())));
            }
            let index = req.prompt_indices.as_ref().map_or(pi as u64, |v| v[pi]);
            for s in 0..g {
                let n = pi * g + s;
                let budget = req.budgets.as_ref().map_or(usize::MAX, |b| b[n]);
                let context = max_pos - prompt.len();
                let (limit, limit_reason) = if budget < p.max_new_tokens && budget <= context {
                    (budget, FinishReason::Budget)
                } else {
                    (p.max_new_tokens.min(context), FinishReason::MaxLength)
                };
                rows.push(Row {
                    prompt: pi,
                    rng: req.seed.row(index, s as u64),
                    limit,
                    limit_reason,
                    done: false,
                    out: Completion {
                        prompt_index: index,
                        sample_index: s as u64,
                        prompt_len: prompt.len(),
                        tokens: Vec::new(),
                        logprobs: Vec::new(),
                        base_logprobs: Vec::new(),
                        entropies: Vec::new(),
                        temperatures: Vec::new(),
                        finish_reason: FinishReason::MaxLength,
                        policy_version: req.policy_version,
                    },
                });
            }
        }
        Ok(rows)
    }

    /// Mark rows that just finished (their last token is new); returns how many.
    fn finish_checks(&self, rows: &mut [Row], stop: &StopStrings, stop_ids: &[i64], batch: Option<&[usize]>) -> usize {
        let mut newly = 0;
        let ids: Vec<usize> = match batch {
            Some(b) => b.to_vec(),
            None => (0..rows.len()).collect(),
        };
        for r in ids {
            let row = &mut rows[r];
            if row.done {
                continue;
            }
            let last = *row.out.tokens.last().expect("a token was just pushed");
            let reason = if stop_ids.contains(&last) {
                Some(FinishReason::Eos)
            } else if !stop.is_empty() && stop.hit(&row.out.tokens, self.detokenizer.as_deref().expect("checked in generate")) {
                Some(FinishReason::Stop)
            } else if row.out.tokens.len() >= row.limit {
                Some(row.limit_reason)
            } else {
                None
            };
            if let Some(reason) = reason {
                row.out.finish_reason = reason;
                row.done = true;
                newly += 1;
            }
        }
        newly
    }
}

/// Group finished rows (row `n = p·G + g`) into the batch, counting their tokens.
fn into_batch(rows: Vec<Row>, g: usize, prompts: usize, mut stats: RolloutStats) -> RolloutBatch {
    stats.tokens = rows.iter().map(|r| r.out.tokens.len()).sum();
    let mut groups: Vec<Group> = Vec::with_capacity(prompts);
    for (i, row) in rows.into_iter().enumerate() {
        if i % g == 0 {
            groups.push(Group { prompt_index: row.out.prompt_index, completions: Vec::with_capacity(g) });
        }
        groups.last_mut().expect("group pushed above").completions.push(row.out);
    }
    RolloutBatch { groups, stats }
}

/// Left-pad prompts into `ids [P, L]` (pad id 0, masked out) and `mask [P, L]` i64.
pub(crate) fn left_pad(prompts: &[Vec<i64>]) -> (Tensor, Tensor, usize) {
    let width = prompts.iter().map(Vec::len).max().unwrap_or(1);
    let mut ids = vec![0i64; prompts.len() * width];
    let mut mask = vec![0i64; prompts.len() * width];
    for (i, p) in prompts.iter().enumerate() {
        let start = i * width + width - p.len();
        ids[start..start + p.len()].copy_from_slice(p);
        mask[start..start + p.len()].fill(1);
    }
    let shape = [prompts.len() as i64, width as i64];
    (Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape).to_kind(Kind::Int64), width)
}
