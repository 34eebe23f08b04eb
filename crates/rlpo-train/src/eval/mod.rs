//! Evaluation: n samples per held-out problem from the rollout engine, scored by the recipe's
//! `[reward]`, summarised per dataset as mean reward, pass@k (the unbiased estimator), maj@k
//! (majority vote over the verifiers' final answers) and the coverage curve pass@k vs k.
//!
//! - [`estimators`]: pass@k and maj@k of one problem, exact and numerically stable;
//! - [`runner`]: generate and score ([`runner::SampleRecord`] per sample), used by `rlpo eval`
//!   and by training;
//! - [`summary`]: per-dataset numbers, the `eval/...` scalars and a text table;
//! - [`audit`]: correct judgements that rest on a weak signal (`rlpo eval --audit`);
//! - [`config`]: the `[eval]` recipe section, `--data` specs, k lists, the evaluation seed;
//! - [`during_training`]: the trainer's hook (step 0, every `eval.every` steps, the last step);
//! - [`standalone`]: `rlpo eval` (model resolution, loading, output files).

pub mod audit;
pub mod config;
pub mod during_training;
pub mod estimators;
pub mod runner;
pub mod standalone;
pub mod summary;

pub use config::EvalConfig;
pub use during_training::TrainingEval;
pub use summary::EvalSummary;
