//! The reward side of a training run: the recipe's [`RewardSet`] plus its log.
//!
//! - Every line of the reward log (plugin stderr, tracebacks, restarts, timeouts, protocol
//!   errors, non-finite values) is appended to `<run>/reward.log` as it arrives, including what
//!   plugins wrote while starting, before the run directory existed.
//! - When a batch has failures, a summary line goes into the log and the batch's newest log lines
//!   (at most [`CONSOLE_LINES`]) are printed on the console, so a failing plugin is seen while it
//!   fails, not found later in a file.
//! - Lines written during a step are counted as the `reward/log_lines` metric (like the timings,
//!   not reproducible: when a plugin's stderr lines arrive is up to the operating system).
//! - The failure ceiling of `on_error = "zero"` / `"drop_group"` ([`rlpo_reward::ceiling`]) ends
//!   the step with [`TrainError::RewardCeiling`], which names the function, quotes its last log
//!   lines and points at `reward.log`.
//!
//! [`scores_for_training`] turns a scored batch into the per-row rewards the learner sees, and
//! refuses a non-finite reward on any row that is trained on.

use crate::error::{io, Result, TrainError};
use rlpo_reward::{RewardConfig, RewardError, RewardInput, RewardSet, ScoredBatch};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// File name of the reward log inside the run directory.
pub const REWARD_LOG: &str = "reward.log";
/// Lines of the reward log shown on the console after a batch with failures.
pub const CONSOLE_LINES: usize = 8;

/// The run's reward functions and where their log goes.
pub struct RunRewards {
    set: RewardSet,
    /// `<run>/reward.log` once opened.
    log_path: Option<PathBuf>,
    /// Lines written to the log since the last [`RunRewards::take_log_lines`].
    lines: Arc<AtomicU64>,
}

impl RunRewards {
    /// Builds the set (starting external plugins and waiting for their start-up handshake).
    pub fn build(cfg: &RewardConfig) -> Result<Self> {
        Ok(Self { set: rlpo_reward::build(cfg)?, log_path: None, lines: Arc::default() })
    }

    /// Sends the reward log to `<run_dir>/reward.log` (appending: a resumed run continues the
    /// file), starting with the lines buffered so far.
    pub fn open_log(&mut self, run_dir: &Path) -> Result<()> {
        let path = run_dir.join(REWARD_LOG);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        let file = Mutex::new(file);
        let lines = self.lines.clone();
        let shown = path.clone();
        let failed = std::sync::atomic::AtomicBool::new(false);
        self.set.log().set_sink(move |line| {
            let mut f = file.lock().unwrap_or_else(PoisonError::into_inner);
            match writeln!(f, "{line}") {
                Ok(()) => {
                    lines.fetch_add(1, Ordering::Relaxed);
                }
                // Not silent: said once on the console; the line itself is printed instead.
                Err(e) => {
                    if !failed.swap(true, Ordering::Relaxed) {
                        eprintln!("warning: cannot write {}: {e}; reward log lines go to the console instead", shown.display());
                    }
                    eprintln!("reward: {line}");
                }
            }
        });
        // Start-up output is in the file but belongs to no step.
        self.lines.store(0, Ordering::Relaxed);
        self.log_path = Some(path);
        Ok(())
    }

    /// Scores `inputs` under the recipe's policy. Shows the newest reward log lines when the
    /// batch had failures; the failure ceiling becomes [`TrainError::RewardCeiling`].
    pub fn score(&self, inputs: &[RewardInput]) -> Result<ScoredBatch> {
        let before = self.lines.load(Ordering::Relaxed);
        let scored = match self.set.score_all(inputs) {
            Ok(s) => s,
            Err(e @ RewardError::FailureCeiling { .. }) => {
                return Err(TrainError::RewardCeiling { source: e, log: self.log_path.clone().unwrap_or_default() });
            }
            Err(e) => return Err(e.into()),
        };
        if !scored.failures.is_empty() {
            let first = &scored.failures[0];
            // Into reward.log too, so the file tells the whole story in order.
            self.set.log().push(format!(
                "[rlpo] {} of {} samples failed in this batch ({} error(s), {} timeout(s); on_error = \"{}\"); first: sample {} in `{}`: {}",
                scored.outputs.iter().filter(|o| !o.is_ok()).count(),
                scored.outputs.len(),
                scored.errors(),
                scored.timeouts(),
                scored.on_error.as_str(),
                first.index,
                first.fn_name,
                first.status
            ));
            let new_lines = self.lines.load(Ordering::Relaxed).saturating_sub(before).max(1);
            eprintln!(
                "reward: {} of {} samples failed in this batch; last lines of {}:",
                scored.outputs.iter().filter(|o| !o.is_ok()).count(),
                scored.outputs.len(),
                self.log_path.as_deref().map_or_else(|| REWARD_LOG.into(), |p| p.display().to_string())
            );
            for line in self.set.log().tail("", (new_lines as usize).min(CONSOLE_LINES)) {
                eprintln!("  {line}");
            }
        }
        Ok(scored)
    }

    /// The reward set (counters, policy, functions).
    pub fn set(&self) -> &RewardSet {
        &self.set
    }

    /// Lines written to `reward.log` since the last call (the `reward/log_lines` metric).
    pub fn take_log_lines(&self) -> u64 {
        self.lines.swap(0, Ordering::Relaxed)
    }
}

/// Per-group keep flags from the reward policy: `false` for every group of `g` rows that
/// `on_error = "drop_group"` drops (none under the other policies).
pub fn kept_groups(scored: &ScoredBatch, g: usize) -> Result<Vec<bool>> {
    let mut keep = vec![true; scored.outputs.len() / g.max(1)];
    for gi in scored.groups_to_drop(g)? {
        keep[gi] = false;
    }
    Ok(keep)
}

/// Per-row rewards for training from a scored batch. `keep` flags the groups (of `g` rows) that
/// are trained on; their rewards must be finite (the reward set turns every non-finite value into
/// a failure, and the policy then either aborts, sets 0 or drops the group), so a non-finite one
/// here is an internal error, never a 0. Rows of dropped groups get 0.0: they are removed before
/// training and the value only fills the slot for the group filter's per-group arithmetic.
pub fn scores_for_training(scored: &ScoredBatch, keep: &[bool], g: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(scored.outputs.len());
    for (row, v) in scored.values().into_iter().enumerate() {
        let kept = keep.get(row / g.max(1)).copied().unwrap_or(false);
        if !kept {
            out.push(0.0);
        } else if v.is_finite() {
            out.push(v);
        } else {
            return Err(TrainError::Aborted(format!(
                "internal: row {row} is trained on but its reward is {v} (status {}); refusing to train on it",
                scored.outputs[row].status
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlpo_reward::{OnError, RewardOutput};

    fn scored(values: &[f64]) -> ScoredBatch {
        let outputs = values.iter().map(|&v| if v.is_nan() { RewardOutput::error("x") } else { RewardOutput::ok(v) }).collect();
        ScoredBatch { outputs, failures: vec![], on_error: OnError::DropGroup }
    }

    #[test]
    fn drop_group_flags_whole_groups() {
        let s = scored(&[1.0, 0.5, 2.0, f64::NAN, 0.0, 0.0]);
        assert_eq!(kept_groups(&s, 2).expect("divisible"), [true, false, true]);
        assert_eq!(kept_groups(&s, 3).expect("divisible"), [true, false]);
        let zero = ScoredBatch { on_error: OnError::Zero, ..s };
        assert_eq!(kept_groups(&zero, 2).expect("divisible"), [true, true, true]);
    }

    #[test]
    fn dropped_groups_get_a_placeholder_and_kept_ones_must_be_finite() {
        let s = scored(&[1.0, 0.5, f64::NAN, 2.0]);
        assert_eq!(scores_for_training(&s, &[true, false], 2).expect("NaN only in the dropped group"), [1.0, 0.5, 0.0, 0.0]);
        let err = scores_for_training(&s, &[true, true], 2).expect_err("NaN in a kept group").to_string();
        assert!(err.contains("row 2") && err.contains("NaN"), "{err}");
        let inf = scored(&[f64::INFINITY, 0.0]);
        assert!(scores_for_training(&inf, &[true], 2).is_err());
    }
}
