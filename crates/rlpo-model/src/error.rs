//! The model crate's error type: every variant names the file, key or tensor at fault.

use std::path::PathBuf;

/// Errors from loading, saving and tokenizing. Forward passes are infallible (tch idiom).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is missing from the model directory.
    #[error("{path}: file not found ({what})")]
    MissingFile {
        /// The file that should exist.
        path: PathBuf,
        /// What it is needed for.
        what: &'static str,
    },
    /// `config.json` (or another JSON file) is malformed or has an invalid value.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        msg: String,
    },
    /// The architecture or an option is not supported.
    #[error("{path}: unsupported {what}")]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// What is unsupported, naming the key and value.
        what: String,
    },
    /// A safetensors file could not be parsed (truncated, corrupt header, ...).
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        msg: String,
    },
    /// Weights do not match the architecture.
    #[error("{0}")]
    Weights(String),
    /// The tokenizer failed to load or to encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or render (including `raise_exception`).
    #[error("chat template: {0}")]
    Template(String),
    /// An invalid argument (device, dtype, ...).
    #[error("{0}")]
    Invalid(String),
    /// A LibTorch error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
    pub(crate) fn config(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::Config { path: path.into(), msg: msg.into() }
    }
}
