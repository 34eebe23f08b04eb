//! Greedy decoding of the 3 SmolLM2 fixture prompts, run as one left-padded batch, reproduces
//! transformers' `generate(do_sample=False)` 32-token output (fixture `smollm2_reference.json`,
//! written by scripts/setup.sh from transformers), with all three decode paths.

mod common;
use common::*;
use rlpo_rollout::{CpuDecoder, Engine, FastDecoder, GenerateRequest, RolloutModel, SamplingParams};

fn greedy_batch<M: RolloutModel>(model: &M, prompts: &[Vec<i64>]) -> Vec<Vec<i64>> {
    // The reference was generated with eos_token_id=None, so no early stop on either side.
    let params = SamplingParams { group_size: 1, max_new_tokens: 32, greedy: true, ignore_eos: true, ..Default::default() };
    let out = Engine::new(vec![]).generate(model, &GenerateRequest::new(prompts.to_vec(), params)).unwrap();
    out.completions().map(|c| c.tokens.clone()).collect()
}

#[test]
fn smollm2_greedy_batch_matches_transformers() {
    let r = smollm2_reference();
    let prompts: Vec<Vec<i64>> = r["prompt_ids"].as_array().unwrap().iter().map(ids_of).collect();
    let want: Vec<Vec<i64>> = r["greedy_32"].as_array().unwrap().iter().map(ids_of).collect();
    assert!(prompts.len() >= 3);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lens.iter().any(|&l| l != lens[0]), "prompts of equal length would not exercise padding: {lens:?}");
    let model = load(&smollm2_dir());
    assert_eq!(greedy_batch(&model, &prompts), want, "CausalLm::step path");
    let fast = FastDecoder::new(model).unwrap();
    assert_eq!(greedy_batch(&fast, &prompts), want, "FastDecoder path");
    let cpu = CpuDecoder::new(fast.into_model()).unwrap();
    assert_eq!(greedy_batch(&cpu, &prompts), want, "CpuDecoder path");
}
