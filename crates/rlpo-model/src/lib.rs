//! rlpo-model: Hugging Face-compatible causal language models (Llama, Qwen2, Qwen3) on LibTorch.
//!
//! - [`ModelConfig`] parses `config.json`; [`CausalLm`] holds the parameters under HF names and runs
//!   padded-batch forwards (learner) and cached incremental steps (rollout, [`KvCache`]);
//! - [`weights`] loads single-file or sharded safetensors, [`save`] writes an HF directory back;
//! - attention runs SDPA without a mask on packed rows (learner, prefill) and a grouped `baddbmm`
//!   kernel for decode steps ([`attention`], [`packing`]); [`recompute`] is activation checkpointing;
//! - [`TextTokenizer`] wraps `tokenizer.json`, the chat template and the EOS ids.

pub mod attention;
pub mod chat_template;
pub mod config;
pub mod device;
pub mod error;
pub mod generate;
pub mod kv_cache;
pub mod layers;
pub mod model;
pub mod packing;
pub mod recompute;
pub mod rope;
pub mod save;
pub mod tokenizer;
pub mod weights;

pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{Family, ModelConfig, RopeScaling};
pub use device::{parse_device, parse_dtype, LoadOptions};
pub use error::{ModelError, Result};
pub use generate::{generate, GenerateParams};
pub use attention::{AttentionCounts, AttentionPath};
pub use kv_cache::KvCache;
pub use model::{positions_from_mask, CausalLm};
pub use tokenizer::TextTokenizer;
