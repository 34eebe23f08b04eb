//! `rlpo check RECIPE`: validate a recipe without running it and print the plan.

use anyhow::Result;
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
}

/// Validate and print.
pub fn run(args: Args) -> Result<()> {
    let recipe = Recipe::load(args.recipe.as_deref(), &args.set)?;
    print!("{}", rlpo_train::check::check(&recipe)?);
    println!("ok");
    Ok(())
}
