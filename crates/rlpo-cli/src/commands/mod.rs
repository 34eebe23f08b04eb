//! One module per subcommand; each parses its arguments and calls the libraries.

pub mod generate;
