//! `CausalLm`: a decoder-only transformer (Llama / Qwen2 / Qwen3 by config flags) whose parameters
//! live in a tch `VarStore` under the exact HF names (`model.layers.{i}.self_attn.q_proj.weight`,
//! ...), so checkpoints load and save without conversion.
//!
//! Two entry points:
//! - full padded batch (learner): `ids [B, T]`, `mask [B, T]` (1 = real token, left or right
//!   padding) → hidden `[B, T, D]` / logits `[B, T, V]`; positions count real tokens only;
//! - cached chunks (rollout): prefill `[B, T]` then one-token steps `[B]` against a [`KvCache`].
//!
//! Attention (see [`crate::attention`] for the kernels): a batch whose rows each hold one
//! contiguous run of real tokens — left-padded prompts, `[prompt | response]` learner rows — is
//! packed ([`RowPacking`]) and runs SDPA `is_causal` without a mask, in the learner's forward and
//! in the prompt prefill; one-token decode steps use the grouped `baddbmm` kernel; anything else
//! (padding with holes, a chunk after a cached prefix) falls back to SDPA with a boolean mask.
//! [`CausalLm::attention_counts`] says which ran. With activation checkpointing on
//! ([`CausalLm::set_activation_checkpointing`]) a forward that records gradients keeps only each
//! layer's input, and the caller finishes every backward with
//! [`CausalLm::backward_checkpointed`] (see [`crate::recompute`]).

use crate::attention::{decode_bias, score_kind, Attention, AttentionCounters, AttentionCounts, AttentionPath, AttnMask};
use crate::config::ModelConfig;
use crate::device::LoadOptions;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::layers::{Linear, Mlp, RmsNorm};
use crate::packing::RowPacking;
use crate::recompute::{self, Pending};
use crate::rope::Rope;
use crate::weights;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::nn::{self, Init, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(path: nn::Path, cfg: &ModelConfig) -> Self {
        DecoderLayer {
            input_layernorm: RmsNorm::new(&path / "input_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
            self_attn: Attention::new(&path / "self_attn", cfg),
            post_attention_layernorm: RmsNorm::new(&path / "post_attention_layernorm", cfg.hidden_size, cfg.rms_norm_eps),
            mlp: Mlp::new(&path / "mlp", cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias),
        }
    }

    /// `h + attn(norm(h))`, then `+ mlp(norm(·))`: `[B, T, D]` → `[B, T, D]`.
    fn forward(&self, h: &Tensor, cos: &Tensor, sin: &Tensor, mask: AttnMask) -> Tensor {
        let a = self.self_attn.forward(&self.input_layernorm.forward(h), cos, sin, mask);
        self.finish(h, a)
    }

    /// The residual add of an attention output `a`, then the MLP half of the layer.
    fn finish(&self, h: &Tensor, a: Tensor) -> Tensor {
        // Not `h += a`: an in-place add would overwrite a tensor autograd saved for backward.
        let h = h + a;
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}

/// A causal language model with its parameters.
#[derive(Debug)]
pub struct CausalLm {
    /// Parsed `config.json`.
    pub config: ModelConfig,
    /// Directory it was loaded from (tokenizer and template files are copied from here on save).
    pub source_dir: Option<PathBuf>,
    vs: VarStore,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: Rope,
    counters: AttentionCounters,
    checkpointing: bool,
    pending: Mutex<Vec<Pending>>,
}

impl CausalLm {
    /// Build a model with zero-filled parameters (to be loaded or copied into).
    pub fn new(config: ModelConfig, device: Device, kind: Kind) -> Self {
        let mut vs = VarStore::new(device);
        vs.set_kind(kind); // empty store: only sets the kind new variables are created with
        let root = vs.root();
        let model = &root / "model";
        let embed_tokens = (&model / "embed_tokens").var("weight", &[config.vocab_size, config.hidden_size], Init::Const(0.));
        let layers = (0..config.num_hidden_layers).map(|i| DecoderLayer::new(&model / "layers" / i, &config)).collect();
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            Linear::new(&root / "lm_head", config.hidden_size, config.vocab_size, false).weight
        };
        let rope = Rope::new(&config, device);
        CausalLm {
            config,
            source_dir: None,
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            counters: AttentionCounters::default(),
            checkpointing: false,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Load an HF model directory (config.json + safetensors, single file or sharded).
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let mut model = CausalLm::new(config, opts.device, opts.kind);
        weights::load_into(&model.vs, dir, model.config.tie_word_embeddings)?;
        model.source_dir = Some(dir.to_path_buf());
        Ok(model)
    }

    /// The parameter store (trainable variables, HF names).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable parameter store (freeze, copy weights from another model).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// dtype of the parameters.
    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// How many forwards took each attention path so far.
    pub fn attention_counts(&self) -> AttentionCounts {
        self.counters.snapshot()
    }

    /// Recompute each decoder layer in the backward instead of keeping its activations (forwards
    /// that record gradients then need [`CausalLm::backward_checkpointed`] after their backward).
    pub fn set_activation_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Whether activation checkpointing is on.
    pub fn activation_checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// Finish the backward of every checkpointed forward since the last call: call it right
    /// after `loss.backward()`. Returns how many forwards were back-propagated (0 when
    /// checkpointing is off).
    pub fn backward_checkpointed(&self) -> usize {
        recompute::backward(self)
    }

    /// A fresh cache for `batch` rows and `capacity` positions.
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let c = &self.config;
        KvCache::new(c.num_hidden_layers, batch, c.num_key_value_heads, capacity, c.head_dim, self.kind(), self.device())
    }

    pub(crate) fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub(crate) fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false)
    }

    pub(crate) fn layer_forward(&self, l: usize, h: &Tensor, cos: &Tensor, sin: &Tensor, mask: AttnMask) -> Tensor {
        self.layers[l].forward(h, cos, sin, mask)
    }

    pub(crate) fn push_pending(&self, p: Pending) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    }

    pub(crate) fn pop_pending(&self) -> Option<Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Embedding, every layer and the final norm over `ids [B, T]` (checkpointed when enabled
    /// and the forward records gradients).
    fn run_layers(&self, ids: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let h0 = self.embed(ids);
        if self.checkpointing && h0.requires_grad() {
            drop(h0);
            return self.norm.forward(&recompute::forward(self, ids, cos, sin, mask));
        }
        let attn = mask.map_or(AttnMask::Causal, AttnMask::Bool);
        let mut h = h0;
        for layer in &self.layers {
            h = layer.forward(&h, cos, sin, attn);
        }
        self.norm.forward(&h)
    }

    /// cos/sin `[1, 1, T, hd]` for positions `0..T` (packed rows).
    fn packed_rope(&self, t: i64, device: Device) -> (Tensor, Tensor) {
        self.rope.cos_sin(&Tensor::arange(t, (Kind::Int64, device)).view([1, t]), self.kind())
    }

    /// Final-norm hidden states `[B, T, D]` for a padded batch `ids [B, T]`, `mask [B, T]`.
    pub fn hidden_states(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let t = ids.size()[1];
        if let Some(p) = RowPacking::detect(mask) {
            self.counters.record(AttentionPath::SdpaCausal);
            let (cos, sin) = self.packed_rope(t, ids.device());
            return p.unpack(&self.run_layers(&p.pack(ids), &cos, &sin, None));
        }
        self.counters.record(AttentionPath::SdpaMasked);
        let positions = positions_from_mask(mask);
        let (cos, sin) = self.rope.cos_sin(&positions, self.kind());
        let causal = Tensor::ones([t, t], (Kind::Bool, ids.device())).tril(0);
        let keys = mask.to_kind(Kind::Bool).view([-1, 1, 1, t]);
        // Pad queries attend to themselves so no row of the mask is empty: an all-masked row would
        // give NaN, and NaN in a pad position's values poisons real rows through 0 * NaN.
        let diag = Tensor::eye(t, (Kind::Bool, ids.device()));
        let attn_mask = causal.logical_and(&keys).logical_or(&diag);
        self.run_layers(ids, &cos, &sin, Some(&attn_mask))
    }

    /// Project hidden states `[..., D]` to logits `[..., V]`.
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        hidden.linear::<&Tensor>(&self.lm_head, None)
    }

    /// Logits `[B, T, V]` of a padded batch. For long sequences and large vocabularies prefer
    /// [`CausalLm::hidden_states`] plus chunked projection.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        self.logits(&self.hidden_states(ids, mask))
    }

    /// Run a chunk `ids [B, T]` (mask `[B, T]`, e.g. left-padded prompts) through the cache,
    /// appending its K/V; returns final-norm hidden states `[B, T, D]` in the input's columns.
    ///
    /// Into an empty cache, rows with contiguous real tokens are packed: their K/V land in slots
    /// `0..len` of each row and `valid` says so (slot order does not matter to attention: RoPE
    /// positions are applied before caching). One-token chunks take the grouped decode kernel.
    pub fn forward_cached(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        let t = ids.size()[1];
        let (start, total) = (cache.len, cache.len + t);
        assert!(total <= cache.capacity, "KV cache overflow: {total} > capacity {}", cache.capacity);
        if start == 0 {
            if let Some(p) = RowPacking::detect(mask) {
                return self.prefill_packed(ids, &p, cache);
            }
        }
        if t == 1 {
            return self.step_cached(ids, mask, cache);
        }
        self.counters.record(AttentionPath::SdpaMasked);
        let mask_b = mask.to_kind(Kind::Bool);
        let positions = cache.next_pos.unsqueeze(1) + positions_from_mask(mask);
        cache.valid.narrow(1, start, t).copy_(&mask_b);
        let device = ids.device();
        // Query i sits at slot start+i: it may see real slots j <= start+i, and always itself.
        let q_slot = Tensor::arange_start(start, total, (Kind::Int64, device)).view([t, 1]);
        let k_slot = Tensor::arange(total, (Kind::Int64, device)).view([1, total]);
        let causal = k_slot.le_tensor(&q_slot);
        let keys = cache.valid.narrow(1, 0, total).view([-1, 1, 1, total]);
        let attn_mask = causal.logical_and(&keys).logical_or(&k_slot.eq_tensor(&q_slot));
        let (cos, sin) = self.rope.cos_sin(&positions, self.kind());
        let mut h = self.embed(ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer.self_attn.forward_cached(&layer.input_layernorm.forward(&h), &cos, &sin, AttnMask::Bool(&attn_mask), cache, i);
            h = layer.finish(&h, a);
        }
        cache.len = total;
        cache.next_pos += mask.to_kind(Kind::Int64).sum_dim_intlist(1, false, Kind::Int64);
        self.norm.forward(&h)
    }

    /// Prefill into an empty cache with packed rows (SDPA `is_causal`, no mask).
    fn prefill_packed(&self, ids: &Tensor, p: &RowPacking, cache: &mut KvCache) -> Tensor {
        self.counters.record(AttentionPath::SdpaCausal);
        let t = ids.size()[1];
        cache.valid.narrow(1, 0, t).copy_(&p.packed_mask(t));
        let (cos, sin) = self.packed_rope(t, ids.device());
        let mut h = self.embed(&p.pack(ids));
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer.self_attn.forward_cached(&layer.input_layernorm.forward(&h), &cos, &sin, AttnMask::Causal, cache, i);
            h = layer.finish(&h, a);
        }
        cache.len = t;
        cache.next_pos += &p.lens;
        p.unpack(&self.norm.forward(&h))
    }

    /// One token per row (`ids [B, 1]`) through the grouped decode kernel.
    fn step_cached(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        self.counters.record(AttentionPath::GroupedDecode);
        let start = cache.len;
        let total = start + 1;
        let device = ids.device();
        cache.valid.narrow(1, start, 1).copy_(&mask.to_kind(Kind::Bool));
        let positions = cache.next_pos.unsqueeze(1) + positions_from_mask(mask);
        let (cos, sin) = self.rope.cos_sin(&positions, self.kind());
        // The query always sees its own slot (a pad fed as a query must not get an empty row).
        let own = Tensor::arange(total, (Kind::Int64, device)).eq(start).view([1, total]);
        let valid = cache.valid.narrow(1, 0, total).logical_or(&own);
        let kind = score_kind(cache.keys[0].kind(), device);
        let bias = decode_bias(&valid, self.config.num_key_value_heads, kind);
        let mut h = self.embed(ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let a = layer.self_attn.forward_step(&layer.input_layernorm.forward(&h), &cos, &sin, &bias, cache, i);
            h = layer.finish(&h, a);
        }
        cache.len = total;
        cache.next_pos += mask.to_kind(Kind::Int64).sum_dim_intlist(1, false, Kind::Int64);
        self.norm.forward(&h)
    }

    /// Prefill left-padded prompts `ids [B, T]` / `mask [B, T]`; returns next-token logits `[B, V]`.
    pub fn prefill(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        let h = self.forward_cached(ids, mask, cache);
        let t = h.size()[1];
        self.logits(&h.narrow(1, t - 1, 1).squeeze_dim(1))
    }

    /// One decode step for tokens `ids [B]`; returns next-token logits `[B, V]`.
    pub fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        let ids = ids.view([-1, 1]);
        let mask = ids.ones_like();
        self.logits(&self.forward_cached(&ids, &mask, cache).squeeze_dim(1))
    }

    /// Save as an HF directory (see [`crate::save`]).
    pub fn save(&self, out: &Path, kind: Option<Kind>) -> Result<()> {
        crate::save::save_hf_dir(self, out, kind)
    }
}

/// RoPE positions that count real tokens only: `cumsum(mask) - 1`, clamped at 0 for leading pads
/// (transformers' `generate` uses the same rule), `[B, T]` i64.
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    (mask.to_kind(Kind::Int64).cumsum(1, Kind::Int64) - 1).clamp_min(0)
}
