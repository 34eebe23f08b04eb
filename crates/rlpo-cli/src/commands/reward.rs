//! `rlpo reward test --recipe R --samples FILE.jsonl`: score samples with a recipe's `[reward]`
//! setup and print a table, to check a reward function before spending GPU time.

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
    },
}

/// Dispatch.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Test { recipe, samples } => {
            print!("{}", rlpo_reward::reward_test_table(&recipe, &samples)?);
            Ok(())
        }
    }
}
