//! Shared by the CUDA tests of rlpo-model and rlpo-rollout (`tests/cuda.rs`, feature
//! `cuda-tests`): the device under test and small random-weight models that need no fixture files,
//! so the compiled test binaries also run on a machine that has only the binaries (see
//! `scripts/gpu_bundle.sh`).
//!
//! The device is `cuda:0`, or `RLPO_TEST_DEVICE` (`cpu` exercises the same code on a machine
//! without a GPU; the comparisons are then CPU against CPU).
#![allow(dead_code, missing_docs)]

use rlpo_model::{CausalLm, ModelConfig};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The device under test; panics with instructions when it is not there.
pub fn device() -> Device {
    let name = std::env::var("RLPO_TEST_DEVICE").unwrap_or_else(|_| "cuda:0".into());
    rlpo_model::parse_device(&name).unwrap_or_else(|e| {
        panic!("cuda-tests: {e}; run on a GPU machine, or set RLPO_TEST_DEVICE=cpu to run these tests on the CPU")
    })
}

/// Qwen2 (GQA, q/k/v bias, untied), Qwen3 (q/k norm, tied) and Llama (GQA, tied) shapes, small.
pub const CONFIGS: [(&str, &str); 3] = [
    (
        "qwen2",
        r#"{"model_type": "qwen2", "vocab_size": 320, "hidden_size": 64, "intermediate_size": 160,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 256, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": false, "hidden_act": "silu", "eos_token_id": 2}"#,
    ),
    (
        "qwen3",
        r#"{"model_type": "qwen3", "vocab_size": 288, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
            "max_position_embeddings": 256, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true, "hidden_act": "silu", "eos_token_id": 2}"#,
    ),
    (
        "llama",
        r#"{"model_type": "llama", "vocab_size": 300, "hidden_size": 96, "intermediate_size": 192,
            "num_hidden_layers": 2, "num_attention_heads": 6, "num_key_value_heads": 3,
            "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": true, "hidden_act": "silu", "eos_token_id": 2}"#,
    ),
];

/// An f32 CPU model of `json` with seeded random weights (norm weights near 1).
pub fn random_model(json: &str, seed: i64) -> CausalLm {
    let cfg = ModelConfig::from_json_str(json, Path::new("<cuda test config>")).expect("test config parses");
    let m = CausalLm::new(cfg, Device::Cpu, Kind::Float);
    let mut rng = rlpo_algo::seeded::SplitMix(seed as u64);
    let mut vars: Vec<(String, Tensor)> = m.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (name, t) in vars.iter_mut() {
            let r = rng.randn(t.size(), (Kind::Float, Device::Cpu));
            let v = if name.ends_with("norm.weight") {
                r * 0.1 + 1.0
            } else if name.contains("embed_tokens") {
                r * 0.15
            } else {
                r * 0.05
            };
            t.copy_(&v);
        }
    });
    m
}

/// A copy of `m` on `device` in `kind`.
pub fn copy_to(m: &CausalLm, device: Device, kind: Kind) -> CausalLm {
    let out = CausalLm::new(m.config.clone(), device, kind);
    let src = m.var_store().variables();
    tch::no_grad(|| {
        for (name, mut t) in out.var_store().variables() {
            t.copy_(&src[&name].to_device(device).to_kind(kind));
        }
    });
    out
}

/// Left-padded prompts of `lens` tokens (ids in 3..vocab) as `ids [B, W]`, `mask [B, W]` on CPU.
pub fn left_padded(vocab: i64, lens: &[i64], seed: i64) -> (Tensor, Tensor) {
    let mut rng = rlpo_algo::seeded::SplitMix(seed as u64);
    let w = *lens.iter().max().expect("at least one prompt");
    let b = lens.len() as i64;
    let ids = rng.randint_low(3, vocab, [b, w], (Kind::Int64, Device::Cpu));
    let pos = Tensor::arange(w, (Kind::Int64, Device::Cpu)).view([1, w]);
    let start = Tensor::from_slice(&lens.iter().map(|l| w - l).collect::<Vec<_>>()).view([b, 1]);
    let mask = pos.ge_tensor(&start).to_kind(Kind::Int64);
    (ids * &mask, mask)
}

/// max |a − b| over positions where `mask [B, T]` is 1, for `[B, T, V]` tensors on any device.
pub fn max_diff_masked(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_device(Device::Cpu).to_kind(Kind::Float).unsqueeze(-1);
    let a = a.to_device(Device::Cpu).to_kind(Kind::Float);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Float);
    ((a - b).abs() * m).max().double_value(&[])
}

/// ‖a − b‖ / ‖b‖ over positions where `mask` is 1.
pub fn rel_l2_masked(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    let m = mask.to_device(Device::Cpu).to_kind(Kind::Float).unsqueeze(-1);
    let a = a.to_device(Device::Cpu).to_kind(Kind::Float);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Float);
    let num = ((a - &b) * &m).square().sum(Kind::Float).sqrt().double_value(&[]);
    let den = (b * m).square().sum(Kind::Float).sqrt().double_value(&[]);
    num / den.max(1e-30)
}
