//! rlpo-data: where training prompts come from (stage 0 of a training step, before the chat
//! template and tokenizer in `rlpo-model`).
//!
//! - Sources ([`DataConfig`], recipe section `[data]`): JSONL and Parquet in verl's layout or the
//!   simple `{"prompt"|"messages", "answer"}` layout, built-in [`synthetic`] tasks (arithmetic,
//!   countdown), and raw-text corpora for RMT mid-training. All yield [`Sample`]s.
//! - Iteration ([`Dataset`]): seeded per-epoch shuffling, `next_batch(n)`, and a serialisable
//!   [`DataCursor`] that resumes the exact stream.
//! - Curricula ([`curriculum`]): easy/medium/hard tiers by difficulty quantiles and a seeded,
//!   resumable sampler driven by tier probabilities from the algorithm crate.
//!
//! Pure Rust, no tch: this crate builds in seconds and is tested without LibTorch.
//!
//! ```
//! use rlpo_data::{DataConfig, Dataset};
//! let cfg = DataConfig::default(); // single-digit arithmetic, 1000 prompts
//! let mut ds = Dataset::from_config(&cfg, std::path::Path::new(".")).unwrap();
//! let batch = ds.next_batch(4);
//! let cursor = ds.cursor(); // store in the checkpoint; `ds.restore(&cursor)` resumes exactly
//! assert_eq!(batch.len(), 4);
//! # let _ = cursor;
//! ```

pub mod config;
pub mod curriculum;
pub mod dataset;
pub mod error;
pub mod fields;
pub mod jsonl;
pub mod load;
pub mod parquet;
pub mod rng;
pub mod sample;
pub mod synthetic;
mod tagged;
pub mod text;

pub use config::{DataConfig, FieldNames, SourceKind, TextConfig, TextSplit, TooLong, BUILTIN_TINY};
pub use curriculum::{difficulty_tiers, tiers_by_quantile, TierSampler, TierSamplerState, Tiers};
pub use dataset::{DataCursor, Dataset};
pub use error::{Error, Result, RowRef};
pub use jsonl::load_jsonl;
pub use load::{for_each_sample, load_samples};
pub use parquet::load_parquet;
pub use sample::{Message, Prompt, Sample};
pub use synthetic::{ArithmeticConfig, CountdownConfig, Operator, SyntheticConfig};
pub use text::{builtin_tiny, load_text};
