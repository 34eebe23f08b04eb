//! Both fast decode paths (`FastDecoder`, LibTorch; `CpuDecoder`, host kernels) give the logits
//! of the full padded forward (the learner's view) for every tiny fixture architecture (Llama tied
//! / Llama 3 RoPE / Qwen2 with biases / Qwen2 tied / Qwen3 q-k norm) on a left-padded batch, with
//! the cache fanned out and compacted in between, and for SmolLM2.
//!
//! Bounds are what the kernels achieve (portable kernels, 2-core dev machine) with a margin of
//! about 2: tiny fixtures within 1e-5 (measured up to 5.3e-6 at |logit| ~4), SmolLM2 within 4e-6
//! of its largest |logit| (measured 8.0e-5 at 33, 2.4e-6); bf16 host decode at most 10 % further
//! from the f32 model than LibTorch's own bf16 step (measured 0.66-0.97 of it on these inputs, up
//! to 1.09 on others). Continuation tokens come from a seeded generator (`rlpo_algo::seeded`), so
//! every number reproduces; `RLPO_PORTABLE_KERNELS=1` runs the same checks on the portable kernels
//! of an AVX-512 machine.

/// Absolute bound on the tiny fixtures' decode logits.
const TINY_TOL: f64 = 1e-5;
/// SmolLM2's bound relative to its largest |logit|.
const REL_TOL: f64 = 4e-6;

mod common;
use common::*;
use rlpo_model::CausalLm;
use rlpo_rollout::{CpuDecoder, FastDecoder, RolloutModel};
use tch::{Kind, Tensor};

/// Prefill, fan row 1 out to two rows next to the others ([0, 1, 1, 2, ...]), decode `steps`
/// tokens, drop the duplicate halfway (compaction), and compare every step's logits with the full
/// forward of the same rows. Returns the largest |Δlogit| and the largest |logit| compared.
fn check<M: RolloutModel>(dec: &M, model: &CausalLm, ids: &Tensor, mask: &Tensor, steps: i64) -> (f64, f64) {
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let cont = rlpo_algo::seeded::SplitMix(7).randint_low(3, model.config.vocab_size, [b, steps], (Kind::Int64, tch::Device::Cpu));
    let full_ids = Tensor::cat(&[ids, &cont], 1);
    let full_mask = Tensor::cat(&[mask, &cont.ones_like()], 1);
    let want = tch::no_grad(|| model.forward(&full_ids, &full_mask)).narrow(1, t, steps);
    let (_, mut cache) = dec.prefill(ids, mask, t + steps).unwrap();
    let mut rows: Vec<i64> = (0..b).collect();
    rows.insert(2, 1);
    cache = cache.select_rows(&rows).unwrap();
    let (mut worst, mut scale) = (0f64, 0f64);
    for s in 0..steps {
        if s == steps / 2 {
            cache = cache.select_rows(&(0..b + 1).filter(|&i| i != 2).collect::<Vec<_>>()).unwrap();
            rows.remove(2);
        }
        let feed: Vec<i64> = rows.iter().map(|&r| cont.int64_value(&[r, s])).collect();
        let got = dec.step(&feed, &mut cache).unwrap().into_tensor().to_kind(Kind::Float);
        let want_s = want.select(1, s).index_select(0, &Tensor::from_slice(&rows));
        scale = scale.max(want_s.abs().max().double_value(&[]));
        worst = worst.max((got - want_s).abs().max().double_value(&[]));
    }
    (worst, scale)
}

#[test]
fn fast_steps_match_full_forward_on_every_tiny_architecture() {
    for name in TINY_MODELS {
        let dir = fixtures().join(name);
        let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let model = tiny(name);
        let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
        let (d_fast, scale) = check(&FastDecoder::new(tiny(name)).unwrap(), &model, ids, mask, 16);
        let (d_cpu, _) = check(&CpuDecoder::new(tiny(name)).unwrap(), &model, ids, mask, 16);
        println!("{name}: vs full forward: FastDecoder {d_fast:.2e}, CpuDecoder {d_cpu:.2e} (max |logit| {scale:.2})");
        assert!(d_fast <= TINY_TOL && d_cpu <= TINY_TOL, "{name}: {d_fast} / {d_cpu}");
    }
}

#[test]
fn fast_steps_match_full_forward_on_smollm2() {
    let model = load(&smollm2_dir());
    let ids = Tensor::from_slice(&[0i64, 0, 0, 1, 504, 3125, 30, 1, 9690, 28, 4, 5, 6, 7, 0, 0, 0, 0, 0, 1, 9690]).view([3, 7]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    let ids = ids.clamp_min(1);
    let (d_fast, scale) = check(&FastDecoder::new(load(&smollm2_dir())).unwrap(), &model, &ids, &mask, 8);
    let (d_cpu, _) = check(&CpuDecoder::new(load(&smollm2_dir())).unwrap(), &model, &ids, &mask, 8);
    println!("SmolLM2: vs full forward: FastDecoder {d_fast:.2e}, CpuDecoder {d_cpu:.2e} (max |logit| {scale:.2})");
    assert!(d_fast <= REL_TOL * scale && d_cpu <= REL_TOL * scale, "{d_fast} / {d_cpu} vs {REL_TOL} × {scale}");
}

#[test]
fn cpu_decoder_column_split_matches_too() {
    for name in ["tiny-qwen2", "tiny-qwen3"] {
        let dir = fixtures().join(name);
        let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let mut cpu = CpuDecoder::new(tiny(name)).unwrap();
        cpu.set_parallelism(rlpo_rollout::Parallelism::Columns);
        let (d, _) = check(&cpu, &tiny(name), &r["left_input_ids"], &r["left_attention_mask"], 12);
        println!("{name}: CpuDecoder (column split) vs full forward {d:.2e}");
        assert!(d <= TINY_TOL, "{name}: {d}");
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
    let cont = rlpo_algo::seeded::SplitMix(16).randint_low(3, vocab, [3, steps], (Kind::Int64, tch::Device::Cpu));
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
    assert!(e_cpu <= 1.1 * e_torch, "{e_cpu} vs {e_torch}");
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
    assert!(check(&host.bind(&model), &model, ids, mask, 8).0 <= TINY_TOL);
    tch::no_grad(|| {
        for (_, mut v) in model.var_store().variables() {
            let _ = v.g_add_scalar_(0.01);
        }
    });
    let (stale, _) = check(&host.bind(&model), &model, ids, mask, 8);
    host.repack(&model).unwrap();
    let (fresh, _) = check(&host.bind(&model), &model, ids, mask, 8);
    println!("bound decoder after an in-place update: stale {stale:.2e}, repacked {fresh:.2e}");
    assert!(stale > 1e-3 && fresh <= TINY_TOL, "{stale} / {fresh}");
}

/// The host decoder's logits for 12 decode steps of the tiny-qwen2 fixture (`[rows, steps, V]`).
fn host_decode_logits() -> Tensor {
    let dir = fixtures().join("tiny-qwen2");
    let r: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
    let (ids, mask) = (&r["left_input_ids"], &r["left_attention_mask"]);
    let dec = CpuDecoder::new(tiny("tiny-qwen2")).unwrap();
    let (b, t) = (ids.size()[0], ids.size()[1]);
    let cont = rlpo_algo::seeded::SplitMix(21).randint_low(3, dec.vocab_size(), [b, 12], (Kind::Int64, tch::Device::Cpu));
    let (_, mut cache) = dec.prefill(ids, mask, t + 12).unwrap();
    let steps: Vec<Tensor> = (0..12).map(|s| dec.step(&Vec::<i64>::try_from(cont.select(1, s)).unwrap(), &mut cache).unwrap().into_tensor()).collect();
    Tensor::stack(&steps, 1)
}

/// `RLPO_PORTABLE_KERNELS=1` (read once per process) makes the host decoder take the portable
/// kernels: a child process of this test binary runs with it, reports its dispatch and writes its
/// logits; they agree with this process's own (the AVX-512 kernels on a CPU that has them) within
/// the tiny bound. On a CPU without AVX-512 both processes run the same kernels.
#[test]
fn portable_kernel_switch_gives_the_same_logits() {
    use rlpo_rollout::simd::{has_avx512_bf16, has_avx512_core, has_avx512f, portable_kernels_forced};
    if let Some(out) = std::env::var_os("RLPO_TEST_PORTABLE_OUT") {
        assert!(portable_kernels_forced() && !has_avx512f() && !has_avx512_bf16() && !has_avx512_core(), "the switch is not honoured");
        Tensor::write_safetensors(&[("logits", host_decode_logits())], out).unwrap();
        return;
    }
    let out = std::env::temp_dir().join(format!("rlpo-portable-logits-{}.safetensors", std::process::id()));
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "portable_kernel_switch_gives_the_same_logits", "--test-threads", "1"])
        .env("RLPO_PORTABLE_KERNELS", "1")
        .env("RLPO_TEST_PORTABLE_OUT", &out)
        .output()
        .unwrap();
    assert!(child.status.success(), "child with RLPO_PORTABLE_KERNELS=1 failed:\n{}", String::from_utf8_lossy(&child.stdout));
    let portable = Tensor::read_safetensors(&out).unwrap().remove(0).1;
    std::fs::remove_file(&out).ok();
    let here = host_decode_logits();
    let d = (&here - &portable).abs().max().double_value(&[]);
    println!("host decode, this process ({}) vs portable kernels: max |Δlogit| {d:.2e}", if has_avx512f() { "AVX-512" } else { "portable" });
    assert!(d <= TINY_TOL, "{d}");
    if !has_avx512f() {
        assert_eq!(d, 0.0, "the same kernels in both processes");
    }
}
