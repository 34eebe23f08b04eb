//! RMT in the training step (docs/algorithms.md §5), in both of its forms:
//!
//! - **RL dataset** (`data.source` = jsonl / parquet / synthetic): the decaying budget `B_t` goes
//!   into every sample's `metadata.budget` (read by the `length` reward) and replaces `{budget}`
//!   in the prompt; rows whose metadata holds a reference solution (`solution_field`) add the NTP
//!   loss on the solution tokens; when every sample has a `difficulty`, prompts are drawn by the
//!   easy-to-hard curriculum `p_t` over difficulty tiers instead of in dataset order.
//! - **Mid-training on raw text** (`data.source = "text"`): each document is cut to
//!   `max_doc_tokens`; one teacher-forced pass of the current policy gives the entropy of every
//!   next-token distribution (the PROPOSAL reading of §5.3.1); candidates are split into tiers by
//!   the 1/3 and 2/3 entropy quantiles; a tier is drawn from `p_t`, then a position in it. The
//!   prompt is `instruction` with the text before the position and `B_t`, the answer is the
//!   decoded next token; the NTP loss covers every other position of the document.
//!
//! In both, the rollout of a row stops at `min(max_new_tokens, ⌈rollout_cap·B_t⌉ +
//! answer_tokens)`, and the scorer fills `metadata.think_len` (tokens inside `<think>…</think>`).
//!
//! Shapes: an [`NtpSeq`] holds `ids [S]` and `mask [S − 1]` (target `ids[t + 1]` enters the loss
//! where `mask[t] = 1`); one is attached to each prompt (group) that has one.

use crate::error::{invalid, Result};
use crate::prompts::PromptBatch;
use rlpo_algo::config::RmtConfig;
use crate::learner::teacher_forced;
use rlpo_algo::logprob::LogProbOptions;
use rlpo_algo::rmt::{assign_tiers, sample_rl_positions, tier_distribution, token_budget};
use rlpo_data::rng::{derive_seed, SplitMix64};
use rlpo_data::{Dataset, Message, Prompt, Sample, SourceKind, TierSampler, TierSamplerState};
use rlpo_model::{CausalLm, TextTokenizer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Kind, Tensor};

/// Seed domain of the mid-training position draws (distinct from the data crate's domains).
const POSITION_DOMAIN: u64 = 0x524d_5450; // "RMTP"

/// A teacher-forced sequence for the NTP loss (see module docs for shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NtpSeq {
    /// Token ids `[S]`.
    pub ids: Vec<i64>,
    /// `[S − 1]`: 1 where the next token enters the NTP loss.
    pub mask: Vec<f32>,
}

impl NtpSeq {
    /// Tokens that enter the loss.
    pub fn tokens(&self) -> f64 {
        self.mask.iter().map(|&m| m as f64).sum()
    }
}

/// The trainer's RMT state: configuration, form, and the curriculum sampler of RL datasets.
#[derive(Debug)]
pub struct RmtPrompts {
    cfg: RmtConfig,
    mid_training: bool,
    sampler: Option<TierSampler>,
    total_steps: u64,
    seed: u64,
}

impl RmtPrompts {
    /// RMT for `dataset` (source `source`), or `None` when `[algorithm.rmt]` is absent.
    pub fn new(cfg: Option<&RmtConfig>, dataset: &Dataset, source: SourceKind, total_steps: u64, seed: u64) -> Result<Option<Self>> {
        let Some(cfg) = cfg else { return Ok(None) };
        let mid_training = source == SourceKind::Text;
        let with_difficulty = dataset.samples().iter().filter(|s| s.difficulty.is_some()).count();
        let sampler = if !mid_training && with_difficulty > 0 {
            // Mixed rows are an error naming the first sample without a difficulty.
            let tiers = rlpo_data::difficulty_tiers(dataset.samples())?;
            Some(TierSampler::new(tiers, seed)?)
        } else {
            None
        };
        Ok(Some(RmtPrompts { cfg: cfg.clone(), mid_training, sampler, total_steps, seed }))
    }

    /// `B_t` for the 0-based training step `step`.
    pub fn budget(&self, step: u64) -> u64 {
        token_budget(step, self.total_steps, &self.cfg)
    }

    /// Tier probabilities `p_t` (easy, medium, hard) at `step`.
    pub fn tier_probs(&self, step: u64) -> [f64; 3] {
        tier_distribution(step, self.total_steps, &self.cfg)
    }

    /// Per-row token cap of the rollout at `step`, if it is below `max_new_tokens`.
    pub fn row_cap(&self, step: u64, max_new_tokens: usize) -> Option<usize> {
        if self.cfg.rollout_cap <= 0.0 {
            return None;
        }
        let cap = (self.cfg.rollout_cap * self.budget(step) as f64).ceil() as usize + self.cfg.answer_tokens as usize;
        (cap < max_new_tokens).then_some(cap)
    }

    /// The curriculum sampler's state (checkpoints).
    pub fn sampler_state(&self) -> Option<TierSamplerState> {
        self.sampler.as_ref().map(TierSampler::state)
    }

    /// Restore the curriculum sampler.
    pub fn restore(&mut self, state: Option<&TierSamplerState>) -> Result<()> {
        match (&mut self.sampler, state) {
            (Some(s), Some(st)) => Ok(s.restore(st)?),
            (None, None) => Ok(()),
            _ => Err(invalid("algorithm.rmt", "the checkpoint's curriculum state does not match this dataset (difficulty tiers on one side only)")),
        }
    }

    /// `n` samples for `step`: by the curriculum when the dataset has difficulties, else in
    /// dataset order.
    pub fn draw(&mut self, dataset: &mut Dataset, n: usize, step: u64) -> Result<Vec<Sample>> {
        let p = self.tier_probs(step);
        match &mut self.sampler {
            Some(s) => {
                let idx = s.sample(p, n)?;
                Ok(idx.into_iter().map(|i| dataset.samples()[i].clone()).collect())
            }
            None => Ok(dataset.next_batch(n)),
        }
    }

    /// Turn drawn samples into RL prompts for `step`: the budget into metadata and `{budget}`;
    /// for mid-training, one RL position per document. `first` is the index of `samples[0]` in
    /// the generation batch (a rank prepares its part of it; the position draw of each document
    /// is seeded by that index). Returns the samples and, per sample, the NTP sequence of
    /// mid-training documents (RL datasets attach theirs in [`Self::attach_solutions`]).
    pub fn prepare(&self, samples: Vec<Sample>, first: u64, step: u64, tok: &TextTokenizer, model: &CausalLm) -> Result<(Vec<Sample>, Vec<Option<NtpSeq>>)> {
        let budget = self.budget(step);
        let mut out = Vec::with_capacity(samples.len());
        let mut ntp = Vec::with_capacity(samples.len());
        for (k, s) in samples.into_iter().enumerate() {
            if self.mid_training {
                let (sample, seq) = self.position_prompt(&s, step, first + k as u64, budget, tok, model)?;
                out.push(sample);
                ntp.push(seq);
            } else {
                let mut s = s;
                s.prompt = with_budget(&s.prompt, budget);
                set_meta(&mut s.metadata, "budget", Value::from(budget));
                out.push(s);
                ntp.push(None);
            }
        }
        Ok((out, ntp))
    }

    /// RL datasets: the NTP sequence `prompt ids + solution ids` for prompts whose metadata
    /// holds a reference solution (loss on the solution tokens only).
    pub fn attach_solutions(&self, batch: &mut PromptBatch, tok: &TextTokenizer) -> Result<()> {
        if self.mid_training {
            return Ok(());
        }
        for (i, s) in batch.samples.iter().enumerate() {
            let Some(sol) = s.metadata.get(&self.cfg.solution_field).and_then(Value::as_str) else { continue };
            let prompt = &batch.ids[i];
            let sol_ids = tok.encode(sol, false)?;
            if sol_ids.is_empty() || prompt.is_empty() {
                continue;
            }
            let ids: Vec<i64> = prompt.iter().chain(&sol_ids).copied().collect();
            // Target t is ids[t + 1]: the solution's tokens are targets P − 1 .. S − 2.
            let mask: Vec<f32> = (0..ids.len() - 1).map(|t| if t + 1 >= prompt.len() { 1.0 } else { 0.0 }).collect();
            batch.ntp[i] = Some(NtpSeq { ids, mask });
        }
        Ok(())
    }

    /// Mid-training: one RL position of document `s` and the NTP sequence over the rest.
    fn position_prompt(&self, s: &Sample, step: u64, k: u64, budget: u64, tok: &TextTokenizer, model: &CausalLm) -> Result<(Sample, Option<NtpSeq>)> {
        let text = s.prompt.flat_text();
        let mut ids = tok.encode(&text, false)?;
        ids.truncate(self.cfg.max_doc_tokens);
        // Candidates: positions with enough text before them whose token is visible text.
        let cands: Vec<usize> = (self.cfg.min_prefix_tokens..ids.len())
            .filter(|&p| tok.decode(&[ids[p]], true).map(|t| !t.trim().is_empty()).unwrap_or(false))
            .collect();
        if cands.is_empty() {
            return Err(invalid(
                "data.path",
                format!(
                    "document `{}` has {} tokens, none usable as an RL position after algorithm.rmt.min_prefix_tokens = {}",
                    s.id,
                    ids.len(),
                    self.cfg.min_prefix_tokens
                ),
            ));
        }
        let entropy = next_token_entropy(model, &ids)?;
        let ents: Vec<f64> = cands.iter().map(|&p| entropy[p - 1]).collect();
        let tiers = assign_tiers(&ents);
        let mut rng = SplitMix64::new(derive_seed(self.seed, POSITION_DOMAIN, step * 1_000_003 + k));
        let pick = sample_rl_positions(&tiers, &self.tier_probs(step), 1, || rng.next_f64());
        let j = *pick.first().expect("candidates are non-empty");
        let pos = cands[j];
        let start = pos.saturating_sub(self.cfg.max_prefix_tokens);
        let prefix = tok.decode(&ids[start..pos], true)?;
        let answer = tok.decode(&ids[pos..pos + 1], true)?.trim().to_string();
        let content = self.cfg.instruction.replace("{prefix}", &prefix).replace("{budget}", &budget.to_string());
        let mut meta = serde_json::Map::new();
        meta.insert("budget".into(), Value::from(budget));
        meta.insert("rmt_position".into(), Value::from(pos as u64));
        meta.insert("rmt_tier".into(), Value::from(tiers[j].index() as u64));
        meta.insert("rmt_entropy".into(), Value::from(ents[j]));
        let sample = Sample {
            id: format!("{}@{pos}", s.id),
            prompt: Prompt::Chat(vec![Message::user(content)]),
            answer: Some(answer),
            data_source: s.data_source.clone(),
            difficulty: Some(ents[j]),
            metadata: Value::Object(meta),
        };
        let mask: Vec<f32> = (0..ids.len() - 1).map(|t| if t + 1 == pos { 0.0 } else { 1.0 }).collect();
        Ok((sample, Some(NtpSeq { ids, mask })))
    }
}

/// Entropy (nats) of the policy's next-token distribution after each prefix of `ids`:
/// `out[t]` is the entropy when predicting `ids[t + 1]`, `t < S − 1`.
fn next_token_entropy(model: &CausalLm, ids: &[i64]) -> Result<Vec<f64>> {
    let s = ids.len() as i64;
    tch::no_grad(|| {
        let dev = model.device();
        let x = Tensor::from_slice(ids).view([1, s]).to_device(dev);
        let mask = Tensor::ones([1, s], (Kind::Int64, dev));
        let opts = LogProbOptions { temperature: 1.0, chunk_positions: 1024, with_entropy: true };
        let out = teacher_forced(model, &x, &mask, 0, &x.narrow(1, 1, s - 1), &opts)?;
        let e = out.entropy.expect("requested").to_kind(Kind::Double).to_device(tch::Device::Cpu).view([-1]);
        Ok(Vec::<f64>::try_from(&e)?)
    })
}

/// `{budget}` in every message (or the text) replaced by `budget`.
fn with_budget(p: &Prompt, budget: u64) -> Prompt {
    let b = budget.to_string();
    match p {
        Prompt::Chat(msgs) => Prompt::Chat(msgs.iter().map(|m| Message { role: m.role.clone(), content: m.content.replace("{budget}", &b) }).collect()),
        Prompt::Text(t) => Prompt::Text(t.replace("{budget}", &b)),
    }
}

/// Set `key` in a metadata object (a null metadata becomes an object).
pub fn set_meta(meta: &mut Value, key: &str, v: Value) {
    if !meta.is_object() {
        *meta = Value::Object(serde_json::Map::new());
    }
    meta.as_object_mut().expect("object").insert(key.into(), v);
}

/// Tokens inside the think block of `response`: between `<think>` (or the start) and the last
/// `</think>`; the whole response when there is no closing tag.
pub fn think_len(response: &str, tok: &TextTokenizer) -> Result<usize> {
    let inner = match response.rfind("</think>") {
        Some(end) => {
            let head = &response[..end];
            match head.find("<think>") {
                Some(s) => &head[s + "<think>".len()..],
                None => head,
            }
        }
        None => response,
    };
    Ok(tok.encode(inner.trim(), false)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_placeholder_is_replaced_in_every_message() {
        let p = Prompt::Chat(vec![Message::user("use {budget} tokens"), Message { role: "system".into(), content: "x{budget}".into() }]);
        let Prompt::Chat(m) = with_budget(&p, 357) else { panic!() };
        assert_eq!(m[0].content, "use 357 tokens");
        assert_eq!(m[1].content, "x357");
    }

    #[test]
    fn metadata_gets_the_key_even_when_null() {
        let mut v = Value::Null;
        set_meta(&mut v, "budget", Value::from(5));
        assert_eq!(v["budget"], 5);
        let mut v = serde_json::json!({"a": 1});
        set_meta(&mut v, "budget", Value::from(7));
        assert_eq!((v["a"].as_i64(), v["budget"].as_i64()), (Some(1), Some(7)));
    }
}
