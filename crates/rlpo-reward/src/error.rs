//! The crate's single error type. Every variant carries enough context (recipe key, file and line,
//! sample index, plugin name) for the message alone to point the user at the fix.

use std::path::PathBuf;

/// Everything that can go wrong while building or running reward functions.
///
/// Per-sample failures (a plugin timing out on one sample) are *not* errors of this type: they are
/// [`crate::RewardStatus`] values, turned into an error only by the `abort` policy
/// ([`RewardError::Aborted`]).
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A value in the `[reward]` recipe section is missing, out of range or inconsistent.
    #[error("recipe key `{key}`: {msg}")]
    Config {
        /// Dotted recipe key, e.g. `reward.fns[2].cache_len`.
        key: String,
        /// What is wrong and, where possible, what is expected.
        msg: String,
    },

    /// The recipe file is not valid TOML or its `[reward]` section does not match the schema.
    #[error("recipe {path}: {msg}")]
    Recipe {
        /// The recipe file.
        path: PathBuf,
        /// The parser's message (names the key and, for TOML syntax errors, the line).
        msg: String,
    },

    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// A line of a samples JSONL file is not a valid sample.
    #[error("{path}:{line}: {msg}")]
    Samples {
        /// The samples file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        msg: String,
    },

    /// An external reward plugin could not be started.
    #[error("reward fn `{name}`: cannot start {command:?}: {source}")]
    Spawn {
        /// The reward function's name from the recipe.
        name: String,
        /// The command line from the recipe.
        command: Vec<String>,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// An external reward plugin started but did not complete its start-up handshake (it exited,
    /// or did not answer within `startup_timeout_s`).
    #[error("reward fn `{name}`: {command:?} did not start: {reason}{}", quote_stderr(name, .stderr))]
    Startup {
        /// The reward function's name from the recipe.
        name: String,
        /// The command line from the recipe.
        command: Vec<String>,
        /// What happened.
        reason: String,
        /// The last lines the plugin wrote to stderr.
        stderr: Vec<String>,
    },

    /// Under `on_error = "zero"` / `"drop_group"`: too many recent samples failed, or a plugin
    /// gave up for good. Training must stop rather than go on learning from made-up rewards.
    #[error("reward failures hit the ceiling in `{fn_name}`: {what}; stopping the run{}", quote_stderr(fn_name, .stderr))]
    FailureCeiling {
        /// The reward function with the most failures (or the one that gave up).
        fn_name: String,
        /// What tripped the ceiling, with the numbers and recipe keys.
        what: String,
        /// The last lines of that function's log (a plugin's stderr, restarts, timeouts).
        stderr: Vec<String>,
    },

    /// A reward failed for a sample and the policy is `on_error = "abort"`.
    #[error("reward for sample {index} failed in `{fn_name}`: {cause} (on_error = \"abort\"; use \"zero\" or \"drop_group\" to continue past failures)")]
    Aborted {
        /// Index of the sample in the scored batch.
        index: usize,
        /// Name of the reward function that failed.
        fn_name: String,
        /// The failure, e.g. `timeout after 2s` or the plugin's error message.
        cause: String,
    },

    /// A reward function broke the trait contract (one output per input).
    #[error("reward fn `{name}` returned {got} outputs for {expected} inputs")]
    OutputCount {
        /// The reward function's name.
        name: String,
        /// Batch length.
        expected: usize,
        /// Number of outputs returned.
        got: usize,
    },

    /// A batch cannot be split into groups of the given size.
    #[error("batch of {len} samples is not a whole number of groups of size {group_size}")]
    GroupSize {
        /// Batch length.
        len: usize,
        /// Requested group size G.
        group_size: usize,
    },
}

/// `Result` with [`RewardError`].
pub type Result<T, E = RewardError> = std::result::Result<T, E>;

/// `"\nlast lines of `name`'s log:\n  line..."`, or nothing when there are none.
fn quote_stderr(name: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return format!(" (`{name}` wrote nothing to stderr)");
    }
    let mut s = format!("\nlast lines from `{name}` (stderr and events):");
    for l in lines {
        s.push_str("\n  ");
        s.push_str(l);
    }
    s
}

impl RewardError {
    /// Shorthand for [`RewardError::Config`].
    pub(crate) fn config(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Config { key: key.into(), msg: msg.into() }
    }
}
