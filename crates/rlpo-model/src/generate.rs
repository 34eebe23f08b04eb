//! Single-prompt generation with a KV cache: greedy (`temperature == 0`) or plain temperature
//! sampling. This is the reference path behind `rlpo generate`; batched GRPO rollout with per-token
//! logprobs lives in the `rlpo-rollout` engine.

use crate::model::CausalLm;
use tch::{Kind, Tensor};

/// Options for [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Upper bound on generated tokens.
    pub max_new_tokens: i64,
    /// 0 = greedy.
    pub temperature: f64,
    /// Seed for sampling.
    pub seed: u64,
    /// Token ids that stop generation (included in the output).
    pub eos_ids: Vec<i64>,
}

/// Generate a continuation of `prompt` (token ids); returns only the new ids.
pub fn generate(model: &CausalLm, prompt: &[i64], params: &GenerateParams) -> Vec<i64> {
    tch::no_grad(|| {
        let device = model.device();
        tch::manual_seed(params.seed as i64);
        let ids = Tensor::from_slice(prompt).view([1, -1]).to_device(device);
        let mut cache = model.new_cache(1, prompt.len() as i64 + params.max_new_tokens);
        let mut logits = model.prefill(&ids, &ids.ones_like(), &mut cache);
        let mut out = Vec::new();
        for _ in 0..params.max_new_tokens {
            let next = if params.temperature <= 0.0 {
                logits.argmax(-1, false)
            } else {
                (logits.to_kind(Kind::Float) / params.temperature).softmax(-1, Kind::Float).multinomial(1, false).view([-1])
            };
            let id = next.int64_value(&[0]);
            out.push(id);
            if params.eos_ids.contains(&id) {
                break;
            }
            logits = model.step(&next, &mut cache);
        }
        out
    })
}
