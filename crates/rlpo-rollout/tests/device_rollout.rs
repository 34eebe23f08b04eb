//! The device-resident decode loop (`rollout.sampler = "device"`, run here on CPU tensors) against
//! the host loop: the same request gives the same completions (both draw every token from the
//! same counter-based uniform), whatever the number of steps between reads of the sampled tokens,
//! with per-row budgets, a stop id, HAPO temperatures and top-k/top-p truncation; and only
//! `[B, 6]` records per step reach the host.

mod common;
use common::*;
use rlpo_rollout::{
    Completion, EntropyStats, FastDecoder, FinishReason, GenerateRequest, RolloutBatch, RolloutModel, RolloutSeed, SamplerPlacement, SamplingParams,
};
use rlpo_rollout::{AdaptiveTemperature, Engine};

fn run<M: RolloutModel>(model: &M, prompts: &[Vec<i64>], params: SamplingParams, budgets: &[usize], stats: Option<EntropyStats>) -> RolloutBatch {
    let mut req = GenerateRequest::new(prompts.to_vec(), params);
    req.seed = RolloutSeed::new(21, 4);
    req.budgets = Some(budgets.to_vec());
    req.entropy_stats = stats;
    Engine::new(vec![2]).generate(model, &req).unwrap()
}

/// Completions equal up to float noise in the recorded numbers (tokens and reasons exactly).
fn assert_same(a: &RolloutBatch, b: &RolloutBatch, what: &str) {
    let (ra, rb): (Vec<&Completion>, Vec<&Completion>) = (a.completions().collect(), b.completions().collect());
    assert_eq!(ra.len(), rb.len());
    for (n, (x, y)) in ra.iter().zip(&rb).enumerate() {
        assert_eq!(x.tokens, y.tokens, "{what}: row {n} tokens");
        assert_eq!(x.finish_reason, y.finish_reason, "{what}: row {n}");
        for (u, v) in [(&x.logprobs, &y.logprobs), (&x.base_logprobs, &y.base_logprobs), (&x.entropies, &y.entropies), (&x.temperatures, &y.temperatures)] {
            assert!(max_abs(u, v) < 1e-4, "{what}: row {n}: {}", max_abs(u, v));
        }
    }
}

#[test]
fn device_loop_reproduces_the_host_loop() {
    let model = tiny("tiny-qwen2");
    let prompts = prompts(model.config.vocab_size, &[5, 11, 7]);
    let g = 3;
    let budgets: Vec<usize> = (0..prompts.len() * g).map(|n| 2 + (n * 5) % 15).collect();
    // Compaction off: the host and device loops compact at different moments, and a different
    // batch shape may change the forward's rounding.
    let base = SamplingParams { group_size: g, max_new_tokens: 14, temperature: 0.9, compact_fraction: 1.0, ..Default::default() };
    let stats = EntropyStats { q: 1.5, s: 0.7, inv_h_pos: 0.8, scale_neg: 0.6 };
    let cases = [
        ("plain", base.clone(), None),
        ("top-k/top-p/min-p", SamplingParams { top_k: 30, top_p: 0.9, min_p: 0.02, ..base.clone() }, None),
        ("HAPO", SamplingParams { adaptive_temperature: Some(AdaptiveTemperature { tau: 0.1 }), ..base.clone() }, Some(stats)),
    ];
    for (what, params, st) in cases {
        let host = run(&model, &prompts, SamplingParams { sampler: SamplerPlacement::Host, ..params.clone() }, &budgets, st);
        assert!(!host.stats.device_sampling);
        for sync in [1, 4, 16] {
            let p = SamplingParams { sampler: SamplerPlacement::Device, device_sync_steps: sync, ..params.clone() };
            let dev = run(&model, &prompts, p, &budgets, st);
            assert!(dev.stats.device_sampling);
            assert_same(&host, &dev, &format!("{what}, device_sync_steps {sync}"));
            // One read for the first token, then one per block of `sync` steps (fewer when every
            // row of a block finished early).
            assert!(dev.stats.syncs <= 1 + host.stats.steps.div_ceil(sync), "{what}: {} reads", dev.stats.syncs);
            println!("{what}, sync {sync}: {} steps, {} reads of sampled tokens", dev.stats.steps, dev.stats.syncs);
        }
        for (n, c) in host.completions().enumerate() {
            assert_eq!(c.len(), budgets[n].min(14), "{what}: row {n}");
            assert_eq!(c.finish_reason, if budgets[n] < 14 { FinishReason::Budget } else { FinishReason::MaxLength });
        }
    }
}

#[test]
fn device_loop_with_a_stop_id_and_compaction_keeps_exact_rows() {
    // A stop id taken from a first run ends several rows mid-block; with compaction on, the rows
    // that remain still match the learner's forward (checked in logprob_parity.rs) and end
    // exactly at the stop id.
    let model = FastDecoder::new(tiny("tiny-qwen3")).unwrap();
    let prompts = prompts(model.model().config.vocab_size, &[4, 9, 6]);
    let params = SamplingParams { group_size: 4, max_new_tokens: 18, compact_fraction: 0.25, sampler: SamplerPlacement::Device, device_sync_steps: 5, ..Default::default() };
    let budgets = vec![18; 12];
    let first = run(&model, &prompts, params.clone(), &budgets, None);
    // The id that occurs in the most rows, so that enough rows stop for a compaction.
    let rows_with = |t: i64| first.completions().filter(|c| c.tokens.contains(&t)).count();
    let stop = first.completions().flat_map(|c| c.tokens.iter().copied()).max_by_key(|&t| (rows_with(t), -t)).unwrap();
    let out = run(&model, &prompts, SamplingParams { stop_token_ids: vec![stop], ..params }, &budgets, None);
    let mut stopped = 0;
    for (c, c0) in out.completions().zip(first.completions()) {
        match c0.tokens.iter().position(|&t| t == stop) {
            Some(i) => {
                assert_eq!(c.finish_reason, FinishReason::Eos);
                assert_eq!(c.tokens[..], c0.tokens[..=i], "the row is the first run's up to its stop id");
                stopped += 1;
            }
            None => assert_eq!(c.tokens, c0.tokens),
        }
    }
    assert!(stopped >= 1 && out.stats.compactions >= 1, "stopped {stopped}, compactions {}", out.stats.compactions);
}
