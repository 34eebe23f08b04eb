//! The crate's error type. Configuration errors name the full recipe key path
//! (`algorithm.d3s.token_keep_init`), input errors name the tensor and the expected shape.

/// Everything that can go wrong in `rlpo-algo`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recipe value is out of range or inconsistent; `key` is the full recipe path.
    #[error("{key} {message}")]
    Config {
        /// Full recipe key path, e.g. `algorithm.d3s.token_keep_init`.
        key: String,
        /// What is wrong, including the offending value.
        message: String,
    },
    /// A tensor argument has the wrong shape, dtype or content.
    #[error("{name}: {message}")]
    Input {
        /// Name of the argument (e.g. `entropy`, `rewards`).
        name: &'static str,
        /// What is wrong, including the observed shape.
        message: String,
    },
    /// A tensor the enabled algorithms need was not supplied.
    #[error("{name} is required when {reason}")]
    MissingInput {
        /// Name of the missing argument.
        name: &'static str,
        /// Which option needs it.
        reason: &'static str,
    },
    /// DAPO dynamic sampling gave up: the generation-batch cap was reached with too few groups.
    #[error(
        "dynamic sampling kept {kept} of {target} groups after {gen_batches} generation batches \
         (algorithm.dapo.filter_groups.max_num_gen_batches = {max_gen_batches})"
    )]
    FilterExhausted {
        /// Groups kept so far.
        kept: usize,
        /// Groups needed for one training batch.
        target: usize,
        /// Generation batches used.
        gen_batches: usize,
        /// The configured cap.
        max_gen_batches: i64,
    },
    /// An error raised by LibTorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a configuration error at `key`.
pub(crate) fn config_err(key: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        message: message.into(),
    }
}

/// Shorthand for an input error on the tensor `name`.
pub(crate) fn input_err(name: &'static str, message: impl Into<String>) -> Error {
    Error::Input {
        name,
        message: message.into(),
    }
}
