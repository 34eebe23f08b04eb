//! Both fast decode paths (`FastDecoder`, LibTorch; `CpuDecoder`, host kernels) give the logits
//! of the full padded forward (the learner's view) for every tiny fixture architecture (Llama tied
//! / Llama 3 RoPE / Qwen2 with biases / Qwen2 tied / Qwen3 q-k norm) on a left-padded batch, with
//! the cache fanned out and compacted in between, and for SmolLM2.

mod common;
use common::*;
use rlpo_model::CausalLm;
use rlpo_rollout::{CpuDecoder, FastDecoder, RolloutModel};
use tch::{Kind, Tensor};

/// Prefill, fan row 1 out to two rows next to the others ([0, 1, 1, 2, ...]), decode `steps`
/// tokens, drop the duplicate halfway (compaction), and compare every step's logits with the full
/// forward of the same rows.
fn check<M: RolloutModel>(dec: &M, model: &CausalLm, ids: &Tensor, mask: &Tensor, steps: i64) -> f64 {
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let cont = Tensor::randint_low(3, model.config.vocab_size, [b, steps], (Kind::Int64, tch::Device::Cpu));
    let full_ids = Tensor::cat(&[ids, &cont], 1);
    let full_mask = Tensor::cat(&[mask, &cont.ones_like()], 1);
    let want = tch::no_grad(|| model.forward(&full_ids, &full_mask)).narrow(1, t, steps);
    let (_, mut cache) = dec.prefill(ids, mask, t + steps);
    let mut rows: Vec<i64> = (0..b).collect();
    rows.insert(2, 1);
    cache = cache.select_rows(&rows);
    let mut worst = 0f64;
    for s in 0..steps {
        if s == steps / 2 {
            cache = cache.select_rows(&(0..b + 1).filter(|&i| i != 2).collect::<Vec<_>>());
            rows.remove(2);
        }
        let feed: Vec<i64> = rows.iter().map(|&r| cont.int64_value(&[r, s])).collect();
        let got = dec.step(&feed, &mut cache).into_tensor().to_kind(Kind::Float);
        let want_s = want.select(1, s).index_select(0, &Tensor::from_slice(&rows));
        worst = worst.max((got - want_s).abs().max().double_value(&[]));
    }
    worst
}

#[test]
fn fast_steps_match_full_forward_on_every_tiny_architecture() {
    for name in TINY_MODELS {
        let dir = fixtures().join(name);
        let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let model = tiny(name);
        let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
        let d_fast = check(&FastDecoder::new(tiny(name)).unwrap(), &model, ids, mask, 16);
        let d_cpu = check(&CpuDecoder::new(tiny(name)).unwrap(), &model, ids, mask, 16);
        println!("{name}: vs full forward: FastDecoder {d_fast:.2e}, CpuDecoder {d_cpu:.2e}");
        assert!(d_fast < 2e-4 && d_cpu < 2e-4, "{name}: {d_fast} / {d_cpu}");
    }
}

#[test]
fn fast_steps_match_full_forward_on_smollm2() {
    let model = load(&smollm2_dir());
    let ids = Tensor::from_slice(&[0i64, 0, 0, 1, 504, 3125, 30, 1, 9690, 28, 4, 5, 6, 7, 0, 0, 0, 0, 0, 1, 9690]).view([3, 7]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let ids = ids.clamp_min(1);
    let d_fast = check(&FastDecoder::new(load(&smollm2_dir())).unwrap(), &model, &ids, &mask, 8);
    let d_cpu = check(&CpuDecoder::new(load(&smollm2_dir())).unwrap(), &model, &ids, &mask, 8);
    println!("SmolLM2: vs full forward: FastDecoder {d_fast:.2e}, CpuDecoder {d_cpu:.2e}");
    assert!(d_fast < 2e-4 && d_cpu < 2e-4, "{d_fast} / {d_cpu}");
}
