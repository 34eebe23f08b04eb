//! The device-resident decode loop of [`Engine::generate`] (`rollout.sampler = "device"`, or
//! `"auto"` on a CUDA model): logits never leave the device.
//!
//! 1. Prefill as on the host path; the first token of row `n` is sampled from its prompt's
//!    logits (`index_select` of `[P, V]` into `[N, V]`).
//! 2. Each decode step: `step_tensor(last ids [B])` → logits `[B, V]` → [`DeviceSampler`] with
//!    uniforms from the rows' stream keys `[B]` ([`uniforms`], bit-identical to the host's) →
//!    the sampled ids stay on the device as the next step's input. Stop ids (`isin`) and
//!    per-row limits (`count ≥ limit [B]`, the budget or `max_new_tokens` or the context) are
//!    evaluated on the device into a finish code per row.
//! 3. Every `rollout.device_sync_steps` steps the host reads one `[K, B, 6]` f64 block (id,
//!    logprob, base logprob, entropy, temperature, finish code), appends tokens to the rows in
//!    order, checks stop strings on the ids (the only host-side stop rule), and marks rows
//!    finished at the first stop; tokens a finished row drew after that are dropped (they cost a
//!    few steps of compute, never a different result: every draw is a function of the row's key
//!    and position alone). Compaction happens at these reads. Steps are never issued past the
//!    longest remaining row limit, so the cache capacity of the host path suffices.
//!
//! Per step the host enqueues kernels and nothing waits for the device, except at the block read.

use crate::device_sampler::{uniforms, DeviceSampler};
use crate::engine::{left_pad, Engine, GenerateRequest, Row};
use crate::error::{Error, Result};
use crate::model::RolloutModel;
use crate::output::{FinishReason, RolloutStats};
use crate::sampler::{Sampler, TokenSample};
use crate::stop::StopStrings;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Finish codes written by the device.
const CONTINUE: i64 = 0;
const STOP_ID: i64 = 1;
const LIMIT: i64 = 2;

/// Columns of a step's record: id, 4 sample values, finish code.
const COLS: i64 = 6;

/// Device-side state of the rows in the decode batch.
struct Batch {
    /// Row indices (into the request's rows) in batch order.
    rows: Vec<usize>,
    /// Stream keys `[B]` i64.
    keys: Tensor,
    /// Token limits `[B]` i64.
    limits: Tensor,
    /// Last sampled ids `[B]` i64 (the next step's input).
    last: Tensor,
}

impl Batch {
    fn select(&self, keep: &[i64], device: Device) -> Batch {
        let idx = Tensor::from_slice(keep).to_device(device);
        Batch {
            rows: keep.iter().map(|&j| self.rows[j as usize]).collect(),
            keys: self.keys.index_select(0, &idx),
            limits: self.limits.index_select(0, &idx),
            last: self.last.index_select(0, &idx),
        }
    }
}

/// One step on the device: sample from `logits [B, V]` for token position `t` (0-based, so the
/// row holds `t + 1` tokens afterwards) and return `(ids [B], record [B, COLS] f64)`.
fn sample_step(ds: &DeviceSampler, logits: &Tensor, keys: &Tensor, limits: &Tensor, stop_ids: &Tensor, t: u64) -> (Tensor, Tensor) {
    let s = ds.sample(logits, &uniforms(keys, t));
    let stop = Tensor::isin(&s.tokens, stop_ids, false, false);
    let at_limit = limits.le((t + 1) as i64);
    let code = at_limit.to_kind(Kind::Int64) * LIMIT;
    let code = Tensor::full_like(&code, STOP_ID).where_self(&stop, &code);
    let record = Tensor::cat(&[s.tokens.unsqueeze(1).to_kind(Kind::Double), s.values.to_kind(Kind::Double), code.unsqueeze(1).to_kind(Kind::Double)], 1);
    (s.tokens, record)
}

impl Engine {
    /// [`Engine::generate`] with device-side sampling (see the module docs). Returns the rows
    /// with their completions and the stats.
    pub(crate) fn generate_on_device<M: RolloutModel + ?Sized>(
        &mut self,
        model: &M,
        req: &GenerateRequest,
        mut rows: Vec<Row>,
        stop: &StopStrings,
        stop_ids: &[i64],
        sampler: Sampler,
    ) -> Result<(Vec<Row>, RolloutStats)> {
        let p = &req.params;
        let device = model.device();
        let ds = DeviceSampler::new(sampler);
        let mut stats = RolloutStats { device_sampling: true, ..RolloutStats::default() };
        let stop_t = Tensor::from_slice(stop_ids).to_device(device);

        // 1. Prefill the unique prompts, left-padded.
        let t0 = Instant::now();
        let (ids, mask, width) = left_pad(&req.prompts);
        let (ids, mask) = (ids.to_device(device), mask.to_device(device));
        let max_limit = rows.iter().map(|r| r.limit).max().unwrap_or(1);
        // The last sampled token is never fed back, hence `- 1`.
        let capacity = (width + max_limit - 1) as i64;
        let (logits, mut cache) = model.prefill(&ids, &mask, capacity)?;
        let logits = logits.into_tensor().to_device(device);
        stats.prefill_s += t0.elapsed().as_secs_f64();

        // First token of every row from its prompt's logits.
        let t1 = Instant::now();
        let all: Vec<i64> = (0..rows.len() as i64).collect();
        let prompt_of: Vec<i64> = rows.iter().map(|r| r.prompt as i64).collect();
        let full = Batch {
            rows: (0..rows.len()).collect(),
            keys: Tensor::from_slice(&rows.iter().map(|r| r.rng.key as i64).collect::<Vec<_>>()).to_device(device),
            limits: Tensor::from_slice(&rows.iter().map(|r| r.limit as i64).collect::<Vec<_>>()).to_device(device),
            last: Tensor::zeros([rows.len() as i64], (Kind::Int64, device)),
        };
        let first = logits.index_select(0, &Tensor::from_slice(&prompt_of).to_device(device));
        let (tok, record) = sample_step(&ds, &first, &full.keys, &full.limits, &stop_t, 0);
        let mut batch = Batch { last: tok, ..full };
        stats.syncs += 1;
        self.absorb(&mut rows, &batch.rows, &[record], stop)?;
        stats.sample_s += t1.elapsed().as_secs_f64();

        // 2. Fan out the prompt cache into the rows that continue.
        let t2 = Instant::now();
        let keep: Vec<i64> = all.iter().copied().filter(|&j| !rows[j as usize].done).collect();
        if !keep.is_empty() {
            cache = cache.select_rows(&keep.iter().map(|&j| rows[j as usize].prompt as i64).collect::<Vec<_>>())?;
            batch = batch.select(&keep, device);
        }
        stats.prefill_s += t2.elapsed().as_secs_f64();

        // 3. Decode in blocks of `device_sync_steps`, reading back once per block.
        let compact_at = |len: usize| ((p.compact_fraction * len as f64).ceil() as usize).max(1);
        let mut tokens_so_far = 1usize; // every row of the batch holds this many tokens
        while !keep.is_empty() && batch.rows.iter().any(|&r| !rows[r].done) {
            let remaining = batch.rows.iter().filter(|&&r| !rows[r].done).map(|&r| rows[r].limit - tokens_so_far).max().unwrap_or(0);
            let k = p.device_sync_steps.max(1).min(remaining);
            if k == 0 {
                return Err(Error::Input("internal: a live row has no tokens left to generate".into()));
            }
            let t = Instant::now();
            let mut block = Vec::with_capacity(k);
            for _ in 0..k {
                let logits = model.step_tensor(&batch.last, &mut cache)?.into_tensor().to_device(device);
                let (tok, record) = sample_step(&ds, &logits, &batch.keys, &batch.limits, &stop_t, tokens_so_far as u64);
                batch.last = tok;
                block.push(record);
                tokens_so_far += 1;
            }
            stats.steps += k;
            stats.row_steps += k * batch.rows.len();
            let t_read = Instant::now();
            let before = batch.rows.iter().filter(|&&r| rows[r].done).count();
            self.absorb(&mut rows, &batch.rows, &block, stop)?;
            stats.syncs += 1;
            let done_now = batch.rows.iter().filter(|&&r| rows[r].done).count();
            stats.sample_s += t_read.elapsed().as_secs_f64();
            stats.decode_s += t_read.duration_since(t).as_secs_f64();
            if done_now == batch.rows.len() {
                break;
            }
            if p.compact_fraction < 1.0 && done_now > before && done_now >= compact_at(batch.rows.len()) {
                let t = Instant::now();
                let keep: Vec<i64> = (0..batch.rows.len() as i64).filter(|&j| !rows[batch.rows[j as usize]].done).collect();
                cache = cache.select_rows(&keep)?;
                batch = batch.select(&keep, device);
                stats.compactions += 1;
                stats.decode_s += t.elapsed().as_secs_f64();
            }
        }
        Ok((rows, stats))
    }

    /// Read a block of step records (`[B, COLS]` each, in step order) and append them to the
    /// unfinished rows of `batch`, finishing a row at its first stop id, stop string or limit.
    fn absorb(&self, rows: &mut [Row], batch: &[usize], block: &[Tensor], stop: &StopStrings) -> Result<()> {
        let b = batch.len();
        let host = Tensor::stack(block, 0).to_device(Device::Cpu);
        let n = block.len() * b * COLS as usize;
        let mut data = vec![0f64; n];
        host.f_copy_data(&mut data, n)?;
        for (j, &r) in batch.iter().enumerate() {
            for k in 0..block.len() {
                let row = &mut rows[r];
                if row.done {
                    break;
                }
                let at = (k * b + j) * COLS as usize;
                let rec = &data[at..at + COLS as usize];
                row.push(TokenSample {
                    token: rec[0] as i64,
                    logprob: rec[1] as f32,
                    base_logprob: rec[2] as f32,
                    entropy: rec[3] as f32,
                    temperature: rec[4] as f32,
                });
                let code = rec[5] as i64;
                let reason = if code == STOP_ID {
                    Some(FinishReason::Eos)
                } else if !stop.is_empty() && stop.hit(&row.out.tokens, self.detokenizer.as_deref().expect("checked in generate")) {
                    Some(FinishReason::Stop)
                } else if code == LIMIT {
                    Some(row.limit_reason)
                } else {
                    debug_assert_eq!(code, CONTINUE);
                    None
                };
                if let Some(reason) = reason {
                    row.out.finish_reason = reason;
                    row.done = true;
                }
            }
        }
        Ok(())
    }
}
