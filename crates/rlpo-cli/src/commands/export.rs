//! `rlpo export CKPT --out DIR [--dtype f32|bf16|f16]`: a checkpoint's policy as an HF model
//! directory (see `rlpo_train::export`). CKPT is a `step-NNNNNN` directory or a run directory
//! (its newest checkpoint that verifies).

use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `rlpo export`.
#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint directory (`<run>/checkpoints/step-NNNNNN`) or run directory.
    checkpoint: PathBuf,
    /// Output HF directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Weight dtype: f32, bf16 or f16 (default: the dtype the policy was trained in).
    #[arg(long)]
    dtype: Option<String>,
    /// Replace `--out` when it already is a model directory (has config.json).
    #[arg(long)]
    overwrite: bool,
}

/// Verify, export, print what was written.
pub fn run(args: Args) -> Result<()> {
    let kind = args.dtype.as_deref().map(rlpo_model::parse_dtype).transpose().map_err(|e| anyhow::anyhow!("--dtype: {e}"))?;
    let report = rlpo_train::export::export(&args.checkpoint, &args.out, kind, args.overwrite)?;
    print!("{report}");
    Ok(())
}
