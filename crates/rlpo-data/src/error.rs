//! The crate's one error type and `Result` alias.
//!
//! Every variant carries enough context to act on without a debugger: the file, the row (1-based line
//! for JSONL, 0-based row index for Parquet), the dotted field path, or the recipe key.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout `rlpo-data`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a record sits inside its file, printed as `line N` (JSONL, 1-based, as editors count) or
/// `row N` (Parquet, 0-based, as pyarrow/pandas index rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRef {
    /// 1-based line number in a text file (JSONL, `.txt`).
    Line(usize),
    /// 0-based row index in a Parquet file.
    Row(usize),
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowRef::Line(n) => write!(f, "line {n}"),
            RowRef::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// Everything that can go wrong while configuring, loading or iterating data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `[data]` recipe value is invalid; `key` is the full recipe key, e.g. `data.synthetic.max_digits`.
    #[error("invalid recipe value `{key}`: {reason}")]
    Config {
        /// Full dotted recipe key.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },

    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// File being read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },

    /// A JSONL line is not valid JSON (or not a JSON object).
    #[error("{}: {row}: malformed JSON: {reason}", path.display())]
    MalformedRow {
        /// File being read.
        path: PathBuf,
        /// Offending line.
        row: RowRef,
        /// Parser message, including the column.
        reason: String,
    },

    /// A row lacks a required field, or a field has the wrong type.
    #[error("{}: {row}: field `{field}`: {reason}", path.display())]
    Field {
        /// File being read.
        path: PathBuf,
        /// Offending row.
        row: RowRef,
        /// Dotted field path as configured, e.g. `reward_model.ground_truth` or `prompt[1].role`.
        field: String,
        /// What was expected and what was found.
        reason: String,
    },

    /// The Parquet reader failed (bad footer, unsupported codec, corrupt page, ...).
    #[error("{}: parquet: {source}", path.display())]
    Parquet {
        /// File being read.
        path: PathBuf,
        /// Underlying Parquet error.
        source: parquet::errors::ParquetError,
    },

    /// A data source produced no samples; training on it would spin forever.
    #[error("{what}: no samples")]
    Empty {
        /// The source (file path or task name).
        what: String,
    },

    /// A saved cursor does not belong to this dataset (different size, seed or contents).
    #[error("data cursor does not match this dataset: {reason}")]
    CursorMismatch {
        /// Which property differs, with both values.
        reason: String,
    },

    /// The callback of [`crate::for_each_sample`] stopped the scan (its own error, as text).
    #[error("{reason}")]
    Stopped {
        /// Why the caller stopped.
        reason: String,
    },

    /// Curriculum tiers or tier probabilities are unusable.
    #[error("curriculum: {reason}")]
    Curriculum {
        /// What is wrong.
        reason: String,
    },
}
