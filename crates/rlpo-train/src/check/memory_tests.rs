//! Tests of the memory plan and of `rlpo check`: the arithmetic against hand computation, the
//! parameter count against the real tensors, the budget refusal, and `[reward]` validation.

use super::memory::{parse_size, MemoryPlan, Phase, StepShape, GIB};
use super::{check, check_with, CheckOptions};
use crate::recipe::Recipe;
use rlpo_model::{CausalLm, ModelConfig};
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    let dir = repo().join(".cache/fixtures").join(name);
    assert!(dir.join("config.json").exists(), "fixture {} missing: run scripts/setup.sh", dir.display());
    dir
}

fn smollm2() -> PathBuf {
    let dir = repo().join(".cache/models/SmolLM2-135M-Instruct");
    assert!(dir.join("config.json").exists(), "SmolLM2 missing at {}: run scripts/setup.sh", dir.display());
    dir
}

/// Qwen2.5-1.5B's architecture (the shape of Qwen2.5-Math-1.5B).
const QWEN25_15B: &str = r#"{"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536,
 "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
 "num_key_value_heads": 2, "max_position_embeddings": 4096, "rope_theta": 10000.0,
 "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "hidden_act": "silu", "eos_token_id": 151643}"#;

/// Llama-3.1-8B's architecture.
const LLAMA31_8B: &str = r#"{"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
 "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
 "num_key_value_heads": 8, "max_position_embeddings": 131072, "rope_theta": 500000.0,
 "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "hidden_act": "silu", "eos_token_id": 128009,
 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#;

fn config_dir(json: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), json).unwrap();
    dir
}

fn tensor_elements(cfg: &ModelConfig) -> i64 {
    let m = CausalLm::new(cfg.clone(), Device::Cpu, Kind::BFloat16);
    m.var_store().variables().values().map(|t| t.numel() as i64).sum()
}

#[test]
fn parameter_count_is_the_tensor_count() {
    let mut dirs: Vec<PathBuf> =
        ["tiny-llama-tied", "tiny-llama3-rope-untied", "tiny-qwen2", "tiny-qwen2-tied", "tiny-qwen3"].iter().map(|n| fixture(n)).collect();
    dirs.push(smollm2());
    for dir in &dirs {
        let cfg = ModelConfig::from_dir(dir).unwrap();
        assert_eq!(cfg.num_parameters(), tensor_elements(&cfg), "{}", dir.display());
    }
    // By hand. SmolLM2-135M: V 49152, D 576, 30 layers, 9 heads, 3 KV heads of 64, I 1536, tied:
    // per layer 576·576·2 + 2·576·192 + 3·576·1536 + 2·576 = 3_540_096; 30 layers + embedding
    // 49152·576 + final norm 576.
    let sm = ModelConfig::from_dir(&smollm2()).unwrap();
    assert_eq!(sm.num_parameters(), 30 * 3_540_096 + 49152 * 576 + 576);
    assert_eq!(sm.num_parameters(), 134_515_008);
    // tiny-qwen2: D 64, 2 layers, 4 heads, 2 KV heads of 16, I 128, V 376, untied, q/k/v bias:
    // per layer 64·64·2 + 2·64·32 + (64 + 2·32) + 3·64·128 + 2·64 = 37_120.
    let tq = ModelConfig::from_dir(&fixture("tiny-qwen2")).unwrap();
    assert_eq!(tq.num_parameters(), 2 * 37_120 + 2 * 376 * 64 + 64);
    // Qwen2.5-1.5B (published: 1,543,714,304).
    let dir = config_dir(QWEN25_15B);
    assert_eq!(ModelConfig::from_dir(dir.path()).unwrap().num_parameters(), 1_543_714_304);
}

fn tiny_shape() -> StepShape {
    StepShape {
        param_bytes: 4,
        micro_rows: 2,
        rollout_rows: 4,
        prompt_len: 10,
        max_new_tokens: 6,
        logit_chunk: 1024,
        reference: true,
        compact_fraction: 0.25,
        cuda: false,
        activation_checkpointing: false,
        fused_optimizer: false,
        device_sampling: false,
        top_p: false,
    }
}

fn item(plan: &MemoryPlan, name: &str) -> f64 {
    plan.items.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no item {name}: {plan:?}")).bytes
}

#[test]
fn tiny_qwen2_plan_matches_hand_computation() {
    let cfg = ModelConfig::from_dir(&fixture("tiny-qwen2")).unwrap();
    let plan = MemoryPlan::new(&cfg, &tiny_shape());
    let p = 122_432.0;
    assert_eq!(item(&plan, "weights"), p * 4.0);
    assert_eq!(item(&plan, "gradients"), p * 4.0);
    assert!(!plan.items.iter().any(|i| i.name == "fp32 master weights"), "f32 parameters need no masters");
    assert_eq!(item(&plan, "AdamW moments (2 x fp32)"), p * 8.0);
    assert_eq!(item(&plan, "reference model (kl_coef > 0)"), p * 4.0);
    // 4 rows × 16 slots × (K, V) × 2 layers × 2 KV heads · 16 × 4 bytes.
    assert_eq!(item(&plan, "KV cache (rollout batch)"), 32_768.0);
    assert_eq!(item(&plan, "KV cache compaction copy"), 24_576.0);
    assert_eq!(item(&plan, "decode logits"), 4.0 * 376.0 * 4.0);
    // Per token and layer 4·(2·64 + 5·64 + 4·32 + 4·128) + 8·64 + 4·4 = 4_880; 2 layers + final
    // norm (4 + 8)·64 = 10_528; × 2 rows × 16 positions (packed rows: no attention mask).
    assert_eq!(item(&plan, "activations (one micro-batch)"), 2.0 * 16.0 * 10_528.0);
    assert_eq!(item(&plan, "fp32 logits saved for backward"), 2.0 * 6.0 * 376.0 * 4.0);
    // The chunk is capped by the 12 response positions of the micro-batch: 12 × 376 × (4 + 8).
    assert_eq!(item(&plan, "logits chunk (transient)"), 54_144.0);
    assert_eq!(item(&plan, "AdamW temporaries (largest tensor)"), 28.0 * 376.0 * 64.0);
    assert_eq!(plan.phase_bytes(Phase::Persistent), 2_448_640.0);
    assert_eq!(plan.phase_bytes(Phase::Rollout), 32_768.0 + 24_576.0 + 6_016.0);
    assert_eq!(plan.phase_bytes(Phase::Update), 336_896.0 + 18_048.0 + 54_144.0);
    assert_eq!(plan.peak_phase(), Phase::OptimizerStep);
    assert_eq!(plan.peak(), 2_448_640.0 + 673_792.0);
    // Activation checkpointing keeps each layer's input (4·64 per token and layer) and one
    // layer's recompute: 2·256 + 4_880 + 768 = 6_160 per token instead of 10_528.
    let ck = MemoryPlan::new(&cfg, &StepShape { activation_checkpointing: true, ..tiny_shape() });
    assert_eq!(item(&ck, "activations (one micro-batch)"), 2.0 * 16.0 * 6_160.0);
    // The fused optimizer needs no temporaries for f32 parameters, and fp32 gradient copies for
    // bf16 ones; device sampling adds 20 bytes per logit (45 with top-p).
    let fu = MemoryPlan::new(&cfg, &StepShape { fused_optimizer: true, device_sampling: true, ..tiny_shape() });
    assert_eq!(fu.phase_bytes(Phase::OptimizerStep), 0.0);
    assert_eq!(item(&fu, "device sampling temporaries"), 4.0 * 376.0 * 20.0);
    let fu_bf = MemoryPlan::new(&cfg, &StepShape { fused_optimizer: true, param_bytes: 2, device_sampling: true, top_p: true, ..tiny_shape() });
    assert_eq!(item(&fu_bf, "AdamW fp32 gradient copies (one chunk)"), p * 4.0);
    assert_eq!(item(&fu_bf, "device sampling temporaries"), 4.0 * 376.0 * 45.0);
    // bf16 adds fp32 masters and halves weights, gradients and the KV cache; CUDA adds 1 GiB.
    let bf = MemoryPlan::new(&cfg, &StepShape { param_bytes: 2, cuda: true, compact_fraction: 1.0, ..tiny_shape() });
    assert_eq!(item(&bf, "fp32 master weights"), p * 4.0);
    assert_eq!(item(&bf, "weights"), p * 2.0);
    assert_eq!(item(&bf, "KV cache (rollout batch)"), 16_384.0);
    assert!(!bf.items.iter().any(|i| i.name == "KV cache compaction copy"), "compact_fraction 1 never compacts");
    assert_eq!(item(&bf, "CUDA context + workspaces (fixed)"), GIB);
}

#[test]
fn smollm2_kv_cache_by_hand() {
    let cfg = ModelConfig::from_dir(&smollm2()).unwrap();
    let shape = StepShape { param_bytes: 2, rollout_rows: 32, prompt_len: 60, max_new_tokens: 40, ..tiny_shape() };
    // 2 (K, V) × 30 layers × 3 KV heads × 64 × 2 bytes = 23_040 bytes per token.
    assert_eq!(item(&MemoryPlan::new(&cfg, &shape), "KV cache (rollout batch)"), 32.0 * 100.0 * 23_040.0);
}

fn recipe_with_model(recipe: &str, model: &Path, sets: &[&str]) -> Recipe {
    let mut o = vec![format!("model.path={}", model.display())];
    o.extend(sets.iter().map(|s| s.to_string()));
    Recipe::load(Some(&repo().join("recipes").join(recipe)), &o).unwrap()
}

#[test]
fn qwen_1_5b_bf16_fits_80_gib() {
    let dir = config_dir(QWEN25_15B);
    let r = recipe_with_model("d3s_qwen.toml", dir.path(), &[]);
    // No --gpu-mem on a cuda recipe: 80 GiB, and the report says so.
    let report = check(&r).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.contains("assuming an 80 GiB GPU") && report.contains("fits the 80.00 GiB budget"), "{report}");
    assert!(report.contains("fp32 master weights"), "{report}");
    assert!(report.contains("estimate: data.path not here"), "{report}");
    // Persistent: 1.54B × (2 + 2 + 4 + 8) bytes + 1 GiB; the peak is the update phase.
    let cfg = ModelConfig::from_dir(dir.path()).unwrap();
    let shape = StepShape {
        param_bytes: 2,
        micro_rows: 8,
        rollout_rows: 256,
        prompt_len: 256,
        max_new_tokens: 1024,
        logit_chunk: 1024,
        reference: false,
        compact_fraction: 0.25,
        cuda: true,
        activation_checkpointing: false,
        fused_optimizer: true,
        device_sampling: true,
        top_p: false,
    };
    let plan = MemoryPlan::new(&cfg, &shape);
    assert_eq!(plan.phase_bytes(Phase::Persistent), 1_543_714_304.0 * 16.0 + GIB);
    assert_eq!(plan.peak_phase(), Phase::Update);
    let peak = plan.peak() / GIB;
    assert!(peak > 40.0 && peak < 80.0, "peak {peak} GiB");
    // The same recipe does not fit a 24 GiB card.
    let err = check_with(&r, &CheckOptions { gpu_mem: Some(24.0 * GIB) }).expect_err("1.5B full fine-tune on 24 GiB");
    assert!(err.to_string().contains("budget 24.00 GiB"), "{err}");
}

#[test]
fn llama_8b_with_huge_micro_batches_does_not_fit_24_gib() {
    let dir = config_dir(LLAMA31_8B);
    let sets = ["trainer.micro_batch_rows=16", "rollout.max_new_tokens=4096"];
    let r = recipe_with_model("grpo_llama.toml", dir.path(), &sets);
    let err = check_with(&r, &CheckOptions { gpu_mem: Some(parse_size("24GiB").unwrap()) }).expect_err("8B on 24 GiB");
    let msg = err.to_string();
    assert!(msg.contains("budget 24.00 GiB (--gpu-mem)"), "{msg}");
    assert!(msg.contains("biggest item: activations (one micro-batch)") && msg.contains("trainer.micro_batch_rows"), "{msg}");
    // One row per micro-batch: the fp32 moments are then the biggest item, and 8B never fits 80 GiB.
    let r1 = recipe_with_model("grpo_llama.toml", dir.path(), &[]);
    let msg = check(&r1).expect_err("8B + AdamW on 80 GiB").to_string();
    assert!(msg.contains("biggest item: AdamW moments"), "{msg}");
    // An H200 (nvidia-smi: 143771 MiB) holds it.
    check_with(&r1, &CheckOptions { gpu_mem: Some(parse_size("140GiB").unwrap()) }).unwrap_or_else(|e| panic!("H200: {e}"));
}

#[test]
fn check_measures_prompts_and_validates_rewards() {
    let model = fixture("tiny-qwen2");
    let base = |extra: &str| {
        format!(
            "[model]\npath = \"{}\"\n[data]\nsource = \"synthetic\"\n[trainer]\nprompts_per_step = 2\n[rollout]\ngroup_size = 2\nmax_new_tokens = 8\n[reward]\n[[reward.fns]]\nkind = \"math\"\n{extra}",
            model.display()
        )
    };
    let r = Recipe::from_toml(&base(""), Path::new("t.toml"), &[]).unwrap();
    let report = check(&r).unwrap_or_else(|e| panic!("{e}"));
    // Every row of the data is measured (1000 synthetic prompts), not a sample of them.
    assert!(report.contains("longest of all 1000 prompts") && report.contains("memory plan"), "{report}");
    assert!(!report.contains("budget"), "a CPU recipe without --gpu-mem has no budget: {report}");
    // A bad regex is caught when the recipe is loaded (`rlpo check` and `rlpo train`), naming the key.
    let bad = base("[[reward.fns]]\nkind = \"format\"\npattern = \"([unclosed\"\n");
    let msg = Recipe::from_toml(&bad, Path::new("t.toml"), &[]).expect_err("bad regex").to_string();
    assert!(msg.contains("reward.fns[1].pattern"), "{msg}");
    // A cuda device that is not here is a warning, not an error.
    let r = Recipe::from_toml(&base(""), Path::new("t.toml"), &["model.device=cuda:0".into()]).unwrap();
    let report = check(&r).unwrap_or_else(|e| panic!("{e}"));
    if tch::Cuda::device_count() == 0 {
        assert!(report.contains("warning: model.device = cuda:0 but no CUDA device"), "{report}");
    }
    // A budget smaller than the tiny model's plan is refused.
    let r = Recipe::from_toml(&base(""), Path::new("t.toml"), &[]).unwrap();
    let msg = check_with(&r, &CheckOptions { gpu_mem: Some(parse_size("1MiB").unwrap()) }).expect_err("1 MiB").to_string();
    assert!(msg.contains("does not fit") && msg.contains("budget 0.00 GiB"), "{msg}");
}

#[test]
fn parses_sizes() {
    assert_eq!(parse_size("80GiB").unwrap(), 80.0 * GIB);
    assert_eq!(parse_size("80 GiB").unwrap(), 80.0 * GIB);
    assert_eq!(parse_size("24").unwrap(), 24.0 * GIB);
    assert_eq!(parse_size("80GB").unwrap(), 80e9);
    assert_eq!(parse_size("512MiB").unwrap(), 512.0 * 1048576.0);
    assert_eq!(parse_size("1.5tib").unwrap(), 1536.0 * GIB);
    assert!(parse_size("eighty").unwrap_err().contains("eighty"));
    assert!(parse_size("80XB").unwrap_err().contains("unknown unit"));
    assert!(parse_size("0GiB").is_err());
}
