//! One module per subcommand; each parses its arguments and calls the libraries.

pub mod bench;
pub mod check;
pub mod generate;
pub mod reward;
pub mod train;
