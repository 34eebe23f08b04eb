//! The learner: log-probs of the rollout tokens under the current policy (chunked over the
//! vocabulary), old log-probs, and the mini-batch / micro-batch update loop with the step-wide
//! loss normaliser, gradient clipping, non-finite guards and AdamW.
//!
//! Rows whose loss mask is empty (e.g. dropped by D³S) are never run through the model: a
//! micro-batch forwards only its kept rows, trimmed to their longest prompt and response, and
//! fills the other rows with the old log-probs (ratio 1, zero loss weight).

use crate::batch::LearnerBatch;
use crate::error::Result;
use crate::optim::{learning_rate, AdamW};
use crate::recipe::Recipe;
use rlpo_algo::logprob::{token_logprobs_with, LogProbOptions, TokenLogProbs};
use rlpo_algo::{compose, StepPlan};
use rlpo_model::CausalLm;
use tch::{Kind, Tensor};

/// What one training step's update did (for metrics).
#[derive(Debug, Default, Clone)]
pub struct UpdateReport {
    /// Mean policy loss over optimizer steps.
    pub pg_loss: f64,
    /// Mean KL (before β), if computed.
    pub kl: Option<f64>,
    /// Mean clip fraction.
    pub clip_frac: f64,
    /// Mean gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of the last optimizer step.
    pub lr: f64,
    /// Optimizer steps applied.
    pub applied: usize,
    /// Optimizer steps skipped because nothing entered the loss.
    pub skipped_empty: usize,
    /// Optimizer steps skipped because the loss or gradient was not finite.
    pub skipped_nonfinite: usize,
    /// Mean |learner logp − rollout logp| over loss tokens (first pass, before any update).
    pub logprob_gap: Option<f64>,
    /// Mean current-policy entropy over loss tokens.
    pub entropy: Option<f64>,
}

/// The trained policy and its optimizer.
#[derive(Debug)]
pub struct Learner {
    /// The policy (also used for rollout when colocated).
    pub model: CausalLm,
    /// AdamW state.
    pub opt: AdamW,
    /// Frozen reference policy (only when `loss.kl_coef > 0`).
    pub reference: Option<CausalLm>,
    /// Non-finite updates in a row.
    pub nonfinite_in_a_row: u32,
}

impl Learner {
    /// Wrap `model` with a fresh optimizer.
    pub fn new(model: CausalLm, recipe: &Recipe, reference: Option<CausalLm>) -> Self {
        let params = model.var_store().variables().into_iter().filter(|(_, t)| t.requires_grad());
        let opt = AdamW::new(params, recipe.optim.clone());
        Learner { model, opt, reference, nonfinite_in_a_row: 0 }
    }

    /// Log-probs (and optionally entropies) `[n, T_k]` of `targets` for rows `idx` of `batch`,
    /// trimmed to those rows' longest prompt and response. Returns `(out, T_k)`.
    fn forward_rows(model: &CausalLm, batch: &LearnerBatch, idx: &[i64], opts: &LogProbOptions) -> Result<(TokenLogProbs, i64)> {
        let device = batch.ids.device();
        let index = Tensor::from_slice(idx).to_device(device);
        let p_k = idx.iter().map(|&i| batch.prompt_lens[i as usize]).max().unwrap_or(1).max(1);
        let t_k = idx.iter().map(|&i| batch.response_lens[i as usize]).max().unwrap_or(1).max(1);
        let start = batch.prompt_width - p_k;
        let ids = batch.ids.index_select(0, &index).narrow(1, start, p_k + t_k);
        let mask = batch.attention_mask.index_select(0, &index).narrow(1, start, p_k + t_k);
        let targets = batch.targets.index_select(0, &index).narrow(1, 0, t_k);
        let hidden = model.hidden_states(&ids, &mask).narrow(1, p_k - 1, t_k);
        let d = hidden.size()[2];
        let flat = hidden.reshape([-1, d]);
        let out = token_logprobs_with(idx.len() as i64, t_k, &targets, opts, |s, l| Ok(model.logits(&flat.narrow(0, s, l))))?;
        Ok((out, t_k))
    }

    /// No-grad log-probs and entropies `[N, T]` of every row under `model` (old or reference policy).
    pub fn score_all(model: &CausalLm, batch: &LearnerBatch, recipe: &Recipe) -> Result<(Tensor, Tensor)> {
        let (n, t) = (batch.rows(), batch.response_width());
        let micro = recipe.micro_batch_rows() as i64;
        let opts = LogProbOptions {
            temperature: recipe.rollout.temperature,
            chunk_positions: recipe.trainer.logit_chunk_positions,
            with_entropy: true,
        };
        tch::no_grad(|| {
            let mut lps = Vec::new();
            let mut ents = Vec::new();
            let mut s = 0;
            while s < n {
                let len = micro.min(n - s);
                let idx: Vec<i64> = (s..s + len).collect();
                let (out, t_k) = Self::forward_rows(model, batch, &idx, &opts)?;
                let pad = t - t_k;
                lps.push(out.logp.pad([0, pad], "constant", 0.0));
                ents.push(out.entropy.expect("requested").pad([0, pad], "constant", 0.0));
                s += len;
            }
            let m = &batch.response_mask;
            Ok((Tensor::cat(&lps, 0) * m, Tensor::cat(&ents, 0) * m))
        })
    }

    /// Run every optimizer step of one training step. `old_logp [N, T]` is the behaviour policy's.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        recipe: &Recipe,
        batch: &LearnerBatch,
        plan: &StepPlan,
        old_logp: &Tensor,
        ref_logp: Option<&Tensor>,
        opt_step_total: u64,
    ) -> Result<UpdateReport> {
        let n = batch.rows();
        let mini = recipe.mini_batch_rows() as i64;
        let micro = recipe.micro_batch_rows() as i64;
        let need_entropy = matches!(&recipe.algorithm.hapo, Some(h) if h.stats_scope == rlpo_algo::config::HapoStatsScope::MicroBatch);
        // The current policy's entropy costs a second pass over V per position: only when HAPO
        // needs it (micro-batch statistics) or the recipe asks for the metric.
        let opts = LogProbOptions {
            temperature: recipe.rollout.temperature,
            chunk_positions: recipe.trainer.logit_chunk_positions,
            with_entropy: need_entropy || recipe.metrics.actor_entropy,
        };
        let row_keep: Vec<bool> = Vec::try_from(&plan.loss_mask.sum_dim_intlist(-1, false, Kind::Float).gt(0.0).to_device(tch::Device::Cpu))?;
        let mut rep = UpdateReport::default();
        let (mut ent_sum, mut ent_tokens, mut gap_sum, mut gap_tokens) = (0.0, 0.0, 0.0, 0.0);
        let mut steps_seen = 0.0;
        for epoch in 0..recipe.trainer.ppo_epochs {
            let mut m0 = 0;
            while m0 < n {
                let norm = plan.normaliser(m0, mini);
                if norm.is_empty() {
                    rep.skipped_empty += 1;
                    m0 += mini;
                    continue;
                }
                self.opt.zero_grad();
                let (mut pg, mut kl, mut cf) = (0.0, 0.0, 0.0);
                let mut u0 = m0;
                while u0 < m0 + mini {
                    let kept: Vec<i64> = (u0..u0 + micro).filter(|&i| row_keep[i as usize]).collect();
                    if !kept.is_empty() {
                        let (out, t_k) = Self::forward_rows(&self.model, batch, &kept, &opts)?;
                        let dev = batch.ids.device();
                        let index = Tensor::from_slice(&kept).to_device(dev);
                        let t = batch.response_width();
                        let old_k = old_logp.index_select(0, &index);
                        let logp_k = out.logp.pad([0, t - t_k], "constant", 0.0);
                        // Rows outside `kept` get the old log-prob: ratio 1 and zero loss weight.
                        let local = &index - u0;
                        let logp = old_logp.narrow(0, u0, micro).detach().index_copy(0, &local, &logp_k);
                        let mb_full = plan.micro_batch(u0, micro);
                        let lm_k = mb_full.loss_mask.index_select(0, &local);
                        if epoch == 0 {
                            let lp = logp_k.detach();
                            gap_sum += ((&lp - &old_k).abs() * &lm_k).sum(Kind::Double).double_value(&[]);
                            gap_tokens += lm_k.sum(Kind::Double).double_value(&[]);
                            if let Some(e) = &out.entropy {
                                let e = e.pad([0, t - t_k], "constant", 0.0);
                                ent_sum += (e * &lm_k).sum(Kind::Double).double_value(&[]);
                                ent_tokens += lm_k.sum(Kind::Double).double_value(&[]);
                            }
                        }
                        let entropy = if need_entropy {
                            let e = out.entropy.as_ref().expect("requested").pad([0, t - t_k], "constant", 0.0);
                            Some(batch.rollout_entropy.narrow(0, u0, micro).index_copy(0, &local, &e))
                        } else {
                            None
                        };
                        let old = old_logp.narrow(0, u0, micro);
                        let rl = ref_logp.map(|r| r.narrow(0, u0, micro));
                        let inputs = compose::PolicyInputs { logp: &logp, old_logp: &old, ref_logp: rl.as_ref(), entropy: entropy.as_ref() };
                        let loss = compose::policy_loss(&recipe.algorithm, &recipe.loss, &mb_full, &inputs, &norm)?;
                        loss.loss.backward();
                        pg += loss.pg_loss.double_value(&[]);
                        kl += loss.kl.as_ref().map_or(0.0, |k| k.double_value(&[]));
                        cf += loss.clip_frac.double_value(&[]);
                    }
                    u0 += micro;
                }
                let gn = self.opt.grad_norm();
                if !gn.is_finite() || !pg.is_finite() {
                    rep.skipped_nonfinite += 1;
                    self.nonfinite_in_a_row += 1;
                    self.opt.zero_grad();
                } else {
                    self.nonfinite_in_a_row = 0;
                    self.opt.clip_grad(gn, recipe.optim.grad_clip);
                    let lr = learning_rate(&recipe.optim, self.opt.step, opt_step_total);
                    self.opt.step(lr);
                    rep.lr = lr;
                    rep.applied += 1;
                    rep.grad_norm += gn;
                    rep.pg_loss += pg;
                    rep.clip_frac += cf;
                    if recipe.loss.kl_coef > 0.0 {
                        *rep.kl.get_or_insert(0.0) += kl;
                    }
                    steps_seen += 1.0;
                }
                m0 += mini;
            }
        }
        if steps_seen > 0.0 {
            rep.grad_norm /= steps_seen;
            rep.pg_loss /= steps_seen;
            rep.clip_frac /= steps_seen;
            if let Some(k) = rep.kl.as_mut() {
                *k /= steps_seen;
            }
        }
        rep.logprob_gap = (gap_tokens > 0.0).then(|| gap_sum / gap_tokens);
        rep.entropy = (ent_tokens > 0.0).then(|| ent_sum / ent_tokens);
        Ok(rep)
    }
}
