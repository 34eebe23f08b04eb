//! `rlpo report RUN`: write `RUN/report.html`, the run's self-contained page (curves, held-out
//! coverage, sample browser, recipe). `rlpo train` refreshes it every `metrics.report_every` steps.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Arguments of `rlpo report`.
#[derive(clap::Args)]
pub struct Args {
    /// The run directory (it holds metrics.jsonl).
    run: PathBuf,
}

/// Render and write the page.
pub fn run(args: Args) -> Result<()> {
    let path = rlpo_train::report::write(&args.run).with_context(|| format!("writing the report of {}", args.run.display()))?;
    println!("{}", path.display());
    Ok(())
}
