//! Which attention kernel each forward path takes, that the mask-free paths compute what the
//! masked one does, and that activation checkpointing leaves every gradient unchanged.
//!
//! - padded learner batches (left and right padding) run SDPA `is_causal` on packed rows; a batch
//!   with a hole in a row falls back to the boolean mask; the real rows' logits of the two agree
//!   to fp32 rounding, and the packed path stays within 2e-4 of transformers (the fixture logits);
//! - prefill packs too, one-token steps take the grouped decode kernel (never SDPA);
//! - with `set_activation_checkpointing(true)` the gradients of a loss over the logits equal the
//!   plain backward's bit for bit (untied and tied embeddings, f32 and bf16), including a second
//!   accumulated backward on an untied model.

mod common;
use common::*;
use rlpo_model::{AttentionCounts, CausalLm, LoadOptions};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn load(name: &str, kind: Kind) -> CausalLm {
    CausalLm::load(&fixtures().join(name), &LoadOptions { device: tch::Device::Cpu, kind }).unwrap()
}

fn delta(a: AttentionCounts, b: AttentionCounts) -> (u64, u64, u64) {
    (b.sdpa_causal - a.sdpa_causal, b.sdpa_masked - a.sdpa_masked, b.grouped_decode - a.grouped_decode)
}

#[test]
fn padded_batches_run_causal_sdpa_and_match_the_masked_path() {
    for name in ["tiny-qwen2", "tiny-qwen3", "tiny-llama3-rope-untied"] {
        let model = load(name, Kind::Float);
        let r = read_tensors(&fixtures().join(name).join("reference.safetensors"));
        for side in ["left", "right"] {
            let ids = &r[&format!("{side}_input_ids")];
            let mask = &r[&format!("{side}_attention_mask")];
            let c0 = model.attention_counts();
            let packed = tch::no_grad(|| model.forward(ids, mask));
            assert_eq!(delta(c0, model.attention_counts()), (1, 0, 0), "{name} {side}: packed SDPA expected");
            let d_hf = max_diff_masked(&packed, &r[&format!("{side}_logits")], mask);
            assert!(d_hf <= 2e-4, "{name} {side}: {d_hf} vs transformers");
            // A hole in an extra row forces the masked fallback for the whole batch; the original
            // rows are unchanged inputs, so their logits must agree with the packed run.
            let (b, t) = (ids.size()[0], ids.size()[1]);
            let hole = Tensor::ones([1, t], (Kind::Int64, tch::Device::Cpu));
            let _ = hole.narrow(1, t / 2, 1).fill_(0);
            let ids2 = Tensor::cat(&[ids, &ids.narrow(0, 0, 1)], 0);
            let mask2 = Tensor::cat(&[mask, &hole], 0);
            let c1 = model.attention_counts();
            let masked = tch::no_grad(|| model.forward(&ids2, &mask2)).narrow(0, 0, b);
            assert_eq!(delta(c1, model.attention_counts()), (0, 1, 0), "{name} {side}: masked fallback expected");
            let d = max_diff_masked(&packed, &masked, mask);
            println!("{name} {side}: packed vs masked {d:.2e}, packed vs transformers {d_hf:.2e}");
            assert!(d <= 2e-5, "{name} {side}: packed vs masked {d}");
        }
    }
}

#[test]
fn prefill_packs_and_decode_steps_use_the_grouped_kernel() {
    let model = load("tiny-qwen2", Kind::Float);
    let r = read_tensors(&fixtures().join("tiny-qwen2").join("reference.safetensors"));
    let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let c0 = model.attention_counts();
    let steps = 5;
    let got = tch::no_grad(|| {
        let mut cache = model.new_cache(b, t + steps);
        let mut out = vec![model.prefill(ids, mask, &mut cache)];
        for s in 0..steps {
            out.push(model.step(&ids.select(1, s % t), &mut cache));
        }
        Tensor::stack(&out, 1)
    });
    assert_eq!(delta(c0, model.attention_counts()), (1, 0, steps as u64));
    // The same tokens through the full forward (packed) give the same logits.
    let cont = Tensor::stack(&(0..steps).map(|s| ids.select(1, s % t)).collect::<Vec<_>>(), 1);
    let full_ids = Tensor::cat(&[ids, &cont], 1);
    let full_mask = Tensor::cat(&[mask, &cont.ones_like()], 1);
    let want = tch::no_grad(|| model.forward(&full_ids, &full_mask)).narrow(1, t - 1, steps + 1);
    let d = max_diff(&got, &want);
    println!("prefill + {steps} grouped decode steps vs full forward: {d:.2e}");
    assert!(d <= 2e-4, "{d}");
}

/// Gradients (by name) of a loss over the logits of a padded batch.
fn grads(model: &CausalLm, ids: &Tensor, mask: &Tensor, passes: usize) -> BTreeMap<String, Tensor> {
    let vars = model.var_store().variables();
    for p in vars.values() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    let v = model.config.vocab_size;
    for pass in 0..passes {
        let hidden = model.hidden_states(ids, mask);
        let logp = model.logits(&hidden).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
        let targets = (ids * 7 + 3 + pass as i64).remainder(v).unsqueeze(-1);
        let picked = logp.gather(2, &targets, false).squeeze_dim(-1);
        let w = mask.to_kind(Kind::Float) * Tensor::arange(ids.size()[1], (Kind::Float, tch::Device::Cpu)).view([1, -1]).cos();
        (picked * w).sum(Kind::Float).backward();
        let n = model.backward_checkpointed();
        assert_eq!(n, usize::from(model.activation_checkpointing()), "one checkpointed forward per backward");
    }
    vars.into_iter().map(|(k, p)| (k, p.grad().copy())).collect()
}

#[test]
fn activation_checkpointing_gives_identical_gradients() {
    for (name, kind, passes) in [
        ("tiny-qwen2", Kind::Float, 2),
        ("tiny-qwen2-tied", Kind::Float, 1),
        ("tiny-qwen3", Kind::BFloat16, 1),
        ("tiny-llama-tied", Kind::Float, 1),
    ] {
        let r = read_tensors(&fixtures().join(name).join("reference.safetensors"));
        let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
        let mut model = load(name, kind);
        let plain = grads(&model, ids, mask, passes);
        model.set_activation_checkpointing(true);
        let ckpt = grads(&model, ids, mask, passes);
        assert_eq!(plain.len(), ckpt.len());
        let mut nonzero = 0;
        for (k, g) in &plain {
            let h = &ckpt[k];
            assert!(g.defined() && h.defined(), "{name}: {k} has no gradient");
            assert!(g.equal(h), "{name} {kind:?}: gradient of {k} differs by {}", max_diff(g, h));
            nonzero += usize::from(g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
        // Guard against a vacuous comparison: the loss reaches every parameter.
        assert_eq!(nonzero, plain.len(), "{name}: some gradients are zero");
        println!("{name} {kind:?}, {passes} backward(s): {} gradients identical", plain.len());
    }
}

#[test]
fn checkpointing_is_off_without_gradients() {
    let mut model = load("tiny-qwen2", Kind::Float);
    model.set_activation_checkpointing(true);
    let r = read_tensors(&fixtures().join("tiny-qwen2").join("reference.safetensors"));
    let (ids, mask) = (&r["right_input_ids"], &r["right_attention_mask"]);
    let a = tch::no_grad(|| model.forward(ids, mask));
    assert_eq!(model.backward_checkpointed(), 0, "a no-grad forward saves nothing");
    model.set_activation_checkpointing(false);
    let b = tch::no_grad(|| model.forward(ids, mask));
    assert!(a.equal(&b));
}
