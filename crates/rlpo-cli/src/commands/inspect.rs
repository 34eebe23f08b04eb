//! `rlpo inspect CKPT`: step, policy version, recipe summary (values in force), metrics at save
//! time, file sizes and manifest verification of a checkpoint (or a run directory's newest
//! checkpoint). Exits non-zero when a file is corrupted or missing, naming it.
//!
//! `rlpo inspect RUN --samples STEP` (or `--samples last`) prints the rollouts of a step from
//! `<run>/rollouts.jsonl` instead: each prompt as the model saw it, then every response with its
//! reward and parts, the verifier's verdict, the advantage and whether it entered the loss.

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `rlpo inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (`<run>/checkpoints/step-NNNNNN`) or run directory.
    checkpoint: PathBuf,
    /// Print the logged rollouts of training step STEP (`last` = the newest) instead of the
    /// checkpoint report.
    #[arg(long, value_name = "STEP")]
    samples: Option<String>,
    /// With --samples: print prompts and responses whole (default: the first 400 characters).
    #[arg(long)]
    full: bool,
}

/// Print the report; an error when the checkpoint does not verify.
pub fn run(args: Args) -> Result<()> {
    if let Some(s) = &args.samples {
        let step = match s.as_str() {
            "last" | "latest" => None,
            n => Some(n.parse::<u64>().map_err(|_| anyhow::anyhow!("--samples: expected a step number or `last`, got {n:?}"))?),
        };
        print!("{}", rlpo_train::inspect::samples(&args.checkpoint, step, args.full)?);
        return Ok(());
    }
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
