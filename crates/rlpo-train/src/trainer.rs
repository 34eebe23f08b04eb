//! `Trainer::step` reads top to bottom as the stages of one training step (architecture doc):
//! prompts → rollout → reward → filter/refill → old log-probs + entropy → advantages and
//! selection (one `StepPlan`) → update → weight sync → metrics. Each stage is timed.
//!
//! Where the rollout runs is the [`RolloutBackend`]'s business: the learner's own model when
//! colocated and synchronous (no weight copy), or worker threads synced by version. With
//! `trainer.max_staleness = 1` the next step's rollout is submitted to the workers before this
//! step's update, so generation and training overlap; the ratio is then taken against the
//! generating policy (the rollout's log-probs).
//!
//! With several ranks (`dp.rs`, `dp_rows.rs`) each rank rolls out and scores its part of the
//! step's prompts; the DAPO keep counts, the plan's inputs, the loss normaliser, the gradients,
//! the metrics and stop requests are reduced through [`Dist`], so that N ranks train like one
//! process on the same global batch.

use crate::batch::LearnerBatch;
use crate::checkpoint;
use crate::dist::{self, Dist};
use crate::error::{invalid, io, Result, TrainError};
use crate::learner::{Learner, OldLogp, RowShard, UpdateInputs, UpdateReport};
use crate::reward_run::{self, RunRewards};
use crate::rmt::{self, RmtPrompts};
use crate::rollout_backend::RolloutBackend;
use crate::metrics::{ConsoleSink, JsonlSink, MetricSink, StepMetrics, TensorBoardSink};
use crate::prompts::{self, PromptBatch};
use crate::recipe::{OldLogprobs, Recipe};
use crate::step_metrics;
use crate::step_record::{OldLogpSource, StepRecord};
use rlpo_algo::{compose, AlgoState};
use rlpo_data::Dataset;
use rlpo_model::{parse_device, parse_dtype, CausalLm, LoadOptions, TextTokenizer};
use rlpo_reward::{RewardInput, RewardOutput, ScoredBatch};
use rlpo_rollout::{Engine, GenerateRequest, Group, RolloutBatch, RolloutSeed};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Kind, Tensor};

mod dp;
mod dp_rows;
mod run_loop;
use dp::{local_prefetch, GroupLedger};
pub use run_loop::{RunEnd, StepFailure};

/// Rollouts of one step after rewards and filtering, in row order (groups contiguous).
#[derive(Debug)]
pub struct ScoredRollouts {
    /// The prompts, one per group.
    pub prompts: PromptBatch,
    /// The groups, one per prompt.
    pub groups: Vec<Group>,
    /// Reward per row.
    pub scores: Vec<f64>,
    /// Correctness per row, 1.0 (right) or 0.0 (wrong), from the verifier's own part
    /// (`reward.correctness`, [`rlpo_reward::Correctness`]): the DAPO filter's `acc` and
    /// `reward/pass_rate`. NaN when the recipe has no verifier.
    pub correct: Vec<f64>,
    /// The reward set's output per row (value, parts, status).
    pub outputs: Vec<RewardOutput>,
    /// Decoded responses per row.
    pub responses: Vec<String>,
    /// Generation batches used (DAPO refill).
    pub gen_batches: usize,
    /// Groups dropped by the filter or the reward policy.
    pub dropped_groups: usize,
    /// The rows of every group scored this step that never reached the loss, with the reason
    /// (`rollouts.jsonl`, `reward/frac_zero_std`).
    pub dropped: Vec<crate::report::RolloutRow>,
}

/// A rollout started ahead of its training step (`max_staleness >= 1`): submitted to the
/// workers before the previous step's update, saved finished in checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prefetched {
    /// 0-based index of the training step it feeds.
    pub step: u64,
    /// Its prompts.
    pub prompts: PromptBatch,
    /// The finished rollout (`None` while the job runs).
    pub batch: Option<RolloutBatch>,
    /// Worker job id while it runs.
    #[serde(skip)]
    pub job: Option<u64>,
    /// Where the data (and RMT's sampler) stood before its prompts were drawn: if the job
    /// fails, a checkpoint of the step before it is written without it, continuing from here.
    #[serde(skip)]
    pub drawn_from: Option<Box<(rlpo_data::DataCursor, Option<rlpo_data::TierSamplerState>)>>,
}

/// The training loop and everything it owns.
pub struct Trainer {
    /// The resolved recipe.
    pub recipe: Recipe,
    /// Run directory.
    pub run_dir: PathBuf,
    pub(crate) tokenizer: Arc<TextTokenizer>,
    /// Policy + optimizer.
    pub learner: Learner,
    pub(crate) engine: Engine,
    pub(crate) backend: RolloutBackend,
    /// The next step's rollout when it was started early (`max_staleness >= 1`).
    pub prefetched: Option<Prefetched>,
    dataset: Dataset,
    /// RMT's prompts, budgets and curriculum (when `[algorithm.rmt]` is on).
    pub rmt: Option<RmtPrompts>,
    rewards: RunRewards,
    /// Algorithm schedule state (step, progress, HAPO statistics).
    pub state: AlgoState,
    pub(crate) sinks: Vec<Box<dyn MetricSink>>,
    /// Weight version (incremented by every applied optimizer step).
    pub version: u64,
    /// Set by SIGINT/SIGTERM: stop after the current step.
    pub stop: Arc<AtomicBool>,
    /// Metrics of every finished step.
    pub history: Vec<StepMetrics>,
    /// The processes this run's state descends from (recorded in checkpoints, see
    /// [`checkpoint::lineage`]).
    pub lineage: Vec<checkpoint::lineage::Segment>,
    /// Checkpoints verified (or written) by this trainer, so each is hashed once.
    pub(crate) verified: std::cell::RefCell<checkpoint::Verified>,
    /// The non-tensor state of the last completed step, taken when a step starts: what an
    /// emergency checkpoint saves when the step fails (see `run_loop`).
    pub(crate) step_start: Option<checkpoint::TrainerState>,
    /// Set when a step failed or was cut: the in-memory state is then mid-step and no longer
    /// trainable (resume from the checkpoint instead).
    pub(crate) broken: Option<String>,
    /// The step of the checkpoint this trainer was resumed from.
    pub(crate) resumed_at: Option<(u64, PathBuf)>,
    /// Keep the tensors of the last trained step in [`Trainer::last_step`] (tests and debugging;
    /// off by default: it holds the step's rows, plan and per-optimizer-step log-probs).
    pub record_steps: bool,
    /// With `record_steps`: what the last step trained on (`None` after a skipped step).
    pub last_step: Option<StepRecord>,
    /// This process's rank and communicator (the identity for a single process). Rank 0
    /// alone writes the run directory.
    pub dist: Dist,
    /// With several ranks: the run's reward counters summed over ranks as of the last
    /// completed step (what metrics and checkpoints report).
    pub(crate) reward_totals: Option<[u64; 4]>,
    /// With several ranks: the whole prefetched rollout of the checkpoint this run resumed
    /// from (each rank keeps only its part in `prefetched`), for rank 0's emergency checkpoint.
    pub(crate) restored_prefetch: Option<Prefetched>,
    /// `[eval]`: held-out evaluation during training (`crate::eval::during_training`).
    pub(crate) eval: Option<crate::eval::TrainingEval>,
    /// `<run>/rollouts.jsonl`, the report's sample browser (rank 0's rows with several ranks).
    rollout_log: Option<crate::report::RolloutLog>,
    /// Prompts skipped as too long (`data.too_long = "skip"`) since the last finished step
    /// (the same on every rank: the choice is global).
    skipped_too_long: u64,
    /// How prompts are rendered (`data.prompt_format` resolved against the model).
    pub prompt_style: prompts::PromptStyle,
    /// Rows per step printed on the console (`rlpo train --show-samples N`); 0 = none.
    pub show_samples: usize,
}

impl Trainer {
    /// Load the model, tokenizer, data and rewards of `recipe` and open the run directory.
    pub fn new(recipe: Recipe) -> Result<Trainer> {
        Self::start(recipe, None)
    }

    /// [`Trainer::new`] with the policy's weights taken from `init` (a checkpoint, a run or an
    /// HF model directory; [`checkpoint::init`]) instead of `model.path`: a new run with a
    /// fresh optimizer, schedule and data order.
    pub fn init_from(recipe: Recipe, init: &std::path::Path) -> Result<Trainer> {
        Self::start(recipe, Some(init))
    }

    fn start(recipe: Recipe, init: Option<&std::path::Path>) -> Result<Trainer> {
        let mp = &recipe.model.path;
        if !mp.is_dir() {
            return Err(invalid("model.path", format!("{} is not a directory (an HF model directory is expected)", mp.display())));
        }
        // Several processes (torchrun, srun, --nproc-per-node): rendezvous before the model
        // loads, so a bad launch fails fast; this rank's devices and threads come from its
        // local rank (dist/place.rs). `recipe` stays as written: it is what the run records.
        let launch = rlpo_dist::LaunchEnv::from_env()?;
        let placed = dist::place::place(&recipe, &launch)?;
        dist::place::bind_threads(recipe.run.threads, &launch);
        let dist = Dist::connect(launch, dist::place::cuda_index(&placed))?;
        let b = recipe.trainer.prompts_per_step;
        if b < dist.world() {
            return Err(invalid(
                "trainer.prompts_per_step",
                format!("{b} prompt(s) per step cannot be split over {} ranks: each rank rolls out whole groups, at least one per generation batch", dist.world()),
            ));
        }
        tch::manual_seed(recipe.run.seed as i64);
        let device = parse_device(&placed.model.device).map_err(|e| invalid("model.device", e.to_string()))?;
        let kind = parse_dtype(&recipe.model.dtype).map_err(|e| invalid("model.dtype", e.to_string()))?;
        let opts = LoadOptions { device, kind };
        let tokenizer = Arc::new(TextTokenizer::from_dir(mp)?);
        let prompt_style = prompts::PromptStyle::resolve(&recipe.data, &tokenizer, recipe.model.system_prompt.as_deref(), "data")?;
        let mut model = CausalLm::load(mp, &opts)?;
        if let Some(dir) = init {
            checkpoint::init::load_weights(&model, dir)?;
        }
        // After `--init-from`: the adapters start on the initialised weights.
        if let Some(l) = &recipe.model.lora {
            model.enable_lora(l, recipe.run.seed)?;
        }
        let reference = if recipe.loss.kl_coef > 0.0 {
            let mut r = CausalLm::load(mp, &opts)?;
            r.var_store_mut().freeze();
            Some(r)
        } else {
            None
        };
        let dataset = Dataset::from_config(&recipe.data, &std::env::current_dir().map_err(|e| io(".", e))?)?;
        let mut rewards = RunRewards::build(&recipe.reward)?;
        let rmt = RmtPrompts::new(recipe.algorithm.rmt.as_ref(), &dataset, recipe.data.source, recipe.trainer.total_steps, recipe.run.seed)?;
        let engine = Engine::with_tokenizer(tokenizer.clone());
        let run_dir = recipe.run_dir();
        let mut sinks: Vec<Box<dyn MetricSink>> = Vec::new();
        if dist.is_main() {
            std::fs::create_dir_all(&run_dir).map_err(|e| io(&run_dir, e))?;
            rewards.open_log(&run_dir)?;
            let resolved = run_dir.join("recipe.resolved.toml");
            std::fs::write(&resolved, recipe.to_toml()).map_err(|e| io(&resolved, e))?;
            if recipe.metrics.jsonl {
                sinks.push(Box::new(JsonlSink::open(&run_dir.join("metrics.jsonl"))?));
            }
            if recipe.metrics.tensorboard {
                sinks.push(Box::new(TensorBoardSink::create(&run_dir.join("tensorboard"))?));
            }
            if recipe.metrics.console {
                sinks.push(Box::new(ConsoleSink::new(recipe.trainer.total_steps, 0)));
            }
        }
        let backend = RolloutBackend::new(&placed, &model, &tokenizer)?;
        let eval = crate::eval::TrainingEval::new(&recipe, &tokenizer)?;
        // The run directory is rank 0's: other ranks keep no sample log.
        let rollout_log = if dist.is_main() { crate::report::RolloutLog::open(&run_dir, &recipe.metrics)? } else { None };
        let learner = Learner::new(model, &recipe, reference);
        let state = AlgoState::new(recipe.trainer.total_steps);
        Ok(Trainer {
            recipe,
            run_dir,
            tokenizer,
            learner,
            engine,
            backend,
            prefetched: None,
            dataset,
            rmt,
            rewards,
            state,
            sinks,
            version: 0,
            stop: Arc::new(AtomicBool::new(false)),
            history: Vec::new(),
            lineage: vec![checkpoint::lineage::Segment::start(0)],
            verified: Default::default(),
            step_start: None,
            broken: None,
            resumed_at: None,
            record_steps: false,
            last_step: None,
            dist,
            reward_totals: None,
            restored_prefetch: None,
            eval,
            rollout_log,
            skipped_too_long: 0,
            prompt_style,
            show_samples: 0,
        })
    }

    /// What string prompts become and the first dataset row as the model will see it
    /// (`rlpo train` prints it before the first step; RMT mid-training documents have none).
    pub fn prompt_preview(&self) -> Result<String> {
        let example = self.dataset.get(0).filter(|_| self.recipe.data.source != rlpo_data::SourceKind::Text);
        prompts::preview(&self.prompt_style, &self.tokenizer, example)
    }

    /// Stage 0: this rank's part of the next `n` prompts that fit the model's context
    /// (`data.too_long`). The choice is global: every rank sees the same drawn prompts
    /// ([`Self::draw_global`]), skips the same ones and keeps its part ([`Self::prompt_part`]) of
    /// the `n` that fit, so the data cursor and RMT's sampler stay global.
    fn next_prompts(&mut self, n: usize, step: u64) -> Result<PromptBatch> {
        let context = self.learner.model.config.max_position_embeddings.max(0) as usize;
        let (policy, len) = (self.recipe.data.too_long, self.dataset.len());
        let mut skipped = 0;
        let batch = prompts::fill(n, context, policy, len, &mut skipped, |k| self.draw_global(k, step))?;
        self.skipped_too_long += skipped;
        Ok(dp::prompt_slice(batch, self.prompt_part(n)))
    }

    /// This rank's part of the next `n` prompts, tokenized: every rank draws all `n` (the data
    /// cursor and RMT's sampler stay global) and renders its part ([`Self::prompt_part`]).
    /// RMT draws them by its curriculum and turns them into budgeted RL prompts (with NTP
    /// sequences) for training step `step` (0-based).
    fn draw_prompts(&mut self, n: usize, step: u64) -> Result<PromptBatch> {
        let part = self.prompt_part(n);
        let take = |v: Vec<rlpo_data::Sample>| -> Vec<rlpo_data::Sample> { v.into_iter().skip(part.start).take(part.len()).collect() };
        let Some(rmt) = self.rmt.as_mut() else {
            let samples = take(self.dataset.next_batch(n));
            return prompts::build(&self.tokenizer, samples, &self.prompt_style);
        };
        let drawn = take(rmt.draw(&mut self.dataset, n, step)?);
        let (samples, ntp) = rmt.prepare(drawn, part.start as u64, step, &self.tokenizer, &self.learner.model)?;
        let mut batch = prompts::build(&self.tokenizer, samples, &self.prompt_style)?;
        batch.ntp = ntp;
        rmt.attach_solutions(&mut batch, &self.tokenizer)?;
        Ok(batch)
    }

    /// The rollout request for `prompts` feeding training step `step` (0-based), generation
    /// batch `gen_batch` of that step, under the current weights version.
    fn request(&self, prompts: &PromptBatch, step: u64, gen_batch: usize) -> GenerateRequest {
        let r = &self.recipe;
        let mut params = r.rollout.clone();
        // HAPO owns the adaptive temperature: its τ (`algorithm.hapo.tau`) and its statistics.
        if let Some(h) = r.algorithm.hapo.as_ref().filter(|h| h.adaptive_temperature) {
            params.adaptive_temperature = Some(rlpo_rollout::AdaptiveTemperature { tau: h.tau });
        }
        let mut req = GenerateRequest::new(prompts.ids.clone(), params);
        // Distinct seeds for every generation batch of every step (refill batches included);
        // each row's generator is keyed by its prompt's index in the whole generation batch, so
        // its samples do not depend on which rank rolls it out.
        req.seed = RolloutSeed::new(r.run.seed, step * 1000 + gen_batch as u64);
        req.prompt_indices = Some(self.prompt_part(self.gen_batch_prompts()).map(|i| i as u64).collect());
        req.policy_version = self.version;
        if let Some(cap) = self.rmt.as_ref().and_then(|m| m.row_cap(step, r.rollout.max_new_tokens)) {
            req.budgets = Some(vec![cap; prompts.len() * r.rollout.group_size]);
        }
        // The rollout's statistics type is rlpo_algo's own (one HAPO temperature implementation).
        req.entropy_stats = self.state.rollout_temperature_stats(&r.algorithm);
        req
    }

    /// Prompts per generation batch: `trainer.prompts_per_step`, times
    /// `algorithm.dapo.filter_groups.gen_batch_factor` (rounded up) when dynamic sampling is on.
    fn gen_batch_prompts(&self) -> usize {
        let b = self.recipe.trainer.prompts_per_step;
        match &self.recipe.algorithm.dapo.filter_groups {
            Some(f) => (f.gen_batch_factor * b as f64).ceil() as usize,
            None => b,
        }
    }

    /// Stage 1: G completions per prompt from the current policy.
    fn rollout(&mut self, prompts: &PromptBatch, gen_batch: usize) -> Result<RolloutBatch> {
        self.backend.sync(&self.learner.model, self.version)?;
        let req = self.request(prompts, self.state.step, gen_batch);
        self.backend.generate(&mut self.engine, &self.learner.model, &req)
    }

    /// The first generation batch of this step: the prefetched one when there is one.
    fn first_rollout(&mut self, b: usize) -> Result<(PromptBatch, RolloutBatch)> {
        match self.prefetched.take() {
            Some(p) if p.step == self.state.step => {
                let batch = match (p.batch, p.job) {
                    (Some(b), _) => b,
                    (None, Some(id)) => self.backend.wait(id)?,
                    (None, None) => return Err(TrainError::Aborted("internal: prefetched rollout without a job".into())),
                };
                // The last completed step's state holds this rollout finished from now on, so
                // an emergency checkpoint of that step can be written if this step fails.
                if let Some(sp) = self.step_start.as_mut().and_then(|s| s.prefetched.as_mut()) {
                    if sp.batch.is_none() {
                        sp.batch = Some(batch.clone());
                        sp.job = None;
                    }
                }
                Ok((p.prompts, batch))
            }
            Some(p) => Err(TrainError::Aborted(format!(
                "internal: prefetched rollout for step {} found at step {}",
                p.step + 1,
                self.state.step + 1
            ))),
            None => {
                let prompts = self.next_prompts(b, self.state.step)?;
                let batch = self.rollout(&prompts, 0)?;
                Ok((prompts, batch))
            }
        }
    }

    /// With `max_staleness >= 1`: start the next step's rollout on the workers with the current
    /// weights, so it runs while this step trains.
    fn prefetch_next(&mut self) -> Result<()> {
        let next = self.state.step + 1;
        if self.recipe.trainer.max_staleness == 0 || next >= self.recipe.trainer.total_steps || self.prefetched.is_some() {
            return Ok(());
        }
        self.backend.sync(&self.learner.model, self.version)?;
        let drawn_from = Some(Box::new((self.data_cursor(), self.rmt.as_ref().and_then(|r| r.sampler_state()))));
        let prompts = self.next_prompts(self.gen_batch_prompts(), next)?;
        let req = self.request(&prompts, next, 0);
        let job = self.backend.submit(req)?;
        self.prefetched = Some(Prefetched { step: next, prompts, batch: None, job: Some(job), drawn_from });
        Ok(())
    }

    /// Wait for a running prefetch (before a checkpoint, so it can be saved finished).
    pub fn finish_prefetch(&mut self) -> Result<()> {
        if let Some(p) = self.prefetched.as_mut() {
            if let (None, Some(id)) = (&p.batch, p.job) {
                p.batch = Some(self.backend.wait(id)?);
                p.job = None;
            }
        }
        Ok(())
    }

    /// Stage 2: decode and score every row.
    fn score(&self, prompts: &PromptBatch, groups: &[Group]) -> Result<(ScoredBatch, Vec<String>)> {
        let max_len = self.recipe.rollout.max_new_tokens;
        let mut inputs = Vec::new();
        let mut responses = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let s = &prompts.samples[i];
            for c in &g.completions {
                let text = self.tokenizer.decode(&c.tokens, true)?;
                responses.push(text.clone());
                let mut metadata = s.metadata.clone();
                if self.rmt.is_some() {
                    // RMT's length reward measures the think block only.
                    let n = rmt::think_len(&text, &self.tokenizer)?;
                    rmt::set_meta(&mut metadata, "think_len", serde_json::Value::from(n as u64));
                }
                inputs.push(RewardInput {
                    prompt: prompts.texts[i].clone(),
                    response: text,
                    ground_truth: s.answer.clone(),
                    metadata,
                    response_len: c.tokens.len(),
                    max_len,
                });
            }
        }
        Ok((self.rewards.score(&inputs)?, responses))
    }

    /// Stages 0-3: prompts, rollout, rewards, and the DAPO filter with refill. Returns this
    /// rank's kept groups and where they sit in the step's global order.
    fn collect(&mut self, timings: &mut StepMetrics) -> Result<(ScoredRollouts, GroupLedger)> {
        let b = self.recipe.trainer.prompts_per_step;
        let gen_b = self.gen_batch_prompts();
        let g = self.recipe.rollout.group_size;
        let filter = self.recipe.algorithm.dapo.filter_groups.clone();
        let correctness = rlpo_reward::Correctness::from_config(&self.recipe.reward)?;
        let mut acc_rollouts: Option<ScoredRollouts> = None;
        let mut ledger = GroupLedger::default();
        let mut gen_batches = 0;
        let mut dropped = 0;
        let mut lost_groups = 0;
        loop {
            let t0 = Instant::now();
            if gen_batches == 0 {
                run_loop::test_fault(self.state.step + 1, "rollout")?;
            }
            let (prompts, out) = if gen_batches == 0 {
                self.first_rollout(gen_b)?
            } else {
                let prompts = self.next_prompts(gen_b, self.state.step)?;
                let out = self.rollout(&prompts, gen_batches)?;
                (prompts, out)
            };
            // With a prefetched batch this is the time spent waiting for it.
            add(timings, "timing/rollout_s", t0.elapsed().as_secs_f64());
            let (groups, stats) = (out.groups, out.stats);
            add(timings, "perf/rollout_tokens", stats.tokens as f64);
            add(timings, "filter/gen_prompts", prompts.len() as f64);
            gen_batches += 1;
            let t0 = Instant::now();
            let (scored, responses) = self.score(&prompts, &groups)?;
            add(timings, "timing/reward_s", t0.elapsed().as_secs_f64());
            add(timings, "reward/log_lines", self.rewards.take_log_lines() as f64);
            // `on_error = "drop_group"` removes groups with a failed reward; `abort` already
            // returned an error from score_all, `zero` keeps the rows with value 0 (counted).
            // One flag per group (the DAPO filter's mask is per group too).
            let mut keep = reward_run::kept_groups(&scored, g)?;
            let reward_keep = keep.clone();
            let scores = reward_run::scores_for_training(&scored, &keep, g)?;
            // `acc` is the verifier's own verdict (a format bonus or partial credit makes
            // `score > 0` wrong); `score` is the final shaped reward, overlong penalty included.
            let correct = match &correctness {
                Some(c) => c.flags(&scored.outputs)?,
                None => vec![f64::NAN; scores.len()],
            };
            if filter.is_some() {
                let lengths: Vec<f64> = groups.iter().flat_map(|grp| grp.completions.iter().map(|c| c.tokens.len() as f64)).collect();
                let shaped = compose::shape_rewards(
                    &self.recipe.algorithm,
                    &Tensor::from_slice(&scores),
                    &Tensor::from_slice(&lengths),
                    self.recipe.rollout.max_new_tokens as u64,
                );
                let keep_f = compose::group_filter(&self.recipe.algorithm, &Tensor::from_slice(&correct), &shaped, g as i64)?
                .expect("filter configured");
                let kf: Vec<bool> = Vec::try_from(&keep_f)?;
                for (k, f) in keep.iter_mut().zip(kf) {
                    *k = *k && f;
                }
            }
            dropped += keep.iter().filter(|k| !**k).count();
            let part = ScoredRollouts {
                prompts: prompts.clone(),
                groups,
                scores,
                correct,
                outputs: scored.outputs,
                responses,
                gen_batches,
                dropped_groups: dropped,
                dropped: Vec::new(),
            };
            // What never reaches the loss is still logged, with the reason.
            let step = self.state.step + 1;
            let by_filter: Vec<bool> = reward_keep.iter().zip(&keep).map(|(r, k)| !r || *k).collect();
            let mut lost = crate::report::rollouts::dropped_rows(&part, &reward_keep, g, "reward_failed", step, lost_groups);
            lost_groups += reward_keep.iter().filter(|k| !**k).count();
            lost.extend(crate::report::rollouts::dropped_rows(&part, &by_filter, g, "dapo_filter", step, lost_groups));
            lost_groups += by_filter.iter().filter(|k| !**k).count();
            let mut part = part.retain_groups(&keep, g);
            part.dropped = lost;
            let kept_here = part.groups.len();
            let merged = match acc_rollouts.take() {
                None => part,
                Some(mut a) => {
                    a.append(part);
                    a
                }
            };
            acc_rollouts = Some(merged);
            // Every rank's count (and stop flag): the keep count, the refill decision and the
            // truncation below are the same on every rank.
            let (have, stop_any) = ledger.add(&self.dist, kept_here, self.stop.load(Ordering::SeqCst))?;
            let Some(f) = &filter else { break };
            match rlpo_algo::dapo::refill_action(have, b, gen_batches, f)? {
                rlpo_algo::dapo::RefillAction::GenerateMore => {
                    let step = self.state.step + 1;
                    if gen_batches % 10 == 0 {
                        eprintln!(
                            "step {step}: DAPO refill: {have} of {b} groups kept after {gen_batches} generation batches (max_num_gen_batches = {})",
                            f.max_num_gen_batches
                        );
                    }
                    // A stop request must end a refill that could run for a long time (constant
                    // rewards): cut the step; the run saves the last completed one.
                    if stop_any {
                        return Err(TrainError::Interrupted(format!(
                            "step {step} cut during its DAPO refill after {gen_batches} generation batch(es) ({have} of {b} groups kept)"
                        )));
                    }
                    continue;
                }
                rlpo_algo::dapo::RefillAction::Train { keep_groups, .. } => {
                    let a = acc_rollouts.as_mut().expect("set above");
                    let local_keep = ledger.truncate(keep_groups);
                    let surplus: Vec<bool> = (0..a.groups.len()).map(|i| i < local_keep).collect();
                    let lost = crate::report::rollouts::dropped_rows(a, &surplus, g, "refill_surplus", self.state.step + 1, lost_groups);
                    a.truncate_groups(local_keep, g);
                    a.dropped.extend(lost);
                    break;
                }
                rlpo_algo::dapo::RefillAction::Skip => break,
            }
        }
        let mut out = acc_rollouts.expect("at least one generation batch");
        out.gen_batches = gen_batches;
        out.dropped_groups = dropped;
        Ok((out, ledger))
    }

    /// One training step; returns its metrics (also sent to the sinks). With several ranks
    /// every rank calls it; the metrics are the global batch's on every rank.
    pub fn step(&mut self) -> Result<StepMetrics> {
        if let Some(why) = &self.broken {
            return Err(TrainError::Aborted(format!("the trainer stopped mid-step ({why}); resume from its checkpoint in a new trainer")));
        }
        // `[eval]`: the initial policy, logged as step 0 (a fresh run only).
        self.eval_before_training()?;
        let t_step = Instant::now();
        let comm = self.dist.stats();
        let r = self.recipe.clone();
        let g = r.rollout.group_size as i64;
        let mut m = StepMetrics { step: self.state.step + 1, ..Default::default() };
        self.last_step = None;

        let (rollouts, ledger) = self.collect(&mut m)?;
        // max_staleness >= 1: the next step's rollout runs while this one trains.
        self.prefetch_next()?;
        if ledger.total == 0 {
            // Every group was filtered out and the recipe allows training on what is there: skip.
            m.set("select/skipped_step", 1.0);
            m.set("filter/dropped_groups", rollouts.dropped_groups as f64);
            m.set("filter/gen_batches", rollouts.gen_batches as f64);
            self.finish_step(&mut m, t_step, comm, None)?;
            return Ok(m);
        }

        // Stage 4: learner tensors, old log-probs and entropies.
        let t0 = Instant::now();
        let rows: Vec<(&[i64], &rlpo_rollout::Completion)> = rollouts
            .groups
            .iter()
            .enumerate()
            .flat_map(|(i, grp)| grp.completions.iter().map(move |c| (i, c)))
            .map(|(i, c)| (rollouts.prompts.ids[i].as_slice(), c))
            .collect();
        let batch = LearnerBatch::new(&rows, self.tokenizer.pad_id, self.learner.model.device());
        let positions = ledger.row_positions(g as usize);
        let (stale, staleness) = self.global_staleness(&batch.versions)?;
        let on_policy = !stale;
        let recompute = match r.trainer.old_logprobs {
            OldLogprobs::Always => true,
            // Rollout correction is verl's decoupled mode: π_old is the learner's, recomputed
            // before the update, and the rollout's log-probs only enter the IS weights.
            _ if r.algorithm.rollout_correction.is_some() => true,
            // Stale rows: the ratio is against the generating policy, whose log-probs only the
            // rollout recorded. One on-policy update: the learner's detached log-probs are exact.
            OldLogprobs::Auto => on_policy && r.optimizer_steps_per_step() > 1 && !self.backend.uses_learner_kernels(),
        };
        let recomputed = if recompute { Some(Learner::score_rows(&self.learner.model, &batch, &r, &positions)?) } else { None };
        let (old_logp, old_entropy, old_source) = match &recomputed {
            Some((lp, ent)) => (OldLogp::Given(lp), ent.shallow_clone(), OldLogpSource::Recomputed),
            None if on_policy && r.optimizer_steps_per_step() == 1 => {
                (OldLogp::CurrentDetached, batch.rollout_entropy.shallow_clone(), OldLogpSource::LearnerFirstPass)
            }
            None => (OldLogp::Given(&batch.rollout_logp), batch.rollout_entropy.shallow_clone(), OldLogpSource::Rollout),
        };
        m.set("train/staleness", staleness as f64);
        let ref_logp = match &self.learner.reference {
            Some(rm) => Some(Learner::score_rows(rm, &batch, &r, &positions)?.0),
            None => None,
        };
        m.set("timing/old_logprob_s", t0.elapsed().as_secs_f64());

        // Stages 5-6: shaped rewards, advantages, D³S selection, HAPO terms, decided on the
        // global batch (gathered from every rank) and cut to this rank's rows.
        let t0 = Instant::now();
        let recomputed_lp = recomputed.as_ref().map(|(lp, _)| lp);
        let view = if self.dist.is_distributed() {
            dp_rows::StepView::gather(&self.dist, &ledger, &rollouts, &batch, &old_entropy, recomputed_lp, r.metrics.text_samples)?
        } else {
            dp_rows::StepView::local(&rollouts, &batch, &old_entropy, recomputed_lp, r.metrics.text_samples)
        };
        let device = batch.ids.device();
        let scores = Tensor::from_slice(&view.rows.scores).to_kind(Kind::Float).to_device(device);
        let lengths = view.response_mask.sum_dim_intlist(-1, false, Kind::Float);
        let shaped = compose::shape_rewards(&r.algorithm, &scores, &lengths, r.rollout.max_new_tokens as u64);
        let inputs = compose::StepInputs {
            rewards: &shaped,
            response_mask: &view.response_mask,
            group_size: g,
            entropy: Some(&view.entropy),
            truncated: Some(&view.truncated),
            // Both log-probs exist when the learner recomputed them: mismatch metrics and, when
            // configured, the rollout correction.
            old_logp: view.old_logp.as_ref(),
            rollout_logp: view.rollout_logp.as_ref(),
        };
        let global_plan = compose::compute_step_plan(&r.algorithm, &r.loss, &self.state, &inputs)?;
        let local_plan = view.local_rows.as_ref().map(|idx| global_plan.select_rows(idx, batch.response_width()));
        let plan = local_plan.as_ref().unwrap_or(&global_plan);
        dp::log_plan_for_tests(&self.dist, m.step, &view.rows.scores, &global_plan)?;
        m.set("timing/plan_s", t0.elapsed().as_secs_f64());

        // Stage 7: update.
        let t0 = Instant::now();
        let total_opt_steps = r.trainer.total_steps * r.optimizer_steps_per_step() as u64;
        let shard = RowShard { rows: &positions, global_rows: ledger.total as i64 * g, dist: &self.dist };
        let inputs = UpdateInputs { recipe: &r, batch: &batch, plan, old_logp, ref_logp: ref_logp.as_ref(), ntp: &rollouts.prompts.ntp, shard };
        if let Some(rm) = &self.rmt {
            m.set("rmt/budget", rm.budget(self.state.step) as f64);
            let p = rm.tier_probs(self.state.step);
            m.set("rmt/p_easy", p[0]);
            m.set("rmt/p_hard", p[2]);
            // This rank's; summed over ranks in finish_step (dp::SUMMED).
            m.set("rmt/ntp_seqs", rollouts.prompts.ntp.iter().flatten().count() as f64);
            m.set("rmt/ntp_tokens", rollouts.prompts.ntp.iter().flatten().map(|q| q.tokens()).sum());
        }
        if self.record_steps {
            self.learner.trace = Some(Vec::new());
        }
        let report = self.learner.update(&inputs, total_opt_steps);
        let updates = self.learner.trace.take();
        let report = report?;
        run_loop::test_fault(self.state.step + 1, "update")?;
        m.set("timing/update_s", t0.elapsed().as_secs_f64());
        if self.rmt.is_some() {
            m.set("rmt/ntp_tokens_trained", report.ntp_tokens);
        }
        if self.learner.nonfinite_in_a_row >= r.trainer.max_nonfinite_in_a_row {
            return Err(TrainError::Aborted(format!(
                "{} non-finite losses or gradients in a row (trainer.max_nonfinite_in_a_row = {}): stopping",
                self.learner.nonfinite_in_a_row, r.trainer.max_nonfinite_in_a_row
            )));
        }
        // Stage 8: weight sync. Colocated: the rollout reads the learner's tensors, nothing to copy.
        let version_before = self.version;
        self.version += report.applied as u64;

        step_metrics::fill(&mut m, &view.rows, &view.response_mask, &global_plan, &shaped, &view.entropy, &self.rewards.set().metrics());
        // Rank 0's rows with their (local) plan: with several ranks the sample log holds rank 0's
        // groups of the step.
        if let Some(log) = self.rollout_log.as_mut() {
            log.write(m.step, &rollouts, plan)?;
        }
        step_metrics::set_signal(&mut m, &rollouts);
        if self.show_samples > 0 {
            let mut rows = crate::report::rollouts::step_rows(m.step, &rollouts, plan, None);
            rows.truncate(self.show_samples);
            m.notes.push(crate::report::rollouts::render_rows(&rows, false));
        }
        let hapo_stats = global_plan.hapo_stats;
        if let Some(updates) = updates {
            let old_logp = match old_source {
                OldLogpSource::Recomputed => recomputed.map(|(lp, _)| lp),
                OldLogpSource::Rollout => Some(batch.rollout_logp.shallow_clone()),
                OldLogpSource::LearnerFirstPass => None,
            };
            let step = self.state.step + 1;
            // The plan of this rank's rows (the step's plan for one process).
            let plan = local_plan.unwrap_or(global_plan);
            let (groups, scores) = (rollouts.groups, rollouts.scores);
            let record = StepRecord { step, version_before, groups, scores, shaped, batch, old_logp_source: old_source, old_logp, ref_logp, plan, updates };
            self.last_step = Some(record);
        }
        self.finish_step(&mut m, t_step, comm, Some((&report, hapo_stats)))?;
        Ok(m)
    }

    fn finish_step(&mut self, m: &mut StepMetrics, t_step: Instant, comm: dist::CommStats, update: Option<(&UpdateReport, Option<rlpo_algo::HapoStats>)>) -> Result<()> {
        self.globalize_metrics(m)?;
        step_metrics::signal_fractions(m);
        if self.dist.is_distributed() {
            // This rank's wall time inside collectives (waiting for slower ranks included).
            m.set("timing/collectives_s", self.dist.stats().seconds - comm.seconds);
        }
        let hapo = update.and_then(|(_, h)| h);
        if let Some((rep, _)) = update {
            step_metrics::fill_update(m, rep);
        }
        self.state.advance(hapo);
        let secs = t_step.elapsed().as_secs_f64();
        m.set("timing/step_s", secs);
        if let Some(tok) = m.get("perf/rollout_tokens") {
            if let Some(rs) = m.get("timing/rollout_s") {
                m.set("perf/rollout_tokens_per_s", tok / rs.max(1e-9));
            }
        }
        m.set("train/policy_version", self.version as f64);
        m.set("data/skipped_too_long", std::mem::take(&mut self.skipped_too_long) as f64);
        self.eval_after_step(m)?;
        m.notes.extend(step_metrics::warnings(m, &self.run_dir));
        if !self.recipe.metrics.console && self.dist.is_main() {
            for n in &m.notes {
                eprintln!("{}", n.trim_end());
            }
        }
        // The step is complete: history first, so a failing sink still leaves its metrics for
        // the checkpoint.
        self.history.push(m.clone());
        for s in &mut self.sinks {
            s.record(m)?;
        }
        let every = self.recipe.metrics.report_every;
        if every > 0 && m.step.is_multiple_of(every) && self.recipe.metrics.jsonl && self.dist.is_main() {
            crate::report::write(&self.run_dir)?;
        }
        Ok(())
    }

    /// Which kernels each phase of a step runs, one line per phase (printed by `rlpo train`).
    pub fn describe_paths(&self) -> String {
        let t = &self.recipe.trainer;
        let m = &self.learner.model;
        let opt = if self.learner.opt.fused() { "fused multi-tensor AdamW (LibTorch _fused_adamw_)" } else { "per-parameter AdamW" };
        format!(
            "paths on {:?} {:?}:\n  learner: attention {}; activation checkpointing {}; {opt}\n  rollout: {}",
            m.device(),
            m.kind(),
            if t.packed_rows { rlpo_model::AttentionPath::SdpaVarlen } else { rlpo_model::AttentionPath::SdpaCausal }.describe(),
            if t.activation_checkpointing { "on" } else { "off" },
            self.backend.describe(&self.recipe, m)
        )
    }

    /// Resume from a checkpoint directory (verified; the recipe must match, see
    /// [`checkpoint::load`]).
    pub fn resume_from(&mut self, dir: &std::path::Path) -> Result<()> {
        checkpoint::load(self, dir)?;
        self.resumed_at = Some((self.state.step, dir.to_path_buf()));
        Ok(())
    }

    /// `--resume auto`: resume from the checkpoint [`checkpoint::select_auto`] picks (each file
    /// hashed once), saying on stderr which checkpoints it skipped and why. `Ok(None)`: nothing
    /// verified to resume from. With several ranks rank 0 chooses and verifies, and every rank
    /// loads its choice (broadcast), so they all continue from the same checkpoint.
    pub fn resume_auto(&mut self) -> Result<Option<PathBuf>> {
        let mut chosen = Vec::new();
        if self.dist.is_main() {
            let choice = checkpoint::select_auto(&checkpoint::checkpoints_dir(&self.run_dir));
            for n in &choice.notes {
                eprintln!("{n}");
            }
            chosen = choice.chosen.map(|d| d.to_string_lossy().into_owned().into_bytes()).unwrap_or_default();
        }
        self.dist.broadcast_bytes("the checkpoint to resume from", &mut chosen, 0)?;
        if chosen.is_empty() {
            return Ok(None);
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&chosen).into_owned());
        checkpoint::load_verified(self, &dir)?;
        self.resumed_at = Some((self.state.step, dir.clone()));
        Ok(Some(dir))
    }

    /// The reward counters so far.
    pub fn rewards_metrics(&self) -> rlpo_reward::metrics::RewardMetrics {
        self.rewards.set().metrics()
    }

    /// Where the dataset continues.
    pub fn data_cursor(&self) -> rlpo_data::DataCursor {
        self.dataset.cursor()
    }

    /// Restore the non-tensor state of a checkpoint. With several ranks each takes its part of
    /// the saved (whole) prefetched rollout, and rank 0 alone carries the saved reward counters
    /// (the metrics sum the ranks' counters).
    pub fn restore_state(&mut self, st: &checkpoint::TrainerState) -> Result<()> {
        self.dataset.restore(&st.data_cursor)?;
        self.state = rlpo_algo::AlgoState { total_steps: self.recipe.trainer.total_steps, ..st.algo };
        self.version = st.version;
        let (rank, world) = (self.dist.rank(), self.dist.world());
        self.prefetched = st.prefetched.as_ref().map(|p| local_prefetch(p, rank, world));
        if self.dist.is_distributed() {
            self.restored_prefetch = st.prefetched.clone();
            self.reward_totals = Some(st.reward_counters);
            if !self.dist.is_main() {
                return self.restore_rest(st);
            }
        }
        self.restore_rest(st)?;
        let c = self.rewards.set().counters();
        let [samples, errors, timeouts, restarts] = st.reward_counters;
        c.add_samples(samples);
        c.add_errors(errors);
        c.add_timeouts(timeouts);
        for _ in 0..restarts {
            c.add_restart();
        }
        Ok(())
    }

    fn restore_rest(&mut self, st: &checkpoint::TrainerState) -> Result<()> {
        if let Some(rm) = self.rmt.as_mut() {
            rm.restore(st.rmt_sampler.as_ref())?;
        }
        self.learner.nonfinite_in_a_row = st.nonfinite_in_a_row;
        Ok(())
    }
}

fn add(m: &mut StepMetrics, k: &str, v: f64) {
    *m.scalars.entry(k.to_string()).or_insert(0.0) += v;
}

impl ScoredRollouts {
    /// Keep the groups whose flag is set (rows follow their group).
    fn retain_groups(mut self, keep: &[bool], g: usize) -> Self {
        let rows: Vec<bool> = keep.iter().flat_map(|k| std::iter::repeat_n(*k, g)).collect();
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            let old = std::mem::take(v);
            v.extend(old.into_iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| x));
        }
        self.prompts.retain(keep);
        filter(&mut self.groups, keep);
        filter(&mut self.scores, &rows);
        filter(&mut self.correct, &rows);
        filter(&mut self.responses, &rows);
        filter(&mut self.outputs, &rows);
        self
    }

    fn append(&mut self, other: ScoredRollouts) {
        self.prompts.extend(other.prompts);
        self.groups.extend(other.groups);
        self.scores.extend(other.scores);
        self.correct.extend(other.correct);
        self.responses.extend(other.responses);
        self.outputs.extend(other.outputs);
        self.dropped.extend(other.dropped);
    }

    fn truncate_groups(&mut self, groups: usize, g: usize) {
        let keep: Vec<bool> = (0..self.groups.len()).map(|i| i < groups).collect();
        let taken = std::mem::replace(
            self,
            ScoredRollouts {
                prompts: PromptBatch { samples: vec![], ids: vec![], texts: vec![], ntp: vec![] },
                groups: vec![],
                scores: vec![],
                correct: vec![],
                outputs: vec![],
                responses: vec![],
                gen_batches: 0,
                dropped_groups: 0,
                dropped: vec![],
            },
        );
        *self = taken.retain_groups(&keep, g);
    }
}
