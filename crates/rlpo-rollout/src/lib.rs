//! rlpo-rollout: the rollout engine of an RL post-training step.
//!
//! - [`Engine::generate`] turns prompts into groups of G completions: one prefill per prompt,
//!   cache fan-out into G rows, batched KV-cache decode, sampling with exact per-token logprobs
//!   (sampled and base temperature) and full-vocabulary entropy — on the host ([`sampler`]) or,
//!   for CUDA models, on the device in tensor ops ([`device_sampler`], [`device_loop`]: only
//!   the sampled ids and their numbers reach the host) — EOS / stop-string / budget /
//!   max-length stops, compaction of finished rows;
//! - [`SamplingParams`] is the recipe's `[rollout]` section (temperature, top-k, top-p, min-p,
//!   greedy, stop strings, HAPO [`AdaptiveTemperature`], workers);
//! - [`RolloutSeed`] makes every row's randomness a function of (run seed, step, prompt, sample);
//! - [`RolloutPool`] runs N engines on worker threads behind bounded channels, with versioned
//!   weight updates and errors (including panics) reported to the caller;
//! - [`CpuDecoder`] decodes on the host with packed weights and AVX-512 kernels (CPU rollouts;
//!   [`HostWeights::bind`] does the same over a borrowed, e.g. the learner's, model);
//!   [`FastDecoder`] is a leaner LibTorch decode step (any device); both wrap a `CausalLm`;
//! - [`bench::bench_rollout`] measures tokens/s against the machine's own ceilings.

pub mod adaptive_temperature;
pub mod bench;
pub mod cpu_decoder;
pub mod cpu_kernels;
pub mod device_loop;
pub mod device_sampler;
pub mod engine;
pub mod error;
pub mod fast;
pub mod gemm;
pub mod host_cache;
pub mod host_logits;
pub mod model;
pub mod output;
pub mod params;
pub mod rng;
pub mod sampler;
pub mod simd;
pub mod stop;
pub mod vecmath;
pub mod worker;

pub use adaptive_temperature::{token_temperature, AdaptiveTemperature, EntropyStats};
pub use engine::{Engine, GenerateRequest};
pub use error::{Error, Result};
pub use cpu_decoder::{BoundCpuDecoder, CpuDecoder, HostWeights, Parallelism};
pub use fast::{BoundFastDecoder, FastDecoder, FastWeights};
pub use host_cache::HostCache;
pub use model::{DecodeCache, Logits, RolloutModel};
pub use output::{pad_responses, Completion, FinishReason, Group, RolloutBatch, RolloutStats};
pub use device_sampler::{DeviceSampler, DeviceSamples};
pub use params::{SamplerPlacement, SamplingParams};
pub use rng::{RolloutSeed, RowRng};
pub use sampler::{Sampler, TokenSample};
pub use stop::Detokenizer;
pub use worker::{RolloutPool, WeightUpdate};
