//! Greedy decoding of 32 tokens on SmolLM2 gives transformers' `generate(do_sample=False)` ids for
//! 3 prompts.

mod common;
use common::*;
use rlpo_model::{generate, CausalLm, GenerateParams, LoadOptions};

#[test]
fn smollm2_greedy_matches_transformers_generate() {
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap()).unwrap();
    let model = CausalLm::load(&smollm2_dir(), &LoadOptions::default()).unwrap();
    let prompts = r["prompt_ids"].as_array().unwrap();
    let want_all = r["greedy_32"].as_array().unwrap();
    assert!(prompts.len() >= 3);
    for (p, w) in prompts.iter().zip(want_all) {
        let prompt: Vec<i64> = p.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let want: Vec<i64> = w.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        // The reference was generated with eos_token_id=None, so no early stop on either side.
        let params = GenerateParams { max_new_tokens: 32, temperature: 0.0, seed: 0, eos_ids: vec![] };
        assert_eq!(generate(&model, &prompt, &params), want);
    }
}
