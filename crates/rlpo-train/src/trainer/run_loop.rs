//! `Trainer::run`: steps until `trainer.total_steps` or a stop request, periodic checkpoints,
//! and what a failed or cut step leaves behind.
//!
//! Before each step the loop records the non-tensor state of the last completed step
//! ([`checkpoint::state_of`]: data cursor, schedules, counters, the prefetched rollout, ...),
//! exactly what a checkpoint of that step holds besides the model and optimizer tensors, which a
//! step changes only in its optimizer updates. When a step fails (an error, or a panic caught
//! here: LibTorch reports CUDA errors by panicking) or a stop request cuts it (a DAPO refill),
//! the loop writes a checkpoint of the last completed step when it is newer than the last one
//! saved, from the recorded state and the tensors. If the failed step had already applied an
//! optimizer update, the tensors are no longer that step's and nothing is written (the failure
//! says so). A failure after the step completed (a metrics sink, the periodic save) saves the
//! completed step itself. Either way the trainer is then marked broken: its in-memory state is
//! mid-step, and a run continues only by resuming from the checkpoint.
//!
//! A prefetched rollout (`max_staleness = 1`) still running is waited for, so the checkpoint
//! holds it finished. If the job itself failed, the checkpoint leaves it out and continues the
//! data from before its prompts were drawn: on resume they are drawn again and generated with
//! the newer weights, the one case where a resumed run differs from an uninterrupted one.

use super::Trainer;
use crate::checkpoint::{self, TrainerState};
use crate::error::{Result, TrainError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

/// How [`Trainer::run`] ended without an error.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// `trainer.total_steps` reached.
    Completed,
    /// A stop request ended the run early.
    Stopped {
        /// The checkpoint holding the last completed step (`None` when no step completed).
        checkpoint: Option<PathBuf>,
        /// Set when the request cut a step in progress (what was cut).
        cut: Option<String>,
    },
}

/// A failed step: what failed and what was saved (the `Display` form is the cause).
#[derive(Debug)]
pub struct StepFailure {
    /// The 1-based step that failed.
    pub step: u64,
    /// The error or panic message.
    pub cause: String,
    /// The checkpoint holding the last completed step (written now or earlier) and its step.
    pub checkpoint: Option<(u64, PathBuf)>,
    /// Whether `checkpoint` was written because of this failure.
    pub emergency: bool,
    /// What the checkpoint leaves out, or why no newer one could be written.
    pub notes: Vec<String>,
}

impl std::fmt::Display for StepFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} failed: {}", self.step, self.cause)
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
    format!("panicked: {}", msg.unwrap_or_else(|| "(non-string payload)".into()))
}

/// Test hook for failure tests, in the style of the checkpoint pause hook: with
/// `RLPO_TEST_FAULT=N:STAGE` (or `N:STAGE:panic`), step N (1-based) fails at `STAGE` with an
/// injected error (or panics): `rollout` as its rollout starts (as a decode error or CUDA
/// out-of-memory would), `update` right after its optimizer update, `after` once it completed
/// (as a failing metrics sink would).
pub(super) fn test_fault(step: u64, stage: &str) -> Result<()> {
    let Ok(v) = std::env::var("RLPO_TEST_FAULT") else { return Ok(()) };
    let mut parts = v.split(':').map(str::trim);
    if parts.next().and_then(|s| s.parse::<u64>().ok()) != Some(step) || parts.next() != Some(stage) {
        return Ok(());
    }
    let what = format!("injected {stage} failure at step {step} (RLPO_TEST_FAULT)");
    if parts.next() == Some("panic") {
        panic!("{what}");
    }
    Err(match stage {
        "rollout" => TrainError::Rollout(rlpo_rollout::Error::Failed(what)),
        _ => TrainError::Aborted(what),
    })
}

/// `st` made savable: a prefetched rollout that never finished is left out, and the data
/// continues from before its prompts were drawn. `None` when that point is unknown.
fn without_unfinished_prefetch(mut st: TrainerState, notes: &mut Vec<String>) -> Option<TrainerState> {
    let Some(p) = st.prefetched.as_ref().filter(|p| p.batch.is_none()) else { return Some(st) };
    let next = p.step + 1;
    let Some(from) = p.drawn_from.as_deref().cloned() else {
        notes.push(format!("the rollout prefetched for step {next} never finished and its prompts' origin is unknown: no checkpoint"));
        return None;
    };
    notes.push(format!(
        "the rollout prefetched for step {next} did not finish, so the checkpoint leaves it out: on resume step {next} draws the same prompts again and generates them with the weights of step {} (one step fresher than an uninterrupted run)",
        st.step
    ));
    (st.data_cursor, st.rmt_sampler) = from;
    st.prefetched = None;
    Some(st)
}

impl Trainer {
    /// Run until `trainer.total_steps` or a stop request. Saves a checkpoint every
    /// `checkpoint.save_every` steps, at the end and when stopped, and the final model when
    /// configured. A failed step is an `Err(TrainError::StepFailed)` after the last completed
    /// step was saved (see the module docs); a stop request that cuts a step is a
    /// [`RunEnd::Stopped`] after the same save.
    pub fn run(&mut self) -> Result<RunEnd> {
        if let Some(why) = &self.broken {
            return Err(TrainError::Aborted(format!("the trainer stopped mid-step ({why}); resume from its checkpoint in a new trainer")));
        }
        let every = self.recipe.checkpoint.save_every;
        // A checkpoint of this run that holds the current state already (the one resumed);
        // one resumed from elsewhere does not count: `--resume auto` would not find it here.
        let root = checkpoint::checkpoints_dir(&self.run_dir).canonicalize().ok();
        let mut saved: Option<(u64, PathBuf)> =
            self.resumed_at.clone().filter(|(_, d)| d.parent().and_then(|p| p.canonicalize().ok()).is_some_and(|p| Some(p) == root));
        while self.state.step < self.recipe.trainer.total_steps {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.step_start = Some(checkpoint::state_of(self));
            let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
                self.step()?;
                test_fault(self.state.step, "after")?;
                if every > 0 && self.state.step.is_multiple_of(every) {
                    self.finish_prefetch()?;
                    saved = Some((self.state.step, checkpoint::save(self)?));
                }
                Ok(())
            }));
            let err = match result {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(p) => TrainError::Aborted(panic_text(p)),
            };
            return self.after_failure(err, saved);
        }
        self.step_start = None;
        // `checkpoint.save_at_end = false` skips the end-of-run checkpoint (a scratch or benchmark
        // run); a stopped run always saves, or its work would be lost.
        let reached_end = self.state.step >= self.recipe.trainer.total_steps;
        let save_now = self.recipe.checkpoint.save_at_end || !reached_end;
        if saved.as_ref().map(|s| s.0) != Some(self.state.step) && self.state.step > 0 && save_now {
            self.finish_prefetch()?;
            saved = Some((self.state.step, checkpoint::save(self)?));
        }
        for s in &mut self.sinks {
            s.finish()?;
        }
        if self.recipe.metrics.report_every > 0 && self.recipe.metrics.jsonl && self.state.step > 0 && self.dist.is_main() {
            crate::report::write(&self.run_dir)?;
        }
        if self.state.step < self.recipe.trainer.total_steps {
            return Ok(RunEnd::Stopped { checkpoint: saved.map(|s| s.1), cut: None });
        }
        if self.recipe.checkpoint.save_final {
            let out = self.run_dir.join("final");
            self.learner.model.save(&out, None)?;
        }
        Ok(RunEnd::Completed)
    }

    /// The state to save after step `start.step + 1` failed, if one can be written.
    fn state_after_failure(&mut self, mut start: TrainerState, notes: &mut Vec<String>) -> Option<TrainerState> {
        let failing = start.step + 1;
        if self.state.step > start.step {
            // The step completed and something after it failed: save the completed step.
            if let Err(e) = self.finish_prefetch() {
                notes.push(format!("the rollout prefetched for step {} failed: {e}", self.state.step + 1));
            }
            return without_unfinished_prefetch(checkpoint::state_of(self), notes);
        }
        if self.learner.opt.step != start.optimizer_step {
            notes.push(format!(
                "step {failing} had applied {} optimizer update(s) when it failed: the model no longer holds the weights of step {}, so no checkpoint of it can be written",
                self.learner.opt.step - start.optimizer_step,
                start.step
            ));
            return None;
        }
        // Failed before consuming its prefetched rollout: wait for it, so the checkpoint has it.
        let waiting = self.prefetched.as_ref().is_some_and(|p| p.step == start.step && p.batch.is_none());
        if start.prefetched.as_ref().is_some_and(|p| p.batch.is_none()) && waiting {
            match self.finish_prefetch() {
                Ok(()) => start.prefetched = self.prefetched.clone(),
                Err(e) => notes.push(format!("the rollout prefetched for step {failing} failed: {e}")),
            }
        }
        without_unfinished_prefetch(start, notes)
    }

    /// Save what can be saved after a failed or cut step and report it.
    fn after_failure(&mut self, err: TrainError, saved: Option<(u64, PathBuf)>) -> Result<RunEnd> {
        let start = self.step_start.take().expect("recorded before every step");
        let failing = start.step + 1;
        let cause = match &err {
            TrainError::Interrupted(why) => why.clone(),
            e => e.to_string(),
        };
        self.broken = Some(format!("step {failing}: {cause}"));
        let mut notes = Vec::new();
        let mut checkpoint = saved.clone();
        let mut emergency = false;
        let mut lost = false;
        match self.state_after_failure(start, &mut notes) {
            Some(st) if st.step > 0 && saved.as_ref().is_none_or(|(s, _)| st.step > *s) => {
                match catch_unwind(AssertUnwindSafe(|| checkpoint::save_state(self, &st))) {
                    Ok(Ok(p)) => {
                        checkpoint = Some((st.step, p));
                        emergency = true;
                    }
                    Ok(Err(e)) => notes.push(format!("writing a checkpoint of step {} failed too: {e}", st.step)),
                    Err(p) => notes.push(format!("writing a checkpoint of step {} failed too: {}", st.step, panic_text(p))),
                }
                lost = !emergency;
            }
            Some(_) => {}
            None => lost = true,
        }
        for s in &mut self.sinks {
            if let Err(e) = s.finish() {
                notes.push(format!("closing a metrics sink: {e}"));
            }
        }
        if matches!(err, TrainError::Interrupted(_)) && !lost {
            for n in &notes {
                eprintln!("note: {n}");
            }
            return Ok(RunEnd::Stopped { checkpoint: checkpoint.map(|c| c.1), cut: Some(cause) });
        }
        Err(TrainError::StepFailed(Box::new(StepFailure { step: failing, cause, checkpoint, emergency, notes })))
    }
}
