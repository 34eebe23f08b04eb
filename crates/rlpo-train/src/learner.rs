//! The learner: log-probs of the rollout tokens under the current policy (chunked over the
//! vocabulary), old log-probs, and the mini-batch / micro-batch update loop with the step-wide
//! loss normaliser, gradient clipping, non-finite guards and AdamW.
//!
//! Rows whose loss mask is empty (e.g. dropped by D³S) are never run through the model: a
//! micro-batch forwards only its kept rows — packed without padding, each group's prompt once
//! ([`crate::packed_rows`]), or padded to their longest prompt and response — and fills the other
//! rows with the old log-probs (ratio 1, zero loss weight). Micro-batches are row counts or a
//! token budget. With `[model.lora]` only the adapters are optimised and the merged weights are
//! rewritten after each optimizer step.
//!
//! Data parallelism ([`RowShard`]): a rank holds some rows of the step's global batch. It walks
//! the global mini-batches and, inside each, the global micro-batch ranges, forwarding the rows
//! of each range it holds (so its micro-batches are the 1-rank run's, cut at the rank's rows);
//! the optimizer step's normaliser (tokens, rows, RMT's NTP tokens) is summed over ranks before
//! any loss, gradients are summed over ranks in buckets before the global-norm clip and AdamW,
//! and the reported losses and first-pass statistics are summed too. Every rank then applies the
//! same update to its replica. The all-reduce follows the backward of the optimizer step; it is
//! not overlapped with it (on CPU the backward already uses every core). With a token budget
//! (`trainer.micro_batch_tokens`) each rank packs its own rows of a mini-batch up to the budget,
//! so its micro-batches differ from the 1-rank run's; the optimizer step agrees up to reduction order.

use crate::batch::LearnerBatch;
use crate::dist::{Dist, GradReduce};
use crate::error::Result;
use crate::optim::{learning_rate, AdamW};
use crate::packed_rows::{micro_batches, PackPlan};
use crate::recipe::Recipe;
use crate::rmt::NtpSeq;
use crate::step_record::{MicroBatchRecord, OptimizerStepRecord};
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
    /// Mean weighted RMT NTP loss (`λ·L_NTP`) over optimizer steps, when RMT had NTP tokens.
    pub ntp_loss: Option<f64>,
    /// RMT: NTP tokens that entered the loss in the first pass over the data (epoch 0), summed
    /// over its optimizer steps; equals the step's NTP tokens (each enters once per epoch).
    pub ntp_tokens: f64,
    /// The learner's first-pass log-probs (the old policy, [`OldLogp::CurrentDetached`]) against
    /// the rollout's, over the response tokens of the forwarded rows.
    pub mismatch: Option<rlpo_algo::MismatchStats>,
}

/// Gradients are all-reduced in buckets of about this many bytes (DDP's default size): few
/// collectives for a model of many small tensors, none larger than needed.
pub const GRAD_BUCKET_BYTES: usize = 25 << 20;

/// Which rows of the step's global batch this process holds, and the seam it reduces through.
#[derive(Debug, Clone, Copy)]
pub struct RowShard<'a> {
    /// Global row of each local row, ascending (`0..N` for one process).
    pub rows: &'a [i64],
    /// Rows of the whole step, over all ranks.
    pub global_rows: i64,
    /// This process's communicator (the identity for one process).
    pub dist: &'a Dist,
}

impl RowShard<'_> {
    /// Local rows whose global row lies in `start..end` (contiguous, since `rows` ascends).
    fn local(&self, start: i64, end: i64) -> std::ops::Range<i64> {
        let lo = self.rows.partition_point(|&r| r < start);
        let hi = self.rows.partition_point(|&r| r < end);
        lo as i64..hi as i64
    }

    /// Local row ranges, one per global micro-batch `[s, s + micro)` of `start..end` that this
    /// process holds rows of (the 1-rank run's micro-batches, cut at this rank's rows).
    fn micro_ranges(&self, start: i64, end: i64, micro: i64) -> Vec<std::ops::Range<i64>> {
        (start..end).step_by(micro.max(1) as usize).map(|s| self.local(s, (s + micro).min(end))).filter(|r| !r.is_empty()).collect()
    }
}

/// The micro-batches `(local start, rows)` of one mini-batch (global rows `g0..g0 + g_len`, local
/// rows `m0..m0 + m_len`). With a token budget (`trainer.micro_batch_tokens`) this rank's rows
/// are packed up to the budget on their own; otherwise they are the 1-rank run's row
/// micro-batches cut at this rank's rows.
fn local_micro_batches(recipe: &Recipe, batch: &LearnerBatch, sh: &RowShard, (g0, g_len): (i64, i64), (m0, m_len): (i64, i64), keep: &[bool]) -> Vec<(i64, i64)> {
    if recipe.trainer.micro_batch_tokens > 0 {
        return if m_len > 0 { micro_batches(recipe, batch, m0, m_len, keep) } else { Vec::new() };
    }
    let micro = recipe.micro_batch_rows() as i64;
    sh.micro_ranges(g0, g0 + g_len, micro).into_iter().map(|u| (u.start, u.end - u.start)).collect()
}

/// The no-grad scoring passes' micro-batches over all `n` local rows, whose global rows are
/// `global` (ascending): by token budget, or up to each next global multiple of the row
/// micro-batch size (all of a micro-batch for one process), as in the update.
fn score_micro_batches(recipe: &Recipe, batch: &LearnerBatch, global: &[i64], n: i64, all: &[bool]) -> Vec<(i64, i64)> {
    if recipe.trainer.micro_batch_tokens > 0 {
        return micro_batches(recipe, batch, 0, n, all);
    }
    let micro = recipe.micro_batch_rows() as i64;
    let mut out = Vec::new();
    let mut s = 0usize;
    while s < n as usize {
        let block = global[s].div_euclid(micro);
        let len = global[s..].iter().take_while(|&&r| r.div_euclid(micro) == block).count();
        out.push((s as i64, len as i64));
        s += len;
    }
    out
}

/// What [`Learner::update`] trains on: the step's batch, its plan, and the behaviour and
/// reference log-probs `[N, T]`.
#[derive(Debug)]
pub struct UpdateInputs<'a> {
    /// The recipe.
    pub recipe: &'a Recipe,
    /// The step's rows.
    pub batch: &'a LearnerBatch,
    /// Advantages, masks and clip widths of the step.
    pub plan: &'a StepPlan,
    /// Behaviour-policy log-probs.
    pub old_logp: OldLogp<'a>,
    /// Reference-policy log-probs (KL), if any.
    pub ref_logp: Option<&'a Tensor>,
    /// RMT: the NTP sequence of each group (prompt), if any; empty when RMT is off.
    pub ntp: &'a [Option<NtpSeq>],
    /// Where these rows sit in the step's global batch (data parallelism).
    pub shard: RowShard<'a>,
}

/// Where the behaviour policy's log-probs come from.
#[derive(Debug, Clone, Copy)]
pub enum OldLogp<'a> {
    /// Given `[N, T]` (recomputed, or recorded by a rollout that ran the learner's kernels).
    Given(&'a Tensor),
    /// The learner's own log-probs, detached, from the same forward that computes the loss.
    /// Exact (and free) when the step has a single optimizer step on on-policy data: the
    /// weights have not moved since the rollout, so `π_old = π_θ` bit for bit and the ratio is
    /// exactly 1, with no extra forward and no dependence on the rollout's kernels.
    CurrentDetached,
}

/// Detached loss values of one micro-batch (already divided by the step normaliser, so they add
/// up to the optimizer step's value).
#[derive(Debug, Default, Clone, Copy)]
struct LossSums {
    pg: f64,
    kl: f64,
    clip_frac: f64,
    ntp: f64,
}

impl std::ops::AddAssign for LossSums {
    fn add_assign(&mut self, o: LossSums) {
        self.pg += o.pg;
        self.kl += o.kl;
        self.clip_frac += o.clip_frac;
        self.ntp += o.ntp;
    }
}

/// Sums for the metrics of the first pass over the data (before any update of this step).
#[derive(Debug, Default)]
struct FirstPass {
    gap_sum: f64,
    gap_tokens: f64,
    ent_sum: f64,
    ent_tokens: f64,
    mismatch: Option<rlpo_algo::MismatchStats>,
}

impl FirstPass {
    /// Sum (and for the largest gap, maximise) the statistics over ranks.
    fn all_reduce(&mut self, dist: &Dist) -> Result<()> {
        let mm = self.mismatch.unwrap_or_default();
        let mut sums = [self.gap_sum, self.gap_tokens, self.ent_sum, self.ent_tokens, mm.k3_sum, mm.tokens, f64::from(u8::from(self.mismatch.is_some()))];
        dist.sum_f64("first-pass statistics", &mut sums)?;
        let mut max = [mm.max_abs];
        dist.max_f64("largest log-prob mismatch", &mut max)?;
        [self.gap_sum, self.gap_tokens, self.ent_sum, self.ent_tokens] = [sums[0], sums[1], sums[2], sums[3]];
        self.mismatch = (sums[6] > 0.0).then_some(rlpo_algo::MismatchStats { k3_sum: sums[4], tokens: sums[5], max_abs: max[0] });
        Ok(())
    }
}

/// RMT: the groups whose NTP sequence belongs to the mini-batch of rows `m0..m0+m_len`: those
/// whose *first* row lies in it. A group split across two mini-batches (`mini_batch_rows` not a
/// multiple of G) is counted once, by the mini-batch where it starts.
fn ntp_groups(m0: i64, m_len: i64, g: i64) -> std::ops::Range<usize> {
    let first_row_group = |row: i64| ((row + g - 1) / g) as usize;
    first_row_group(m0)..first_row_group(m0 + m_len)
}

/// Log-probs (and optionally entropies) `[rows, T]` of `targets [rows, T]` under `model`, where
/// the hidden state predicting `targets[:, t]` sits at column `first + t` of `ids [rows, S]`.
/// The vocabulary projection runs in chunks of positions (`opts.chunk_positions`), so the full
/// `[rows, T, V]` logits never exist at once.
pub fn teacher_forced(model: &CausalLm, ids: &Tensor, mask: &Tensor, first: i64, targets: &Tensor, opts: &LogProbOptions) -> Result<TokenLogProbs> {
    let (rows, t) = (targets.size()[0], targets.size()[1]);
    let hidden = model.hidden_states(ids, mask).narrow(1, first, t);
    let flat = hidden.reshape([rows * t, -1]);
    Ok(token_logprobs_with(rows, t, targets, opts, |s, l| Ok(model.logits(&flat.narrow(0, s, l))))?)
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
    /// When set, [`Learner::update`] appends a record of every optimizer step (log-probs, π_old,
    /// loss gradient per token; see [`crate::step_record`]). `None`: nothing is kept.
    pub(crate) trace: Option<Vec<OptimizerStepRecord>>,
}

impl Learner {
    /// Wrap `model` with a fresh optimizer (and `trainer.activation_checkpointing` applied).
    pub fn new(mut model: CausalLm, recipe: &Recipe, reference: Option<CausalLm>) -> Self {
        model.set_activation_checkpointing(recipe.trainer.activation_checkpointing);
        // With `[model.lora]` the adapters alone (fp32); otherwise every trainable parameter.
        let opt = AdamW::new(model.trainable_variables(), recipe.optim.clone());
        Learner { model, opt, reference, nonfinite_in_a_row: 0, trace: None }
    }

    /// Log-probs (and optionally entropies) `[n, T_k]` of `targets` for rows `idx` of `batch`
    /// (T_k = their longest response): packed without padding when `trainer.packed_rows`
    /// (each prompt once with `trainer.shared_prompt`, [`crate::packed_rows`]), otherwise padded.
    pub fn forward_rows(model: &CausalLm, batch: &LearnerBatch, idx: &[i64], opts: &LogProbOptions, recipe: &Recipe) -> Result<(TokenLogProbs, i64)> {
        if !recipe.trainer.packed_rows {
            return Self::forward_rows_padded(model, batch, idx, opts);
        }
        let plan = PackPlan::new(batch, idx, recipe.trainer.shared_prompt)?;
        Ok((plan.forward(model, batch, opts)?, plan.t_k))
    }

    /// Log-probs (and optionally entropies) `[n, T_k]` of `targets` for rows `idx` of `batch`,
    /// padded and trimmed to those rows' longest prompt and response. Returns `(out, T_k)`.
    pub fn forward_rows_padded(model: &CausalLm, batch: &LearnerBatch, idx: &[i64], opts: &LogProbOptions) -> Result<(TokenLogProbs, i64)> {
        let device = batch.ids.device();
        let index = Tensor::from_slice(idx).to_device(device);
        let p_k = idx.iter().map(|&i| batch.prompt_lens[i as usize]).max().unwrap_or(1).max(1);
        let t_k = idx.iter().map(|&i| batch.response_lens[i as usize]).max().unwrap_or(1).max(1);
        let start = batch.prompt_width - p_k;
        let ids = batch.ids.index_select(0, &index).narrow(1, start, p_k + t_k);
        let mask = batch.attention_mask.index_select(0, &index).narrow(1, start, p_k + t_k);
        let targets = batch.targets.index_select(0, &index).narrow(1, 0, t_k);
        let out = teacher_forced(model, &ids, &mask, p_k - 1, &targets, opts)?;
        Ok((out, t_k))
    }

    /// No-grad log-probs and entropies `[N, T]` of every row under `model` (old or reference policy).
    pub fn score_all(model: &CausalLm, batch: &LearnerBatch, recipe: &Recipe) -> Result<(Tensor, Tensor)> {
        let rows: Vec<i64> = (0..batch.rows()).collect();
        Self::score_rows(model, batch, recipe, &rows)
    }

    /// [`Self::score_all`] for a rank whose local rows sit at global rows `global` (ascending):
    /// the forwards follow the global micro-batch boundaries, as in the 1-rank run.
    pub fn score_rows(model: &CausalLm, batch: &LearnerBatch, recipe: &Recipe, global: &[i64]) -> Result<(Tensor, Tensor)> {
        let (n, t) = (batch.rows(), batch.response_width());
        if n == 0 {
            let z = batch.response_mask.zeros_like();
            return Ok((z.shallow_clone(), z));
        }
        let opts = LogProbOptions {
            temperature: recipe.rollout.temperature,
            chunk_positions: recipe.trainer.logit_chunk_positions,
            with_entropy: true,
        };
        let all = vec![true; n as usize];
        tch::no_grad(|| {
            let mut lps = Vec::new();
            let mut ents = Vec::new();
            for (s, len) in score_micro_batches(recipe, batch, global, n, &all) {
                let idx: Vec<i64> = (s..s + len).collect();
                let (out, t_k) = Self::forward_rows(model, batch, &idx, &opts, recipe)?;
                let pad = t - t_k;
                lps.push(out.logp.pad([0, pad], "constant", 0.0));
                ents.push(out.entropy.expect("requested").pad([0, pad], "constant", 0.0));
            }
            let m = &batch.response_mask;
            Ok((Tensor::cat(&lps, 0) * m, Tensor::cat(&ents, 0) * m))
        })
    }

    /// Run every optimizer step of one training step. `old_logp [N, T]` is the behaviour policy's.
    /// With several ranks every rank must call it (see the module docs).
    pub fn update(&mut self, ctx: &UpdateInputs, opt_step_total: u64) -> Result<UpdateReport> {
        let recipe = ctx.recipe;
        let sh = &ctx.shard;
        let n = sh.global_rows;
        let mini = recipe.mini_batch_rows() as i64;
        let row_keep: Vec<bool> =
            Vec::try_from(&ctx.plan.loss_mask.sum_dim_intlist(-1, false, Kind::Float).gt(0.0).to_device(tch::Device::Cpu))?;
        let mut rep = UpdateReport::default();
        let mut first = FirstPass::default();
        let mut applied = 0.0;
        for epoch in 0..recipe.trainer.ppo_epochs {
            for g0 in (0..n).step_by(mini as usize) {
                // The last mini-batch may be short: a DAPO step with `on_exhausted =
                // "train_available"` trains on fewer than B groups.
                let g_len = mini.min(n - g0);
                let local = sh.local(g0, g0 + g_len);
                let (m0, m_len) = (local.start, local.end - local.start);
                // The optimizer step's normaliser and NTP token count, over every rank's rows.
                let own = if m_len > 0 { ctx.plan.normaliser(m0, m_len) } else { rlpo_algo::LossNormaliser::default() };
                let own_ntp: f64 = Self::ntp_seqs(ctx, m0, m_len).iter().map(|q| q.tokens()).sum();
                let mut counts = [own.tokens, own.rows, own_ntp];
                sh.dist.sum_f64("the loss normaliser", &mut counts)?;
                let norm = rlpo_algo::LossNormaliser { tokens: counts[0], rows: counts[1] };
                let step_ntp = counts[2];
                // A mini-batch with no RL token still trains its NTP tokens (each enters once).
                if norm.is_empty() && step_ntp <= 0.0 {
                    rep.skipped_empty += 1;
                    continue;
                }
                self.opt.zero_grad();
                let mut sums = LossSums::default();
                let mut micro_records = Vec::new();
                for (u0, u_len) in local_micro_batches(recipe, ctx.batch, sh, (g0, g_len), (m0, m_len), &row_keep) {
                    let kept: Vec<i64> = (u0..u0 + u_len).filter(|&i| row_keep[i as usize]).collect();
                    if !kept.is_empty() {
                        let fp = (epoch == 0).then_some(&mut first);
                        let (s, record) = self.micro_batch_backward(ctx, u0, u_len, &kept, &norm, fp)?;
                        sums += s;
                        micro_records.extend(record);
                    }
                }
                sums += self.ntp_backward(ctx, m0, m_len, step_ntp)?;
                if epoch == 0 && recipe.algorithm.rmt.is_some() {
                    rep.ntp_tokens += step_ntp;
                }
                if sh.dist.is_distributed() {
                    self.all_reduce(sh.dist, &mut sums)?;
                }
                let applied_now = self.apply_optimizer_step(recipe, &sums, opt_step_total, &mut rep)?;
                if applied_now {
                    applied += 1.0;
                }
                if let Some(trace) = self.trace.as_mut() {
                    trace.push(OptimizerStepRecord {
                        epoch,
                        rows: m0..m0 + m_len,
                        micro: micro_records,
                        pg_loss: sums.pg,
                        kl: sums.kl,
                        clip_frac: sums.clip_frac,
                        applied: applied_now,
                    });
                }
            }
        }
        if applied > 0.0 {
            rep.grad_norm /= applied;
            rep.pg_loss /= applied;
            rep.clip_frac /= applied;
            if let Some(k) = rep.kl.as_mut() {
                *k /= applied;
            }
            if let Some(k) = rep.ntp_loss.as_mut() {
                *k /= applied;
            }
        }
        if sh.dist.is_distributed() {
            first.all_reduce(sh.dist)?;
        }
        rep.logprob_gap = (first.gap_tokens > 0.0).then(|| first.gap_sum / first.gap_tokens);
        rep.mismatch = first.mismatch;
        rep.entropy = (first.ent_tokens > 0.0).then(|| first.ent_sum / first.ent_tokens);
        Ok(rep)
    }

    /// The trainable parameters, by name (the same order on every rank).
    fn trainable(&self) -> Vec<Tensor> {
        // With `[model.lora]` the adapters (their own var store), otherwise the model's parameters.
        let mut v: Vec<(String, Tensor)> = self.model.trainable_variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t).collect()
    }

    /// Sum this optimizer step's gradients and loss values over ranks. A rank that has not run
    /// a backward yet (no rows of its own so far) gets zero gradients first, so every rank
    /// reduces the same tensors.
    fn all_reduce(&self, dist: &Dist, sums: &mut LossSums) -> Result<()> {
        let params = self.trainable();
        let missing: Vec<&Tensor> = params.iter().filter(|p| !p.grad().defined()).collect();
        if !missing.is_empty() {
            let zero = missing.iter().map(|p| p.sum(Kind::Float) * 0.0).fold(Tensor::zeros([], (Kind::Float, self.model.device())), |a, b| a + b);
            zero.backward();
        }
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        dist.all_reduce_grads(&grads, GRAD_BUCKET_BYTES, GradReduce::Sum)?;
        let mut v = [sums.pg, sums.kl, sums.clip_frac, sums.ntp];
        dist.sum_f64("loss values", &mut v)?;
        [sums.pg, sums.kl, sums.clip_frac, sums.ntp] = v;
        Ok(())
    }

    /// Forward the `kept` rows of micro-batch `u0..u0+micro`, compute its loss with the optimizer
    /// step's normaliser and back-propagate it. Rows outside `kept` get the old log-prob (ratio 1)
    /// and carry zero loss weight, so they are never run through the model. With a trace, also
    /// returns the micro-batch's record.
    fn micro_batch_backward(
        &self,
        ctx: &UpdateInputs,
        u0: i64,
        micro: i64,
        kept: &[i64],
        norm: &rlpo_algo::LossNormaliser,
        first_pass: Option<&mut FirstPass>,
    ) -> Result<(LossSums, Option<MicroBatchRecord>)> {
        let (recipe, batch) = (ctx.recipe, ctx.batch);
        let need_entropy = matches!(&recipe.algorithm.hapo, Some(h) if h.stats_scope == rlpo_algo::config::HapoStatsScope::MicroBatch);
        // The current policy's entropy costs a second pass over V per position: only when HAPO
        // needs it (micro-batch statistics) or the recipe asks for the metric.
        let opts = LogProbOptions {
            temperature: recipe.rollout.temperature,
            chunk_positions: recipe.trainer.logit_chunk_positions,
            with_entropy: need_entropy || recipe.metrics.actor_entropy,
        };
        // LoRA dropout applies in this forward only (not in scoring or rollout forwards).
        self.model.set_lora_training(true);
        let fwd = Self::forward_rows(&self.model, batch, kept, &opts, recipe);
        self.model.set_lora_training(false);
        let (out, t_k) = fwd?;
        let t = batch.response_width();
        let index = Tensor::from_slice(kept).to_device(batch.ids.device());
        let local = &index - u0;
        let logp_k = out.logp.pad([0, t - t_k], "constant", 0.0);
        let old = match ctx.old_logp {
            OldLogp::Given(o) => o.narrow(0, u0, micro),
            // Rows outside `kept` carry no loss weight; the rollout's values only fill them.
            OldLogp::CurrentDetached => batch.rollout_logp.narrow(0, u0, micro).index_copy(0, &local, &logp_k.detach()),
        };
        let logp = old.detach().index_copy(0, &local, &logp_k);
        let mb = ctx.plan.micro_batch(u0, micro);
        let entropy_k = out.entropy.as_ref().map(|e| e.pad([0, t - t_k], "constant", 0.0));
        if let Some(fp) = first_pass {
            let lm_k = mb.loss_mask.index_select(0, &local);
            // The gap is always against what the rollout recorded (its kernels, its weights).
            let old_k = batch.rollout_logp.index_select(0, &index);
            fp.gap_sum += ((logp_k.detach() - &old_k).abs() * &lm_k).sum(Kind::Double).double_value(&[]);
            fp.gap_tokens += lm_k.sum(Kind::Double).double_value(&[]);
            if matches!(ctx.old_logp, OldLogp::CurrentDetached) {
                // These log-probs are π_old itself: measure it against the rollout's.
                let rm_k = mb.response_mask.index_select(0, &local);
                let s = rlpo_algo::rollout_corr::mismatch_stats(&logp_k, &old_k, &rm_k)?;
                fp.mismatch = Some(fp.mismatch.map_or(s, |a| a + s));
            }
            if let Some(e) = &entropy_k {
                fp.ent_sum += (e * &lm_k).sum(Kind::Double).double_value(&[]);
                fp.ent_tokens += lm_k.sum(Kind::Double).double_value(&[]);
            }
        }
        let entropy = match (&entropy_k, need_entropy) {
            (Some(e), true) => Some(batch.rollout_entropy.narrow(0, u0, micro).index_copy(0, &local, e)),
            _ => None,
        };
        let rl = ctx.ref_logp.map(|r| r.narrow(0, u0, micro));
        let inputs = compose::PolicyInputs { logp: &logp, old_logp: &old, ref_logp: rl.as_ref(), entropy: entropy.as_ref() };
        let loss = compose::policy_loss(&recipe.algorithm, &recipe.loss, &mb, &inputs, norm)?;
        // Traced: ∂loss/∂logp per token (autograd.grad keeps the graph and leaves the parameters'
        // gradients alone, so the update is the same with and without the trace).
        let record = self.trace.is_some().then(|| {
            let grad = Tensor::run_backward(&[&loss.loss], &[&logp], true, false).remove(0);
            MicroBatchRecord { rows: u0..u0 + micro, logp: logp.detach().copy(), old_logp: old.detach().copy(), grad }
        });
        loss.loss.backward();
        self.model.backward_checkpointed(); // the layers' share when activations are recomputed
        let sums = LossSums {
            pg: loss.pg_loss.double_value(&[]),
            kl: loss.kl.as_ref().map_or(0.0, |k| k.double_value(&[])),
            clip_frac: loss.clip_frac.double_value(&[]),
            ..Default::default()
        };
        Ok((sums, record))
    }

    /// RMT: add `λ·L_NTP` of the NTP sequences of the groups in (local) rows `m0..m0+m_len` to
    /// this optimizer step's gradient, normalised over the step's NTP tokens `step_tokens` (all
    /// ranks). Sequences are right-padded `[k, S]` and run `micro_batch_rows` at a time.
    fn ntp_backward(&self, ctx: &UpdateInputs, m0: i64, m_len: i64, step_tokens: f64) -> Result<LossSums> {
        let Some(cfg) = ctx.recipe.algorithm.rmt.as_ref() else { return Ok(LossSums::default()) };
        let seqs = Self::ntp_seqs(ctx, m0, m_len);
        if step_tokens <= 0.0 || seqs.is_empty() {
            return Ok(LossSums::default());
        }
        let device = self.model.device();
        let micro = ctx.recipe.micro_batch_rows().max(1);
        let opts = LogProbOptions { temperature: 1.0, chunk_positions: ctx.recipe.trainer.logit_chunk_positions, with_entropy: false };
        let mut total = 0.0;
        for chunk in seqs.chunks(micro) {
            let k = chunk.len();
            let s = chunk.iter().map(|q| q.ids.len()).max().unwrap_or(2).max(2);
            let mut ids = vec![0i64; k * s];
            let mut attn = vec![0i64; k * s];
            let mut mask = vec![0f32; k * (s - 1)];
            for (r, q) in chunk.iter().enumerate() {
                ids[r * s..r * s + q.ids.len()].copy_from_slice(&q.ids);
                attn[r * s..r * s + q.ids.len()].fill(1);
                mask[r * (s - 1)..r * (s - 1) + q.mask.len()].copy_from_slice(&q.mask);
            }
            let (k, s) = (k as i64, s as i64);
            let ids = Tensor::from_slice(&ids).view([k, s]).to_device(device);
            let attn = Tensor::from_slice(&attn).view([k, s]).to_device(device);
            let mask = Tensor::from_slice(&mask).view([k, s - 1]).to_device(device);
            let out = teacher_forced(&self.model, &ids, &attn, 0, &ids.narrow(1, 1, s - 1), &opts)?;
            let loss = rlpo_algo::rmt::ntp_loss(&out.logp, &mask, cfg.ntp_weight, cfg.ntp_norm, step_tokens);
            loss.backward();
            self.model.backward_checkpointed();
            total += loss.double_value(&[]);
        }
        Ok(LossSums { ntp: total, ..Default::default() })
    }

    /// RMT: the NTP sequences of the mini-batch `m0..m0+m_len` (see [`ntp_groups`]).
    fn ntp_seqs<'a>(ctx: &UpdateInputs<'a>, m0: i64, m_len: i64) -> Vec<&'a NtpSeq> {
        if ctx.recipe.algorithm.rmt.is_none() {
            return Vec::new();
        }
        let r = ntp_groups(m0, m_len, ctx.recipe.rollout.group_size as i64);
        let r = r.start.min(ctx.ntp.len())..r.end.min(ctx.ntp.len());
        ctx.ntp[r].iter().flatten().collect()
    }

    /// Clip and apply the accumulated gradients, or skip a non-finite step. Returns whether the
    /// step was applied.
    fn apply_optimizer_step(&mut self, recipe: &Recipe, sums: &LossSums, total: u64, rep: &mut UpdateReport) -> Result<bool> {
        let gn = self.opt.grad_norm();
        if !gn.is_finite() || !sums.pg.is_finite() || !sums.ntp.is_finite() {
            rep.skipped_nonfinite += 1;
            self.nonfinite_in_a_row += 1;
            self.opt.zero_grad();
            return Ok(false);
        }
        self.nonfinite_in_a_row = 0;
        self.opt.clip_grad(gn, recipe.optim.grad_clip)?;
        let lr = learning_rate(&recipe.optim, self.opt.step, total);
        self.opt.step(lr)?;
        if self.model.lora().is_some() {
            // The rollout, the export and other kernels read the merged weights.
            self.model.merge_lora()?;
        }
        rep.lr = lr;
        rep.applied += 1;
        rep.grad_norm += gn;
        rep.pg_loss += sums.pg;
        rep.clip_frac += sums.clip_frac;
        if recipe.algorithm.rmt.is_some() && sums.ntp != 0.0 {
            *rep.ntp_loss.get_or_insert(0.0) += sums.ntp;
        }
        if recipe.loss.kl_coef > 0.0 {
            *rep.kl.get_or_insert(0.0) += sums.kl;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::ntp_groups;

    /// For every mini-batch size that divides the rows, the NTP groups of the mini-batches are a
    /// partition of all groups: each group's NTP sequence enters one optimizer step.
    #[test]
    fn ntp_groups_partition_the_step() {
        for g in 1..=5i64 {
            for b in 1..=4i64 {
                let n = b * g;
                for mini in (1..=n).filter(|m| n % m == 0) {
                    let mut seen = vec![0; b as usize];
                    for m0 in (0..n).step_by(mini as usize) {
                        for grp in ntp_groups(m0, mini, g) {
                            seen[grp] += 1;
                            assert!(grp as i64 * g >= m0 && (grp as i64 * g) < m0 + mini, "group {grp} starts outside");
                        }
                    }
                    assert!(seen.iter().all(|&c| c == 1), "G {g} B {b} mini {mini}: {seen:?}");
                }
            }
        }
    }
}
