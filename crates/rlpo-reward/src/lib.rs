//! rlpo-reward: reward functions for RL post-training.
mod builder;
pub mod config;
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
mod types;

pub use builder::build;
pub use config::{OnError, RewardConfig};
pub use error::{RewardError, Result};
pub use policy::failed_groups;
pub use samples::{load_samples, parse_samples};
pub use set::{Failure, RewardSet, ScoredBatch};
pub use table::{load_reward_config, parse_reward_config, render_table, reward_test_table};
pub use types::{RewardFn, RewardInput, RewardOutput, RewardStatus};
