//! The memory plan of `rlpo check`: bytes per device for one training step of a recipe, from the
//! model's `config.json` and the recipe alone (nothing is loaded or allocated).
//!
//! The trainer is colocated, so the learner and the rollout share one device. Memory comes in
//! three kinds, and the plan's peak is `persistent + max(rollout, update, optimizer step)`:
//!
//! - **persistent** (held for the whole run): weights, gradients (allocated by the first backward
//!   and then only zeroed, never freed), fp32 master weights when parameters are bf16/f16, AdamW's
//!   two fp32 moments, the frozen reference model when `loss.kl_coef > 0`, and on CUDA a fixed
//!   allowance for the CUDA context and library workspaces;
//! - **rollout** (freed when `generate` returns): the KV cache, the copy made when finished rows
//!   are compacted away, the next-token logits, and with device sampling (`rollout.sampler`, CUDA
//!   by default) the sampler's `[B, V]` temporaries;
//! - **update** (freed by each backward): saved activations of one micro-batch (every layer's
//!   intermediates, or only each layer's input plus one layer's intermediates with
//!   `trainer.activation_checkpointing`), the fp32 logits autograd keeps for every chunk of the
//!   vocabulary projection, and the transient of one chunk;
//! - **optimizer step**: AdamW's temporaries: with the fused kernel (`optim.fused`) only fp32
//!   copies of low-precision gradients, one chunk of parameters at a time; per parameter, the
//!   temporaries of the largest tensor.
//!
//! Everything is an estimate of what LibTorch allocates, not a measurement; the formulas are
//! written next to each item so they can be checked against a real run (`scripts/gpu_check.sh`
//! prints the measured peak next to this plan).

use crate::optim::FUSED_CHUNK_ELEMENTS;
use rlpo_model::ModelConfig;

/// Fixed allowance for the CUDA context, cuBLAS/cuDNN workspaces and allocator slack.
pub const CUDA_OVERHEAD_BYTES: f64 = 1.0 * GIB;
/// One GiB.
pub const GIB: f64 = (1u64 << 30) as f64;

/// When an item is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The whole run.
    Persistent,
    /// During `generate` (rollout and DAPO refill batches).
    Rollout,
    /// During one micro-batch's forward and backward.
    Update,
    /// During one AdamW step.
    OptimizerStep,
}

impl Phase {
    /// Short label for reports.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Persistent => "persistent",
            Phase::Rollout => "rollout",
            Phase::Update => "update",
            Phase::OptimizerStep => "optimizer step",
        }
    }
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is.
    pub name: &'static str,
    /// Bytes.
    pub bytes: f64,
    /// When it is alive.
    pub phase: Phase,
    /// The recipe key that shrinks it.
    pub knob: &'static str,
}

/// The sizes of one step that memory depends on (everything but the model).
#[derive(Debug, Clone, PartialEq)]
pub struct StepShape {
    /// Bytes per parameter element (4 = f32, 2 = bf16/f16).
    pub param_bytes: usize,
    /// Rows per forward/backward (`trainer.micro_batch_rows`).
    pub micro_rows: usize,
    /// Rows decoded together (`prompts_per_step × group_size`).
    pub rollout_rows: usize,
    /// Prompt length in tokens (measured on the data or estimated, see `check`).
    pub prompt_len: usize,
    /// Response length bound (`rollout.max_new_tokens`).
    pub max_new_tokens: usize,
    /// Positions per vocabulary-projection chunk (`trainer.logit_chunk_positions`).
    pub logit_chunk: usize,
    /// A frozen reference copy is loaded (`loss.kl_coef > 0`).
    pub reference: bool,
    /// `rollout.compact_fraction` (1.0 = no compaction copies).
    pub compact_fraction: f64,
    /// The device is a GPU (adds [`CUDA_OVERHEAD_BYTES`]).
    pub cuda: bool,
    /// `trainer.activation_checkpointing`.
    pub activation_checkpointing: bool,
    /// `optim.fused`.
    pub fused_optimizer: bool,
    /// Tokens are sampled on the device (`rollout.sampler` resolved for the rollout's device).
    pub device_sampling: bool,
    /// Top-p truncation is on (the device sampler then sorts every row).
    pub top_p: bool,
}

/// The plan: every item, and the peak.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Items in report order.
    pub items: Vec<Item>,
}

impl MemoryPlan {
    /// The plan of `cfg` trained with `s` (formulas in the comments).
    pub fn new(cfg: &ModelConfig, s: &StepShape) -> MemoryPlan {
        let p = cfg.num_parameters() as f64;
        let b = s.param_bytes as f64;
        let (l, d, i, v) = (cfg.num_hidden_layers as f64, cfg.hidden_size as f64, cfg.intermediate_size as f64, cfg.vocab_size as f64);
        let h = cfg.num_attention_heads as f64;
        let q = (cfg.num_attention_heads * cfg.head_dim) as f64; // query width H·hd
        let kv = (cfg.num_key_value_heads * cfg.head_dim) as f64; // key/value width H_kv·hd
        let seq = (s.prompt_len + s.max_new_tokens) as f64; // prompt + response positions
        let resp = s.max_new_tokens as f64;
        let micro = s.micro_rows as f64;
        let rows = s.rollout_rows as f64;
        let mut items = Vec::new();
        let mut push = |name, bytes, phase, knob| items.push(Item { name, bytes, phase, knob });

        push("weights", p * b, Phase::Persistent, "model.dtype");
        push("gradients", p * b, Phase::Persistent, "model.dtype");
        if s.param_bytes < 4 {
            push("fp32 master weights", p * 4.0, Phase::Persistent, "model.dtype");
        }
        push("AdamW moments (2 x fp32)", p * 8.0, Phase::Persistent, "model.dtype");
        if s.reference {
            push("reference model (kl_coef > 0)", p * b, Phase::Persistent, "loss.kl_coef");
        }
        if s.cuda {
            push("CUDA context + workspaces (fixed)", CUDA_OVERHEAD_BYTES, Phase::Persistent, "-");
        }

        // KV cache: rows × (prompt + max_new_tokens) slots × (K and V) × layers × H_kv·hd, in the
        // parameter dtype (the trainer decodes with `CausalLm`, whose cache has the model's dtype).
        let kv_cache = rows * seq * 2.0 * l * kv * b;
        push("KV cache (rollout batch)", kv_cache, Phase::Rollout, "trainer.prompts_per_step");
        // Compaction gathers the unfinished rows into a new cache while the old one is alive: the
        // first compaction keeps (1 - compact_fraction) of the rows.
        if s.compact_fraction < 1.0 {
            push("KV cache compaction copy", kv_cache * (1.0 - s.compact_fraction), Phase::Rollout, "rollout.compact_fraction");
        }
        // Next-token logits of every row, one step at a time.
        push("decode logits", rows * v * b, Phase::Rollout, "trainer.prompts_per_step");
        // Device sampling (`device_sampler.rs`): about five fp32 `[B, V]` temporaries alive at
        // once (the widened logits, base and sampling log-weights, weights, their running sum);
        // top-p adds a sort (values + i64 indices) and its masked running sums.
        if s.device_sampling {
            let per = 20.0 + if s.top_p { 25.0 } else { 0.0 };
            push("device sampling temporaries", rows * v * per, Phase::Rollout, "trainer.prompts_per_step");
        }

        // Saved activations of one micro-batch, per token and layer (what autograd keeps for
        // backward in `rlpo_model`'s layers; learner rows are packed, so attention is SDPA
        // `is_causal` without a mask and with no T² matrix):
        //   2 RMSNorms: fp32 copy of the input (4·D) + normalised output (b·D) each
        //   q: projection, rotate_half copy, rotated q, SDPA output, o_proj input  = 5·b·q
        //   k: projection, rotate_half copy, rotated k; v: projection             = 4·b·kv
        //   SDPA log-sum-exp (fp32 per head)                                       = 4·H
        //   MLP: gate, silu(gate), up, silu(gate)·up                               = 4·b·I
        // per layer = b·(2D + 5q + 4kv + 4I) + 8D + 4H, final norm (4 + 2b)·D. Without
        // checkpointing every layer's are kept: L·per layer + final norm per token. With it, the
        // input of each layer (b·D) plus one layer's recompute: L·b·D + per layer + final norm.
        // Times micro_rows × (prompt + response).
        let per_layer = b * (2.0 * d + 5.0 * q + 4.0 * kv + 4.0 * i) + 8.0 * d + 4.0 * h;
        let final_norm = (4.0 + 2.0 * b) * d;
        let per_token = if s.activation_checkpointing { l * b * d + per_layer + final_norm } else { l * per_layer + final_norm };
        let acts = micro * seq * per_token;
        push("activations (one micro-batch)", acts, Phase::Update, "trainer.micro_batch_rows, trainer.activation_checkpointing");
        // The vocabulary projection runs in chunks, but log-sum-exp saves each chunk's fp32 logits
        // for backward, so all response positions of the micro-batch are held: micro × resp × V × 4.
        push("fp32 logits saved for backward", micro * resp * v * 4.0, Phase::Update, "trainer.micro_batch_rows");
        // One chunk in flight: model-dtype logits, fp32 copy, fp32 gradient.
        let chunk = (s.logit_chunk as f64).min(micro * resp);
        push("logits chunk (transient)", chunk * v * (b + 8.0), Phase::Update, "trainer.logit_chunk_positions");

        // AdamW. Fused: the kernel updates in place; low-precision parameters need fp32 copies of
        // their gradients, made one chunk of at most FUSED_CHUNK_ELEMENTS parameters at a time.
        // Per parameter: the largest tensor's fp32 gradient (4), √v in f64 (8 + 8) and f32 (4),
        // the scaled first moment (4): 28 bytes per element.
        if s.fused_optimizer {
            if s.param_bytes < 4 {
                push("AdamW fp32 gradient copies (one chunk)", p.min(FUSED_CHUNK_ELEMENTS as f64) * 4.0, Phase::OptimizerStep, "model.dtype");
            }
        } else {
            let largest = (v * d).max(i * d);
            push("AdamW temporaries (largest tensor)", 28.0 * largest, Phase::OptimizerStep, "optim.fused");
        }
        MemoryPlan { items }
    }

    /// Sum of the items alive in `phase`.
    pub fn phase_bytes(&self, phase: Phase) -> f64 {
        self.items.iter().filter(|it| it.phase == phase).map(|it| it.bytes).sum()
    }

    /// The phase that, with the persistent items, sets the peak.
    pub fn peak_phase(&self) -> Phase {
        [Phase::Rollout, Phase::Update, Phase::OptimizerStep]
            .into_iter()
            .max_by(|a, b| self.phase_bytes(*a).total_cmp(&self.phase_bytes(*b)))
            .unwrap_or(Phase::Update)
    }

    /// Peak bytes per device: persistent + the largest transient phase.
    pub fn peak(&self) -> f64 {
        self.phase_bytes(Phase::Persistent) + self.phase_bytes(self.peak_phase())
    }

    /// The biggest single item among those alive at the peak.
    pub fn biggest(&self) -> Option<&Item> {
        let peak = self.peak_phase();
        self.items
            .iter()
            .filter(|it| it.phase == Phase::Persistent || it.phase == peak)
            .max_by(|a, b| a.bytes.total_cmp(&b.bytes))
    }

    /// Multi-line report, one item per line, then the peak.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for it in &self.items {
            out += &format!("  {:<38} {:>9.2} GiB  ({})\n", it.name, it.bytes / GIB, it.phase.label());
        }
        out += &format!(
            "  {:<38} {:>9.2} GiB  (persistent {:.2} + {} {:.2})\n",
            "peak per device",
            self.peak() / GIB,
            self.phase_bytes(Phase::Persistent) / GIB,
            self.peak_phase().label(),
            self.phase_bytes(self.peak_phase()) / GIB
        );
        out
    }
}

/// Parse a memory size: `80GiB`, `80 GiB`, `24G` (GiB), `80GB` (10⁹ bytes), `512MiB`, `1TiB`, or a
/// bare number of GiB.
pub fn parse_size(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num.parse().map_err(|_| format!("\"{s}\" is not a memory size (e.g. 80GiB, 24GB, 81920MiB)"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gib" => GIB,
        "gb" => 1e9,
        "m" | "mib" => (1u64 << 20) as f64,
        "mb" => 1e6,
        "t" | "tib" => GIB * 1024.0,
        "tb" => 1e12,
        other => return Err(format!("\"{s}\": unknown unit \"{other}\" (GiB, GB, MiB, MB, TiB, TB)")),
    };
    let bytes = x * scale;
    if !bytes.is_finite() || bytes <= 0.0 {
        return Err(format!("\"{s}\" must be a positive size"));
    }
    Ok(bytes)
}
