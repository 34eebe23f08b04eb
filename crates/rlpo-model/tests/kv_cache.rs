//! KV-cache decoding: prefill + 32 incremental steps give the logits of the full forward (and of
//! transformers), for every tiny fixture, for SmolLM2, and for a left-padded batch.

mod common;
use common::*;
use rlpo_model::{CausalLm, LoadOptions};
use tch::{Kind, Tensor};

const TOL: f64 = 2e-4;

/// Prefill the first `n_prefill` tokens of `seq [1, L]`, then step one token at a time; returns the
/// logits predicted after each position from `n_prefill - 1` on, `[L - n_prefill + 1, V]`.
fn incremental_logits(model: &CausalLm, seq: &Tensor, n_prefill: i64) -> Tensor {
    tch::no_grad(|| {
        let len = seq.size()[1];
        let mut cache = model.new_cache(1, len);
        let prompt = seq.narrow(1, 0, n_prefill);
        let mut out = vec![model.prefill(&prompt, &prompt.ones_like(), &mut cache)];
        for t in n_prefill..len {
            out.push(model.step(&seq.narrow(1, t, 1).view([1]), &mut cache));
        }
        Tensor::cat(&out, 0)
    })
}

#[test]
fn tiny_models_32_cached_steps_match_full_forward_and_transformers() {
    for name in TINY_MODELS {
        let dir = fixtures().join(name);
        let model = CausalLm::load(&dir, &LoadOptions::default()).unwrap();
        let r = read_tensors(&dir.join("reference.safetensors"));
        let seq = &r["seq_input_ids"];
        assert_eq!(seq.size()[1], 40);
        let inc = incremental_logits(&model, seq, 8); // 1 prefill output + 32 steps
        assert_eq!(inc.size()[0], 33);
        let full = tch::no_grad(|| model.forward(seq, &seq.ones_like())).squeeze_dim(0).narrow(0, 7, 33);
        let hf = r["seq_logits"].squeeze_dim(0).narrow(0, 7, 33);
        let (d_full, d_hf) = (max_diff(&inc, &full), max_diff(&inc, &hf));
        println!("{name}: cached vs full {d_full:.2e}, cached vs transformers {d_hf:.2e}");
        assert!(d_full <= TOL && d_hf <= TOL, "{name}: {d_full} / {d_hf}");
    }
}

#[test]
fn smollm2_32_cached_steps_match_full_forward() {
    let model = CausalLm::load(&smollm2_dir(), &LoadOptions::default()).unwrap();
    let seq = rlpo_algo::seeded::SplitMix(40).randint_low(3, 49152, [1, 40], (Kind::Int64, tch::Device::Cpu));
    let inc = incremental_logits(&model, &seq, 8);
    let full = tch::no_grad(|| model.forward(&seq, &seq.ones_like())).squeeze_dim(0).narrow(0, 7, 33);
    let d = max_diff(&inc, &full);
    println!("SmolLM2: cached vs full over 32 steps: {d:.2e}");
    assert!(d <= TOL, "{d}");
}

#[test]
fn left_padded_batch_decodes_like_the_full_forward() {
    let dir = fixtures().join("tiny-qwen2");
    let model = CausalLm::load(&dir, &LoadOptions::default()).unwrap();
    let r = read_tensors(&dir.join("reference.safetensors"));
    let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let steps = 12;
    let cont = rlpo_algo::seeded::SplitMix(12).randint_low(3, model.config.vocab_size, [b, steps], (Kind::Int64, tch::Device::Cpu));
    let full_ids = Tensor::cat(&[ids, &cont], 1);
    let full_mask = Tensor::cat(&[mask, &cont.ones_like()], 1);
    let want = tch::no_grad(|| model.forward(&full_ids, &full_mask)).narrow(1, t - 1, steps + 1);
    let got = tch::no_grad(|| {
        let mut cache = model.new_cache(b, t + steps);
        let mut out = vec![model.prefill(ids, mask, &mut cache)];
        for s in 0..steps {
            out.push(model.step(&cont.select(1, s), &mut cache));
        }
        Tensor::stack(&out, 1)
    });
    let d = max_diff(&got, &want);
    println!("left-padded batch, {steps} cached steps: {d:.2e}");
    assert!(d <= TOL, "{d}");
    // Fan-out: copying row 1's cache into 3 rows continues identically.
    let got_fan = tch::no_grad(|| {
        let mut cache = model.new_cache(b, t + steps);
        let _ = model.prefill(ids, mask, &mut cache);
        let mut fan = cache.select_rows(&Tensor::from_slice(&[1i64, 1, 1]));
        model.step(&cont.select(1, 0).narrow(0, 1, 1).repeat([3]), &mut fan)
    });
    assert!(max_diff(&got_fan, &want.select(1, 1).narrow(0, 1, 1).repeat([3, 1])) <= TOL);
}
