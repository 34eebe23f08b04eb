//! The learner's packed forward: the rows of a micro-batch concatenated into one row without
//! padding (`trainer.packed_rows`), each group's prompt forwarded once and continued by each of
//! its responses (`trainer.shared_prompt`), and micro-batches formed by a token budget
//! (`trainer.micro_batch_tokens`).
//!
//! Layout of one micro-batch of rows `idx` (see [`rlpo_model::varlen`]): unshared, every row is
//! one segment `[prompt | response]` (positions `0..p + t`); shared, the first row of each prompt
//! group adds the prompt segment (positions `0..p`) and every row adds its response segment
//! continuing it (positions `p..p + t`). The hidden state that predicts response token `t` is
//! column `p - 1 + t` of the row's `[prompt | response]` run: the prompt's last column for
//! `t = 0`, the response's column `t - 1` after that.
//!
//! Shapes: packed ids `[L]`; predicting columns, targets `[M]` (M = the rows' response tokens);
//! the log-probs come back as `[n, T_k]` (T_k = longest response of the rows), zero beyond each
//! row's response.

use crate::batch::LearnerBatch;
use crate::error::{Result, TrainError};
use crate::recipe::Recipe;
use rlpo_algo::logprob::{token_logprobs_with, LogProbOptions, TokenLogProbs};
use rlpo_model::{CausalLm, PackedSeqs};
use tch::{Kind, Tensor};

/// Where each packed token comes from and where each log-prob goes.
#[derive(Debug)]
pub struct PackPlan {
    /// Segments of the packed row.
    pub seqs: PackedSeqs,
    /// Flat index into `batch.ids` of every packed column `[L]`.
    ids_index: Vec<i64>,
    /// Packed column whose hidden state predicts each response token `[M]`.
    pred: Vec<i64>,
    /// Flat index into `batch.targets` of each response token `[M]`.
    targets_index: Vec<i64>,
    /// Flat index into the `[n, T_k]` output of each response token `[M]`.
    out_index: Vec<i64>,
    /// Rows n.
    pub rows: i64,
    /// Longest response T_k (>= 1).
    pub t_k: i64,
}

/// Tokens the packed forward runs for rows `idx` (each shared prompt counted once).
pub fn packed_tokens(batch: &LearnerBatch, idx: &[i64], share_prompt: bool) -> i64 {
    let mut seen: Vec<usize> = Vec::new();
    let mut total = 0;
    for &r in idx {
        let r = r as usize;
        let g = batch.prompt_group[r];
        if !share_prompt || !seen.contains(&g) {
            total += batch.prompt_lens[r];
            seen.push(g);
        }
        total += batch.response_lens[r];
    }
    total
}

impl PackPlan {
    /// The packing of rows `idx` of `batch`.
    pub fn new(batch: &LearnerBatch, idx: &[i64], share_prompt: bool) -> Result<PackPlan> {
        let (p_w, w, t_w) = (batch.prompt_width, batch.ids.size()[1], batch.response_width());
        let t_k = idx.iter().map(|&r| batch.response_lens[r as usize]).max().unwrap_or(1).max(1);
        let mut plan = PackPlan {
            seqs: PackedSeqs::new(),
            ids_index: Vec::new(),
            pred: Vec::new(),
            targets_index: Vec::new(),
            out_index: Vec::new(),
            rows: idx.len() as i64,
            t_k,
        };
        // prompt group -> (segment index, its first column)
        let mut prompts: Vec<(usize, usize, i64)> = Vec::new();
        for (k, &r) in idx.iter().enumerate() {
            let ru = r as usize;
            let (p, t) = (batch.prompt_lens[ru], batch.response_lens[ru]);
            if p < 1 {
                return Err(TrainError::Aborted(format!("learner row {r} has an empty prompt")));
            }
            let row0 = r * w + p_w; // flat index of the row's first response column
            let emit = |plan: &mut PackPlan, first_pred: i64, rest_start: i64| {
                for j in 0..t {
                    plan.pred.push(if j == 0 { first_pred } else { rest_start + j - 1 });
                    plan.targets_index.push(r * t_w + j);
                    plan.out_index.push(k as i64 * t_k + j);
                }
            };
            if share_prompt {
                let g = batch.prompt_group[ru];
                let (seg, start) = match prompts.iter().find(|x| x.0 == g) {
                    Some(&(_, s, c)) => (s, c),
                    None => {
                        let c = plan.seqs.total();
                        let s = plan.seqs.push(p, None);
                        plan.ids_index.extend(row0 - p..row0);
                        prompts.push((g, s, c));
                        (s, c)
                    }
                };
                if t > 0 {
                    let c = plan.seqs.total();
                    plan.seqs.push(t, Some(seg));
                    plan.ids_index.extend(row0..row0 + t);
                    emit(&mut plan, start + p - 1, c);
                }
            } else {
                let c = plan.seqs.total();
                plan.seqs.push(p + t, None);
                plan.ids_index.extend(row0 - p..row0 + t);
                emit(&mut plan, c + p - 1, c + p);
            }
        }
        Ok(plan)
    }

    /// Log-probs (and entropies) `[n, T_k]` of the rows' response tokens under `model`.
    pub fn forward(&self, model: &CausalLm, batch: &LearnerBatch, opts: &LogProbOptions) -> Result<TokenLogProbs> {
        let device = batch.ids.device();
        let ix = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        let ids = batch.ids.view([-1]).index_select(0, &ix(&self.ids_index));
        let hidden = model.hidden_states_packed(&ids, &self.seqs);
        let m = self.pred.len() as i64;
        let (n, t_k) = (self.rows, self.t_k);
        if m == 0 {
            let z = Tensor::zeros([n, t_k], (Kind::Float, device));
            return Ok(TokenLogProbs { logp: z.shallow_clone(), entropy: opts.with_entropy.then_some(z) });
        }
        let flat = hidden.view([self.seqs.total(), -1]).index_select(0, &ix(&self.pred));
        let targets = batch.targets.view([-1]).index_select(0, &ix(&self.targets_index)).view([1, m]);
        let out = token_logprobs_with(1, m, &targets, opts, |s, l| Ok(model.logits(&flat.narrow(0, s, l))))?;
        let out_ix = ix(&self.out_index);
        let place = |x: &Tensor| Tensor::zeros([n * t_k], (x.kind(), device)).index_copy(0, &out_ix, &x.view([-1])).view([n, t_k]);
        Ok(TokenLogProbs { logp: place(&out.logp), entropy: out.entropy.as_ref().map(place) })
    }
}

/// Contiguous micro-batches `(start, len)` of the rows `m0..m0 + m_len`: `trainer.micro_batch_rows`
/// rows each, or with `trainer.micro_batch_tokens` as many rows as fit the budget of packed
/// tokens (rows with `keep[r] = false` cost nothing; a row larger than the budget is a
/// micro-batch by itself).
pub fn micro_batches(recipe: &Recipe, batch: &LearnerBatch, m0: i64, m_len: i64, keep: &[bool]) -> Vec<(i64, i64)> {
    let budget = recipe.trainer.micro_batch_tokens as i64;
    if budget == 0 {
        let micro = recipe.micro_batch_rows() as i64;
        return (m0..m0 + m_len).step_by(micro as usize).map(|u0| (u0, micro.min(m0 + m_len - u0))).collect();
    }
    let share = recipe.trainer.packed_rows && recipe.trainer.shared_prompt;
    let cost = |rows: &[i64]| {
        if recipe.trainer.packed_rows {
            return packed_tokens(batch, rows, share);
        }
        // The padded forward trims the rows to their longest prompt and response.
        let p = rows.iter().map(|&r| batch.prompt_lens[r as usize]).max().unwrap_or(0);
        let t = rows.iter().map(|&r| batch.response_lens[r as usize]).max().unwrap_or(0);
        rows.len() as i64 * (p + t)
    };
    let mut out = Vec::new();
    let (mut u0, mut kept) = (m0, Vec::new());
    for r in m0..m0 + m_len {
        if !keep[r as usize] {
            continue;
        }
        kept.push(r);
        if kept.len() > 1 && cost(&kept) > budget {
            out.push((u0, r - u0));
            u0 = r;
            kept = vec![r];
        }
    }
    out.push((u0, m0 + m_len - u0));
    out
}
