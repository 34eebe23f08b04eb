//! `rlpo check RECIPE [--gpu-mem 80GiB] [--no-plugins] [--nproc-per-node N [--nnodes M]]`: validate a recipe without training and
//! print the plan (prompt format and an example prompt, batches, checkpoint size, memory per
//! device). Everything found is printed first; then the command exits non-zero when something
//! required to train is missing or broken (model or data file, a reward plugin that does not
//! start, rows that do not fit, a plan over the memory budget), so it can guard a script or CI.
//!
//! `--nproc-per-node N [--nnodes M]` plans for several ranks: each rank's part (prompts, rows,
//! micro-batches, devices). Without the flags the ranks are those of the launch environment
//! (`WORLD_SIZE`, torchrun, Slurm), if any.

use anyhow::{anyhow, Result};
use rlpo_train::check::{check_with, memory::parse_size, CheckOptions};
use rlpo_train::Recipe;
use std::path::PathBuf;

/// Arguments of `rlpo check`.
#[derive(clap::Args)]
pub struct Args {
    /// Recipe TOML; omitted = the embedded quickstart.
    recipe: Option<PathBuf>,
    /// Override a recipe value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Memory per device the plan must fit (`80GiB`, `24GB`, `81920MiB`; a bare number is GiB).
    /// Default: 80 GiB for a `cuda` device, no limit on CPU.
    #[arg(long, value_name = "SIZE")]
    gpu_mem: Option<String>,
    /// Do not start the recipe's external reward commands (by default each is started once and
    /// must answer its start-up handshake).
    #[arg(long)]
    no_plugins: bool,
    /// Plan for N ranks per node (as `rlpo train --nproc-per-node N` would start).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// Nodes, each with `--nproc-per-node` ranks.
    #[arg(long, value_name = "M", default_value_t = 1)]
    nnodes: usize,
}

/// Validate and print; an error after the report when a problem was found.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    let gpu_mem = match &args.gpu_mem {
        Some(s) => Some(parse_size(s).map_err(|e| anyhow!("--gpu-mem: {e}"))?),
        None => None,
    };
    let (world, local_world) = match args.nproc_per_node {
        Some(n) => (n * args.nnodes.max(1), n),
        None => {
            let env = rlpo_dist::LaunchEnv::from_env()?;
            (env.world, env.local_world)
        }
    };
    anyhow::ensure!(world >= 1, "--nproc-per-node must be at least 1");
    let report = check_with(&recipe, &CheckOptions { gpu_mem, no_plugins: args.no_plugins, world, local_world })?;
    print!("{report}");
    if report.ok() {
        println!("ok");
        return Ok(());
    }
    for p in &report.problems {
        eprintln!("problem: {p}");
    }
    anyhow::bail!("{} problem(s) found: this recipe cannot train as it is", report.problems.len())
}
