//! Rollout workers: N = 2 workers return the same groups as one engine, weight updates are
//! applied and tagged with their version (own copies and a shared colocated model), errors and
//! panics in a job or an update come back as errors (never a hang), and shutdown joins. Model
//! failures (prefill, decode step, a cache of the wrong kind) are `Result`s through
//! `Engine::generate`, on the caller's thread as well as on workers.

mod common;
use common::*;
use rlpo_model::CausalLm;
use rlpo_rollout::{
    CpuDecoder, DecodeCache, Engine, Error, FastDecoder, GenerateRequest, Logits, RolloutModel, RolloutPool, RolloutSeed, SamplingParams,
    WeightUpdate,
};
use std::sync::{Arc, Mutex};
use tch::{Device, Tensor};

fn requests(vocab: i64, n: usize) -> Vec<GenerateRequest> {
    let ps = prompts(vocab, &[5, 7, 4, 9, 6, 8]);
    (0..n)
        .map(|j| {
            let params = SamplingParams { group_size: 2, max_new_tokens: 10, ..Default::default() };
            let mut r = GenerateRequest::new(vec![ps[j % ps.len()].clone()], params);
            r.seed = RolloutSeed::new(3, 1);
            r.prompt_indices = Some(vec![j as u64]);
            r
        })
        .collect()
}

fn tokens(b: &rlpo_rollout::RolloutBatch) -> Vec<Vec<i64>> {
    b.completions().map(|c| c.tokens.clone()).collect()
}

/// Every parameter shifted by `delta` (a different policy).
fn perturbed(delta: f64) -> Vec<(String, Tensor)> {
    let m = tiny("tiny-qwen2");
    tch::no_grad(|| m.var_store().variables().into_iter().map(|(k, v)| (k, &v + delta)).collect())
}

#[test]
fn two_workers_match_a_single_engine_and_tag_versions() {
    with_timeout(300, || {
        let model = tiny("tiny-qwen2");
        let reqs = requests(model.config.vocab_size, 6);
        let want: Vec<_> = reqs.iter().map(|r| Engine::new(vec![2]).generate(&model, r).unwrap()).collect();
        // One worker per decode path; both must give the single engine's tokens.
        let mut pool = RolloutPool::spawn(2, 1, |w| {
            let m: Box<dyn RolloutModel> = if w == 0 {
                Box::new(FastDecoder::new(tiny("tiny-qwen2"))?)
            } else {
                Box::new(CpuDecoder::new(tiny("tiny-qwen2"))?)
            };
            Ok((m, Engine::new(vec![2])))
        })
        .unwrap();
        assert_eq!(pool.workers(), 2);
        let got = pool.generate_all(reqs.clone()).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(tokens(g), tokens(w));
            assert!(g.completions().all(|c| c.policy_version == 0));
        }
        // New weights, version 5: later jobs use them and say so.
        pool.update_weights(WeightUpdate::State { version: 5, weights: perturbed(0.01) }).unwrap();
        let got = pool.generate_all(reqs.clone()).unwrap();
        let mut other = tiny("tiny-qwen2");
        other.load_weights(&perturbed(0.01)).unwrap();
        for (r, g) in reqs.iter().zip(&got) {
            assert!(g.completions().all(|c| c.policy_version == 5));
            assert_eq!(tokens(g), tokens(&Engine::new(vec![2]).generate(&other, r).unwrap()));
        }
        assert_ne!(tokens(&got[0]), tokens(&want[0]), "the update changed the policy");
        pool.shutdown().unwrap();
    });
}

#[test]
fn shared_colocated_model_sees_in_place_updates() {
    with_timeout(300, || {
        let shared = Arc::new(Mutex::new(tiny("tiny-qwen2")));
        let vocab = shared.lock().unwrap().config.vocab_size;
        let s2 = shared.clone();
        let mut pool = RolloutPool::spawn(1, 1, move |_| Ok((s2.clone(), Engine::new(vec![2])))).unwrap();
        let reqs = requests(vocab, 2);
        let before = pool.generate_all(reqs.clone()).unwrap();
        // The "learner" changes the weights in place, then announces the version.
        shared.lock().unwrap().load_weights(&perturbed(0.01)).unwrap();
        pool.update_weights(WeightUpdate::InPlace { version: 1 }).unwrap();
        let after = pool.generate_all(reqs).unwrap();
        assert!(after.iter().flat_map(|b| b.completions()).all(|c| c.policy_version == 1));
        assert_ne!(tokens(&before[0]), tokens(&after[0]));
        pool.shutdown().unwrap();
    });
}

/// Wraps a model: prefill panics when the prompt contains token 7 and returns an error when it
/// contains token 8; the decode step returns an error from its `fail_step`-th call on.
struct Faulty(CausalLm);

/// Like [`Faulty`] without the prefill faults, failing its decode steps from call `fail_step`.
struct FailingStep {
    model: CausalLm,
    fail_step: usize,
    calls: std::sync::atomic::AtomicUsize,
}
impl RolloutModel for Faulty {
    fn vocab_size(&self) -> i64 {
        self.0.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        512
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> rlpo_rollout::Result<(Logits, DecodeCache)> {
        if ids.eq(7).any().int64_value(&[]) != 0 {
            panic!("injected fault");
        }
        if ids.eq(8).any().int64_value(&[]) != 0 {
            return Err(Error::Failed("prefill: injected error".into()));
        }
        RolloutModel::prefill(&self.0, ids, mask, capacity)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> rlpo_rollout::Result<Logits> {
        RolloutModel::step(&self.0, ids, cache)
    }
    fn load_weights(&mut self, w: &[(String, Tensor)]) -> rlpo_rollout::Result<()> {
        self.0.load_weights(w)
    }
}

impl RolloutModel for FailingStep {
    fn vocab_size(&self) -> i64 {
        self.model.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        512
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> rlpo_rollout::Result<(Logits, DecodeCache)> {
        RolloutModel::prefill(&self.model, ids, mask, capacity)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> rlpo_rollout::Result<Logits> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= self.fail_step {
            return Err(Error::Failed("decode step: injected error".into()));
        }
        RolloutModel::step(&self.model, ids, cache)
    }
    fn load_weights(&mut self, w: &[(String, Tensor)]) -> rlpo_rollout::Result<()> {
        self.model.load_weights(w)
    }
}

/// On the caller's thread (the colocated trainer's case): a prefill error, a decode-step error
/// and a cache handed to the wrong decode path come back as `Err` from `Engine::generate`,
/// and the same engine and model still generate afterwards.
#[test]
fn model_failures_are_errors_on_the_callers_thread() {
    with_timeout(300, || {
        let mut engine = Engine::new(vec![2]);
        let ok = requests(376, 1).remove(0);
        let mut bad = ok.clone();
        bad.prompts = vec![vec![5, 8, 9]];
        let faulty = Faulty(tiny("tiny-qwen2"));
        let e = engine.generate(&faulty, &bad).unwrap_err();
        assert!(e.to_string().contains("prefill: injected error"), "{e}");
        assert_eq!(engine.generate(&faulty, &ok).unwrap().groups.len(), 1);

        let failing = FailingStep { model: tiny("tiny-qwen2"), fail_step: 3, calls: Default::default() };
        let e = engine.generate(&failing, &ok).unwrap_err();
        assert!(e.to_string().contains("decode step: injected error"), "{e}");
        assert_eq!(failing.calls.load(std::sync::atomic::Ordering::SeqCst), 3, "stopped at the failing step");

        // A LibTorch cache given to the CPU decoder, a host cache given to a LibTorch path.
        let cpu = CpuDecoder::new(tiny("tiny-qwen2")).unwrap();
        let ids = Tensor::from_slice(&[5i64, 6, 7]).view([1, 3]);
        let (_, mut torch_cache) = RolloutModel::prefill(&tiny("tiny-qwen2"), &ids, &ids.ones_like(), 8).unwrap();
        let e = cpu.step(&[4], &mut torch_cache).unwrap_err();
        assert!(e.to_string().contains("LibTorch KV cache"), "{e}");
        let (_, mut host_cache) = cpu.prefill(&ids, &ids.ones_like(), 8).unwrap();
        let e = RolloutModel::step(&tiny("tiny-qwen2"), &[4], &mut host_cache).unwrap_err();
        assert!(e.to_string().contains("host KV cache"), "{e}");
        // Wrong number of ids for the cache, and a token id outside the vocabulary.
        let e = cpu.step(&[4, 4], &mut host_cache).unwrap_err();
        assert!(e.to_string().contains("2 token ids for a KV cache of 1 rows"), "{e}");
        let e = cpu.step(&[1_000_000], &mut host_cache).unwrap_err();
        assert!(e.to_string().contains("index"), "{e}");
        assert_eq!(engine.generate(&cpu, &ok).unwrap().groups.len(), 1);
    });
}

#[test]
fn job_errors_and_panics_surface_and_the_pool_survives() {
    with_timeout(300, || {
        let mut pool = RolloutPool::spawn(2, 1, |_| Ok((Faulty(tiny("tiny-qwen2")), Engine::new(vec![2])))).unwrap();
        let ok = requests(376, 1).remove(0);
        let mut panicking = ok.clone();
        panicking.prompts = vec![vec![5, 7, 9]];
        let mut invalid = ok.clone();
        invalid.prompts = vec![vec![5, 100_000]];

        pool.submit(panicking).unwrap();
        let e = pool.recv().unwrap_err();
        assert!(matches!(e, Error::Worker { .. }) && e.to_string().contains("injected fault"), "{e}");
        let mut erring = ok.clone();
        erring.prompts = vec![vec![5, 8, 9]];
        let e = pool.generate_all(vec![erring]).unwrap_err();
        assert!(matches!(e, Error::Worker { .. }) && e.to_string().contains("prefill: injected error"), "{e}");

        let e = pool.generate_all(vec![invalid]).unwrap_err();
        assert!(e.to_string().contains("100000"), "{e}");

        // Still serving after both.
        assert_eq!(pool.generate_all(vec![ok.clone(), ok]).unwrap().len(), 2);

        // A bad weight update (unknown tensor) is reported by the next receive.
        pool.update_weights(WeightUpdate::State { version: 2, weights: vec![("nope".into(), Tensor::zeros([1], tch::kind::FLOAT_CPU))] }).unwrap();
        let e = pool.generate_all(requests(376, 1)).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        // Nothing pending: recv is an error, not a hang.
        while pool.pending() > 0 {
            let _ = pool.recv();
        }
        assert!(pool.recv().is_err());
        pool.shutdown().unwrap();
    });
}

#[test]
fn startup_errors_are_returned_and_shutdown_joins() {
    with_timeout(120, || {
        let e = RolloutPool::spawn(2, 1, |w| {
            if w == 1 {
                Err(Error::Input("no model for worker 1".into()))
            } else {
                Ok((tiny("tiny-qwen2"), Engine::new(vec![2])))
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("no model for worker 1"), "{e}");
        let e = RolloutPool::spawn(1, 1, |_| -> rlpo_rollout::Result<(CausalLm, Engine)> { panic!("factory panic") }).unwrap_err();
        assert!(e.to_string().contains("factory panic"), "{e}");
        // Dropping a pool with queued work neither hangs nor leaks threads.
        let mut pool = RolloutPool::spawn(2, 1, |_| Ok((tiny("tiny-qwen2"), Engine::new(vec![2])))).unwrap();
        for r in requests(376, 3) {
            pool.submit(r).unwrap();
        }
        drop(pool);
    });
}
