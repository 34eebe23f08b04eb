//! The trainer's error type. Variants carry the recipe key, file or stage at fault; errors from
//! the other crates are wrapped with the stage they happened in.

use std::path::PathBuf;

/// Errors of recipe loading and training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The recipe file is unreadable, not TOML, has an unknown key or a wrong type.
    #[error("{path}: {msg}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// What is wrong (toml's message names line, column and key).
        msg: String,
    },
    /// A value is out of range or options are incompatible; names the key.
    #[error("recipe: {key}: {msg}")]
    Invalid {
        /// Full key, e.g. `trainer.prompts_per_step`.
        key: String,
        /// What is wrong.
        msg: String,
    },
    /// A file or directory could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Model loading or tokenization failed.
    #[error("model: {0}")]
    Model(#[from] rlpo_model::ModelError),
    /// Rollout failed.
    #[error("rollout: {0}")]
    Rollout(#[from] rlpo_rollout::Error),
    /// An algorithm function rejected its inputs or config.
    #[error("algorithm: {0}")]
    Algo(#[from] rlpo_algo::Error),
    /// Reward scoring failed (with `on_error = "abort"`, this names the sample).
    #[error("reward: {0}")]
    Reward(#[from] rlpo_reward::RewardError),
    /// Under `on_error = "zero"` / `"drop_group"`: reward failures exceeded the recipe's ceiling
    /// (or a plugin gave up). The message names the function and quotes its last log lines.
    #[error("reward: {source}\n(the whole reward log: {})", log.display())]
    RewardCeiling {
        /// The [`rlpo_reward::RewardError::FailureCeiling`].
        source: rlpo_reward::RewardError,
        /// `<run>/reward.log`.
        log: PathBuf,
    },
    /// The dataset failed to load.
    #[error("data: {0}")]
    Data(#[from] rlpo_data::Error),
    /// Rendezvous or a collective across ranks failed (names the rank at fault).
    #[error("distributed: {0}")]
    Dist(#[from] rlpo_dist::DistError),
    /// A LibTorch error.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Training cannot continue (too many non-finite updates in a row, refill cap hit, ...).
    #[error("{0}")]
    Aborted(String),
    /// A stop request (Ctrl-C) cut the step in progress (a DAPO refill); `Trainer::run` saves
    /// the last completed step and returns normally.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// A training step failed; what was saved and how to continue are in the failure.
    #[error("{0}")]
    StepFailed(Box<crate::trainer::StepFailure>),
}

/// `Result` with [`TrainError`].
pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn invalid(key: &str, msg: impl Into<String>) -> TrainError {
    TrainError::Invalid { key: key.to_string(), msg: msg.into() }
}

pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> TrainError {
    TrainError::Io { path: path.into(), source }
}
