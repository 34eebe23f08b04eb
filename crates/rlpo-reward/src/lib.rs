//! rlpo-reward: reward functions for RL post-training (pure Rust, no tch).
//!
//! - [`RewardFn`]: the trait (batched: `score(&[RewardInput]) -> Vec<RewardOutput>`); every
//!   output has a value, named parts and an explicit [`RewardStatus`] (ok / error / timeout).
//! - Built-ins: [`math`] (answer extraction and exact rational comparison), [`countdown`] (safe
//!   expression evaluator), [`format`](mod@format) (regex), [`length`] (DAPO overlong shaping, RMT triangular
//!   length reward), [`exact`] (exact match after `</think>`).
//! - [`external`]: reward functions in any language, as long-lived child processes speaking JSON
//!   lines, with timeouts, a concurrency limit, restarts with back-off and stderr capture.
//! - [`RewardSet`]: weighted combination with separate parts, the `on_error` policy
//!   ([`OnError`]: abort / zero / drop_group), failure counters ([`metrics`]) and the failure
//!   ceiling that stops a run drowning in failures ([`ceiling`]).
//! - [`Correctness`]: which part says whether an answer is right (`reward.correctness`).
//! - [`config`] + [`build`]: the recipe's `[reward]` section ([`validate`]: the same checks without
//!   starting plugins); [`reward_test_table`]: the library
//!   side of `rlpo reward test`.
//!
//! A failed reward never becomes a silent value: its value is `NaN` and its status says why,
//! until the policy decides (abort with an error naming the sample, 0 with the status kept and
//! counted, or drop the group).
//!
//! ```
//! use rlpo_reward::{build, parse_reward_config, RewardInput};
//! let cfg = parse_reward_config(
//!     "[reward]\n[[reward.fns]]\nkind = \"math\"\n[[reward.fns]]\nkind = \"format\"\nweight = 0.1\n",
//!     std::path::Path::new("recipe.toml"),
//! )?;
//! let set = build(&cfg)?;
//! let scored = set.score_all(&[RewardInput::new("<think>2+2</think> \\boxed{4}", Some("4"))])?;
//! assert_eq!(scored.values(), [1.1]);
//! assert_eq!(scored.outputs[0].parts["format"], 1.0);
//! # Ok::<(), rlpo_reward::RewardError>(())
//! ```

mod builder;
pub mod ceiling;
pub mod config;
mod correctness;
pub mod countdown;
mod error;
pub mod exact;
pub mod external;
pub mod format;
pub mod length;
pub mod log;
pub mod math;
pub mod metrics;
mod policy;
pub mod rational;
mod samples;
mod set;
mod table;
mod tagged;
mod types;

pub use builder::{build, validate};
pub use config::{FnConfig, OnError, RewardConfig};
pub use correctness::Correctness;
pub use error::{RewardError, Result};
pub use log::RewardLog;
pub use metrics::{RewardCounters, RewardMetrics};
pub use policy::failed_groups;
pub use samples::{load_samples, parse_samples};
pub use set::{Failure, RewardSet, ScoredBatch};
pub use table::{load_reward_config, parse_reward_config, render_table, reward_test_table};
pub use types::{AnswerInfo, RewardFn, RewardInput, RewardOutput, RewardStatus};
