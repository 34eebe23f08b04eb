//! CUDA checks of the model, compiled only with `--features cuda-tests` (a plain `cargo test`
//! does not build them). On `cuda:0` (or `RLPO_TEST_DEVICE`), against the CPU in f32:
//!
//! - logits of left- and right-padded batches: f32 within 1e-4, bf16 within 3e-2 relative (L2);
//! - prefill + one-token decode steps with the KV cache (and a G-row fan-out) equal the full
//!   forward on the device: f32 within 1e-4, bf16 within 5e-2 relative;
//! - a training micro-step (forward, masked token NLL, backward): f32 loss and gradients equal the
//!   CPU's; bf16 gradients point the same way (cosine ≥ 0.99); an fp32-master update lands in the
//!   bf16 parameters on the device.
//!
//! Run: `cargo test -p rlpo-model --features cuda-tests --test cuda` on a GPU machine, or the
//! binary built by `scripts/gpu_bundle.sh` (see `scripts/gpu_check.sh`).
#![cfg(feature = "cuda-tests")]

#[path = "cuda_support/mod.rs"]
mod cuda_support;
use cuda_support::*;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

#[test]
fn logits_match_cpu_in_f32_and_bf16() {
    let dev = device();
    for (name, json) in CONFIGS {
        let cpu = random_model(json, 1);
        let vocab = cpu.config.vocab_size;
        let (ids, mask) = left_padded(vocab, &[17, 9, 12], 2);
        // Right padding too: the last row is the first row's prefix with pads after it.
        let right_mask = Tensor::cat(&[mask.narrow(0, 0, 2), mask.narrow(0, 1, 1).flip([1])], 0);
        for mask in [&mask, &right_mask] {
            let ids = &ids * mask;
            let want = tch::no_grad(|| cpu.forward(&ids, mask));
            let f32_dev = copy_to(&cpu, dev, Kind::Float);
            let got = tch::no_grad(|| f32_dev.forward(&ids.to_device(dev), &mask.to_device(dev)));
            assert_eq!(got.device(), dev);
            let d = max_diff_masked(&got, &want, mask);
            println!("{name}: f32 on {dev:?} vs CPU: max |diff| {d:.2e}");
            assert!(d < 1e-4, "{name}: f32 logits differ by {d}");
            let bf = copy_to(&cpu, dev, Kind::BFloat16);
            let got = tch::no_grad(|| bf.forward(&ids.to_device(dev), &mask.to_device(dev)));
            assert_eq!(got.kind(), Kind::BFloat16);
            let r = rel_l2_masked(&got, &want, mask);
            println!("{name}: bf16 on {dev:?} vs f32 CPU: relative L2 {r:.2e}");
            assert!(r < 3e-2, "{name}: bf16 logits relative error {r}");
        }
    }
}

/// Prefill `ids`/`mask`, fan every prompt out to `g` rows, then step through `cont [B·g, S]`;
/// returns the logits `[B·g, S + 1, V]` (prefill's last position, then one per step).
fn cached_logits(m: &rlpo_model::CausalLm, ids: &Tensor, mask: &Tensor, g: i64, cont: &Tensor) -> Tensor {
    let (b, w) = (ids.size()[0], ids.size()[1]);
    let s = cont.size()[1];
    let mut cache = m.new_cache(b, w + s);
    tch::no_grad(|| {
        let first = m.prefill(ids, mask, &mut cache);
        let rows = Tensor::arange(b, (Kind::Int64, ids.device())).repeat_interleave_self_int(g, 0, None::<i64>);
        let mut cache = cache.select_rows(&rows);
        let mut out = vec![first.index_select(0, &rows)];
        for t in 0..s {
            out.push(m.step(&cont.select(1, t), &mut cache));
        }
        Tensor::stack(&out, 1)
    })
}

#[test]
fn decode_steps_with_kv_cache_match_the_full_forward() {
    let dev = device();
    let g = 2;
    for (name, json) in CONFIGS {
        let cpu = random_model(json, 3);
        let vocab = cpu.config.vocab_size;
        let (ids, mask) = left_padded(vocab, &[6, 11, 3], 4);
        let (ids, mask) = (ids.to_device(dev), mask.to_device(dev));
        let rows = ids.size()[0] * g;
        let s = 12;
        let cont = rlpo_algo::seeded::SplitMix(5).randint_low(3, vocab, [rows, s], (Kind::Int64, Device::Cpu)).to_device(dev);
        // The full forward over [prompt | continuation] for every row.
        let rep = |t: &Tensor| t.repeat_interleave_self_int(g, 0, None::<i64>);
        let full_ids = Tensor::cat(&[rep(&ids), cont.shallow_clone()], 1);
        let full_mask = Tensor::cat(&[rep(&mask), cont.ones_like()], 1);
        let w = ids.size()[1];
        for (kind, tol) in [(Kind::Float, 1e-4), (Kind::BFloat16, 5e-2)] {
            let m = copy_to(&cpu, dev, kind);
            let full = tch::no_grad(|| m.forward(&full_ids, &full_mask)).narrow(1, w - 1, s + 1);
            let cached = cached_logits(&m, &ids, &mask, g, &cont);
            assert_eq!(cached.device(), dev);
            let all = Tensor::ones([rows, s + 1], (Kind::Int64, Device::Cpu));
            let err = if kind == Kind::Float { max_diff_masked(&cached, &full, &all) } else { rel_l2_masked(&cached, &full, &all) };
            println!("{name} {kind:?} on {dev:?}: cached vs full forward {err:.2e}");
            assert!(err < tol, "{name} {kind:?}: cached decode differs from the full forward by {err}");
        }
    }
}

/// Masked mean token NLL of `targets` (the next token at every position) and the gradients.
fn micro_step(m: &rlpo_model::CausalLm, ids: &Tensor, mask: &Tensor) -> (f64, BTreeMap<String, Tensor>) {
    let t = ids.size()[1];
    let logits = m.forward(ids, mask).narrow(1, 0, t - 1).to_kind(Kind::Float);
    let targets = ids.narrow(1, 1, t - 1);
    let w = (mask.narrow(1, 1, t - 1) * mask.narrow(1, 0, t - 1)).to_kind(Kind::Float);
    let lp = logits.log_softmax(-1, Kind::Float).gather(2, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    let loss = -(lp * &w).sum(Kind::Float) / w.sum(Kind::Float);
    loss.backward();
    let grads = m.var_store().variables().into_iter().map(|(n, p)| (n, p.grad().to_device(Device::Cpu).to_kind(Kind::Float))).collect();
    (loss.double_value(&[]), grads)
}

#[test]
fn training_micro_step_matches_cpu() {
    let dev = device();
    for (name, json) in CONFIGS {
        let cpu = random_model(json, 5);
        let (ids, mask) = left_padded(cpu.config.vocab_size, &[20, 13, 7, 16], 6);
        let (want_loss, want) = micro_step(&cpu, &ids, &mask);
        let (ids_d, mask_d) = (ids.to_device(dev), mask.to_device(dev));
        let f32_dev = copy_to(&cpu, dev, Kind::Float);
        let (loss, got) = micro_step(&f32_dev, &ids_d, &mask_d);
        assert!((loss - want_loss).abs() < 1e-5, "{name}: f32 loss {loss} vs CPU {want_loss}");
        for (n, g) in &want {
            let d = (&got[n] - g).abs().max().double_value(&[]);
            let scale = g.abs().max().double_value(&[]);
            assert!(d <= 1e-4 + 1e-3 * scale, "{name}: f32 gradient of {n} differs by {d} (max |g| {scale})");
        }
        // bf16 parameters: the gradient direction is the f32 one.
        let bf = copy_to(&cpu, dev, Kind::BFloat16);
        let (loss_bf, got_bf) = micro_step(&bf, &ids_d, &mask_d);
        assert!(loss_bf.is_finite() && (loss_bf - want_loss).abs() < 0.05 * want_loss.abs(), "{name}: bf16 loss {loss_bf} vs {want_loss}");
        let flat = |m: &BTreeMap<String, Tensor>| Tensor::cat(&m.values().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
        let (a, b) = (flat(&got_bf), flat(&want));
        let cos = (&a * &b).sum(Kind::Float).double_value(&[]) / (a.norm().double_value(&[]) * b.norm().double_value(&[]));
        println!("{name}: f32 loss {loss:.6} (CPU {want_loss:.6}); bf16 loss {loss_bf:.6}, gradient cosine {cos:.5}");
        assert!(cos > 0.99, "{name}: bf16 gradient cosine {cos}");
        // One fp32-master SGD update written back into the bf16 parameters on the device.
        tch::no_grad(|| {
            for (n, mut p) in bf.var_store().variables() {
                let master = p.to_kind(Kind::Float) - p.grad().to_kind(Kind::Float) * 0.1;
                p.copy_(&master.to_kind(Kind::BFloat16));
                assert_eq!((p.device(), p.kind()), (dev, Kind::BFloat16), "{n}");
            }
        });
        let (after, _) = micro_step(&bf, &ids_d, &mask_d);
        println!("{name}: bf16 loss after one step {after:.6}");
        assert!(after < loss_bf, "{name}: a descent step on the device did not lower the loss ({loss_bf} -> {after})");
    }
}
