//! `<run>/rollouts.jsonl`: the rollouts of every training step, one JSON object per row,
//! `{step, group, prompt, response, tokens, reward, parts, correct, advantage, kept, dropped_by,
//! error}`; `rlpo inspect RUN --samples STEP`, `rlpo train --show-samples N` and the report's
//! sample browser read it.
//!
//! With `metrics.samples_jsonl = true` (the default) every row of the step is written: the
//! trained groups first (`kept`: the row has at least one token in the loss after D³S row and
//! token selection and DAPO's overlong filter), then the groups that never reached the loss,
//! with `dropped_by` naming why (`dapo_filter`: DAPO's group filter; `reward_failed`:
//! `on_error = "drop_group"`; `refill_surplus`: a DAPO refill produced more kept groups than the
//! step trains). With `false`, only the first `metrics.text_samples` trained groups (what
//! TensorBoard's text tab shows). `advantage` is the row's GRPO-family advantage before HAPO's
//! token-level redistribution (`null` for dropped groups).
//!
//! Size-bounded: when `rollouts.jsonl` has reached a quarter of `metrics.samples_max_mb`, it is
//! renamed `rollouts.1.jsonl` (the older ones shift to `.2`, `.3`; the oldest is dropped) and a
//! new one starts, so the files never hold much more than the bound. Rows are written after the
//! step's update, appended and flushed; a resumed run first drops, in every file, the lines of
//! steps after its checkpoint ([`trim_after`]).

use crate::error::{io, Result};
use crate::recipe::MetricsConfig;
use crate::trainer::ScoredRollouts;
use rlpo_algo::StepPlan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Kind;

/// File name of the log inside the run directory.
pub const ROLLOUTS_FILE: &str = "rollouts.jsonl";
/// Rotated files kept besides the current one (`rollouts.1.jsonl` is the newest).
pub const ROTATED_FILES: usize = 3;

/// One row of `rollouts.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutRow {
    /// 1-based training step.
    pub step: u64,
    /// The row's group within the step: trained groups first, then dropped ones.
    #[serde(default)]
    pub group: usize,
    /// The prompt as the model saw it.
    pub prompt: String,
    /// The decoded response.
    pub response: String,
    /// Response length in tokens.
    #[serde(default)]
    pub tokens: usize,
    /// Total reward (`null` when it failed).
    pub reward: Option<f64>,
    /// Reward parts.
    pub parts: BTreeMap<String, f64>,
    /// The verifier's verdict (`reward.correctness`); absent without a verifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// The row's advantage (`null` when not finite or the group was dropped).
    pub advantage: Option<f64>,
    /// Whether the row contributed tokens to the loss.
    pub kept: bool,
    /// Why the row's group never reached the loss (`dapo_filter`, `reward_failed`,
    /// `refill_surplus`); absent for trained groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_by: Option<String>,
    /// The reward's failure, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The rows of groups `groups` (in order) of `r`, as dropped by `reason`, numbered from `first`
/// (training step `step`). `r`'s groups are contiguous runs of G rows.
pub fn dropped_rows(r: &ScoredRollouts, keep: &[bool], g: usize, reason: &str, step: u64, first: usize) -> Vec<RolloutRow> {
    let mut out = Vec::new();
    let dropped = keep.iter().enumerate().filter(|(_, kept)| !**kept).map(|(gi, _)| gi);
    for (k, gi) in (first..).zip(dropped) {
        for i in gi * g..((gi + 1) * g).min(r.responses.len()) {
            let mut row = row_of(r, i, g, step, k);
            row.dropped_by = Some(reason.to_string());
            out.push(row);
        }
    }
    out
}

/// Row `i` of `r` without plan data (advantage and loss membership unknown).
fn row_of(r: &ScoredRollouts, i: usize, g: usize, step: u64, group: usize) -> RolloutRow {
    let o = &r.outputs[i];
    RolloutRow {
        step,
        group,
        prompt: r.prompts.texts[i / g].clone(),
        response: r.responses[i].clone(),
        tokens: r.groups.get(i / g).and_then(|grp| grp.completions.get(i % g)).map_or(0, |c| c.tokens.len()),
        reward: o.value.is_finite().then_some(o.value),
        parts: o.parts.clone(),
        correct: r.correct.get(i).copied().filter(|c| c.is_finite()).map(|c| c > 0.5),
        advantage: None,
        kept: false,
        dropped_by: None,
        error: (!o.is_ok()).then(|| o.status.to_string()),
    }
}

/// The rows of training step `step` in log order: the first `groups` trained groups (all with
/// `None`), then every dropped group.
pub fn step_rows(step: u64, r: &ScoredRollouts, plan: &StepPlan, groups: Option<usize>) -> Vec<RolloutRow> {
    let g = r.groups.first().map_or(1, |grp| grp.completions.len()).max(1);
    let trained = r.groups.len();
    let rows = groups.map_or(r.responses.len(), |n| (n * g).min(r.responses.len()));
    let to_vec = |t: &tch::Tensor| -> Vec<f64> { Vec::try_from(t.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default() };
    let adv = to_vec(&plan.advantages);
    let keep = to_vec(&plan.row_keep.to_kind(Kind::Double));
    let mut out: Vec<RolloutRow> = (0..rows)
        .map(|i| RolloutRow {
            advantage: adv.get(i).copied().filter(|a| a.is_finite()),
            kept: keep.get(i).is_some_and(|k| *k > 0.0),
            ..row_of(r, i, g, step, i / g)
        })
        .collect();
    if groups.is_none() {
        out.extend(r.dropped.iter().map(|d| RolloutRow { step, group: trained + d.group, ..d.clone() }));
    }
    out
}

/// Appends rows to `<run>/rollouts.jsonl`, rotating it (see the module docs).
#[derive(Debug)]
pub struct RolloutLog {
    file: std::fs::File,
    path: PathBuf,
    /// Groups per step, `None` = every row.
    groups: Option<usize>,
    /// Rotate when the current file reaches this many bytes.
    rotate_at: u64,
}

impl RolloutLog {
    /// Open (append) the log of `run_dir` as `metrics` configures it; `None` when nothing is
    /// written (`samples_jsonl = false` and `text_samples = 0`).
    pub fn open(run_dir: &Path, metrics: &MetricsConfig) -> Result<Option<Self>> {
        let groups = if metrics.samples_jsonl { None } else { Some(metrics.text_samples) };
        if groups == Some(0) {
            return Ok(None);
        }
        let path = run_dir.join(ROLLOUTS_FILE);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        let rotate_at = (metrics.samples_max_mb.saturating_mul(1_000_000) / (ROTATED_FILES as u64 + 1)).max(1);
        Ok(Some(RolloutLog { file, path, groups, rotate_at }))
    }

    /// Write the logged rows of training step `step`.
    pub fn write(&mut self, step: u64, r: &ScoredRollouts, plan: &StepPlan) -> Result<()> {
        self.write_rows(&step_rows(step, r, plan, self.groups))
    }

    /// Append `rows` (one step's), rotating first when the file is full.
    pub fn write_rows(&mut self, rows: &[RolloutRow]) -> Result<()> {
        let size = self.file.metadata().map_err(|e| io(&self.path, e))?.len();
        if size >= self.rotate_at {
            self.rotate()?;
        }
        let mut body = Vec::new();
        for row in rows {
            serde_json::to_writer(&mut body, row).map_err(|e| io(&self.path, e.into()))?;
            body.push(b'\n');
        }
        self.file.write_all(&body).and_then(|_| self.file.flush()).map_err(|e| io(&self.path, e))
    }

    fn rotate(&mut self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        for k in (1..ROTATED_FILES).rev() {
            let from = rotated(dir, k);
            if from.exists() {
                let to = rotated(dir, k + 1);
                std::fs::rename(&from, &to).map_err(|e| io(&from, e))?;
            }
        }
        let to = rotated(dir, 1);
        std::fs::rename(&self.path, &to).map_err(|e| io(&self.path, e))?;
        self.file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| io(&self.path, e))?;
        Ok(())
    }
}

/// `<dir>/rollouts.<k>.jsonl`.
fn rotated(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("rollouts.{k}.jsonl"))
}

/// The log's files of `run_dir` that exist, oldest first.
pub fn files(run_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = (1..=ROTATED_FILES).rev().map(|k| rotated(run_dir, k)).collect();
    v.push(run_dir.join(ROLLOUTS_FILE));
    v.into_iter().filter(|p| p.is_file()).collect()
}

/// After a resume at `step`: drop the lines of later steps from every file of the log (they
/// belong to the interrupted attempt). Returns how many lines were dropped.
pub fn trim_after(run_dir: &Path, step: u64) -> Result<usize> {
    let mut n = 0;
    for f in files(run_dir) {
        n += crate::checkpoint::trim_step_log(&f, step)?;
    }
    Ok(n)
}

/// Read every file of the log, oldest first (missing files = no rows; unparsable lines, e.g. a
/// line cut by a crash, are skipped and counted).
pub fn read_rows(run_dir: &Path) -> (Vec<RolloutRow>, usize) {
    let mut bad = 0;
    let mut rows = Vec::new();
    for f in files(run_dir) {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        rows.extend(text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).map_err(|_| bad += 1).ok()));
    }
    (rows, bad)
}

/// The rows of `step` (`None` = the last step logged) and that step.
pub fn rows_of_step(run_dir: &Path, step: Option<u64>) -> (Option<u64>, Vec<RolloutRow>) {
    let (rows, _) = read_rows(run_dir);
    let step = step.or_else(|| rows.iter().map(|r| r.step).max());
    (step, rows.into_iter().filter(|r| Some(r.step) == step).collect())
}

/// Characters of a prompt or response shown on the console (the rest is elided).
const SHOW_CHARS: usize = 400;

fn clip(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if s.chars().count() > n { format!("{t} […{} more chars]", s.chars().count() - n) } else { t }
}

/// `rows` as text, grouped: each group's prompt once, then every response with its reward,
/// parts, verdict, advantage and whether it was trained on (`rlpo inspect --samples`,
/// `--show-samples`). `full` prints texts whole.
pub fn render_rows(rows: &[RolloutRow], full: bool) -> String {
    let n = if full { usize::MAX } else { SHOW_CHARS };
    let mut out = String::new();
    let mut last_group = None;
    for r in rows {
        if last_group != Some(r.group) {
            last_group = Some(r.group);
            let dropped = r.dropped_by.as_deref().map_or(String::new(), |d| format!(" (dropped: {d})"));
            out += &format!("── step {} group {}{dropped} ── prompt:\n{}\n", r.step, r.group, indent(&clip(&r.prompt, n)));
        }
        let reward = r.reward.map_or("failed".to_string(), |v| format!("{v:.3}"));
        let parts: Vec<String> = r.parts.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        let correct = r.correct.map_or(String::new(), |c| if c { ", correct".into() } else { ", wrong".into() });
        let adv = r.advantage.map_or(String::new(), |a| format!(", advantage {a:+.3}"));
        let kept = if r.dropped_by.is_some() { "" } else if r.kept { ", in the loss" } else { ", not in the loss" };
        let err = r.error.as_deref().map_or(String::new(), |e| format!(" [{e}]"));
        out += &format!("  reward {reward} ({}){correct}{adv}{kept}, {} tokens{err}:\n{}\n", parts.join(", "), r.tokens, indent(&clip(&r.response, n)));
    }
    out
}

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "    (empty)".into();
    }
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, text: &str) -> RolloutRow {
        RolloutRow { step, prompt: "p".into(), response: text.into(), reward: Some(1.0), kept: true, ..Default::default() }
    }

    /// The files stay within the bound: a new file starts at a quarter of it, three older ones
    /// are kept and the oldest dropped; every kept row reads back in order, across files.
    #[test]
    fn rotation_bounds_the_files_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = MetricsConfig { samples_max_mb: 1, ..MetricsConfig::default() };
        let mut log = RolloutLog::open(dir.path(), &metrics).unwrap().unwrap();
        let big = "x".repeat(10_000);
        for step in 1..=200u64 {
            log.write_rows(&[row(step, &big), row(step, &big)]).unwrap();
        }
        let fs = files(dir.path());
        assert_eq!(fs.len(), ROTATED_FILES + 1, "{fs:?}");
        let total: u64 = fs.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
        // Each file is closed after the step that crossed a quarter: at most one step over.
        assert!(total <= 1_000_000 + 4 * 2 * 10_100, "{total} bytes");
        let (rows, bad) = read_rows(dir.path());
        assert_eq!(bad, 0);
        let steps: Vec<u64> = rows.iter().map(|r| r.step).collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        assert_eq!(*steps.last().unwrap(), 200);
        assert!(steps[0] > 1, "the oldest rows were dropped");
        // Whole steps survive (2 rows each), and at least half the bound's worth of rows.
        assert!(rows.len() % 2 == 0 && rows.len() * 10_000 >= 500_000, "{} rows", rows.len());
        // Resume at a step in the middle of what is kept: every file loses the later steps.
        let cut = steps[steps.len() / 2];
        let later = 2 * (200 - cut) as usize;
        let dropped = trim_after(dir.path(), cut).unwrap();
        assert_eq!(dropped, later);
        assert_eq!(read_rows(dir.path()).0.iter().map(|r| r.step).max(), Some(cut));
        assert_eq!(rows_of_step(dir.path(), None).0, Some(cut));
        assert_eq!(rows_of_step(dir.path(), Some(cut - 1)).1.len(), 2);
    }

    #[test]
    fn rows_of_older_files_without_the_new_fields_parse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(ROLLOUTS_FILE),
            "{\"step\":1,\"prompt\":\"p\",\"response\":\"r\",\"reward\":0.5,\"parts\":{\"math\":0.5},\"advantage\":null,\"kept\":false}\n",
        )
        .unwrap();
        let (rows, bad) = read_rows(dir.path());
        assert_eq!((rows.len(), bad), (1, 0));
        assert_eq!((rows[0].group, rows[0].tokens, rows[0].dropped_by.clone()), (0, 0, None));
        let text = render_rows(&rows, false);
        assert!(text.contains("reward 0.500 (math 0.500)") && text.contains("not in the loss"), "{text}");
    }
}
