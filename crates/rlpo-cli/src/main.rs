//! The `rlpo` binary: a thin clap dispatch over library calls.

mod commands;

use clap::{Parser, Subcommand};

/// rlpo: RL post-training for LLMs (GRPO, DAPO, D³S, HAPO, RMT) on LibTorch.
#[derive(Parser)]
#[command(name = "rlpo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a completion of a prompt through the model's chat template.
    Generate(commands::generate::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => commands::generate::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
