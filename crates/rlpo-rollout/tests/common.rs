//! Shared helpers for the rollout tests: fixture paths (written by scripts/setup.sh), model
//! loading, and the learner-style full-forward logprobs the engine's records are checked against.
#![allow(dead_code, missing_docs)]

use rlpo_model::{CausalLm, LoadOptions};
use rlpo_rollout::Completion;
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub const TINY_MODELS: &[&str] = &["tiny-llama-tied", "tiny-llama3-rope-untied", "tiny-qwen2", "tiny-qwen2-tied", "tiny-qwen3"];

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn fixtures() -> PathBuf {
    let dir = repo_root().join(".cache/fixtures");
    assert!(dir.join("smollm2_reference.json").exists(), "fixtures missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn smollm2_dir() -> PathBuf {
    let dir = repo_root().join(".cache/models/SmolLM2-135M-Instruct");
    assert!(dir.join("model.safetensors").exists(), "SmolLM2 missing at {}: run scripts/setup.sh", dir.display());
    dir
}

pub fn load(dir: &std::path::Path) -> CausalLm {
    CausalLm::load(dir, &LoadOptions::default()).unwrap()
}

pub fn tiny(name: &str) -> CausalLm {
    load(&fixtures().join(name))
}

pub fn smollm2_reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2_reference.json")).unwrap()).unwrap()
}

pub fn ids_of(v: &serde_json::Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// Prompts of different lengths for a vocabulary of `vocab` (deterministic, no special tokens).
pub fn prompts(vocab: i64, lens: &[usize]) -> Vec<Vec<i64>> {
    lens.iter()
        .enumerate()
        .map(|(p, &n)| (0..n).map(|i| 3 + ((p * 131 + i * 37 + i * i) as i64 % (vocab - 3))).collect())
        .collect()
}

/// The learner's view of completions: `[prompt (left-padded) | response (right-padded)]` through
/// `model.forward`, then `log_softmax(logits / t_base)` gathered at each response token, and the
/// full-vocabulary entropy of `softmax(logits / t_base)`. Returns per completion (logprobs, entropies).
pub fn learner_logprobs(model: &CausalLm, prompts: &[Vec<i64>], rows: &[&Completion], g: usize, t_base: f64) -> Vec<(Vec<f32>, Vec<f32>)> {
    let lp = prompts.iter().map(Vec::len).max().unwrap();
    let lr = rows.iter().map(|c| c.len()).max().unwrap();
    let width = lp + lr;
    let n = rows.len();
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
    let ids = Tensor::from_slice(&ids).view([n as i64, width as i64]);
    let mask = Tensor::from_slice(&mask).view([n as i64, width as i64]);
    let logits = tch::no_grad(|| model.forward(&ids, &mask)).to_kind(Kind::Float) / t_base;
    // position lp - 1 + t predicts response token t
    let pred = logits.narrow(1, lp as i64 - 1, lr as i64);
    let logp = pred.log_softmax(-1, Kind::Float);
    let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
    let tok = ids.narrow(1, lp as i64, lr as i64);
    let gathered = logp.gather(2, &tok.unsqueeze(-1), false).squeeze_dim(-1);
    rows.iter()
        .enumerate()
        .map(|(r, c)| {
            let l = c.len() as i64;
            let a: Vec<f32> = Vec::try_from(gathered.get(r as i64).narrow(0, 0, l)).unwrap();
            let e: Vec<f32> = Vec::try_from(ent.get(r as i64).narrow(0, 0, l)).unwrap();
            (a, e)
        })
        .collect()
}

/// Max |a - b| over two equally long slices.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Run `f` on a thread and fail (instead of hanging) if it takes longer than `secs`.
pub fn with_timeout<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("timed out after {secs} s (hang)"),
    }
}
