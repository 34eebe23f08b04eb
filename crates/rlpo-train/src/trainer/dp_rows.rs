//! The step's rows as one global batch, on every rank: what the step plan and the metrics read.
//!
//! With several ranks each holds its own rows (its groups, at the global positions its
//! [`GroupLedger`] records). The plan's decisions are global — D³S picks rows from the pool of
//! every group's advantages and a token budget over the whole batch, HAPO's statistics are
//! quantiles over every valid token — so the ranks all-gather the plan's per-row inputs (reward,
//! correctness, reward parts, length, truncation) and per-token inputs (entropy, and the
//! recomputed and rollout log-probs when the old policy was recomputed; valid tokens only), and
//! each rank rebuilds the global `[N, T]` tensors in the 1-rank run's row order. Every rank then
//! computes the same plan and keeps its rows ([`rlpo_algo::StepPlan::select_rows`]); rank 0's
//! metrics are those of the global batch. Cost per step: `N·(~40 bytes + parts)` plus 4 bytes (12
//! with recomputed log-probs) per valid token, sent to every rank: small next to the gradients.
//!
//! The payload is a little-endian byte string ([`Wire`]), exact for every value (NaN included).

use super::dp::GroupLedger;
use super::ScoredRollouts;
use crate::batch::LearnerBatch;
use crate::dist::Dist;
use crate::error::{Result, TrainError};
use crate::step_metrics::StepRows;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// The step's rows seen whole: per-row facts for the metrics and the plan's `[N, T]` inputs.
#[derive(Debug)]
pub struct StepView {
    /// Per-row facts (metrics; rewards).
    pub rows: StepRows,
    /// `[N, T]` f32.
    pub response_mask: Tensor,
    /// `[N, T]` f32: the old policy's entropies (the rollout's or recomputed).
    pub entropy: Tensor,
    /// `[N]` bool.
    pub truncated: Tensor,
    /// `[N, T]`: the recomputed old log-probs, when recomputed.
    pub old_logp: Option<Tensor>,
    /// `[N, T]`: the rollout's log-probs (with several ranks only when the old ones were recomputed:
    /// the plan reads them only then).
    pub rollout_logp: Option<Tensor>,
    /// Global row of each local row, `[n]` i64 on the learner's device; `None` for one process.
    pub local_rows: Option<Tensor>,
}

impl StepView {
    /// One process: its own batch is the global one.
    pub fn local(r: &ScoredRollouts, batch: &LearnerBatch, entropy: &Tensor, recomputed: Option<&Tensor>, samples: usize) -> StepView {
        StepView {
            rows: StepRows::local(r, batch, samples),
            response_mask: batch.response_mask.shallow_clone(),
            entropy: entropy.shallow_clone(),
            truncated: batch.truncated.shallow_clone(),
            old_logp: recomputed.map(Tensor::shallow_clone),
            rollout_logp: Some(batch.rollout_logp.shallow_clone()),
            local_rows: None,
        }
    }

    /// Several ranks: gather every rank's rows (see the module docs). Every rank must call it.
    pub fn gather(dist: &Dist, ledger: &GroupLedger, r: &ScoredRollouts, batch: &LearnerBatch, entropy: &Tensor, recomputed: Option<&Tensor>, samples: usize) -> Result<StepView> {
        let g = r.groups.first().map_or(0, |grp| grp.completions.len());
        let mine = encode(ledger, r, batch, entropy, recomputed, samples)?;
        let parts = dist.all_gather_bytes("the step's rows", &mine)?;
        let mut groups: Vec<Option<GroupRows>> = vec![None; ledger.total];
        let mut texts: BTreeMap<usize, (String, String, f64)> = BTreeMap::new();
        let with_logp = recomputed.is_some();
        for (rank, bytes) in parts.iter().enumerate() {
            decode(bytes, with_logp, &mut groups, &mut texts).map_err(|e| TrainError::Aborted(format!("internal: the step's rows from rank {rank}: {e}")))?;
        }
        let groups: Vec<GroupRows> = groups
            .into_iter()
            .enumerate()
            .map(|(i, grp)| grp.ok_or_else(|| TrainError::Aborted(format!("internal: no rank holds group {i} of {}", ledger.total))))
            .collect::<Result<_>>()?;
        let rows: Vec<&Row> = groups.iter().flat_map(|grp| &grp.0).collect();
        let device = batch.ids.device();
        let (n, t) = (rows.len(), rows.iter().map(|x| x.len).max().unwrap_or(1).max(1));
        let response_mask = matrix(n, t, device, |i, d| d[..rows[i].len].fill(1.0));
        let truncated: Vec<bool> = rows.iter().map(|x| x.truncated).collect();
        let local_rows = Tensor::from_slice(&ledger.row_positions(g.max(1))).to_device(device);
        Ok(StepView {
            rows: StepRows {
                scores: rows.iter().map(|x| x.score).collect(),
                correct: rows.iter().map(|x| x.correct).collect(),
                parts: rows.iter().map(|x| x.parts.clone()).collect(),
                lens: rows.iter().map(|x| x.len as f64).collect(),
                truncated: truncated.iter().map(|&b| f64::from(u8::from(b))).collect(),
                temperature_sum: rows.iter().map(|x| x.temperature_sum).sum(),
                temperature_tokens: rows.iter().map(|x| x.temperature_tokens).sum(),
                samples: texts.into_values().take(samples).collect(),
                // Summed over ranks with the other counts (dp::SUMMED).
                dropped_groups: r.dropped_groups as f64,
                gen_batches: r.gen_batches as f64,
            },
            response_mask,
            entropy: matrix(n, t, device, |i, d| d[..rows[i].len].copy_from_slice(&rows[i].entropy)),
            truncated: Tensor::from_slice(&truncated).to_device(device),
            old_logp: with_logp.then(|| matrix(n, t, device, |i, d| d[..rows[i].len].copy_from_slice(&rows[i].old_logp))),
            rollout_logp: with_logp.then(|| matrix(n, t, device, |i, d| d[..rows[i].len].copy_from_slice(&rows[i].rollout_logp))),
            local_rows: Some(local_rows),
        })
    }
}

/// One row as gathered.
#[derive(Debug, Clone, Default)]
struct Row {
    score: f64,
    correct: f64,
    len: usize,
    truncated: bool,
    /// Sum and count of the temperatures its tokens were drawn at.
    temperature_sum: f64,
    temperature_tokens: f64,
    parts: BTreeMap<String, f64>,
    entropy: Vec<f32>,
    old_logp: Vec<f32>,
    rollout_logp: Vec<f32>,
}

/// The rows of one group.
#[derive(Debug, Clone, Default)]
struct GroupRows(Vec<Row>);

/// `[n, t]` f32 on `device`, zero where `row(i, cells of row i)` writes nothing.
fn matrix(n: usize, t: usize, device: Device, row: impl Fn(usize, &mut [f32])) -> Tensor {
    let mut flat = vec![0f32; n * t];
    for (i, cells) in flat.chunks_mut(t).enumerate() {
        row(i, cells);
    }
    Tensor::from_slice(&flat).view([n as i64, t as i64]).to_device(device)
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::try_from(t.detach().to_kind(Kind::Float).to_device(Device::Cpu).reshape([-1]))?)
}

fn encode(ledger: &GroupLedger, r: &ScoredRollouts, batch: &LearnerBatch, entropy: &Tensor, recomputed: Option<&Tensor>, samples: usize) -> Result<Vec<u8>> {
    let t = batch.response_width() as usize;
    let ent = host(entropy)?;
    let logp = match recomputed {
        Some(lp) => Some((host(lp)?, host(&batch.rollout_logp)?)),
        None => None,
    };
    let truncated: Vec<bool> = Vec::try_from(batch.truncated.to_device(Device::Cpu))?;
    let mut w = Wire::default();
    w.u64(ledger.global.len() as u64);
    w.u64(u64::from(logp.is_some()));
    let mut i = 0;
    for (j, &gi) in ledger.global.iter().enumerate() {
        let grp = &r.groups[j];
        w.u64(gi as u64);
        w.u64(grp.completions.len() as u64);
        for c in &grp.completions {
            let len = batch.response_lens[i] as usize;
            w.f64(r.scores[i]);
            w.f64(r.correct[i]);
            w.u64(len as u64);
            w.u64(u64::from(truncated[i]));
            w.f64(c.temperatures.iter().map(|&t| f64::from(t)).sum());
            w.u64(c.temperatures.len() as u64);
            w.u64(r.outputs[i].parts.len() as u64);
            for (name, v) in &r.outputs[i].parts {
                w.str(name);
                w.f64(*v);
            }
            w.f32s(&ent[i * t..i * t + len]);
            if let Some((old, roll)) = &logp {
                w.f32s(&old[i * t..i * t + len]);
                w.f32s(&roll[i * t..i * t + len]);
            }
            i += 1;
        }
    }
    // Text samples: the first row of each of the first `samples` groups of the global order.
    let mine: Vec<usize> = (0..ledger.global.len()).filter(|&j| ledger.global[j] < samples).collect();
    w.u64(mine.len() as u64);
    for j in mine {
        let row = r.groups[..j].iter().map(|x| x.completions.len()).sum::<usize>();
        w.u64(ledger.global[j] as u64);
        w.str(&r.prompts.texts[j]);
        w.str(&r.responses[row]);
        w.f64(r.scores[row]);
    }
    Ok(w.0)
}

fn decode(bytes: &[u8], with_logp: bool, groups: &mut [Option<GroupRows>], texts: &mut BTreeMap<usize, (String, String, f64)>) -> std::result::Result<(), String> {
    let mut rd = Reader { b: bytes, at: 0 };
    let n_groups = rd.u64()? as usize;
    if (rd.u64()? == 1) != with_logp {
        return Err("ranks disagree on whether the old log-probs were recomputed".into());
    }
    for _ in 0..n_groups {
        let gi = rd.u64()? as usize;
        let total = groups.len();
        let slot = groups.get_mut(gi).ok_or_else(|| format!("group {gi} is past the step's {total} groups"))?;
        if slot.is_some() {
            return Err(format!("group {gi} is held by two ranks"));
        }
        let size = rd.u64()? as usize;
        let mut rows = Vec::with_capacity(size);
        for _ in 0..size {
            let mut row = Row { score: rd.f64()?, correct: rd.f64()?, len: rd.u64()? as usize, truncated: rd.u64()? == 1, ..Default::default() };
            (row.temperature_sum, row.temperature_tokens) = (rd.f64()?, rd.u64()? as f64);
            for _ in 0..rd.u64()? {
                let k = rd.str()?;
                row.parts.insert(k, rd.f64()?);
            }
            row.entropy = rd.f32s(row.len)?;
            if with_logp {
                row.old_logp = rd.f32s(row.len)?;
                row.rollout_logp = rd.f32s(row.len)?;
            }
            rows.push(row);
        }
        *slot = Some(GroupRows(rows));
    }
    for _ in 0..rd.u64()? {
        let gi = rd.u64()? as usize;
        let prompt = rd.str()?;
        let response = rd.str()?;
        texts.insert(gi, (prompt, response, rd.f64()?));
    }
    if rd.at != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - rd.at));
    }
    Ok(())
}

/// A little-endian byte string under construction.
#[derive(Debug, Default)]
struct Wire(Vec<u8>);

impl Wire {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32s(&mut self, v: &[f32]) {
        v.iter().for_each(|x| self.0.extend_from_slice(&x.to_le_bytes()));
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

/// Reads what [`Wire`] wrote; every read checks the length.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| format!("truncated at byte {} (need {n} more)", self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> std::result::Result<f64, String> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn f32s(&mut self, n: usize) -> std::result::Result<Vec<f32>, String> {
        Ok(self.take(4 * n)?.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
    }
    fn str(&mut self) -> std::result::Result<String, String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_round_trips_every_value_exactly() {
        let mut w = Wire::default();
        w.u64(u64::MAX);
        w.f64(f64::NAN);
        w.f64(-0.1);
        w.f32s(&[1.5, f32::MIN_POSITIVE, -3.25e-8]);
        w.str("reward/μ");
        let mut r = Reader { b: &w.0, at: 0 };
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert!(r.f64().unwrap().is_nan());
        assert_eq!(r.f64().unwrap().to_bits(), (-0.1f64).to_bits());
        assert_eq!(r.f32s(3).unwrap(), [1.5, f32::MIN_POSITIVE, -3.25e-8]);
        assert_eq!(r.str().unwrap(), "reward/μ");
        assert!(r.u64().unwrap_err().contains("truncated"), "reading past the end is an error");
    }
}
