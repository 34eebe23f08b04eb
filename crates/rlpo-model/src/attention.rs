//! Multi-head attention with grouped-query K/V (`self_attn.{q,k,v,o}_proj`, Qwen3's
//! `self_attn.{q,k}_norm`), and the three kernels the model's forward paths use.
//!
//! Shapes: hidden `[B, T, D]`; q `[B, H, T, hd]`; k/v `[B, H_kv, T, hd]`.
//!
//! | [`AttentionPath`] | used by | call |
//! | --- | --- | --- |
//! | `SdpaCausal` | learner forward and prompt prefill, rows packed to start at column 0 | `scaled_dot_product_attention(q, k, v, None, is_causal = true, enable_gqa)`: no mask, so CUDA can pick its flash / memory-efficient kernels |
//! | `SdpaMasked` | the fallback: padding with holes, a chunk appended to a non-empty cache | SDPA with a boolean mask `[B, 1, T_q, T_k]` (true = may attend) |
//! | `GroupedDecode` | one-token decode steps | `baddbmm` of q grouped per K/V head `[B·H_kv, H/H_kv, hd]` against the cache, an additive bias `[B·H_kv, 1, S]` for pad slots, fp32 softmax, `bmm` with V |
//!
//! Decode never sends a one-token query through SDPA: with a boolean mask and GQA, torch 2.11 on
//! cuDNN 9 either builds a new cuDNN plan every step (the key length grows) or falls back to the
//! fp32 math kernel with K/V repeated, tens of ms per step either way. The grouped `baddbmm`
//! reads each K/V head once and never repeats it; on CUDA bf16/f16 the scores come out in fp32
//! (`bmm` with `out_dtype`), which LibTorch only offers on CUDA, so on the CPU low-precision
//! scores stay in the model dtype, as in transformers' eager attention.

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::layers::{Linear, RmsNorm};
use crate::rope::apply_rope;
use std::sync::atomic::{AtomicU64, Ordering};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// Which attention kernel a forward ran (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// SDPA, `is_causal`, no mask (packed rows).
    SdpaCausal,
    /// SDPA with a boolean mask (fallback).
    SdpaMasked,
    /// Grouped `baddbmm` over the KV cache (one-token decode steps).
    GroupedDecode,
}

impl AttentionPath {
    /// Short description for logs.
    pub fn describe(self) -> &'static str {
        match self {
            AttentionPath::SdpaCausal => "SDPA is_causal, no mask (rows packed; flash/efficient kernels on CUDA)",
            AttentionPath::SdpaMasked => "SDPA with a boolean mask (fallback: padding with holes or a chunk after a cached prefix)",
            AttentionPath::GroupedDecode => "grouped baddbmm over the KV cache (no SDPA; K/V heads never repeated)",
        }
    }
}

/// How many forwards took each path (one count per model call, not per layer).
#[derive(Debug, Default)]
pub struct AttentionCounters {
    causal: AtomicU64,
    masked: AtomicU64,
    decode: AtomicU64,
}

/// A snapshot of [`AttentionCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttentionCounts {
    /// Forwards with SDPA `is_causal` and no mask.
    pub sdpa_causal: u64,
    /// Forwards with SDPA and a boolean mask.
    pub sdpa_masked: u64,
    /// One-token decode steps with the grouped kernel.
    pub grouped_decode: u64,
}

impl AttentionCounters {
    /// Count one forward on `path`.
    pub fn record(&self, path: AttentionPath) {
        let c = match path {
            AttentionPath::SdpaCausal => &self.causal,
            AttentionPath::SdpaMasked => &self.masked,
            AttentionPath::GroupedDecode => &self.decode,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> AttentionCounts {
        AttentionCounts {
            sdpa_causal: self.causal.load(Ordering::Relaxed),
            sdpa_masked: self.masked.load(Ordering::Relaxed),
            grouped_decode: self.decode.load(Ordering::Relaxed),
        }
    }
}

/// How a full-sequence or prefill forward attends.
#[derive(Debug, Clone, Copy)]
pub enum AttnMask<'a> {
    /// Causal over the whole chunk, no padding inside it (SDPA `is_causal`).
    Causal,
    /// Boolean mask `[B, 1, T_q, T_k]`, true = may attend.
    Bool(&'a Tensor),
}

/// One attention block.
#[derive(Debug)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    /// Register under `path` (`model.layers.{i}.self_attn`).
    pub fn new(path: Path, cfg: &ModelConfig) -> Self {
        let (d, h, kv, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        Attention {
            q_proj: Linear::new(&path / "q_proj", d, h * hd, cfg.qkv_bias),
            k_proj: Linear::new(&path / "k_proj", d, kv * hd, cfg.qkv_bias),
            v_proj: Linear::new(&path / "v_proj", d, kv * hd, cfg.qkv_bias),
            o_proj: Linear::new(&path / "o_proj", h * hd, d, cfg.o_bias),
            q_norm: cfg.qk_norm.then(|| RmsNorm::new(&path / "q_norm", hd, cfg.rms_norm_eps)),
            k_norm: cfg.qk_norm.then(|| RmsNorm::new(&path / "k_norm", hd, cfg.rms_norm_eps)),
            heads: h,
            kv_heads: kv,
            head_dim: hd,
        }
    }

    /// Project, normalise (Qwen3) and rotate: returns q `[B,H,T,hd]`, k and v `[B,H_kv,T,hd]`.
    fn qkv(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, t) = (x.size()[0], x.size()[1]);
        let split = |y: Tensor, n: i64| y.view([b, t, n, self.head_dim]);
        let mut q = split(self.q_proj.forward(x), self.heads);
        let mut k = split(self.k_proj.forward(x), self.kv_heads);
        let v = split(self.v_proj.forward(x), self.kv_heads).transpose(1, 2);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q);
            k = kn.forward(&k);
        }
        let q = apply_rope(&q.transpose(1, 2), cos, sin);
        let k = apply_rope(&k.transpose(1, 2), cos, sin);
        (q, k, v)
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask) -> Tensor {
        let (b, t) = (q.size()[0], q.size()[2]);
        let gqa = self.kv_heads != self.heads;
        let y = match mask {
            AttnMask::Causal => Tensor::scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, true, None::<f64>, gqa),
            AttnMask::Bool(m) => Tensor::scaled_dot_product_attention(q, k, v, Some(m), 0.0, false, None::<f64>, gqa),
        };
        self.o_proj.forward(&y.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]))
    }

    /// Full-sequence attention: `x [B,T,D]` → `[B,T,D]`.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: AttnMask) -> Tensor {
        let (q, k, v) = self.qkv(x, cos, sin);
        self.attend(&q, &k, &v, mask)
    }

    /// Cached attention: writes this chunk's K/V at slots `[cache.len, cache.len + T)` of layer
    /// `layer` and attends over slots `[0, cache.len + T)` (`AttnMask::Causal` only when the cache
    /// was empty, so the chunk attends to itself alone).
    pub fn forward_cached(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: AttnMask, cache: &mut KvCache, layer: usize) -> Tensor {
        let (q, k, v) = self.qkv(x, cos, sin);
        let (start, t) = (cache.len, x.size()[1]);
        cache.keys[layer].narrow(2, start, t).copy_(&k);
        cache.values[layer].narrow(2, start, t).copy_(&v);
        let keys = cache.keys[layer].narrow(2, 0, start + t);
        let values = cache.values[layer].narrow(2, 0, start + t);
        self.attend(&q, &keys, &values, mask)
    }

    /// One-token decode step: `x [B, 1, D]`, writes slot `cache.len` of layer `layer` and attends
    /// over slots `[0, cache.len]` with the additive `bias [B·H_kv, 1, S]` (0 = real, −inf = pad)
    /// through [`grouped_decode_attention`]. Returns `[B, 1, D]`.
    pub fn forward_step(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, bias: &Tensor, cache: &mut KvCache, layer: usize) -> Tensor {
        let (q, k, v) = self.qkv(x, cos, sin);
        let (b, start) = (x.size()[0], cache.len);
        cache.keys[layer].narrow(2, start, 1).copy_(&k);
        cache.values[layer].narrow(2, start, 1).copy_(&v);
        let keys = cache.keys[layer].narrow(2, 0, start + 1);
        let values = cache.values[layer].narrow(2, 0, start + 1);
        let y = grouped_decode_attention(&q.view([b, self.heads, self.head_dim]), &keys, &values, bias);
        self.o_proj.forward(&y.view([b, 1, self.heads * self.head_dim]))
    }
}

/// dtype of the decode scores for a cache of `cache_kind` on `device`: fp32 for bf16/f16 on CUDA
/// (`bmm` with `out_dtype`, CUDA only in LibTorch 2.11), otherwise the cache's dtype.
pub fn score_kind(cache_kind: Kind, device: tch::Device) -> Kind {
    if matches!(cache_kind, Kind::BFloat16 | Kind::Half) && device.is_cuda() {
        Kind::Float
    } else {
        cache_kind
    }
}

/// Additive attention bias `[B·H_kv, 1, S]` for a decode step over `valid [B, S]` (true = real
/// slot): 0 where real, −inf where padding, in `kind` (the score dtype).
pub fn decode_bias(valid: &Tensor, kv_heads: i64, kind: Kind) -> Tensor {
    let (b, s) = (valid.size()[0], valid.size()[1]);
    let bias = Tensor::zeros([b, 1, s], (kind, valid.device())).masked_fill(&valid.logical_not().view([b, 1, s]), f64::NEG_INFINITY);
    bias.unsqueeze(1).expand([b, kv_heads, 1, s], false).reshape([b * kv_heads, 1, s])
}

/// Attention of one query per row against a KV cache, without repeating K/V heads:
/// `q [B, H, hd]`, `keys`/`values [B, H_kv, S, hd]` (views of the cache are fine: merging B and
/// H_kv needs no copy), `bias [B·H_kv, 1, S]` → `[B, H·hd]` in q's dtype.
///
/// `scores = baddbmm(bias, q_g, Kᵀ, α = 1/√hd)` with `q_g [B·H_kv, H/H_kv, hd]`, softmax in fp32,
/// `· V`. On CUDA with bf16/f16 the scores are produced in fp32 directly (`bmm_dtype`, then scale
/// and bias); elsewhere they have the cache's dtype (an fp32 cache gives fp32 scores).
pub fn grouped_decode_attention(q: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> Tensor {
    let (b, h, hd) = (q.size()[0], q.size()[1], q.size()[2]);
    let (kv, s) = (keys.size()[1], keys.size()[2]);
    let akind = keys.kind();
    let qg = q.reshape([b * kv, h / kv, hd]).to_kind(akind);
    let k = keys.reshape([b * kv, s, hd]);
    let v = values.reshape([b * kv, s, hd]);
    let scale = 1.0 / (hd as f64).sqrt();
    let skind = score_kind(akind, keys.device());
    let scores = if skind != akind {
        // `bmm` with `out_dtype` (CUDA): fp32 scores from bf16/f16 operands. Not `baddbmm`'s
        // dtype variant: it wants `self` at the full output shape, the bias broadcasts.
        let mut s = qg.bmm_dtype(&k.transpose(1, 2), skind);
        let _ = s.g_mul_scalar_(scale).g_add_(&bias.to_kind(skind));
        s
    } else {
        bias.to_kind(akind).baddbmm(&qg, &k.transpose(1, 2), 1.0, scale)
    };
    let probs = scores.softmax(-1, Kind::Float).to_kind(akind);
    probs.bmm(&v).reshape([b, h * hd]).to_kind(q.kind())
}
