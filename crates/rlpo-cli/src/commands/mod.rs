//! One module per subcommand; each parses its arguments and calls the libraries.

pub mod bench;
pub mod bench_checkpoint;
pub mod bench_learner;
pub mod bench_step;
pub mod check;
pub mod debug;
pub mod dist_selftest;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod report;
pub mod reward;
pub mod train;
