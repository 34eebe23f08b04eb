//! The fast decode step gives the logits of the full padded forward (the learner's view) for
//! every tiny fixture architecture (Llama tied / Llama 3 RoPE / Qwen2 with biases / Qwen2 tied /
//! Qwen3 q-k norm) on a left-padded batch, and for SmolLM2.

mod common;
use common::*;
use rlpo_rollout::{FastDecoder, RolloutModel};
use tch::{Kind, Tensor};

fn check(fast: &FastDecoder, ids: &Tensor, mask: &Tensor, steps: i64) -> f64 {
    let model = fast.model();
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let cont = Tensor::randint_low(3, model.config.vocab_size, [b, steps], (Kind::Int64, tch::Device::Cpu));
    let full_ids = Tensor::cat(&[ids, &cont], 1);
    let full_mask = Tensor::cat(&[mask, &cont.ones_like()], 1);
    let want = tch::no_grad(|| model.forward(&full_ids, &full_mask)).narrow(1, t, steps);
    let got = tch::no_grad(|| {
        let mut cache = fast.new_cache(b, t + steps);
        let _ = fast.prefill(ids, mask, &mut cache);
        let out: Vec<Tensor> = (0..steps).map(|s| fast.step(&cont.select(1, s), &mut cache)).collect();
        Tensor::stack(&out, 1)
    });
    (got - want).abs().max().double_value(&[])
}

#[test]
fn fast_steps_match_full_forward_on_every_tiny_architecture() {
    for name in TINY_MODELS {
        let dir = fixtures().join(name);
        let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let fast = FastDecoder::new(tiny(name)).unwrap();
        let d = check(&fast, &r["left_input_ids"], &r["left_attention_mask"], 16);
        println!("{name}: fast step vs full forward {d:.2e}");
        assert!(d < 2e-4, "{name}: {d}");
    }
}

#[test]
fn fast_steps_match_full_forward_on_smollm2() {
    let fast = FastDecoder::new(load(&smollm2_dir())).unwrap();
    let ids = Tensor::from_slice(&[0i64, 0, 0, 1, 504, 3125, 30, 1, 9690, 28, 4, 5, 6, 7]).view([2, 7]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let d = check(&fast, &ids.clamp_min(1), &mask, 8);
    println!("SmolLM2: fast step vs full forward {d:.2e}");
    assert!(d < 2e-4, "{d}");
}
