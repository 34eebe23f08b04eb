//! The library side of `rlpo eval`: find the model (an HF directory, a checkpoint, or a run
//! directory's newest verified checkpoint), load it with the recipe's device and dtype, sample
//! and score every problem through the same rollout backend as training (packed host kernels
//! on CPU), and write `samples.jsonl`, `summary.json` and, with `--audit`, `audit.jsonl`.

use super::audit::{self, VerifierAudit};
use super::config::eval_seed;
use super::runner::{self, EvalSampling, SampleRecord};
use super::summary::{summarise, EvalSummary};
use crate::checkpoint;
use crate::error::{invalid, io, Result, TrainError};
use crate::recipe::Recipe;
use crate::rollout_backend::RolloutBackend;
use rlpo_data::DataConfig;
use rlpo_model::{CausalLm, LoadOptions, TextTokenizer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSource {
    /// The HF directory to load.
    pub model_dir: PathBuf,
    /// The checkpoint it belongs to, if any (verified against its manifest).
    pub checkpoint: Option<PathBuf>,
    /// The recipe the checkpoint was trained with (`recipe.resolved.toml`), if any.
    pub recipe_file: Option<PathBuf>,
    /// A short name for output folders: the model directory's name, or `<run>-step-NNNNNN`.
    pub label: String,
}

/// Resolve `--model`: a directory with `config.json` is an HF model; otherwise a checkpoint or a
/// run directory (its newest checkpoint that verifies, see [`checkpoint::resolve`]).
pub fn resolve_model(path: &Path) -> Result<ModelSource> {
    let name = |p: &Path| p.file_name().map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    if path.join("config.json").is_file() {
        return Ok(ModelSource { model_dir: path.to_path_buf(), checkpoint: None, recipe_file: None, label: name(path) });
    }
    let ckpt = checkpoint::resolve(path, true)?;
    let run = ckpt.parent().and_then(Path::parent).map(name).unwrap_or_default();
    let recipe = ckpt.join("recipe.resolved.toml");
    Ok(ModelSource {
        model_dir: ckpt.join("model"),
        recipe_file: recipe.is_file().then_some(recipe),
        label: format!("{run}-{}", name(&ckpt)),
        checkpoint: Some(ckpt),
    })
}

/// What `rlpo eval` asks for besides the recipe.
#[derive(Debug, Clone)]
pub struct EvalJob {
    /// The problems.
    pub data: DataConfig,
    /// How many problems (the first N of the data's order).
    pub problems: usize,
    /// Samples per problem, n.
    pub samples: usize,
    /// k values.
    pub ks: Vec<usize>,
    /// Run seed the evaluation seed is derived from.
    pub seed: u64,
    /// Rows per generation batch.
    pub rows_per_batch: usize,
}

/// The outcome of [`evaluate`].
#[derive(Debug)]
pub struct EvalOutcome {
    /// One record per sample.
    pub records: Vec<SampleRecord>,
    /// The numbers.
    pub summary: EvalSummary,
    /// Per verifier, the correct judgements on a weak signal.
    pub audit: BTreeMap<String, VerifierAudit>,
}

/// A progress bar over problems with ETA on stderr (a plain line per batch without a terminal).
pub fn progress_bar(total: usize) -> impl FnMut(usize, usize) {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} problems, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    move |done, total| {
        bar.set_position(done as u64);
        if bar.is_hidden() {
            eprintln!("eval: {done}/{total} problems ({:.0} s)", bar.elapsed().as_secs_f64());
        }
        if done == total {
            bar.finish();
        }
    }
}

/// Load `recipe.model.path` and evaluate it on `job` with the recipe's `[rollout]` sampling
/// (HAPO adaptive temperature off) and `[reward]`.
pub fn evaluate(recipe: &Recipe, job: &EvalJob, progress: &mut dyn FnMut(usize, usize)) -> Result<EvalOutcome> {
    if recipe.run.threads > 0 {
        tch::set_num_threads(recipe.run.threads as i32);
    }
    let dir = &recipe.model.path;
    let device = rlpo_model::parse_device(&recipe.model.device).map_err(|e| invalid("model.device", e.to_string()))?;
    let kind = rlpo_model::parse_dtype(&recipe.model.dtype).map_err(|e| invalid("model.dtype", e.to_string()))?;
    let tokenizer = Arc::new(TextTokenizer::from_dir(dir)?);
    let model = CausalLm::load(dir, &LoadOptions { device, kind })?;
    let problems = runner::load_problems(&job.data, job.problems, &tokenizer, recipe.model.system_prompt.as_deref(), "--data")?;
    let rewards = rlpo_reward::build(&recipe.reward)?;
    let verifier = runner::verifier_of(&recipe.reward);
    // The training rollout path, synchronous (no overlap to gain here).
    let mut synchronous = recipe.clone();
    synchronous.trainer.max_staleness = 0;
    let mut backend = RolloutBackend::new(&synchronous, &model, &tokenizer)?;
    backend.sync(&model, 0)?;
    let mut engine = rlpo_rollout::Engine::with_tokenizer(tokenizer.clone());
    let mut params = recipe.rollout.clone();
    params.group_size = job.samples;
    params.adaptive_temperature = None;
    let sampling = EvalSampling { params, seed: eval_seed(job.seed), rows_per_batch: job.rows_per_batch, policy_version: 0 };
    let mut generate = |req: &rlpo_rollout::GenerateRequest| backend.generate(&mut engine, &model, req);
    let records = runner::run(&problems, &sampling, &rewards, verifier.as_deref(), &tokenizer, &mut generate, progress)?;
    let summary = summarise(&records, job.samples, &job.ks, verifier.as_deref());
    let audit = audit::audit(&records);
    Ok(EvalOutcome { records, summary, audit })
}

/// Write `samples.jsonl`, `summary.json` and (with `with_audit`) `audit.jsonl` into `out`.
pub fn write_outputs(out: &Path, o: &EvalOutcome, with_audit: bool) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let lines = |items: &mut dyn Iterator<Item = serde_json::Result<String>>| -> Result<Vec<u8>> {
        let mut body = Vec::new();
        for l in items {
            body.extend(l.map_err(|e| TrainError::Aborted(format!("eval output: {e}")))?.into_bytes());
            body.push(b'\n');
        }
        Ok(body)
    };
    let mut written = Vec::new();
    let samples = out.join("samples.jsonl");
    super::during_training::write_atomic(&samples, &lines(&mut o.records.iter().map(serde_json::to_string))?)?;
    written.push(samples);
    let summary = out.join("summary.json");
    let text = serde_json::to_vec_pretty(&o.summary).map_err(|e| TrainError::Aborted(format!("eval summary: {e}")))?;
    super::during_training::write_atomic(&summary, &text)?;
    written.push(summary);
    if with_audit {
        let path = out.join("audit.jsonl");
        let entries = o.audit.values().flat_map(|v| &v.weak);
        super::during_training::write_atomic(&path, &lines(&mut entries.map(serde_json::to_string))?)?;
        written.push(path);
    }
    Ok(written)
}
