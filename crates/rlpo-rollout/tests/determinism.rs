//! Reproducible randomness: the same seed gives the same tokens (run twice), different seeds or
//! steps give different tokens, and a row's tokens do not depend on the batch it was decoded in.
//! Also: group layout, HAPO temperatures, stop strings and request validation. Every sampling test
//! runs with the host sampler and with the device sampler (tensor ops on CPU tensors).

mod common;
use common::*;
use rlpo_rollout::{
    Detokenizer, Engine, EntropyStats, FinishReason, GenerateRequest, RolloutBatch, RolloutSeed, SamplerPlacement, SamplingParams,
};

const PLACEMENTS: [SamplerPlacement; 2] = [SamplerPlacement::Host, SamplerPlacement::Device];
use std::sync::Arc;

fn run(model: &rlpo_model::CausalLm, prompts: &[Vec<i64>], seed: RolloutSeed, params: &SamplingParams) -> RolloutBatch {
    let mut req = GenerateRequest::new(prompts.to_vec(), params.clone());
    req.seed = seed;
    Engine::new(vec![2]).generate(model, &req).unwrap()
}

fn tokens(b: &RolloutBatch) -> Vec<Vec<i64>> {
    b.completions().map(|c| c.tokens.clone()).collect()
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    for sampler in PLACEMENTS {
        let model = tiny("tiny-qwen2");
        let prompts = prompts(model.config.vocab_size, &[6, 3, 10]);
        let params = SamplingParams { group_size: 4, max_new_tokens: 24, sampler, ..Default::default() };
        let a = run(&model, &prompts, RolloutSeed::new(42, 7), &params);
        let b = run(&model, &prompts, RolloutSeed::new(42, 7), &params);
        assert_eq!(a.groups, b.groups, "same seed: identical completions, logprobs included");
        let c = run(&model, &prompts, RolloutSeed::new(43, 7), &params);
        let d = run(&model, &prompts, RolloutSeed::new(42, 8), &params);
        assert_ne!(tokens(&a), tokens(&c), "different run seed");
        assert_ne!(tokens(&a), tokens(&d), "different step");
        // The G samples of a group differ from each other.
        let g0: Vec<&Vec<i64>> = a.groups[0].completions.iter().map(|c| &c.tokens).collect();
        assert!(g0.windows(2).any(|w| w[0] != w[1]));
    }
}

#[test]
fn rows_do_not_depend_on_batch_composition() {
    for sampler in PLACEMENTS {
        let model = tiny("tiny-qwen2");
        let prompts = prompts(model.config.vocab_size, &[6, 3, 10]);
        let params = SamplingParams { group_size: 3, max_new_tokens: 16, sampler, ..Default::default() };
        let all = run(&model, &prompts, RolloutSeed::new(1, 1), &params);
        // Prompt 2 alone, carrying its global index.
        let mut req = GenerateRequest::new(vec![prompts[2].clone()], params.clone());
        req.seed = RolloutSeed::new(1, 1);
        req.prompt_indices = Some(vec![2]);
        let alone = Engine::new(vec![2]).generate(&model, &req).unwrap();
        assert_eq!(tokens(&alone), all.groups[2].completions.iter().map(|c| c.tokens.clone()).collect::<Vec<_>>());
    }
}

#[test]
fn group_layout_and_row_metadata() {
    for sampler in PLACEMENTS {
        let model = tiny("tiny-qwen2");
        let prompts = prompts(model.config.vocab_size, &[6, 3]);
        let params = SamplingParams { group_size: 3, max_new_tokens: 5, sampler, ..Default::default() };
        let mut req = GenerateRequest::new(prompts.clone(), params);
        req.policy_version = 9;
        req.prompt_indices = Some(vec![100, 101]);
        let out = Engine::new(vec![]).generate(&model, &req).unwrap();
        assert_eq!(out.groups.len(), 2);
        for (gi, g) in out.groups.iter().enumerate() {
            assert_eq!(g.prompt_index, 100 + gi as u64);
            for (s, c) in g.completions.iter().enumerate() {
                assert_eq!((c.prompt_index, c.sample_index, c.policy_version), (100 + gi as u64, s as u64, 9));
                assert_eq!(c.prompt_len, prompts[gi].len());
                assert_eq!(c.len(), 5);
                assert_eq!(c.finish_reason, FinishReason::MaxLength);
                assert!(c.temperatures.iter().all(|&t| t == 1.0));
            }
        }
        assert_eq!(out.stats.tokens, 30);
        // 1 token from the prefill logits, then 4 decode steps.
        assert_eq!(out.stats.steps, 4);
    }
}

#[test]
fn adaptive_temperature_uses_plain_temperature_without_stats_and_adapts_with_them() {
    for sampler in PLACEMENTS {
        let model = tiny("tiny-qwen2");
        let prompts = prompts(model.config.vocab_size, &[6]);
        let mut params = SamplingParams { group_size: 2, max_new_tokens: 12, sampler, ..Default::default() };
        params.adaptive_temperature = Some(rlpo_rollout::AdaptiveTemperature { tau: 0.05 });
        let first = run(&model, &prompts, RolloutSeed::new(1, 0), &params);
        assert!(first.completions().all(|c| c.temperatures.iter().all(|&t| t == 1.0)), "first step: plain temperature");
        let mut req = GenerateRequest::new(prompts.clone(), params);
        // Pivot far below every entropy of this random model: all tokens count as high-entropy.
        req.entropy_stats = Some(EntropyStats { q: -10.0, s: 1.0, inv_h_pos: 0.1, scale_neg: 0.1 });
        let out = Engine::new(vec![]).generate(&model, &req).unwrap();
        for c in out.completions() {
            for (&t, &h) in c.temperatures.iter().zip(&c.entropies) {
                let want = 1.0 + 0.05 * (((h as f64).ln() + 10.0) / (1.0 + 1e-6) * 0.1).min(1.0);
                assert!((t as f64 - want).abs() < 1e-5, "T {t} vs {want}");
                assert!(t > 1.0);
            }
            // The sampled logprob is at the token's own temperature, the base one at T_base.
            assert!(c.logprobs.iter().zip(&c.base_logprobs).any(|(a, b)| (a - b).abs() > 1e-4));
        }
    }
}

/// Every id decodes to one letter, so stop strings are easy to place.
struct Letters;
impl Detokenizer for Letters {
    fn decode(&self, ids: &[i64]) -> String {
        ids.iter().map(|&i| (b'a' + (i % 26) as u8) as char).collect()
    }
}

#[test]
fn stop_strings_end_rows_and_need_a_detokenizer() {
    for sampler in PLACEMENTS {
        let model = tiny("tiny-qwen2");
        let prompts = prompts(model.config.vocab_size, &[6, 8]);
        let params = SamplingParams { group_size: 2, max_new_tokens: 20, sampler, ..Default::default() };
        let free = run(&model, &prompts, RolloutSeed::new(5, 5), &params);
        // The text of row 0's tokens 3..5 as a stop string.
        let t = &free.groups[0].completions[0].tokens;
        let stop = Letters.decode(&t[3..5]);
        let params = SamplingParams { stop: vec![stop.clone()], ..params };
        let mut req = GenerateRequest::new(prompts.clone(), params);
        req.seed = RolloutSeed::new(5, 5);
        assert!(Engine::new(vec![2]).generate(&model, &req).unwrap_err().to_string().contains("tokenizer"));
        let mut engine = Engine::new(vec![2]);
        engine.set_detokenizer(Arc::new(Letters));
        let out = engine.generate(&model, &req).unwrap();
        let c = &out.groups[0].completions[0];
        assert_eq!(c.finish_reason, FinishReason::Stop);
        assert!(c.len() <= 5 && Letters.decode(&c.tokens).contains(&stop));
        for c in out.completions() {
            let text = Letters.decode(&c.tokens);
            let first = text.find(&stop);
            match c.finish_reason {
                FinishReason::Stop => assert_eq!(first.unwrap() + stop.len(), text.len(), "stops at the first occurrence"),
                _ => assert!(first.is_none()),
            }
        }
    }
}

#[test]
fn bad_requests_are_errors() {
    let model = tiny("tiny-qwen2");
    let e = Engine::new(vec![]).generate(&model, &GenerateRequest::new(vec![vec![1, 9999]], SamplingParams::default()));
    assert!(e.unwrap_err().to_string().contains("9999"));
    let e = Engine::new(vec![]).generate(&model, &GenerateRequest::new(vec![vec![]], SamplingParams::default()));
    assert!(e.unwrap_err().to_string().contains("empty"));
    let mut req = GenerateRequest::new(vec![vec![5, 6]], SamplingParams { group_size: 2, ..Default::default() });
    req.budgets = Some(vec![3]);
    assert!(Engine::new(vec![]).generate(&model, &req).unwrap_err().to_string().contains("budgets"));
    let req = GenerateRequest::new(vec![vec![5, 6]], SamplingParams { top_p: 1.5, ..Default::default() });
    assert!(Engine::new(vec![]).generate(&model, &req).unwrap_err().to_string().contains("rollout.top_p"));
}
