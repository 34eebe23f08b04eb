//! Data parallelism in the training step: what each rank holds and what the ranks agree on.
//! Every collective goes through [`crate::dist::Dist`]; for one process each helper here is the
//! identity and issues none.
//!
//! - Prompts: every rank draws the step's whole global batch (so the data cursor and RMT's
//!   sampler stay global and identical) and rolls out its contiguous part
//!   ([`crate::dist::shard_range`]); rollout seeds use the prompt's global index, so a group's
//!   samples do not depend on which rank generated it.
//! - [`GroupLedger`]: after each generation batch the ranks gather their kept-group counts, so
//!   the DAPO filter's keep count, refill decision and truncation to B groups, and a stop request
//!   during a refill, are the same on every rank, and each local group knows its index in the
//!   global group order (the order the 1-rank run trains in).
//! - Metrics: counts summed over ranks ([`SUMMED`]); the per-row metrics come from the global
//!   view of `dp_rows.rs`.
//! - Checkpoints: rank 0 writes; the prefetched rollout (`max_staleness = 1`), spread over the
//!   ranks, is gathered into the global one a 1-rank run would hold ([`Trainer::save_checkpoint`]),
//!   and each rank takes its part back on resume ([`local_prefetch`]).
//! - Stop requests: [`Trainer::agreed_stop`] takes the maximum of the ranks' flags at the step
//!   boundary, so no rank enters a step the others left.

use super::{Prefetched, Trainer};
use crate::checkpoint::{self, TrainerState};
use crate::dist::{shard_range, Dist};
use crate::error::{Result, TrainError};
use crate::metrics::StepMetrics;
use crate::prompts::PromptBatch;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// Metrics that count rows, tokens or events of this rank: the global value is the sum over ranks.
pub const SUMMED: [&str; 9] = [
    "perf/rollout_tokens",
    "filter/gen_prompts",
    "filter/dropped_groups",
    "rmt/ntp_seqs",
    "rmt/ntp_tokens",
    "reward/zero_std_groups",
    "reward/scored_groups",
    "reward/failed_rows",
    "reward/scored_rows",
];

/// Where this rank's accumulated groups sit in the step's global group order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupLedger {
    /// Global group index of each local group (ascending: generation batches in order, and
    /// within one the ranks' parts in rank order).
    pub global: Vec<usize>,
    /// Groups kept so far over all ranks.
    pub total: usize,
}

impl GroupLedger {
    /// After a generation batch in which this rank kept `kept` groups (appended to its list):
    /// every rank's count and stop flag, gathered. Returns the global count so far and whether
    /// any rank was asked to stop.
    pub fn add(&mut self, dist: &Dist, kept: usize, stop: bool) -> Result<(usize, bool)> {
        let all = dist.all_gather_f64("kept groups and stop flags", &[kept as f64, f64::from(u8::from(stop))])?;
        let counts: Vec<usize> = all.iter().map(|v| v[0] as usize).collect();
        let stop_any = all.iter().any(|v| v[1] > 0.0);
        let before: usize = counts[..dist.rank()].iter().sum();
        let first = self.total + before;
        self.global.extend(first..first + kept);
        self.total += counts.iter().sum::<usize>();
        Ok((self.total, stop_any))
    }

    /// Keep the first `n` groups of the global order; returns how many of this rank's groups
    /// remain (a prefix of its list, which is ascending).
    pub fn truncate(&mut self, n: usize) -> usize {
        self.global.retain(|&i| i < n);
        self.total = self.total.min(n);
        self.global.len()
    }

    /// Global row of each local row (`g` rows per group): `[n]`, ascending.
    pub fn row_positions(&self, g: usize) -> Vec<i64> {
        self.global.iter().flat_map(|&i| (i * g..(i + 1) * g).map(|r| r as i64)).collect()
    }
}

/// This rank's part of a prefetched rollout saved whole (in a checkpoint): its prompts and
/// groups ([`shard_range`] of the generation batch). One process takes all of it.
pub fn local_prefetch(p: &Prefetched, rank: usize, world: usize) -> Prefetched {
    if world <= 1 {
        return p.clone();
    }
    let part = shard_range(p.prompts.len(), rank, world);
    let keep: Vec<bool> = (0..p.prompts.len()).map(|i| part.contains(&i)).collect();
    let mut prompts = p.prompts.clone();
    prompts.retain(&keep);
    let batch = p.batch.as_ref().map(|b| {
        let groups = b.groups[part.start.min(b.groups.len())..part.end.min(b.groups.len())].to_vec();
        let tokens = groups.iter().flat_map(|g| &g.completions).map(|c| c.tokens.len()).sum();
        rlpo_rollout::RolloutBatch { groups, stats: rlpo_rollout::RolloutStats { tokens, ..b.stats } }
    });
    Prefetched { step: p.step, prompts, batch, job: None, drawn_from: None }
}

/// The global prefetched rollout from every rank's part (in rank order), for a checkpoint.
fn merge_prefetch(parts: Vec<Option<Prefetched>>) -> Result<Option<Prefetched>> {
    let present = parts.iter().filter(|p| p.is_some()).count();
    if present == 0 {
        return Ok(None);
    }
    if present != parts.len() {
        return Err(TrainError::Aborted(format!("internal: {present} of {} ranks hold a prefetched rollout", parts.len())));
    }
    let mut parts = parts.into_iter().flatten();
    let mut all = parts.next().expect("present > 0");
    for p in parts {
        if p.step != all.step {
            return Err(TrainError::Aborted(format!("internal: prefetched rollouts for steps {} and {} on different ranks", all.step + 1, p.step + 1)));
        }
        all.prompts.extend(p.prompts);
        match (all.batch.as_mut(), p.batch) {
            (Some(a), Some(b)) => {
                a.groups.extend(b.groups);
                a.stats.tokens += b.stats.tokens;
            }
            _ => return Err(TrainError::Aborted("internal: checkpoint with a rollout still running (call finish_prefetch first)".into())),
        }
    }
    all.drawn_from = None;
    Ok(Some(all))
}

/// The prompts `part` of a generation batch (this rank's share of it).
pub(crate) fn prompt_slice(mut b: PromptBatch, part: std::ops::Range<usize>) -> PromptBatch {
    if part.start == 0 && part.end >= b.len() {
        return b;
    }
    let keep: Vec<bool> = (0..b.len()).map(|i| part.contains(&i)).collect();
    b.retain(&keep);
    b
}

/// Every rank's part of a generation batch's prompts (from [`Trainer::draw_prompts`]),
/// concatenated in rank order: the whole batch, the same on every rank. Each rank renders (and
/// for RMT mid-training, scores) only its part; the others are gathered.
pub(crate) fn gather_prompts(dist: &Dist, part: PromptBatch) -> Result<PromptBatch> {
    if !dist.is_distributed() {
        return Ok(part);
    }
    let mine = serde_json::to_vec(&part).map_err(|e| TrainError::Aborted(format!("internal: prompts: {e}")))?;
    let parts = dist.all_gather_bytes("the generation batch's prompts", &mine)?;
    let mut all: Option<PromptBatch> = None;
    for (r, bytes) in parts.iter().enumerate() {
        let p: PromptBatch = serde_json::from_slice(bytes).map_err(|e| TrainError::Aborted(format!("internal: the prompts of rank {r}: {e}")))?;
        match all.as_mut() {
            None => all = Some(p),
            Some(a) => a.extend(p),
        }
    }
    Ok(all.expect("at least one rank"))
}

impl Trainer {
    /// The next `n` prompts, whole: this rank draws all and renders its part
    /// ([`Trainer::draw_prompts`]), and the parts are gathered ([`gather_prompts`]).
    pub(crate) fn draw_global(&mut self, n: usize, step: u64) -> Result<PromptBatch> {
        let part = self.draw_prompts(n, step)?;
        gather_prompts(&self.dist, part)
    }

    /// This rank's part of `n` prompts of a generation batch.
    pub(crate) fn prompt_part(&self, n: usize) -> std::ops::Range<usize> {
        shard_range(n, self.dist.rank(), self.dist.world())
    }

    /// Whether to stop before the next step: this process's flag, or with several ranks the
    /// maximum over the ranks' flags (a Ctrl-C seen by one rank stops them all at the same
    /// step boundary).
    pub(crate) fn agreed_stop(&self) -> Result<bool> {
        let mut v = [f64::from(u8::from(self.stop.load(Ordering::SeqCst)))];
        self.dist.max_f64("stop flags at the step boundary", &mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Whether any row of the step (on any rank) is stale, and the largest staleness.
    pub(crate) fn global_staleness(&self, versions: &[u64]) -> Result<(bool, u64)> {
        let stale = versions.iter().map(|&v| self.version - v).max().unwrap_or(0);
        let mut v = [stale as f64];
        self.dist.max_f64("staleness of the step's rows", &mut v)?;
        Ok((v[0] > 0.0, v[0] as u64))
    }

    /// With several ranks: sum the [`SUMMED`] metrics over ranks, and keep the global reward
    /// counters (metrics and checkpoints report those).
    pub(crate) fn globalize_metrics(&mut self, m: &mut StepMetrics) -> Result<()> {
        if !self.dist.is_distributed() {
            return Ok(());
        }
        let c = self.rewards.set().metrics();
        let mut v: Vec<f64> = SUMMED.iter().map(|k| m.get(k).unwrap_or(0.0)).collect();
        v.extend([c.samples, c.errors, c.timeouts, c.restarts].map(|x| x as f64));
        self.dist.sum_f64("step metrics", &mut v)?;
        for (k, x) in SUMMED.iter().zip(&v) {
            if m.get(k).is_some() {
                m.set(k, *x);
            }
        }
        let n = SUMMED.len();
        let totals = [v[n], v[n + 1], v[n + 2], v[n + 3]].map(|x| x as u64);
        for ((k, _), x) in c.scalars().iter().zip(totals) {
            if m.get(k).is_some() {
                m.set(k, x as f64);
            }
        }
        self.reward_totals = Some(totals);
        Ok(())
    }

    /// The cumulative reward counters `(samples, errors, timeouts, restarts)` of the run: this
    /// process's, or with several ranks the sums as of the last completed step.
    pub fn reward_counters(&self) -> [u64; 4] {
        match self.reward_totals {
            Some(t) if self.dist.is_distributed() => t,
            _ => {
                let m = self.rewards.set().metrics();
                [m.samples, m.errors, m.timeouts, m.restarts]
            }
        }
    }

    /// Save a checkpoint of the current (completed) step: waits for a running prefetch; with
    /// several ranks gathers every rank's state (every rank must call this): the prefetched
    /// rollout's parts are merged into the whole one, and the rest (step, weight version, data
    /// cursor, RMT's sampler, optimizer step) must be rank 0's on every rank, or the save fails
    /// naming the rank. Rank 0 writes. Returns the checkpoint's path (on every rank).
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        self.finish_prefetch()?;
        let mut state = checkpoint::state_of(self);
        if self.dist.is_distributed() {
            let shared = |st: &TrainerState| serde_json::json!([st.step, st.version, st.data_cursor, st.rmt_sampler, st.optimizer_step]);
            let mine = serde_json::to_vec(&(&self.prefetched, shared(&state))).map_err(|e| TrainError::Aborted(format!("rank state: {e}")))?;
            let parts = self.dist.all_gather_bytes("every rank's state for the checkpoint", &mine)?;
            let mut prefetched = Vec::with_capacity(parts.len());
            for (r, b) in parts.iter().enumerate() {
                let (p, theirs): (Option<Prefetched>, serde_json::Value) =
                    serde_json::from_slice(b).map_err(|e| TrainError::Aborted(format!("the state of rank {r}: {e}")))?;
                if theirs != shared(&state) {
                    return Err(TrainError::Aborted(format!(
                        "internal: rank {r}'s [step, version, data cursor, RMT sampler, optimizer step] = {theirs} differs from rank {}'s {}",
                        self.dist.rank(),
                        shared(&state)
                    )));
                }
                prefetched.push(p);
            }
            state.prefetched = merge_prefetch(prefetched)?;
        }
        checkpoint::save_state(self, &state)
    }

    /// With several ranks, make a failed step's state savable by rank 0 alone (the other
    /// ranks may be gone): a prefetched rollout is spread over the ranks, so it is replaced by
    /// the whole one restored from the checkpoint this run resumed from, or left out with the
    /// data rewound to before its prompts were drawn. `None`: neither is possible.
    pub(crate) fn rank0_savable(&self, mut st: TrainerState, notes: &mut Vec<String>) -> Option<TrainerState> {
        if !self.dist.is_distributed() {
            return Some(st);
        }
        let Some(p) = st.prefetched.take() else { return Some(st) };
        let next = p.step + 1;
        if let Some(whole) = self.restored_prefetch.as_ref().filter(|w| w.step == p.step) {
            st.prefetched = Some(whole.clone());
            return Some(st);
        }
        let Some(from) = p.drawn_from.as_deref().cloned() else {
            notes.push(format!("the rollout prefetched for step {next} is spread over the ranks and its prompts' origin is unknown: no checkpoint"));
            return None;
        };
        notes.push(format!(
            "the rollout prefetched for step {next} is spread over the ranks, so the checkpoint leaves it out: on resume step {next} draws the same prompts again and generates them with the weights of step {} (one step fresher than an uninterrupted run)",
            st.step
        ));
        (st.data_cursor, st.rmt_sampler) = from;
        Some(st)
    }
}

/// Test hook: with `RLPO_TEST_PLAN_LOG=FILE`, rank 0 appends one JSON line per step with the
/// global plan's decisions (rewards, advantages, kept rows and the flat indices of the loss
/// mask's kept cells in `[N, width]`), so that tests can compare what N ranks select with what
/// one process selects.
pub(crate) fn log_plan_for_tests(dist: &Dist, step: u64, scores: &[f64], plan: &rlpo_algo::StepPlan) -> Result<()> {
    let Ok(path) = std::env::var("RLPO_TEST_PLAN_LOG") else { return Ok(()) };
    if !dist.is_main() {
        return Ok(());
    }
    let host = |t: &tch::Tensor| t.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Double).reshape([-1]);
    let cells: Vec<f64> = Vec::try_from(host(&plan.loss_mask))?;
    let kept: Vec<f64> = Vec::try_from(host(&plan.row_keep))?;
    let adv: Vec<f64> = Vec::try_from(host(&plan.advantages))?;
    let line = serde_json::json!({
        "step": step,
        "rewards": scores,
        "advantages": adv,
        "kept_rows": kept.iter().map(|&k| k > 0.0).collect::<Vec<_>>(),
        "width": plan.loss_mask.size()[1],
        "kept_cells": cells.iter().enumerate().filter(|(_, &v)| v > 0.0).map(|(i, _)| i).collect::<Vec<_>>(),
    });
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| crate::error::io(&path, e))?;
    writeln!(f, "{line}").map_err(|e| crate::error::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_of_one_process_numbers_groups_in_order() {
        let d = Dist::single();
        let mut l = GroupLedger::default();
        assert_eq!(l.add(&d, 3, false).unwrap(), (3, false));
        assert_eq!(l.add(&d, 2, true).unwrap(), (5, true));
        assert_eq!(l.global, [0, 1, 2, 3, 4]);
        assert_eq!(l.truncate(4), 4);
        assert_eq!(l.row_positions(2), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(d.stats().calls, 0, "no collective for one process");
    }
}
