//! The `rlpo` binary: a thin clap dispatch over library calls.

mod commands;
mod launch;

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
    /// Train with a recipe (default: the embedded CPU quickstart).
    Train(commands::train::Args),
    /// Validate a recipe and print the plan of a step.
    Check(commands::check::Args),
    /// Print a completion of a prompt through the model's chat template.
    Generate(commands::generate::Args),
    /// Reward function tools.
    #[command(subcommand)]
    Reward(commands::reward::Command),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(commands::bench::Command),
    /// Probes for checking a build against an oracle (GPU bring-up).
    #[command(subcommand, hide = true)]
    Debug(commands::debug::Command),
    /// Write a checkpoint's policy as an HF model directory (verified first).
    Export(commands::export::Args),
    /// Show a checkpoint's step, recipe, metrics and sizes, and verify its manifest.
    Inspect(commands::inspect::Args),
    /// Evaluate a model, checkpoint or run: pass@k, maj@k and coverage on held-out problems.
    Eval(commands::eval::Args),
    /// Write RUN/report.html: one self-contained page with the run's curves, samples and recipe.
    Report(commands::report::Args),
}

/// One glibc malloc arena for the whole process, unless the user set `MALLOC_ARENA_MAX`.
///
/// Why: with the default (8 × cores) arenas, the rollout's rayon threads and LibTorch's OpenMP
/// threads each get their own, and LibTorch's large training tensors then keep going back to the
/// kernel and faulting in fresh pages. Measured with `rlpo bench step --dtype f32` on the 2-core
/// box: the update took 14.7 s with the default, 10.1 s with one arena (same rows, same tokens);
/// the rollout was unchanged. This is the allocator advice PyTorch gives for CPU training
/// (jemalloc/tcmalloc), done with glibc's own knob.
#[allow(unsafe_code)]
fn single_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before any thread
        // is spawned, and a failure (return 0) just leaves the default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn main() {
    single_malloc_arena();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Reward(cmd) => commands::reward::run(cmd),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Debug(cmd) => commands::debug::run(cmd),
        Command::Export(args) => commands::export::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Report(args) => commands::report::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by `: `, skipping a cause whose text the message before it
/// already contains (the library errors embed their source's text, so `{:#}` repeated it).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
