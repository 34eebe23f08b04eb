//! `<run>/rollouts.jsonl`: sample rollouts of every training step, one JSON object per row,
//! `{step, prompt, response, reward, parts, advantage, kept}`; the report's sample browser reads
//! it. Size-bounded per step: the first `metrics.text_samples` groups of the step (all G rows of
//! each), the same groups whose first response goes to TensorBoard as text.
//!
//! `advantage` is the row's GRPO-family advantage (before HAPO's token-level redistribution);
//! `kept` says whether the row has at least one token in the loss (D³S row and token selection,
//! DAPO's overlong filter). Rows are written after the step's update, appended and flushed; a
//! resumed run first drops the lines of steps after its checkpoint
//! ([`crate::checkpoint::trim_step_log`]).

use crate::error::{io, Result};
use crate::trainer::ScoredRollouts;
use rlpo_algo::StepPlan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Kind;

/// File name of the log inside the run directory.
pub const ROLLOUTS_FILE: &str = "rollouts.jsonl";

/// One row of `rollouts.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutRow {
    /// 1-based training step.
    pub step: u64,
    /// The prompt as the model saw it.
    pub prompt: String,
    /// The decoded response.
    pub response: String,
    /// Total reward (`null` when it failed).
    pub reward: Option<f64>,
    /// Reward parts.
    pub parts: BTreeMap<String, f64>,
    /// The row's advantage (`null` when not finite).
    pub advantage: Option<f64>,
    /// Whether the row contributed tokens to the loss.
    pub kept: bool,
}

/// Appends rows to `<run>/rollouts.jsonl`.
#[derive(Debug)]
pub struct RolloutLog {
    file: std::fs::File,
    path: PathBuf,
    groups: usize,
}

impl RolloutLog {
    /// Open (append) the log of `run_dir`, writing `groups` groups per step; `None` when 0.
    pub fn open(run_dir: &Path, groups: usize) -> Result<Option<Self>> {
        if groups == 0 {
            return Ok(None);
        }
        let path = run_dir.join(ROLLOUTS_FILE);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        Ok(Some(RolloutLog { file, path, groups }))
    }

    /// Write the logged rows of training step `step`.
    pub fn write(&mut self, step: u64, r: &ScoredRollouts, plan: &StepPlan) -> Result<()> {
        let g = r.groups.first().map_or(1, |grp| grp.completions.len()).max(1);
        let rows = (self.groups * g).min(r.responses.len());
        let to_vec = |t: &tch::Tensor| -> Vec<f64> { Vec::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default() };
        let adv = to_vec(&plan.advantages);
        let keep = to_vec(&plan.row_keep.to_kind(Kind::Double));
        let mut body = Vec::new();
        for i in 0..rows {
            let row = RolloutRow {
                step,
                prompt: r.prompts.texts[i / g].clone(),
                response: r.responses[i].clone(),
                reward: r.outputs[i].value.is_finite().then_some(r.outputs[i].value),
                parts: r.outputs[i].parts.clone(),
                advantage: adv.get(i).copied().filter(|a| a.is_finite()),
                kept: keep.get(i).is_some_and(|k| *k > 0.0),
            };
            serde_json::to_writer(&mut body, &row).map_err(|e| io(&self.path, e.into()))?;
            body.push(b'\n');
        }
        self.file.write_all(&body).and_then(|_| self.file.flush()).map_err(|e| io(&self.path, e))
    }
}

/// Read `<run>/rollouts.jsonl` (missing file = no rows; unparsable lines, e.g. a line cut by a
/// crash, are skipped and counted).
pub fn read_rows(run_dir: &Path) -> (Vec<RolloutRow>, usize) {
    let Ok(text) = std::fs::read_to_string(run_dir.join(ROLLOUTS_FILE)) else { return (Vec::new(), 0) };
    let mut bad = 0;
    let rows = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).map_err(|_| bad += 1).ok())
        .collect();
    (rows, bad)
}
