//! `rlpo check` lines for the lean learner: how the update forwards its rows (packed or padded,
//! shared prompts, micro-batches by rows or by a token budget, with the estimated tokens and
//! micro-batch count per mini-batch) and, with `[model.lora]`, the adapters' parameters and
//! memory (fp32 adapters + their gradients + AdamW moments, plus the frozen copies of the
//! adapted base weights that the merged weights are rebuilt from).

use crate::recipe::Recipe;
use rlpo_model::ModelConfig;

/// `(in, out)` of each LoRA-targeted projection of one layer of `c`, for the modules `names`.
pub fn lora_layer_shapes(c: &ModelConfig, names: &[&str]) -> Vec<(i64, i64)> {
    let (d, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
    names
        .iter()
        .filter_map(|n| match *n {
            "q_proj" => Some((d, q)),
            "k_proj" | "v_proj" => Some((d, kv)),
            "o_proj" => Some((q, d)),
            "gate_proj" | "up_proj" => Some((d, i)),
            "down_proj" => Some((i, d)),
            _ => None,
        })
        .collect()
}

/// The `learner` line (and the `lora` line when the recipe has `[model.lora]`).
pub fn render(r: &Recipe, c: Option<&ModelConfig>, prompt_len: usize, param_bytes: usize) -> String {
    let t = &r.trainer;
    let g = r.rollout.group_size;
    let mini = r.mini_batch_rows();
    let layout = match (t.packed_rows, t.shared_prompt) {
        (true, true) => "packed rows, each group's prompt forwarded once",
        (true, false) => "packed rows",
        _ => "padded rows",
    };
    // Worst case (every response at max_new_tokens) tokens of one mini-batch as forwarded.
    let resp = r.rollout.max_new_tokens;
    let groups = mini.div_ceil(g).max(1);
    let tokens = match (t.packed_rows, t.shared_prompt) {
        (true, true) => groups * prompt_len + mini * resp,
        _ => mini * (prompt_len + resp),
    };
    let mut out = if t.micro_batch_tokens > 0 {
        let per_row = if t.packed_rows && t.shared_prompt { resp + prompt_len.div_ceil(g) } else { prompt_len + resp };
        let rows_per = (t.micro_batch_tokens / per_row.max(1)).max(1);
        format!(
            "learner        {layout}; at most {tokens} tokens per mini-batch, micro-batches of <= {} tokens -> about {} per mini-batch\n",
            t.micro_batch_tokens,
            mini.div_ceil(rows_per)
        )
    } else {
        format!("learner        {layout}; at most {tokens} tokens per mini-batch, {} micro-batch(es) of {} rows\n", mini / r.micro_batch_rows(), r.micro_batch_rows())
    };
    if let (Some(l), Some(c)) = (&r.model.lora, c) {
        let names = l.module_names().unwrap_or_default();
        let shapes: Vec<(i64, i64)> = lora_layer_shapes(c, &names).into_iter().cycle().take(names.len() * c.num_hidden_layers as usize).collect();
        let params = rlpo_model::lora::adapter_parameters(&shapes, l.rank);
        let base: i64 = shapes.iter().map(|(i, o)| i * o).sum();
        // fp32 adapter + gradient + two AdamW moments; the frozen base copies in the model dtype.
        let train_bytes = params as f64 * 16.0;
        let base_bytes = base as f64 * param_bytes as f64;
        out += &format!(
            "lora           rank {}, alpha {}, {} -> {:.2}M trainable parameters ({:.3}% of {:.1}M), {:.1} MiB for adapters + grads + AdamW, {:.1} MiB frozen base copies of the adapted weights\n",
            l.rank,
            l.alpha,
            names.join(","),
            params as f64 / 1e6,
            100.0 * params as f64 / c.num_parameters() as f64,
            c.num_parameters() as f64 / 1e6,
            train_bytes / (1 << 20) as f64,
            base_bytes / (1 << 20) as f64
        );
    }
    out
}
