//! Logits parity with transformers (fp32) on every tiny fixture and on SmolLM2-135M-Instruct, for
//! right- and left-padded batches of 3 prompts of different lengths. Tolerance 2e-4.

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions};

const TOL: f64 = 2e-4;

#[test]
fn tiny_models_match_transformers_on_padded_batches() {
    for name in TINY_MODELS {
        let dir = fixtures().join(name);
        let model = CausalLm::load(&dir, &LoadOptions::default()).unwrap();
        let r = read_tensors(&dir.join("reference.safetensors"));
        for side in ["right", "left"] {
            let ids = &r[&format!("{side}_input_ids")];
            let mask = &r[&format!("{side}_attention_mask")];
            let want = &r[&format!("{side}_logits")];
            let got = tch::no_grad(|| model.forward(ids, mask));
            let d = max_diff_masked(&got, want, mask);
            println!("{name} {side}-padded: max |Δlogit| = {d:.2e}");
            assert!(d <= TOL, "{name} {side}: max |Δlogit| {d} > {TOL}");
            // Guard against a vacuous comparison: logits vary across the vocabulary, and another
            // model's logits on the same inputs are far outside the tolerance.
            assert!(want.std(true).double_value(&[]) > 0.1);
            let other = CausalLm::load(&fixtures().join(if *name == "tiny-qwen2" { "tiny-qwen2-tied" } else { "tiny-qwen2" }), &LoadOptions::default()).unwrap();
            let d_other = max_diff_masked(&tch::no_grad(|| other.forward(ids, mask)), want, mask);
            assert!(d_other > 100.0 * TOL, "{name}: a different model is within {d_other}");
        }
    }
}

#[test]
fn smollm2_matches_transformers_on_left_padded_chat_prompts() {
    let model = CausalLm::load(&smollm2_dir(), &LoadOptions::default()).unwrap();
    let r = read_tensors(&fixtures().join("smollm2_reference.safetensors"));
    let (ids, mask, want) = (&r["left_input_ids"], &r["left_attention_mask"], &r["left_logits"]);
    let lens: Vec<i64> = Vec::try_from(mask.sum_dim_intlist(1, false, tch::Kind::Int64)).unwrap();
    assert!(lens.len() >= 3 && lens[0] != lens[1] && lens[1] != lens[2], "prompts of different lengths: {lens:?}");
    let got = tch::no_grad(|| model.forward(ids, mask));
    let d = max_diff_masked(&got, want, mask);
    println!("SmolLM2 left-padded batch {lens:?}: max |Δlogit| = {d:.2e}");
    assert!(d <= TOL, "SmolLM2: max |Δlogit| {d} > {TOL}");
}
