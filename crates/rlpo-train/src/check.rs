//! `rlpo check RECIPE`: everything that can be checked without running — the recipe, the
//! `[reward]` section (built without starting plugins), the model config, the prompt length of
//! every data row (streamed, each row that does not fit the context named) — and the plan of a step: batches and the memory plan per device ([`memory`]).
//!
//! With a memory budget (`--gpu-mem`, or 80 GiB by default on a `cuda` device) a plan whose peak
//! does not fit is refused with its biggest item named. A CUDA device that is not visible on this
//! machine is only a warning: recipes are often checked on another machine than the GPU one.

pub mod memory;
#[cfg(test)]
mod memory_tests;

use crate::error::{invalid, Result};
use crate::recipe::Recipe;
use memory::{MemoryPlan, StepShape, GIB};
use rlpo_model::{ModelConfig, TextTokenizer};

/// Budget assumed for a `cuda` device when none is given.
pub const DEFAULT_GPU_BYTES: f64 = 80.0 * GIB;
/// Prompt length assumed when the data or the tokenizer is not available here.
pub const PROMPT_LEN_ESTIMATE: usize = 256;

/// Options of [`check_with`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Memory per device in bytes (`--gpu-mem`); `None` = 80 GiB on CUDA, no limit on CPU.
    pub gpu_mem: Option<f64>,
}

/// [`check_with`] with default options.
pub fn check(recipe: &Recipe) -> Result<String> {
    check_with(recipe, &CheckOptions::default())
}

/// A human-readable report; `Err` carries the first blocking problem (a bad `[reward]` value, an
/// unreadable model config or tokenizer, data that fails to load, a plan over the budget).
pub fn check_with(recipe: &Recipe, opts: &CheckOptions) -> Result<String> {
    let mut out = String::new();
    let mut warn = Vec::new();
    let r = recipe;
    let g = r.rollout.group_size;
    let b = r.trainer.prompts_per_step;
    let rows = b * g;
    out += &format!("run            {} (seed {}) -> {}\n", r.run.name, r.run.seed, r.run_dir().display());
    rlpo_reward::validate(&r.reward)?;
    let model_cfg = if r.model.path.is_dir() {
        Some(ModelConfig::from_dir(&r.model.path)?)
    } else {
        warn.push(format!("model.path {} does not exist here (required to train)", r.model.path.display()));
        None
    };
    let kind = rlpo_model::parse_dtype(&r.model.dtype).map_err(|e| invalid("model.dtype", e.to_string()))?;
    if let Some(c) = &model_cfg {
        out += &format!(
            "model          {} ({:?}, {:.1}M parameters, {} layers, vocab {}) on {} in {}\n",
            r.model.path.display(),
            c.family,
            c.num_parameters() as f64 / 1e6,
            c.num_hidden_layers,
            c.vocab_size,
            r.model.device,
            r.model.dtype
        );
    }
    let cuda = r.model.device.trim().to_ascii_lowercase().starts_with("cuda");
    if cuda && tch::Cuda::device_count() == 0 {
        warn.push(format!("model.device = {} but no CUDA device is visible on this machine", r.model.device));
    }
    out += &format!("prompts/step   {b} x group_size {g} = {rows} rollouts, at most {} new tokens each\n", r.rollout.max_new_tokens);
    out += &format!(
        "batches        mini-batch {} rows, micro-batch {} rows -> {} optimizer step(s) per training step x {} steps = {}\n",
        r.mini_batch_rows(),
        r.micro_batch_rows(),
        r.optimizer_steps_per_step(),
        r.trainer.total_steps,
        r.optimizer_steps_per_step() as u64 * r.trainer.total_steps
    );
    out += &format!(
        "algorithm      advantage {:?}, base loss {:?}, d3s {}, hapo {}, rmt {}, dapo filter {}, overlong {}\n",
        r.algorithm.advantage,
        r.loss.base,
        on(r.algorithm.d3s.is_some()),
        on(r.algorithm.hapo.is_some()),
        on(r.algorithm.rmt.is_some()),
        on(r.algorithm.dapo.filter_groups.is_some()),
        on(r.algorithm.dapo.overlong.is_some())
    );
    out += &format!("reward         {} function(s), on_error = {} (validated)\n", r.reward.fns.len(), r.reward.on_error.as_str());
    let (prompt_len, prompt_src) = prompt_length(r, &mut warn)?;
    out += &format!("prompt length  {prompt_len} tokens ({prompt_src})\n");
    if let Some(c) = &model_cfg {
        let shape = StepShape {
            param_bytes: kind.elt_size_in_bytes(),
            micro_rows: r.micro_batch_rows(),
            rollout_rows: rows,
            prompt_len,
            max_new_tokens: r.rollout.max_new_tokens,
            logit_chunk: r.trainer.logit_chunk_positions.max(1) as usize,
            reference: r.loss.kl_coef > 0.0,
            compact_fraction: r.rollout.compact_fraction,
            cuda,
            activation_checkpointing: r.trainer.activation_checkpointing,
            fused_optimizer: r.optim.fused,
            // From the device string: the CUDA device need not be on this machine.
            device_sampling: match r.rollout.sampler {
                rlpo_rollout::SamplerPlacement::Auto => r.model.rollout_device.as_deref().unwrap_or(&r.model.device).starts_with("cuda"),
                p => p == rlpo_rollout::SamplerPlacement::Device,
            },
            top_p: r.rollout.top_p < 1.0 && !r.rollout.greedy,
        };
        let plan = MemoryPlan::new(c, &shape);
        out += &format!("memory plan    per device ({}; learner and rollout share it):\n", r.model.device);
        out += &plan.render();
        let (budget, whence) = match (opts.gpu_mem, cuda) {
            (Some(m), _) => (Some(m), "--gpu-mem".to_string()),
            (None, true) => (Some(DEFAULT_GPU_BYTES), "--gpu-mem not given: assuming an 80 GiB GPU".to_string()),
            (None, false) => (None, String::new()),
        };
        if let Some(budget) = budget {
            let peak = plan.peak();
            if peak > budget {
                let big = plan.biggest().expect("a plan has items");
                return Err(invalid(
                    big.knob,
                    format!(
                        "the memory plan does not fit: peak {:.2} GiB per device > budget {:.2} GiB ({whence}); biggest item: {} {:.2} GiB ({} phase; {} shrinks it)\n{}",
                        peak / GIB,
                        budget / GIB,
                        big.name,
                        big.bytes / GIB,
                        big.phase.label(),
                        big.knob,
                        plan.render()
                    ),
                ));
            }
            out += &format!("  fits the {:.2} GiB budget ({whence}) with {:.2} GiB to spare\n", budget / GIB, (budget - peak) / GIB);
        } else if let Some(total) = host_memory_bytes() {
            if plan.peak() > total {
                warn.push(format!("the plan's peak {:.2} GiB exceeds this machine's {:.2} GiB of RAM", plan.peak() / GIB, total / GIB));
            }
        }
    }
    for w in &warn {
        out += &format!("warning: {w}\n");
    }
    Ok(out)
}

/// Prompts tokenized per batch while scanning the data (bounds memory for any file size).
const SCAN_CHUNK: usize = 256;
/// Too-long rows named in the message; the rest are counted.
const NAMED_ROWS: usize = 5;

/// The longest prompt, in tokens, over **every** row of the data (read one row at a time),
/// rendered and tokenized exactly as the trainer does; [`PROMPT_LEN_ESTIMATE`] when the model
/// directory or the data file is not here. Data that exists but fails to load is an error. Rows
/// whose prompt does not fit the model's context are named: an error under
/// `data.too_long = "error"`, a warning under `"skip"`.
fn prompt_length(r: &Recipe, warn: &mut Vec<String>) -> Result<(usize, String)> {
    let estimate = |why: &str| (PROMPT_LEN_ESTIMATE, format!("estimate: {why}"));
    let data_missing = match (&r.data.path, matches!(r.data.source, rlpo_data::SourceKind::Synthetic)) {
        (Some(p), false) => !p.starts_with("builtin:") && !p.exists(),
        _ => false,
    };
    if data_missing {
        let p = r.data.path.as_ref().expect("checked above");
        warn.push(format!("data.path {} does not exist here (required to train)", p.display()));
    }
    if !r.model.path.is_dir() {
        return Ok(estimate("no tokenizer here"));
    }
    if data_missing {
        return Ok(estimate("data.path not here"));
    }
    let cwd = std::env::current_dir().map_err(|e| crate::error::io(".", e))?;
    let tok = TextTokenizer::from_dir(&r.model.path)?;
    let context = ModelConfig::from_dir(&r.model.path)?.max_position_embeddings.max(0) as usize;
    let mut scan = Scan { context, ..Scan::default() };
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    let system = r.model.system_prompt.as_deref();
    let flush = |chunk: &mut Vec<(rlpo_data::RowRef, rlpo_data::Sample)>, scan: &mut Scan| -> Result<()> {
        let (rows, samples): (Vec<_>, Vec<_>) = std::mem::take(chunk).into_iter().unzip();
        let batch = crate::prompts::build(&tok, samples, system)?;
        for (row, (ids, s)) in rows.into_iter().zip(batch.ids.iter().zip(&batch.samples)) {
            scan.add(row, &s.id, ids.len());
        }
        Ok(())
    };
    rlpo_data::for_each_sample(&r.data, &cwd, |row, sample| {
        chunk.push((row, sample));
        if chunk.len() == SCAN_CHUNK {
            flush(&mut chunk, &mut scan).map_err(|e| rlpo_data::Error::Stopped { reason: e.to_string() })?;
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut scan)?;
    if !scan.too_long.is_empty() {
        let what = scan.describe(r);
        match r.data.too_long {
            rlpo_data::TooLong::Error => return Err(invalid("data.too_long", format!("{what}; set data.too_long = \"skip\" to skip them, or shorten them"))),
            rlpo_data::TooLong::Skip => warn.push(format!("{what}; data.too_long = \"skip\": they will be skipped")),
        }
    }
    Ok((scan.longest.max(1), format!("longest of all {} prompts, chat template included", scan.rows)))
}

/// Running totals of the data scan.
#[derive(Default)]
struct Scan {
    context: usize,
    rows: usize,
    longest: usize,
    /// `(where, sample id, tokens)` of the first [`NAMED_ROWS`] prompts that do not fit.
    too_long: Vec<(String, String, usize)>,
    too_long_count: usize,
}

impl Scan {
    fn add(&mut self, row: rlpo_data::RowRef, id: &str, tokens: usize) {
        self.rows += 1;
        self.longest = self.longest.max(tokens);
        if tokens >= self.context {
            self.too_long_count += 1;
            if self.too_long.len() < NAMED_ROWS {
                self.too_long.push((row.to_string(), id.to_string(), tokens));
            }
        }
    }

    fn describe(&self, r: &Recipe) -> String {
        let file = r.data.path.as_ref().map_or_else(|| "data".to_string(), |p| p.display().to_string());
        let named: Vec<String> = self.too_long.iter().map(|(row, id, n)| format!("{row} (`{id}`, {n} tokens)")).collect();
        let more = self.too_long_count - self.too_long.len();
        format!(
            "{}: {} of {} prompts do not fit the model's context of {} tokens: {}{}",
            file,
            self.too_long_count,
            self.rows,
            self.context,
            named.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        )
    }
}

/// `MemTotal` of `/proc/meminfo`, if readable.
fn host_memory_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
