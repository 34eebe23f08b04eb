//! `rlpo reward test --recipe R --samples FILE.jsonl [--allow-errors]`: score samples with a
//! recipe's `[reward]` setup (external plugins started as in training) and print a table, to check
//! a reward function before spending GPU time. Exits non-zero after the table when a sample's
//! reward failed (error or timeout), unless `--allow-errors`, so it can guard a script or CI.

use anyhow::Result;
use std::path::PathBuf;

/// `rlpo reward ...`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Score a JSONL file of samples (`prompt`, `response`, `ground_truth`/`answer`, `metadata`).
    Test {
        /// Recipe whose `[reward]` section is used.
        #[arg(long)]
        recipe: PathBuf,
        /// Samples to score.
        #[arg(long)]
        samples: PathBuf,
        /// Exit 0 even when some samples' rewards fail (e.g. samples written to test errors).
        #[arg(long)]
        allow_errors: bool,
    },
}

/// Dispatch.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Test { recipe, samples, allow_errors } => {
            let t = rlpo_reward::reward_test(&recipe, &samples)?;
            print!("{}", t.table);
            if t.failed > 0 && !allow_errors {
                anyhow::bail!(
                    "{} of {} sample(s) failed to score (status error or timeout, shown above); --allow-errors exits 0 anyway",
                    t.failed,
                    t.samples
                );
            }
            Ok(())
        }
    }
}
