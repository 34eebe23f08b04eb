//! `[eval]` during training: before the first step (logged as step 0), after every `eval.every`
//! steps and after the last step, the current policy samples `eval.samples` responses for each
//! of the first `eval.problems` held-out problems through the trainer's own rollout backend.
//! Scalars go to every metric sink as `eval/...` (merged into that step's metrics), and the
//! samples and summary to `<run>/eval/step-NNNNNN.{samples.jsonl,summary.json}`.
//!
//! Nothing a checkpoint holds changes: the held-out problems are loaded once into their own
//! list (the training data cursor never moves), rewards are scored by a reward set of their own
//! (the training reward counters never move), the rows are seeded in an evaluation domain of
//! the run seed ([`super::config::eval_seed`], so no training uniform is drawn), and HAPO's
//! adaptive temperature is off. With `max_staleness = 1` the running prefetch is waited for
//! first (its rows do not depend on when they are collected), because the rollout workers must
//! see the current weights.

use super::config::{eval_seed, ks_or_default, EvalConfig};
use super::runner::{self, EvalSampling, SampleRecord};
use super::summary::{summarise, EvalSummary};
use crate::error::{invalid, io, Result};
use crate::metrics::StepMetrics;
use crate::prompts::PromptBatch;
use crate::recipe::Recipe;
use crate::trainer::Trainer;
use rlpo_model::TextTokenizer;
use rlpo_reward::RewardSet;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// The evaluation state a trainer carries when `[eval]` is set.
pub struct TrainingEval {
    cfg: EvalConfig,
    problems: PromptBatch,
    rewards: RewardSet,
    verifier: Option<String>,
    sampling: EvalSampling,
    ks: Vec<usize>,
}

impl std::fmt::Debug for TrainingEval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainingEval").field("cfg", &self.cfg).field("problems", &self.problems.len()).finish()
    }
}

impl TrainingEval {
    /// Load the held-out problems and build the evaluation's reward set; `None` without `[eval]`.
    pub fn new(recipe: &Recipe, tokenizer: &TextTokenizer) -> Result<Option<Self>> {
        let Some(cfg) = recipe.eval.clone() else { return Ok(None) };
        let problems = runner::load_problems(&cfg.data, cfg.problems, tokenizer, recipe.model.system_prompt.as_deref(), "eval.data")?;
        let rewards = rlpo_reward::build(&recipe.reward)?;
        let mut params = recipe.rollout.clone();
        params.group_size = cfg.samples;
        params.adaptive_temperature = None;
        params.max_new_tokens = cfg.max_new_tokens.unwrap_or(params.max_new_tokens);
        params.temperature = cfg.temperature.unwrap_or(params.temperature);
        let sampling = EvalSampling {
            params,
            seed: eval_seed(recipe.run.seed),
            rows_per_batch: recipe.trainer.prompts_per_step * recipe.rollout.group_size,
            policy_version: 0,
        };
        let ks = ks_or_default(&cfg.k, cfg.samples).map_err(|m| invalid("eval.k", m))?;
        Ok(Some(TrainingEval { verifier: runner::verifier_of(&recipe.reward), cfg, problems, rewards, sampling, ks }))
    }

    /// Whether an evaluation is due after training step `step` (1-based; 0 = before training).
    pub fn due(&self, step: u64, total_steps: u64) -> bool {
        step.is_multiple_of(self.cfg.every) || step == total_steps
    }
}

impl Trainer {
    /// Run the evaluation for `step` with the current weights; returns its summary.
    fn evaluate(&mut self, step: u64) -> Result<Option<(EvalSummary, f64)>> {
        let Some(mut ev) = self.eval.take() else { return Ok(None) };
        let t0 = Instant::now();
        let result = (|| -> Result<EvalSummary> {
            self.finish_prefetch()?;
            self.backend.sync(&self.learner.model, self.version)?;
            ev.sampling.policy_version = self.version;
            let (backend, engine, model) = (&mut self.backend, &mut self.engine, &self.learner.model);
            let mut generate = |req: &rlpo_rollout::GenerateRequest| backend.generate(engine, model, req);
            let records = runner::run(&ev.problems, &ev.sampling, &ev.rewards, ev.verifier.as_deref(), &self.tokenizer, &mut generate, &mut |_, _| {})?;
            let summary = summarise(&records, ev.cfg.samples, &ev.ks, ev.verifier.as_deref());
            write_files(&self.run_dir, step, &records, &summary)?;
            Ok(summary)
        })();
        self.eval = Some(ev);
        Ok(Some((result?, t0.elapsed().as_secs_f64())))
    }

    /// Before the first step of a fresh run: evaluate the initial policy, logged as step 0.
    pub(crate) fn eval_before_training(&mut self) -> Result<()> {
        if self.state.step != 0 || self.eval.is_none() {
            return Ok(());
        }
        let Some((summary, secs)) = self.evaluate(0)? else { return Ok(()) };
        let mut m = StepMetrics { step: 0, ..Default::default() };
        for (k, v) in summary.scalars() {
            m.set(&k, v);
        }
        m.set("timing/eval_s", secs);
        for s in &mut self.sinks {
            s.record(&m)?;
        }
        Ok(())
    }

    /// After training step `m.step`: evaluate when due and add the `eval/...` scalars to `m`.
    pub(crate) fn eval_after_step(&mut self, m: &mut StepMetrics) -> Result<()> {
        let total = self.recipe.trainer.total_steps;
        if !self.eval.as_ref().is_some_and(|e| e.due(m.step, total)) {
            return Ok(());
        }
        if let Some((summary, secs)) = self.evaluate(m.step)? {
            for (k, v) in summary.scalars() {
                m.set(&k, v);
            }
            m.set("timing/eval_s", secs);
        }
        Ok(())
    }
}

/// `<run>/eval/step-NNNNNN.samples.jsonl` and `.summary.json` (overwritten when a resumed run
/// evaluates the same step again: same weights, same seeds, same rows).
fn write_files(run_dir: &Path, step: u64, records: &[SampleRecord], summary: &EvalSummary) -> Result<()> {
    let dir = run_dir.join("eval");
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let samples = dir.join(format!("step-{step:06}.samples.jsonl"));
    let mut body = Vec::new();
    for r in records {
        serde_json::to_writer(&mut body, r).map_err(|e| io(&samples, e.into()))?;
        body.push(b'\n');
    }
    write_atomic(&samples, &body)?;
    let path = dir.join(format!("step-{step:06}.summary.json"));
    let text = serde_json::to_vec_pretty(summary).map_err(|e| io(&path, e.into()))?;
    write_atomic(&path, &text)
}

/// Write through a temporary name and rename, so a reader never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}
