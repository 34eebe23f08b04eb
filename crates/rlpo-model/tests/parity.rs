//! Logits parity with transformers (fp32) on every tiny fixture and on SmolLM2-135M-Instruct, for
//! right- and left-padded batches of 3 prompts of different lengths. The tiny fixtures' logits
//! (|logit| up to ~4) must agree within 2e-5 absolute, SmolLM2's (|logit| up to ~38) within 4e-6
//! of its largest logit. The reference runs LibTorch's own fp32 kernels through transformers;
//! measured on the 2-core dev machine with the packed-SDPA forward: right-padded 0, left-padded
//! tiny fixtures up to 1.5e-6, SmolLM2 6.9e-5 (1.8e-6 of its largest logit, 38.4). A summation
//! order changed by another thread count or CPU moves fp32 logits by a few 1e-6 relative (rlpo's decode paths, another summation
//! order, differ from the full forward by up to 2.4e-6 of SmolLM2's largest logit,
//! `rlpo-rollout/tests/fast_decoder.rs`).

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions};

/// Absolute bound on the tiny fixtures.
const TOL: f64 = 2e-5;
/// Bound on SmolLM2 relative to its largest |logit|.
const REL_TOL: f64 = 4e-6;

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
    let scale = (want.abs() * mask.to_kind(tch::Kind::Float).unsqueeze(-1)).max().double_value(&[]);
    println!("SmolLM2 left-padded batch {lens:?}: max |Δlogit| = {d:.2e}, max |logit| = {scale:.2}");
    assert!(scale > 5.0, "SmolLM2 logits of {scale} at most: not the reference of a trained model");
    assert!(d <= REL_TOL * scale, "SmolLM2: max |Δlogit| {d} > {REL_TOL} × {scale}");
}
