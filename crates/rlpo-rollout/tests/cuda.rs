//! CUDA checks of the rollout engine, compiled only with `--features cuda-tests`. On `cuda:0` (or
//! `RLPO_TEST_DEVICE`), for the three LibTorch decode paths (`CausalLm`, `FastDecoder`, and
//! `BoundFastDecoder` — what the colocated trainer uses), each with sampling on the device (the
//! default on CUDA) and on the host:
//!
//! - the base-temperature log-probs recorded while decoding with the KV cache (prefill, G-row
//!   fan-out, per-row budgets, compaction) equal the learner's full forward on the same device:
//!   f32 within 1e-4; bf16 within 0.1 per token and 1e-2 on average (bf16 logits are rounded
//!   differently by a cached step and a full forward);
//! - the KV cache and the logits live on the device, and the same seed gives the same tokens twice.
//!
//! Run: `cargo test -p rlpo-rollout --features cuda-tests --test cuda` on a GPU machine, or the
//! binary built by `scripts/gpu_bundle.sh`.
#![cfg(feature = "cuda-tests")]

#[path = "../../rlpo-model/tests/cuda_support/mod.rs"]
mod cuda_support;
use cuda_support::*;
use rlpo_model::CausalLm;
use rlpo_rollout::{BoundFastDecoder, Completion, Engine, FastDecoder, GenerateRequest, RolloutModel, RolloutSeed, SamplerPlacement, SamplingParams};
use tch::{Device, Kind, Tensor};

/// Prompts of `lens` tokens with ids in 3..vocab.
fn prompts(vocab: i64, lens: &[usize]) -> Vec<Vec<i64>> {
    lens.iter().enumerate().map(|(p, &n)| (0..n).map(|i| 3 + ((p * 131 + i * 37 + i * i) as i64 % (vocab - 3))).collect()).collect()
}

/// `log_softmax(forward([prompt | response]) / t)` gathered at the response tokens, on the model's
/// device, per completion.
fn learner_logprobs(m: &CausalLm, prompts: &[Vec<i64>], rows: &[&Completion], g: usize, t: f64) -> Vec<Vec<f32>> {
    let lp = prompts.iter().map(Vec::len).max().unwrap();
    let lr = rows.iter().map(|c| c.len()).max().unwrap();
    let (n, width) = (rows.len(), lp + lr);
    let mut ids = vec![0i64; n * width];
    let mut mask = vec![0i64; n * width];
    for (r, c) in rows.iter().enumerate() {
        let p = &prompts[r / g];
        let off = r * width + lp - p.len();
        ids[off..off + p.len()].copy_from_slice(p);
        mask[off..off + p.len()].fill(1);
        ids[r * width + lp..r * width + lp + c.len()].copy_from_slice(&c.tokens);
        mask[r * width + lp..r * width + lp + c.len()].fill(1);
    }
    let dev = m.device();
    let ids = Tensor::from_slice(&ids).view([n as i64, width as i64]).to_device(dev);
    let mask = Tensor::from_slice(&mask).view([n as i64, width as i64]).to_device(dev);
    let logits = tch::no_grad(|| m.forward(&ids, &mask)).to_kind(Kind::Float) / t;
    let logp = logits.narrow(1, lp as i64 - 1, lr as i64).log_softmax(-1, Kind::Float);
    let tok = ids.narrow(1, lp as i64, lr as i64);
    let gathered = logp.gather(2, &tok.unsqueeze(-1), false).squeeze_dim(-1).to_device(Device::Cpu);
    rows.iter().enumerate().map(|(r, c)| Vec::try_from(gathered.get(r as i64).narrow(0, 0, c.len() as i64)).unwrap()).collect()
}

fn run<M: RolloutModel>(decoder: &M, prompts: &[Vec<i64>], params: &SamplingParams, budgets: &[usize]) -> Vec<Completion> {
    let mut req = GenerateRequest::new(prompts.to_vec(), params.clone());
    req.seed = RolloutSeed::new(7, 1);
    req.budgets = Some(budgets.to_vec());
    Engine::new(vec![]).generate(decoder, &req).unwrap().completions().cloned().collect()
}

#[test]
fn rollout_logprobs_on_device_equal_the_learner_forward() {
    let dev = device();
    for (name, json) in CONFIGS {
        let cpu = random_model(json, 11);
        let ps = prompts(cpu.config.vocab_size, &[5, 13, 8]);
        let g = 3;
        let budgets: Vec<usize> = (0..ps.len() * g).map(|n| 4 + (n * 7) % 21).collect();
        for kind in [Kind::Float, Kind::BFloat16] {
            let learner = copy_to(&cpu, dev, kind);
            for (path, sampler) in ["CausalLm", "FastDecoder", "BoundFastDecoder"].into_iter().flat_map(|p| [SamplerPlacement::Device, SamplerPlacement::Host].map(|s| (p, s))) {
                let params = SamplingParams { group_size: g, max_new_tokens: 24, temperature: 0.8, compact_fraction: 0.25, sampler, ..Default::default() };
                let path_name = format!("{path} ({sampler:?} sampling)");
                let path = path_name.as_str();
                let rows = match path.split(' ').next().unwrap() {
                    "BoundFastDecoder" => run(&BoundFastDecoder::new(&learner).unwrap(), &ps, &params, &budgets),
                    "FastDecoder" => {
                        let fd = FastDecoder::new(copy_to(&cpu, dev, kind)).unwrap();
                        assert_eq!(RolloutModel::device(&fd), dev);
                        let again = run(&fd, &ps, &params, &budgets);
                        let rows = run(&fd, &ps, &params, &budgets);
                        assert!(rows.iter().zip(&again).all(|(a, b)| a.tokens == b.tokens), "{name} {path}: same seed, other tokens");
                        rows
                    }
                    _ => run(&learner, &ps, &params, &budgets),
                };
                let refs: Vec<&Completion> = rows.iter().collect();
                let want = learner_logprobs(&learner, &ps, &refs, g, 0.8);
                let (mut worst, mut sum, mut count) = (0f32, 0f64, 0usize);
                for (n, (c, w)) in rows.iter().zip(&want).enumerate() {
                    assert_eq!(c.len(), budgets[n].min(24), "{name} {path}: row {n} length");
                    for (a, b) in c.base_logprobs.iter().zip(w) {
                        assert!(a.is_finite(), "{name} {path} {kind:?}: non-finite logprob");
                        worst = worst.max((a - b).abs());
                        sum += (a - b).abs() as f64;
                        count += 1;
                    }
                }
                let mean = sum / count as f64;
                println!("{name} {path} {kind:?} on {dev:?}: logprob vs learner max {worst:.2e}, mean {mean:.2e}");
                if kind == Kind::Float {
                    assert!(worst < 1e-4, "{name} {path}: f32 logprob differs by {worst}");
                } else {
                    assert!(worst < 0.1 && mean < 1e-2, "{name} {path}: bf16 logprob differs by {worst} (mean {mean})");
                }
            }
        }
    }
}

#[test]
fn kv_cache_and_logits_stay_on_the_device() {
    let dev = device();
    let (_, json) = CONFIGS[0];
    let m = copy_to(&random_model(json, 12), dev, Kind::BFloat16);
    let fd = FastDecoder::new(copy_to(&random_model(json, 12), dev, Kind::BFloat16)).unwrap();
    let ids = Tensor::from_slice(&[5i64, 6, 7, 8]).view([1, 4]).to_device(dev);
    let mask = ids.ones_like();
    for (path, model) in [("CausalLm", &m as &dyn RolloutModel), ("FastDecoder", &fd as &dyn RolloutModel)] {
        let (logits, mut cache) = model.prefill(&ids, &mask, 8).unwrap();
        let logits = logits.into_tensor();
        assert_eq!(logits.device(), dev, "{path}: prefill logits");
        let step = model.step(&[9], &mut cache).unwrap().into_tensor();
        assert_eq!((step.device(), step.size()), (dev, vec![1, m.config.vocab_size]), "{path}: step logits");
        assert_eq!(cache.torch().keys[0].device(), dev, "{path}: KV cache");
    }
}
