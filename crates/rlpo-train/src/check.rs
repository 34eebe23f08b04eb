//! `rlpo check RECIPE`: everything that can be checked without training — the recipe, the
//! `[reward]` section, each external reward plugin started once with its handshake (unless
//! `--no-plugins`), the model directory, the prompt format and the length of every data row as
//! the model will see it (streamed, each row that does not fit the context named) — and the plan
//! of a step: batches, checkpoint size, the memory plan per device ([`memory`]).
//!
//! With several ranks (`CheckOptions::world`), the plan of each rank: its prompts, rows,
//! micro-batches, devices and the memory plan of its device.
//!
//! Every finding is collected before anything is refused: [`CheckReport::problems`] lists what
//! stops a run (a missing model or data file, a plugin that does not start, rows that do not fit
//! under `data.too_long = "error"`, a memory plan over its budget), and the binary exits
//! non-zero after printing the whole report when there is one. With a memory budget
//! (`--gpu-mem`, or 80 GiB by default on a `cuda` device) the biggest item of a plan that does not
//! fit is named. A CUDA device that is not visible on this machine is only a warning: recipes are
//! often checked on another machine than the GPU one.

pub mod lean;
pub mod memory;
#[cfg(test)]
mod memory_tests;

use crate::error::{invalid, Result};
use crate::inspect::human_bytes;
use crate::prompts::PromptStyle;
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
    /// Do not start external reward plugins (`--no-plugins`).
    pub no_plugins: bool,
    /// Ranks of the run (0 or 1 = one process).
    pub world: usize,
    /// Ranks per node (device placement; 0 = all on one node).
    pub local_world: usize,
}

/// What [`check_with`] found.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// The plan, line by line.
    pub text: String,
    /// Things to look at that do not stop a run.
    pub warnings: Vec<String>,
    /// Things that stop a run, each naming the recipe key or file at fault.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

/// [`check_with`] with default options.
pub fn check(recipe: &Recipe) -> Result<CheckReport> {
    check_with(recipe, &CheckOptions::default())
}

/// The recipe's spelling of an enum value (`grpo`, `token_mean`), not its Rust name.
pub(crate) fn spelled<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Bytes of one checkpoint of `cfg` trained in `param_bytes`-byte parameters: the model in its
/// dtype, and (with `checkpoint.save_optimizer`) AdamW's two fp32 moments plus fp32 master
/// weights for parameters below fp32 — what `checkpoint::save` writes, to within the tokenizer
/// and JSON files.
pub fn checkpoint_bytes(cfg: &ModelConfig, param_bytes: usize, save_optimizer: bool) -> (f64, f64) {
    let p = cfg.num_parameters() as f64;
    let model = p * param_bytes as f64;
    let opt = if save_optimizer { p * 8.0 + if param_bytes < 4 { p * 4.0 } else { 0.0 } } else { 0.0 };
    (model, opt)
}

/// The report. `Err` only for what stops the check itself (an unreadable recipe value); every
/// finding about files, plugins, data and memory is in the report.
pub fn check_with(recipe: &Recipe, opts: &CheckOptions) -> Result<CheckReport> {
    let mut rep = CheckReport::default();
    let r = recipe;
    let g = r.rollout.group_size;
    let b = r.trainer.prompts_per_step;
    let world = opts.world.max(1);
    if b < world {
        return Err(invalid("trainer.prompts_per_step", format!("{b} prompt(s) per step cannot be split over {world} ranks (each rank needs at least one)")));
    }
    // The rows one rank rolls out and trains at most (the first ranks take one prompt more).
    let rows = b.div_ceil(world) * g;
    let mut out = String::new();
    out += &format!("run            {} (seed {}) -> {}\n", r.run.name, r.run.seed, r.run_dir().display());
    rlpo_reward::validate(&r.reward)?;
    let kind = rlpo_model::parse_dtype(&r.model.dtype).map_err(|e| invalid("model.dtype", e.to_string()))?;
    let model_cfg = if r.model.path.is_dir() {
        match ModelConfig::from_dir(&r.model.path) {
            Ok(c) => Some(c),
            Err(e) => {
                rep.problems.push(format!("model.path: {e}"));
                None
            }
        }
    } else {
        rep.problems.push(format!("model.path: {} is not a directory here (an HF model directory with config.json, *.safetensors and tokenizer.json is required to train)", r.model.path.display()));
        None
    };
    if let Some(c) = &model_cfg {
        out += &format!(
            "model          {} ({}, {:.1}M parameters, {} layers, vocab {}) on {} in {}\n",
            r.model.path.display(),
            format!("{:?}", c.family).to_lowercase(),
            c.num_parameters() as f64 / 1e6,
            c.num_hidden_layers,
            c.vocab_size,
            r.model.device,
            r.model.dtype
        );
    }
    let cuda = r.model.device.trim().to_ascii_lowercase().starts_with("cuda");
    if cuda && tch::Cuda::device_count() == 0 {
        rep.warnings.push(format!("model.device = {} but no CUDA device is visible on this machine", r.model.device));
    }
    out += &format!("prompts/step   {b} x group_size {g} = {} rollouts, at most {} new tokens each\n", b * g, r.rollout.max_new_tokens);
    out += &format!(
        "batches        mini-batch {} rows, micro-batch {} rows -> {} optimizer step(s) per training step x {} steps = {}\n",
        r.mini_batch_rows(),
        r.micro_batch_rows(),
        r.optimizer_steps_per_step(),
        r.trainer.total_steps,
        r.optimizer_steps_per_step() as u64 * r.trainer.total_steps
    );
    out += &format!(
        "algorithm      advantage = {}, loss.base = {}, loss.agg = {}, d3s {}, hapo {}, rmt {}, dapo filter {}, overlong {}\n",
        spelled(&r.algorithm.advantage),
        spelled(&r.loss.base),
        spelled(&r.loss.agg_mode()),
        on(r.algorithm.d3s.is_some()),
        on(r.algorithm.hapo.is_some()),
        on(r.algorithm.rmt.is_some()),
        on(r.algorithm.dapo.filter_groups.is_some()),
        on(r.algorithm.dapo.overlong.is_some())
    );
    out += &format!("reward         {} function(s), on_error = {} (validated)\n", r.reward.fns.len(), r.reward.on_error.as_str());
    if world > 1 {
        out += &rank_plan(r, world, opts.local_world)?;
    }
    out += &plugins(r, opts, &mut rep);
    let (prompt_len, prompt_src, preview) = prompt_length(r, &mut rep);
    out += &preview;
    out += &format!("prompt length  {prompt_len} tokens ({prompt_src})\n");
    out += &lean::render(r, model_cfg.as_ref(), prompt_len, kind.elt_size_in_bytes());
    if let Some(c) = &model_cfg {
        let (model_b, opt_b) = checkpoint_bytes(c, kind.elt_size_in_bytes(), r.checkpoint.save_optimizer);
        let each = (model_b + opt_b) as u64;
        let opt_note = if r.checkpoint.save_optimizer {
            format!("optimizer {}", human_bytes(opt_b as u64))
        } else {
            "no optimizer state: checkpoint.save_optimizer = false, so a stopped run restarts from its weights with --init-from instead of resuming bit-exactly".into()
        };
        out += &format!(
            "checkpoints    ~{} each (model {}, {opt_note}); keep_last = {} -> ~{} on disk{}\n",
            human_bytes(each),
            human_bytes(model_b as u64),
            r.checkpoint.keep_last,
            human_bytes(each * r.checkpoint.keep_last.max(1) as u64),
            if r.checkpoint.save_final { format!(", plus final/ {}", human_bytes(model_b as u64)) } else { String::new() }
        );
        let shape = StepShape {
            param_bytes: kind.elt_size_in_bytes(),
            micro_rows: r.micro_batch_rows().min(rows),
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
        let whose = if world > 1 { format!("of one rank, {rows} rows; ") } else { String::new() };
        out += &format!("memory plan    per device ({whose}{}; learner and rollout share it):\n", r.model.device);
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
                rep.problems.push(format!(
                    "{}: the memory plan does not fit: peak {:.2} GiB per device > budget {:.2} GiB ({whence}); biggest item: {} {:.2} GiB ({} phase; {} shrinks it)",
                    big.knob,
                    peak / GIB,
                    budget / GIB,
                    big.name,
                    big.bytes / GIB,
                    big.phase.label(),
                    big.knob,
                ));
            } else {
                out += &format!("  fits the {:.2} GiB budget ({whence}) with {:.2} GiB to spare\n", budget / GIB, (budget - peak) / GIB);
            }
        } else if let Some(total) = host_memory_bytes() {
            if plan.peak() > total {
                rep.warnings.push(format!("the plan's peak {:.2} GiB exceeds this machine's {:.2} GiB of RAM", plan.peak() / GIB, total / GIB));
            }
        }
    }
    rep.text = out;
    Ok(rep)
}

/// The `plugins` lines: each external reward command started once (or why not).
fn plugins(r: &Recipe, opts: &CheckOptions, rep: &mut CheckReport) -> String {
    let n = r.reward.fns.iter().filter(|f| matches!(f, rlpo_reward::FnConfig::External(_))).count();
    if n == 0 {
        return String::new();
    }
    if opts.no_plugins {
        return format!("plugins        {n} external command(s) not started (--no-plugins)\n");
    }
    let mut out = String::new();
    for p in rlpo_reward::start_plugins_once(&r.reward) {
        let cmd = p.command.join(" ");
        match p.result {
            Ok(secs) => out += &format!("plugin         {} `{cmd}`: started, handshake answered in {secs:.1} s\n", p.name),
            Err(e) => {
                out += &format!("plugin         {} `{cmd}`: FAILED to start (see below)\n", p.name);
                rep.problems.push(format!("{}.command: {e}", p.key));
            }
        }
    }
    out
}

/// The per-rank lines of `rlpo check` for `world` ranks, `local_world` per node: each rank's
/// prompts of a generation batch, rows, micro-batches per optimizer step and devices. Mini-batches
/// (optimizer steps) are global; a rank forwards its rows of each global micro-batch.
fn rank_plan(r: &Recipe, world: usize, local_world: usize) -> Result<String> {
    let local_world = if local_world == 0 { world } else { local_world.min(world) };
    let g = r.rollout.group_size;
    let gen_b = match &r.algorithm.dapo.filter_groups {
        Some(f) => (f.gen_batch_factor * r.trainer.prompts_per_step as f64).ceil() as usize,
        None => r.trainer.prompts_per_step,
    };
    let (n, mini, micro) = (r.trainer.prompts_per_step * g, r.mini_batch_rows(), r.micro_batch_rows());
    let mut out = format!(
        "ranks          {world} ({} node(s) x {local_world}): every rank draws each generation batch of {gen_b} prompts and rolls out its part; mini-batches of {mini} rows are global (one all-reduce of the gradients each), micro-batches of at most {micro} rows per rank\n",
        world.div_ceil(local_world)
    );
    let shown: Vec<usize> = if world <= 4 { (0..world).collect() } else { vec![0, 1, world - 1] };
    for (k, &rank) in shown.iter().enumerate() {
        if k > 0 && rank != shown[k - 1] + 1 {
            out += "  ...\n";
        }
        let part = crate::dist::shard_range(gen_b, rank, world);
        let trained = crate::dist::shard_range(r.trainer.prompts_per_step, rank, world);
        let rows = trained.len() * g;
        // Rows of each global micro-batch this rank holds, without filtering (DAPO moves them).
        let first = trained.start * g;
        let micro_batches: usize = (0..n)
            .step_by(mini.max(1))
            .map(|m0| {
                let end = (m0 + mini).min(n);
                (m0..end).step_by(micro.max(1)).filter(|&u| u < first + rows && (u + micro).min(end) > first).count()
            })
            .sum();
        let env = rlpo_dist::LaunchEnv {
            rank,
            world,
            local_rank: rank % local_world,
            local_world,
            master_addr: String::new(),
            master_port: 0,
            source: rlpo_dist::LaunchSource::Torchrun,
            external_store: false,
            attempt: 0,
        };
        let placed = crate::dist::place::place_on(r, &env, usize::MAX, None)?;
        out += &format!(
            "  rank {rank:<5} prompts {}..{} of each generation batch ({} prompt(s), {} rollouts); trains ~{rows} rows in {micro_batches} micro-batch(es) per step; learner {}, rollout {}\n",
            part.start,
            part.end,
            part.len(),
            part.len() * g,
            placed.model.device,
            placed.model.rollout_device.as_deref().unwrap_or(&placed.model.device)
        );
    }
    Ok(out)
}

/// Prompts tokenized per batch while scanning the data (bounds memory for any file size).
const SCAN_CHUNK: usize = 256;
/// Too-long rows named in the message; the rest are counted.
const NAMED_ROWS: usize = 5;

/// The longest prompt, in tokens, over **every** row of the data (read one row at a time),
/// rendered and tokenized exactly as the trainer does, with the `prompts` lines (the resolved
/// `data.prompt_format` and the first row as the model sees it); [`PROMPT_LEN_ESTIMATE`] when
/// the model directory or the data file is not here (a problem). Data that fails to load, and
/// rows that do not fit the model's context under `data.too_long = "error"`, are problems.
fn prompt_length(r: &Recipe, rep: &mut CheckReport) -> (usize, String, String) {
    let estimate = |why: &str| (PROMPT_LEN_ESTIMATE, format!("estimate: {why}"), String::new());
    let data_missing = match (&r.data.path, r.data.source) {
        (Some(p), rlpo_data::SourceKind::Jsonl | rlpo_data::SourceKind::Parquet | rlpo_data::SourceKind::Text) => {
            !p.starts_with("builtin:") && !p.exists()
        }
        _ => false,
    };
    if data_missing {
        let p = r.data.path.as_ref().expect("checked above");
        rep.problems.push(format!("data.path: {} does not exist here (required to train)", p.display()));
    }
    if !r.model.path.is_dir() {
        return estimate("no tokenizer here");
    }
    let loaded = TextTokenizer::from_dir(&r.model.path).map_err(|e| e.to_string()).and_then(|tok| {
        let style = PromptStyle::resolve(&r.data, &tok, r.model.system_prompt.as_deref(), "data").map_err(|e| e.to_string())?;
        let context = ModelConfig::from_dir(&r.model.path).map_err(|e| e.to_string())?.max_position_embeddings.max(0) as usize;
        Ok((tok, style, context))
    });
    let (tok, style, context) = match loaded {
        Ok(x) => x,
        // A missing data file is the first reason for the estimate; the tokenizer's failure is a
        // problem of its own either way.
        Err(e) => {
            rep.problems.push(format!("model.path: {e}"));
            return estimate(if data_missing { "data.path not here" } else { "the tokenizer does not load" });
        }
    };
    if data_missing {
        return estimate("data.path not here");
    }
    match scan_data(r, &tok, &style, context) {
        Ok((scan, preview)) => {
            if !scan.too_long.is_empty() {
                let what = scan.describe(r);
                match r.data.too_long {
                    rlpo_data::TooLong::Error => {
                        rep.problems.push(format!("data.too_long: {what}; set data.too_long = \"skip\" to skip them, or shorten them"))
                    }
                    rlpo_data::TooLong::Skip => rep.warnings.push(format!("{what}; data.too_long = \"skip\": they will be skipped")),
                }
            }
            (scan.longest.max(1), format!("longest of all {} prompts, as the model sees them", scan.rows), preview)
        }
        Err(e) => {
            rep.problems.push(format!("data: {e}"));
            estimate("the data does not load")
        }
    }
}

/// Stream every row through the trainer's rendering: the totals and the `prompts` preview
/// (rendered from the first row).
fn scan_data(r: &Recipe, tok: &TextTokenizer, style: &PromptStyle, context: usize) -> Result<(Scan, String)> {
    let cwd = std::env::current_dir().map_err(|e| crate::error::io(".", e))?;
    let mut scan = Scan { context, ..Scan::default() };
    let mut chunk = Vec::with_capacity(SCAN_CHUNK);
    let mut first: Option<rlpo_data::Sample> = None;
    let flush = |chunk: &mut Vec<(rlpo_data::RowRef, rlpo_data::Sample)>, scan: &mut Scan| -> Result<()> {
        let (rows, samples): (Vec<_>, Vec<_>) = std::mem::take(chunk).into_iter().unzip();
        let batch = crate::prompts::build(tok, samples, style)?;
        for (row, (ids, s)) in rows.into_iter().zip(batch.ids.iter().zip(&batch.samples)) {
            scan.add(row, &s.id, ids.len());
        }
        Ok(())
    };
    rlpo_data::for_each_sample(&r.data, &cwd, |row, sample| {
        if first.is_none() {
            first = Some(sample.clone());
        }
        chunk.push((row, sample));
        if chunk.len() == SCAN_CHUNK {
            flush(&mut chunk, &mut scan).map_err(|e| rlpo_data::Error::Stopped { reason: e.to_string() })?;
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut scan)?;
    // RMT mid-training documents are not prompts: RMT builds chat prompts from them.
    let example = first.as_ref().filter(|_| r.data.source != rlpo_data::SourceKind::Text);
    Ok((scan, crate::prompts::preview(style, tok, example)?))
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
