//! `rlpo check RECIPE [--gpu-mem 80GiB] [--nproc-per-node N [--nnodes M]]`: validate a recipe
//! without running it and print the plan, including the memory plan per device and, for several
//! ranks, each rank's part (prompts, rows, micro-batches, devices); a plan that does not fit the
//! memory budget is refused (non-zero exit) with its biggest item named. Without the flags the
//! ranks are those of the launch environment (`WORLD_SIZE`, torchrun, Slurm), if any.

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
    /// Plan for N ranks per node (as `rlpo train --nproc-per-node N` would start).
    #[arg(long, value_name = "N")]
    nproc_per_node: Option<usize>,
    /// Nodes, each with `--nproc-per-node` ranks.
    #[arg(long, value_name = "M", default_value_t = 1)]
    nnodes: usize,
}

/// Validate and print.
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
    print!("{}", check_with(&recipe, &CheckOptions { gpu_mem, world, local_world })?);
    println!("ok");
    Ok(())
}
