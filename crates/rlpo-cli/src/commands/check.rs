//! `rlpo check RECIPE [--gpu-mem 80GiB]`: validate a recipe without running it and print the plan,
//! including the memory plan per device; a plan that does not fit the memory budget is refused
//! (non-zero exit) with its biggest item named.

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
}

/// Validate and print.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    let gpu_mem = match &args.gpu_mem {
        Some(s) => Some(parse_size(s).map_err(|e| anyhow!("--gpu-mem: {e}"))?),
        None => None,
    };
    print!("{}", check_with(&recipe, &CheckOptions { gpu_mem })?);
    println!("ok");
    Ok(())
}
