//! rlpo-train: the trainer behind `rlpo train`.
//!
//! - [`Recipe`]: the TOML recipe (one section per concern, unknown keys rejected, `--set`
//!   overrides) and its validation;
//! - [`Trainer`]: `step()` runs the stages of one training step (prompts → rollout → reward →
//!   filter/refill → old log-probs → plan → update → metrics);
//! - [`Learner`] and [`optim::AdamW`]: chunked log-probs, micro-batched updates normalised per
//!   optimizer step, gradient clipping, AdamW with inspectable state;
//! - [`metrics`]: TensorBoard event files, JSONL, console progress;
//! - [`checkpoint`], [`export`], [`inspect`]: atomic verified checkpoints and resume, HF export,
//!   checkpoint reports; [`run_lock`]: one trainer per run directory;
//! - [`step_record`]: the tensors of the last step, kept on request (`Trainer::record_steps`)
//!   so tests can recompute what the step did;
//! - [`dist`]: the seam every global reduction goes through (rank, world, sums, gathers,
//!   broadcasts, gradient buckets; the identity for one process) and per-rank placement;
//! - [`eval`]: pass@k / maj@k evaluation (`rlpo eval`, `[eval]` during training) and
//!   [`report`]: the self-contained HTML page of a run (`rlpo report`).

pub mod batch;
pub mod check;
pub mod checkpoint;
pub mod dist;
pub mod error;
pub mod eval;
pub mod export;
pub mod inspect;
pub mod learner;
pub mod metrics;
pub mod optim;
pub mod overrides;
pub mod program;
pub mod packed_rows;
pub mod prompts;
pub mod recipe;
pub mod recipe_ranges;
pub mod report;
pub mod reward_run;
pub mod rmt;
pub mod rollout_backend;
pub mod run_lock;
pub mod step_metrics;
pub mod step_record;
mod test_pause;
pub mod trainer;

pub use error::{Result, TrainError};
pub use learner::Learner;
pub use recipe::Recipe;
pub use trainer::{RunEnd, StepFailure, Trainer};
