//! The base-temperature logprob and entropy recorded at rollout equal the learner's full-forward
//! values (`log_softmax(model.forward(prompt + response, mask) / T_base)` gathered) within 1e-4,
//! fp32 on CPU, for batches with left padding (prompts of different lengths), G rows per prompt,
//! rows that finish early (per-row budgets, a stop token) and batch compaction; tiny fixture
//! models and SmolLM2, every decode path, with sampling on the host and on the device (tensor
//! ops on CPU tensors: stop ids and budgets are then applied by the device loop).

mod common;
use common::*;
use rlpo_model::CausalLm;
use rlpo_rollout::{BoundFastDecoder, Completion, CpuDecoder, Engine, FastDecoder, FinishReason, GenerateRequest, RolloutModel, RolloutSeed, SamplerPlacement, SamplingParams};

const PLACEMENTS: [SamplerPlacement; 2] = [SamplerPlacement::Host, SamplerPlacement::Device];

const TOL: f32 = 1e-4;

fn check_parity<M: RolloutModel>(decoder: &M, learner: &CausalLm, prompts: &[Vec<i64>], params: SamplingParams, budgets: Vec<usize>) -> Vec<Completion> {
    let g = params.group_size;
    let t_base = params.temperature;
    let mut req = GenerateRequest::new(prompts.to_vec(), params);
    req.seed = RolloutSeed::new(11, 2);
    req.budgets = Some(budgets);
    let out = Engine::new(vec![]).generate(decoder, &req).unwrap();
    let rows: Vec<&Completion> = out.completions().collect();
    let want = learner_logprobs(learner, prompts, &rows, g, t_base);
    let mut worst = (0f32, 0f32);
    for (c, (lp, ent)) in rows.iter().zip(&want) {
        let (dl, de) = (max_abs(&c.base_logprobs, lp), max_abs(&c.entropies, ent));
        assert!(dl < TOL, "row ({}, {}): logprob diff {dl}", c.prompt_index, c.sample_index);
        assert!(de < TOL, "row ({}, {}): entropy diff {de}", c.prompt_index, c.sample_index);
        worst = (worst.0.max(dl), worst.1.max(de));
    }
    assert_eq!(out.stats.device_sampling, req.params.sampler == SamplerPlacement::Device);
    println!("max |logprob diff| {:.2e}, max |entropy diff| {:.2e}, compactions {}", worst.0, worst.1, out.stats.compactions);
    out.completions().cloned().collect()
}

#[test]
fn tiny_models_rollout_logprobs_equal_learner_logprobs() {
    for name in ["tiny-qwen2", "tiny-qwen3", "tiny-llama-tied"] {
        let model = tiny(name);
        let prompts = prompts(model.config.vocab_size, &[5, 11, 8]);
        let g = 4;
        // Row budgets between 3 and 20 tokens: most rows finish before the longest.
        let budgets: Vec<usize> = (0..prompts.len() * g).map(|n| 3 + (n * 7) % 18).collect();
        for (path, sampler) in ["CausalLm", "FastDecoder", "BoundFastDecoder", "CpuDecoder"].into_iter().flat_map(|p| PLACEMENTS.map(|s| (p, s))) {
            println!("{name}, {path}, sampler {sampler:?}");
            let params = SamplingParams { group_size: g, max_new_tokens: 20, temperature: 0.7, compact_fraction: 0.0, sampler, device_sync_steps: 3, ..Default::default() };
            let rows = match path {
                "FastDecoder" => check_parity(&FastDecoder::new(tiny(name)).unwrap(), &model, &prompts, params.clone(), budgets.clone()),
                "BoundFastDecoder" => check_parity(&BoundFastDecoder::new(&model).unwrap(), &model, &prompts, params.clone(), budgets.clone()),
                "CpuDecoder" => check_parity(&CpuDecoder::new(tiny(name)).unwrap(), &model, &prompts, params.clone(), budgets.clone()),
                _ => check_parity(&model, &model, &prompts, params.clone(), budgets.clone()),
            };
            for (n, c) in rows.iter().enumerate() {
                assert_eq!(c.len(), budgets[n].min(20), "row {n} length");
                let want = if budgets[n] < 20 { FinishReason::Budget } else { FinishReason::MaxLength };
                assert_eq!(c.finish_reason, want, "row {n}");
            }
        }
    }
}

#[test]
fn early_stop_token_rows_keep_exact_logprobs() {
    // A stop token taken from a first run's output makes that row (and any other that samples it)
    // end with `Eos` mid-batch.
    let model = tiny("tiny-qwen2");
    let prompts = prompts(model.config.vocab_size, &[4, 9]);
    for sampler in PLACEMENTS {
        let params = SamplingParams { group_size: 3, max_new_tokens: 16, compact_fraction: 0.0, sampler, ..Default::default() };
        let budgets = vec![16; 6];
        let first = check_parity(&model, &model, &prompts, params.clone(), budgets.clone());
        let stop = first[1].tokens[5];
        let params = SamplingParams { stop_token_ids: vec![stop], ..params };
        let rows = check_parity(&model, &model, &prompts, params, budgets);
        assert_eq!(rows[1].finish_reason, FinishReason::Eos, "{sampler:?}");
        assert!(rows[1].len() <= 6 && *rows[1].tokens.last().unwrap() == stop);
        for c in &rows {
            let at = c.tokens.iter().position(|&t| t == stop);
            match at {
                Some(i) => assert!(i + 1 == c.len() && c.finish_reason == FinishReason::Eos),
                None => assert_eq!(c.finish_reason, FinishReason::MaxLength),
            }
        }
    }
}

#[test]
fn smollm2_rollout_logprobs_equal_learner_logprobs() {
    let r = smollm2_reference();
    let prompts: Vec<Vec<i64>> = r["prompt_ids"].as_array().unwrap().iter().map(ids_of).take(3).collect();
    let model = load(&smollm2_dir());
    let g = 2;
    let budgets = vec![24, 5, 12, 24, 9, 17];
    let params = SamplingParams { group_size: g, max_new_tokens: 24, temperature: 1.0, compact_fraction: 0.3, ..Default::default() };
    let eos = rlpo_model::TextTokenizer::from_dir(&smollm2_dir()).unwrap().eos_ids;
    let fast = FastDecoder::new(load(&smollm2_dir())).unwrap();
    let cpu = CpuDecoder::new(load(&smollm2_dir())).unwrap();
    let runs = [(&cpu as &dyn RolloutModel, SamplerPlacement::Host), (&fast as &dyn RolloutModel, SamplerPlacement::Host), (&model as &dyn RolloutModel, SamplerPlacement::Device)];
    for (decoder, sampler) in runs {
        let mut req = GenerateRequest::new(prompts.clone(), SamplingParams { sampler, ..params.clone() });
        req.seed = RolloutSeed::new(3, 1);
        req.budgets = Some(budgets.clone());
        let out = Engine::new(eos.clone()).generate(decoder, &req).unwrap();
        let rows: Vec<&Completion> = out.completions().collect();
        let want = learner_logprobs(&model, &prompts, &rows, g, 1.0);
        for (n, (c, (lp, ent))) in rows.iter().zip(&want).enumerate() {
            assert!(c.len() <= budgets[n]);
            let (dl, de) = (max_abs(&c.base_logprobs, lp), max_abs(&c.entropies, ent));
            println!("row {n}: {} tokens ({:?}), logprob diff {dl:.2e}, entropy diff {de:.2e}", c.len(), c.finish_reason);
            assert!(dl < TOL && de < TOL, "row {n}: {dl} / {de}");
            // T = 1, no truncation: sampled and base logprobs coincide.
            assert!(max_abs(&c.logprobs, &c.base_logprobs) < 1e-6);
        }
    }
}
