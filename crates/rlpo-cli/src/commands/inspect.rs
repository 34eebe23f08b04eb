//! `rlpo inspect CKPT`: step, policy version, recipe summary, metrics at save time, file sizes and
//! manifest verification of a checkpoint (or a run directory's newest checkpoint). Exits non-zero
//! when a file is corrupted or missing, naming it.

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `rlpo inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (`<run>/checkpoints/step-NNNNNN`) or run directory.
    checkpoint: PathBuf,
}

/// Print the report; an error when the checkpoint does not verify.
pub fn run(args: Args) -> Result<()> {
    let report = rlpo_train::inspect::inspect(&args.checkpoint)?;
    print!("{report}");
    if let Err(e) = &report.verified {
        anyhow::bail!("checkpoint {} does not verify: {e}", report.dir.display());
    }
    if let Err(e) = report.state.as_ref().map(|_| ()).and(report.recipe.as_ref().map(|_| ())) {
        anyhow::bail!("checkpoint {} is unreadable: {e}", report.dir.display());
    }
    Ok(())
}
