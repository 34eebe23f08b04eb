//! rlpo-reward: reward functions for RL post-training.
pub mod countdown;
mod error;
pub mod exact;
pub mod format;
pub mod length;
pub mod math;
pub mod rational;
mod types;
pub use error::{RewardError, Result};
pub use types::{RewardFn, RewardInput, RewardOutput, RewardStatus};
