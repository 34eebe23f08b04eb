//! [`RewardSet`]: several named, weighted reward functions scored together, each part reported
//! separately, with the recipe's failure policy applied and every failure counted.
//!
//! Total reward of a sample: `Σ_f weight_f · value_f`. Parts: `parts[name_f] = value_f`
//! (unweighted), plus each function's own parts as `name_f/part`. Verifiers' answer accounts
//! ([`crate::AnswerInfo`]) are renamed the same way (`answers[name_f]`).
//!
//! A value is a reward only when its status is ok *and* it is finite: an ok output with a `NaN`
//! or infinite value or part is a failure of that sample like any other. Under `zero` and
//! `drop_group` the failure ceiling ([`crate::ceiling`]) bounds how many failures a run absorbs.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ceiling::{fn_bit, FailureWindow, DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURE_FRACTION};
use crate::config::OnError;
use crate::error::{RewardError, Result};
use crate::log::RewardLog;
use crate::metrics::{RewardCounters, RewardMetrics};
use crate::policy::failed_groups;
use crate::types::{RewardFn, RewardInput, RewardOutput, RewardStatus};

struct Entry {
    name: String,
    weight: f64,
    f: Box<dyn RewardFn>,
}

/// One (sample, function) failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// Sample index in the batch.
    pub index: usize,
    /// The reward function that failed.
    pub fn_name: String,
    /// `Error(..)` or `Timeout`.
    pub status: RewardStatus,
}

/// The result of scoring a batch under the set's policy.
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    /// One combined output per input, in input order.
    pub outputs: Vec<RewardOutput>,
    /// Every per-function failure, by sample index then function order.
    pub failures: Vec<Failure>,
    /// The policy that was applied.
    pub on_error: OnError,
}

impl ScoredBatch {
    /// The total rewards, in input order (`NaN` for failed samples under `drop_group`).
    pub fn values(&self) -> Vec<f64> {
        self.outputs.iter().map(|o| o.value).collect()
    }

    /// Number of failures with status `error`.
    pub fn errors(&self) -> usize {
        self.failures.iter().filter(|f| matches!(f.status, RewardStatus::Error(_))).count()
    }

    /// Number of failures with status `timeout`.
    pub fn timeouts(&self) -> usize {
        self.failures.iter().filter(|f| f.status == RewardStatus::Timeout).count()
    }

    /// Groups (of `group_size` consecutive samples) the trainer must drop: under
    /// `on_error = "drop_group"`, every group with a failed sample; otherwise none.
    pub fn groups_to_drop(&self, group_size: usize) -> Result<Vec<usize>> {
        let groups = failed_groups(&self.outputs, group_size)?;
        Ok(if self.on_error == OnError::DropGroup { groups } else { Vec::new() })
    }

    /// Per-sample keep flags matching [`Self::groups_to_drop`].
    pub fn keep_mask(&self, group_size: usize) -> Result<Vec<bool>> {
        let mut keep = vec![true; self.outputs.len()];
        for g in self.groups_to_drop(group_size)? {
            keep[g * group_size..(g + 1) * group_size].fill(false);
        }
        Ok(keep)
    }

    /// Mean of each part over the samples that have it (for `reward/<part>` metrics).
    pub fn part_means(&self) -> BTreeMap<String, f64> {
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for o in &self.outputs {
            for (k, v) in &o.parts {
                let e = sums.entry(k.clone()).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        sums.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect()
    }
}

/// Several weighted reward functions plus policy, counters and log.
pub struct RewardSet {
    entries: Vec<Entry>,
    on_error: OnError,
    counters: Arc<RewardCounters>,
    log: RewardLog,
    ceiling: Mutex<FailureWindow>,
}

/// Lines of a function's log quoted when the ceiling stops a run.
const QUOTED_LOG_LINES: usize = 20;

impl std::fmt::Debug for RewardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fns: Vec<(&str, f64)> = self.entries.iter().map(|e| (e.name.as_str(), e.weight)).collect();
        f.debug_struct("RewardSet").field("fns", &fns).field("on_error", &self.on_error).finish()
    }
}

impl RewardSet {
    /// An empty set with the given policy; add functions with [`Self::add`].
    pub fn new(on_error: OnError) -> Self {
        Self {
            entries: Vec::new(),
            on_error,
            counters: Arc::default(),
            log: RewardLog::new(),
            ceiling: Mutex::new(FailureWindow::new(DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURE_FRACTION)),
        }
    }

    /// Sets the failure ceiling (`reward.max_failure_fraction`, `reward.failure_window`); the
    /// window starts empty.
    pub fn set_failure_ceiling(&mut self, max_fraction: f64, window: usize) {
        self.ceiling = Mutex::new(FailureWindow::new(window, max_fraction));
    }

    /// Adds a reward function. Names must be unique and non-empty; weights finite.
    pub fn add(&mut self, name: impl Into<String>, weight: f64, f: Box<dyn RewardFn>) -> Result<()> {
        let name = name.into();
        if name.is_empty() || name.contains('/') {
            return Err(RewardError::config("name", format!("{name:?}: names must be non-empty and contain no '/'")));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(RewardError::config("name", format!("{name:?} is used twice; give each function its own `name`")));
        }
        if !weight.is_finite() {
            return Err(RewardError::config(format!("{name}.weight"), format!("must be finite, got {weight}")));
        }
        self.entries.push(Entry { name, weight, f });
        Ok(())
    }

    /// The failure policy.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// `(name, weight)` of each function, in order.
    pub fn fns(&self) -> Vec<(&str, f64)> {
        self.entries.iter().map(|e| (e.name.as_str(), e.weight)).collect()
    }

    /// Shared counters (hand them to plugins so restarts are counted).
    pub fn counters(&self) -> &Arc<RewardCounters> {
        &self.counters
    }

    /// Cumulative `reward/*` counters.
    pub fn metrics(&self) -> RewardMetrics {
        self.counters.snapshot()
    }

    /// The log that plugins write to (drain it into the run log).
    pub fn log(&self) -> &RewardLog {
        &self.log
    }

    /// Scores a batch and applies the policy: `abort` returns [`RewardError::Aborted`] for the first
    /// failed sample; `zero` sets failed totals to 0 (status kept); `drop_group` keeps them NaN and
    /// reports groups through [`ScoredBatch::groups_to_drop`]. Failures are counted in every case.
    /// Under `zero` and `drop_group`, [`RewardError::FailureCeiling`] when a function gave up for
    /// good or the failures of the recent window exceed the ceiling.
    pub fn score_all(&self, batch: &[RewardInput]) -> Result<ScoredBatch> {
        let mut scored = self.score_unchecked(batch)?;
        match self.on_error {
            OnError::Abort => {
                if let Some(f) = scored.failures.first() {
                    let cause = match &f.status {
                        RewardStatus::Timeout => "timeout".to_owned(),
                        other => other.to_string(),
                    };
                    return Err(RewardError::Aborted { index: f.index, fn_name: f.fn_name.clone(), cause });
                }
            }
            OnError::Zero => {
                for f in &scored.failures {
                    scored.outputs[f.index].value = 0.0;
                }
            }
            OnError::DropGroup => {}
        }
        self.check_ceiling(&scored)?;
        Ok(scored)
    }

    /// The failure ceiling of `zero` / `drop_group` (see [`crate::ceiling`]).
    fn check_ceiling(&self, scored: &ScoredBatch) -> Result<()> {
        let tail = |name: &str| self.log.tail(&format!("[{name}] "), QUOTED_LOG_LINES);
        let policy = self.on_error.as_str();
        for e in &self.entries {
            if let Some(reason) = e.f.gave_up() {
                return Err(RewardError::FailureCeiling {
                    fn_name: e.name.clone(),
                    what: format!("{reason}; every later sample would fail too (on_error = \"{policy}\" does not continue past a plugin that gave up)"),
                    stderr: tail(&e.name),
                });
            }
        }
        let index_of = |name: &str| self.entries.iter().position(|e| e.name == name).unwrap_or(63);
        let mut masks = vec![0u64; scored.outputs.len()];
        for f in &scored.failures {
            masks[f.index] |= fn_bit(index_of(&f.fn_name));
        }
        let mut window = self.ceiling.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(t) = window.record(masks) else { return Ok(()) };
        let name = self.entries.get(t.worst_fn).map_or("?", |e| e.name.as_str()).to_owned();
        let latest = scored.failures.iter().rev().find(|f| f.fn_name == name).map(|f| format!("; latest: {}", f.status)).unwrap_or_default();
        Err(RewardError::FailureCeiling {
            what: format!(
                "{} of the last {} samples failed, more than reward.max_failure_fraction = {} of reward.failure_window = {} (on_error = \"{policy}\"){latest}",
                t.failed,
                t.seen,
                window.max_fraction(),
                window.window()
            ),
            stderr: tail(&name),
            fn_name: name,
        })
    }

    /// Scores a batch without applying the policy (failed totals are NaN), counting failures.
    /// `rlpo reward test` uses this to show every row.
    pub fn score_unchecked(&self, batch: &[RewardInput]) -> Result<ScoredBatch> {
        let per_fn = self.run_fns(batch);
        for (e, outs) in self.entries.iter().zip(&per_fn) {
            if outs.len() != batch.len() {
                return Err(RewardError::OutputCount { name: e.name.clone(), expected: batch.len(), got: outs.len() });
            }
        }
        let mut outputs = Vec::with_capacity(batch.len());
        let mut failures = Vec::new();
        for i in 0..batch.len() {
            let mut total = 0.0;
            let mut parts = BTreeMap::new();
            let mut answers = BTreeMap::new();
            let first_failure = failures.len();
            let mut largest: Option<(f64, &str)> = None;
            for (e, outs) in self.entries.iter().zip(&per_fn) {
                let o = &outs[i];
                if !o.is_ok() {
                    failures.push(Failure { index: i, fn_name: e.name.clone(), status: o.status.clone() });
                    continue;
                }
                if !o.value.is_finite() || o.parts.values().any(|v| !v.is_finite()) {
                    // Never a reward: a NaN would poison the advantages, an inf dominate them.
                    let msg = format!("{}: returned a non-finite value ({}, parts {:?})", e.name, o.value, o.parts);
                    self.log.push(format!("[{}] sample {i}: {msg}", e.name));
                    failures.push(Failure { index: i, fn_name: e.name.clone(), status: RewardStatus::Error(msg) });
                    continue;
                }
                total += e.weight * o.value;
                if largest.is_none_or(|(v, _)| (e.weight * o.value).abs() > v) {
                    largest = Some(((e.weight * o.value).abs(), &e.name));
                }
                parts.insert(e.name.clone(), o.value);
                for (k, v) in &o.parts {
                    parts.insert(format!("{}/{k}", e.name), *v);
                }
                for (k, info) in &o.answers {
                    let key = if k.is_empty() { e.name.clone() } else { format!("{}/{k}", e.name) };
                    answers.insert(key, info.clone());
                }
            }
            if failures.len() == first_failure && !total.is_finite() {
                let name = largest.map_or(String::new(), |(_, n)| n.to_owned());
                let msg = format!("{name}: the weighted total overflowed ({total})");
                self.log.push(format!("[{name}] sample {i}: {msg}"));
                failures.push(Failure { index: i, fn_name: name, status: RewardStatus::Error(msg) });
            }
            let status = combined_status(&failures[first_failure..]);
            let value = if status.is_ok() { total } else { f64::NAN };
            outputs.push(RewardOutput { value, parts, status, answers });
        }
        let scored = ScoredBatch { outputs, failures, on_error: self.on_error };
        self.counters.add_samples(batch.len() as u64);
        self.counters.add_errors(scored.errors() as u64);
        self.counters.add_timeouts(scored.timeouts() as u64);
        Ok(scored)
    }

    /// Runs every function on the batch, in parallel when there are several (plugins spend their
    /// time waiting on child processes). A panicking function fails its samples instead of the run.
    fn run_fns(&self, batch: &[RewardInput]) -> Vec<Vec<RewardOutput>> {
        let run = |e: &Entry| match catch_unwind(AssertUnwindSafe(|| e.f.score(batch))) {
            Ok(outs) => outs,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                self.log.push(format!("[{}] reward function panicked: {msg}", e.name));
                vec![RewardOutput::error(format!("panicked: {msg}")); batch.len()]
            }
        };
        if self.entries.len() <= 1 {
            return self.entries.iter().map(run).collect();
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = self.entries.iter().map(|e| s.spawn(move || run(e))).collect();
            // `run` catches panics, so a join error cannot happen; keep it explicit anyway.
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| vec![RewardOutput::error("reward thread failed"); batch.len()]))
                .collect()
        })
    }
}

/// The status of a sample from its failures: `Ok` if none, `Timeout` if all are timeouts, else
/// `Error` listing every failure as `name: message` (`name: timeout` for timeouts).
fn combined_status(failures: &[Failure]) -> RewardStatus {
    if failures.is_empty() {
        return RewardStatus::Ok;
    }
    if failures.iter().all(|f| f.status == RewardStatus::Timeout) {
        return RewardStatus::Timeout;
    }
    let msgs: Vec<String> = failures
        .iter()
        .map(|f| match &f.status {
            // Built-ins and plugins often prefix their own name already; do not repeat it.
            RewardStatus::Error(m) if m.starts_with(&format!("{}:", f.fn_name)) => m.clone(),
            RewardStatus::Error(m) => format!("{}: {m}", f.fn_name),
            _ => format!("{}: timeout", f.fn_name),
        })
        .collect();
    RewardStatus::Error(msgs.join("; "))
}
