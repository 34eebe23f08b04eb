//! `rlpo check RECIPE`: everything that can be checked without running, and the plan of a step.

use crate::recipe::Recipe;
use rlpo_model::ModelConfig;

/// A human-readable report; `Err` carries the first blocking problem.
pub fn check(recipe: &Recipe) -> crate::Result<String> {
    let mut out = String::new();
    let mut warn = Vec::new();
    let r = recipe;
    let g = r.rollout.group_size;
    let b = r.trainer.prompts_per_step;
    let rows = b * g;
    out += &format!("run            {} (seed {}) -> {}\n", r.run.name, r.run.seed, r.run_dir().display());
    let model_cfg = if r.model.path.is_dir() {
        Some(ModelConfig::from_dir(&r.model.path)?)
    } else {
        warn.push(format!("model.path {} does not exist here (required to train)", r.model.path.display()));
        None
    };
    if let Some(c) = &model_cfg {
        out += &format!(
            "model          {} ({:?}, {:.1}M parameters, {} layers, vocab {}) on {} in {}\n",
            r.model.path.display(),
            c.family,
            c.num_parameters() as f64 / 1e6,
            c.num_hidden_layers,
            c.vocab_size,
            r.model.device,
            r.model.dtype
        );
    }
    if r.model.device.starts_with("cuda") && tch::Cuda::device_count() == 0 {
        warn.push(format!("model.device = {} but no CUDA device is visible on this machine", r.model.device));
    }
    if let (Some(p), true) = (&r.data.path, !matches!(r.data.source, rlpo_data::SourceKind::Synthetic)) {
        if !p.starts_with("builtin:") && !p.exists() {
            warn.push(format!("data.path {} does not exist here", p.display()));
        }
    }
    out += &format!("prompts/step   {b} x group_size {g} = {rows} rollouts, at most {} new tokens each\n", r.rollout.max_new_tokens);
    out += &format!(
        "batches        mini-batch {} rows, micro-batch {} rows -> {} optimizer step(s) per training step x {} steps = {}\n",
        r.mini_batch_rows(),
        r.micro_batch_rows(),
        r.optimizer_steps_per_step(),
        r.trainer.total_steps,
        r.optimizer_steps_per_step() as u64 * r.trainer.total_steps
    );
    out += &format!(
        "algorithm      advantage {:?}, base loss {:?}, d3s {}, hapo {}, rmt {}, dapo filter {}, overlong {}\n",
        r.algorithm.advantage,
        r.loss.base,
        on(r.algorithm.d3s.is_some()),
        on(r.algorithm.hapo.is_some()),
        on(r.algorithm.rmt.is_some()),
        on(r.algorithm.dapo.filter_groups.is_some()),
        on(r.algorithm.dapo.overlong.is_some())
    );
    out += &format!("reward         {} function(s), on_error = {}\n", r.reward.fns.len(), r.reward.on_error.as_str());
    if let Some(c) = &model_cfg {
        let p = c.num_parameters() as f64;
        let kind = rlpo_model::parse_dtype(&r.model.dtype)?;
        let bytes = kind.elt_size_in_bytes() as f64;
        let weights = p * bytes;
        let grads = p * bytes;
        // fp32 moments, plus fp32 master weights when parameters are bf16/f16.
        let adam = p * 8.0 + if bytes < 4.0 { p * 4.0 } else { 0.0 };
        let reference = if r.loss.kl_coef > 0.0 { weights } else { 0.0 };
        // Prompts are not known before loading the data: assume up to 256 tokens.
        let seq = 256.0 + r.rollout.max_new_tokens as f64;
        let kv = 2.0 * (c.num_hidden_layers * c.num_key_value_heads * c.head_dim) as f64 * bytes * rows as f64 * seq;
        // Saved activations per token and layer: ~10 hidden-sized tensors (norms, q/k/v/o,
        // residuals) plus ~4 MLP-sized ones (gate, up, their product, silu), plus one fp32
        // logits chunk for the vocabulary projection.
        let per_token = c.num_hidden_layers as f64 * (10 * c.hidden_size + 4 * c.intermediate_size) as f64 * bytes;
        let act = r.micro_batch_rows() as f64 * seq * per_token + r.trainer.logit_chunk_positions as f64 * c.vocab_size as f64 * 4.0 * 2.0;
        let gib = |x: f64| x / (1u64 << 30) as f64;
        out += &format!(
            "memory (est.)  weights {:.2} GiB, grads {:.2}, AdamW (+ fp32 masters) {:.2}, reference {:.2}, KV cache {:.2}, activations/micro-batch {:.2} -> {:.2} GiB per device\n",
            gib(weights), gib(grads), gib(adam), gib(reference), gib(kv), gib(act), gib(weights + grads + adam + reference + kv + act)
        );
    }
    for w in &warn {
        out += &format!("warning: {w}\n");
    }
    Ok(out)
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}
