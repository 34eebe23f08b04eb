//! `rlpo export CKPT --out DIR [--dtype f32|bf16|f16]`: a checkpoint's policy as an HF model
//! directory (see `rlpo_train::export`; a LoRA checkpoint's base with its adapters merged);
//! `--adapter`: a LoRA checkpoint's adapters as a PEFT directory. CKPT is a `step-NNNNNN` directory or a run directory
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
    /// Write the LoRA adapters as a PEFT directory (adapter_config.json +
    /// adapter_model.safetensors) instead of the merged model.
    #[arg(long)]
    adapter: bool,
}

/// Verify, export, print what was written.
pub fn run(args: Args) -> Result<()> {
    let kind = args.dtype.as_deref().map(rlpo_model::parse_dtype).transpose().map_err(|e| anyhow::anyhow!("--dtype: {e}"))?;
    if args.adapter {
        if kind.is_some() {
            anyhow::bail!("--dtype applies to the merged model; adapters are written in fp32 as trained");
        }
        let report = rlpo_train::export::export_adapter(&args.checkpoint, &args.out, args.overwrite)?;
        print!("{report}");
        return Ok(());
    }
    let report = rlpo_train::export::export(&args.checkpoint, &args.out, kind, args.overwrite)?;
    print!("{report}");
    Ok(())
}
