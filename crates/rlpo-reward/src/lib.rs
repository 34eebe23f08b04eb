//! rlpo-reward: reward functions for RL post-training.
mod error;
pub mod math;
pub mod rational;
mod types;
pub use error::{RewardError, Result};
pub use types::{RewardFn, RewardInput, RewardOutput, RewardStatus};
