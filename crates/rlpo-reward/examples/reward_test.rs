//! The library side of `rlpo reward test`, runnable before the CLI wires it in:
//! `cargo run -p rlpo-reward --example reward_test -- RECIPE.toml SAMPLES.jsonl`
//!
//! Prints one row per sample (total, each part, status) and a summary line.

use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [recipe, samples] = args.as_slice() else {
        eprintln!("usage: reward_test RECIPE.toml SAMPLES.jsonl");
        std::process::exit(2);
    };
    match rlpo_reward::reward_test_table(recipe, samples) {
        Ok(table) => print!("{table}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
