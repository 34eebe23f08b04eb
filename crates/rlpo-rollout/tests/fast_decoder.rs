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
    let (_, mut cache) = dec.prefill(ids, mask, t + steps).unwrap();
    let mut rows: Vec<i64> = (0..b).collect();
    rows.insert(2, 1);
    cache = cache.select_rows(&rows).unwrap();
    let mut worst = 0f64;
    for s in 0..steps {
        if s == steps / 2 {
            cache = cache.select_rows(&(0..b + 1).filter(|&i| i != 2).collect::<Vec<_>>()).unwrap();
            rows.remove(2);
        }
        let feed: Vec<i64> = rows.iter().map(|&r| cont.int64_value(&[r, s])).collect();
        let got = dec.step(&feed, &mut cache).unwrap().into_tensor().to_kind(Kind::Float);
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

#[test]
fn cpu_decoder_column_split_matches_too() {
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let dir = fixtures().join(name);
        let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let mut cpu = CpuDecoder::new(tiny(name)).unwrap();
        cpu.set_parallelism(rlpo_rollout::Parallelism::Columns);
        let d = check(&cpu, &tiny(name), &r["left_input_ids"], &r["left_attention_mask"], 12);
        println!("{name}: CpuDecoder (column split) vs full forward {d:.2e}");
        assert!(d < 2e-4, "{name}: {d}");
    }
}

/// bf16 weights: the CPU decoder (f32 activations, bf16 matmul inputs) must be at least as close
/// to the f32 model as LibTorch's own bf16 decode step is.
#[test]
fn cpu_decoder_in_bf16_is_as_close_to_f32_as_torch_bf16() {
    for dir in [smollm2_dir(), fixtures().join("tiny-qwen2"), fixtures().join("tiny-qwen3")] {
        bf16_closeness(&dir);
    }
}

fn bf16_closeness(dir: &std::path::Path) {
    let opts = rlpo_model::LoadOptions { device: tch::Device::Cpu, kind: Kind::BFloat16 };
    let load16 = || CausalLm::load(dir, &opts).unwrap();
    let f32_model = load(dir);
    let vocab = f32_model.config.vocab_size;
    let ids = Tensor::from_slice(&[0i64, 0, 0, 1, 50, 31, 30, 1, 96, 28, 4, 5, 6, 7, 0, 0, 0, 0, 0, 1, 90]).view([3, 7]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let ids = ids.clamp_min(1);
    let steps = 8;
    let cont = Tensor::randint_low(3, vocab, [3, steps], (Kind::Int64, tch::Device::Cpu));
    let want = tch::no_grad(|| f32_model.forward(&Tensor::cat(&[&ids, &cont], 1), &Tensor::cat(&[&mask, &cont.ones_like()], 1)))
        .narrow(1, 7, steps)
        .log_softmax(-1, Kind::Float);
    let err = |dec: &dyn RolloutModel| {
        let (_, mut cache) = dec.prefill(&ids, &mask, 7 + steps).unwrap();
        let mut worst = 0f64;
        for s in 0..steps {
            let feed: Vec<i64> = (0..3).map(|r| cont.int64_value(&[r, s])).collect();
            let got = dec.step(&feed, &mut cache).unwrap().into_tensor().to_kind(Kind::Float).log_softmax(-1, Kind::Float);
            worst = worst.max((got - want.select(1, s)).abs().max().double_value(&[]));
        }
        worst
    };
    let e_cpu = err(&CpuDecoder::new(load16()).unwrap());
    let e_torch = err(&FastDecoder::new(load16()).unwrap());
    println!("bf16 {}, max |log-softmax - f32|: CpuDecoder {e_cpu:.4}, LibTorch bf16 {e_torch:.4}", dir.display());
    assert!(e_cpu <= 1.2 * e_torch + 0.02, "{e_cpu} vs {e_torch}");
}

/// `HostWeights` packed next to a learner's model, bound to it by reference; after the learner
/// changes its weights in place, a repack makes the bound decoder follow.
#[test]
fn bound_host_weights_follow_the_borrowed_model_after_repack() {
    let dir = fixtures().join("tiny-qwen2");
    let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
    let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
    let model = tiny("tiny-qwen2");
    let mut host = rlpo_rollout::HostWeights::pack(&model).unwrap();
    assert!(check(&host.bind(&model), &model, ids, mask, 8) < 2e-4);
    tch::no_grad(|| {
        for (_, mut v) in model.var_store().variables() {
            let _ = v.g_add_scalar_(0.01);
        }
    });
    let stale = check(&host.bind(&model), &model, ids, mask, 8);
    host.repack(&model).unwrap();
    let fresh = check(&host.bind(&model), &model, ids, mask, 8);
    println!("bound decoder after an in-place update: stale {stale:.2e}, repacked {fresh:.2e}");
    assert!(stale > 1e-3 && fresh < 2e-4, "{stale} / {fresh}");
}
