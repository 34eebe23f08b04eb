//! The crate's error type. Configuration errors name the recipe key (`rollout.top_p`), input errors
//! say which prompt or row is wrong, worker errors say which worker failed and how.

/// Everything that can go wrong in `rlpo-rollout`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `[rollout]` value is out of range; `key` is the full recipe path.
    #[error("{key} {message}")]
    Config {
        /// Full recipe key, e.g. `rollout.top_p`.
        key: String,
        /// What is wrong, including the offending value.
        message: String,
    },
    /// A request is malformed (empty prompt, token id out of range, budget list of the wrong length).
    #[error("invalid rollout request: {0}")]
    Input(String),
    /// Loading or updating the model failed.
    #[error(transparent)]
    Model(#[from] rlpo_model::ModelError),
    /// An error raised by LibTorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A model call failed inside LibTorch (reported by tch as a panic, caught at the call):
    /// names the call (`prefill`, `decode step`) and carries LibTorch's message.
    #[error("model call failed: {0}")]
    Failed(String),
    /// A rollout worker returned an error or panicked while generating or updating weights.
    #[error("rollout worker {worker} failed: {message}")]
    Worker {
        /// Index of the worker.
        worker: usize,
        /// The error or panic message.
        message: String,
    },
    /// The pool cannot make progress: every worker has exited, or one exited with work pending.
    #[error("rollout pool: {0}")]
    Pool(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
