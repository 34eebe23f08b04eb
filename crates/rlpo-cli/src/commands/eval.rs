//! `rlpo eval --model DIR|CKPT|RUN --data SPEC --samples N [--k LIST] [--recipe R] [--audit]`:
//! n samples per problem with the recipe's sampling and `[reward]`, then mean reward, pass@k,
//! maj@k and the coverage curve per dataset; every sample to `samples.jsonl`, the numbers to
//! `summary.json`. The recipe is `--recipe`, else the checkpoint's own, else the embedded
//! quickstart; `--set`, `--temperature` and `--max-new-tokens` override it.

use anyhow::{Context, Result};
use rlpo_train::eval::config::{data_from_spec, parse_ks};
use rlpo_train::eval::{audit, standalone};
use rlpo_train::Recipe;
use std::path::PathBuf;

/// Arguments of `rlpo eval`.
#[derive(clap::Args)]
pub struct Args {
    /// An HF model directory, a checkpoint (step-NNNNNN) or a run directory (its newest verified checkpoint).
    #[arg(long)]
    model: PathBuf,
    /// Problems: a .jsonl / .parquet file, `synthetic:arithmetic`, `synthetic:countdown`, or `recipe` (the recipe's [data]).
    #[arg(long)]
    data: String,
    /// Samples per problem, n.
    #[arg(long, default_value_t = 16)]
    samples: usize,
    /// k values: comma list and ranges (`1,2,4`, `1-16`) or `all`; default 1, 2, 4, ..., n.
    #[arg(long, default_value = "")]
    k: String,
    /// Problems to evaluate: the first N of the data's order (fewer if the data has fewer).
    #[arg(long, default_value_t = 64)]
    problems: usize,
    /// Data seed (shuffle order; synthetic tasks are generated from it). Default: the recipe's.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Seed of the samples (an evaluation domain of it is used). Default: the recipe's run.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Recipe for sampling ([rollout]), rewards ([reward]), device and dtype ([model]).
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Override a recipe value, e.g. `--set rollout.top_p=0.95` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Sampling temperature (default: the recipe's rollout.temperature).
    #[arg(long)]
    temperature: Option<f64>,
    /// Token limit per sample (default: the recipe's rollout.max_new_tokens).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Rows per generation batch (default: the recipe's prompts_per_step x group_size).
    #[arg(long)]
    batch_rows: Option<usize>,
    /// List, per verifier, the correct judgements that rest on a weak signal; writes audit.jsonl.
    #[arg(long)]
    audit: bool,
    /// Output directory (default: eval/<model name>).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Resolve, evaluate, print, write.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.samples >= 1, "--samples must be >= 1");
    anyhow::ensure!(args.problems >= 1, "--problems must be >= 1");
    let source = standalone::resolve_model(&args.model)?;
    let recipe_path = args.recipe.clone().or_else(|| source.recipe_file.clone());
    let mut recipe = Recipe::load(recipe_path.as_deref(), &args.set)?;
    recipe.model.path = source.model_dir.clone();
    if let Some(t) = args.temperature {
        recipe.rollout.temperature = t;
    }
    if let Some(n) = args.max_new_tokens {
        recipe.rollout.max_new_tokens = n;
    }
    recipe.validate()?;
    let data = data_from_spec(&args.data, &recipe.data, args.data_seed).map_err(anyhow::Error::msg)?;
    if data == recipe.data {
        eprintln!("note: --data {} is the recipe's training data (pass --data-seed or another file for held-out problems)", args.data);
    }
    let ks = parse_ks(&args.k, args.samples).map_err(anyhow::Error::msg)?;
    let job = standalone::EvalJob {
        data,
        problems: args.problems,
        samples: args.samples,
        ks,
        seed: args.seed.unwrap_or(recipe.run.seed),
        rows_per_batch: args.batch_rows.unwrap_or(recipe.trainer.prompts_per_step * recipe.rollout.group_size).max(1),
    };
    let origin = recipe_path.as_ref().map_or("embedded quickstart".to_string(), |p| p.display().to_string());
    eprintln!(
        "rlpo eval: {} ({}), {} samples per problem, temperature {}, recipe {origin}",
        source.model_dir.display(),
        source.checkpoint.as_ref().map_or("HF directory".to_string(), |c| format!("checkpoint {}", c.display())),
        args.samples,
        recipe.rollout.temperature
    );
    let mut progress = standalone::progress_bar(args.problems);
    let outcome = standalone::evaluate(&recipe, &job, &mut progress).with_context(|| format!("evaluating {}", source.model_dir.display()))?;
    print!("{}", outcome.summary.table());
    if args.audit {
        print!("{}", audit::render(&outcome.audit, 10));
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from("eval").join(&source.label));
    for p in standalone::write_outputs(&out, &outcome, args.audit)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
