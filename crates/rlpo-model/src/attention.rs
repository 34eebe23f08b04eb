//! Multi-head attention with grouped-query K/V (`self_attn.{q,k,v,o}_proj`, Qwen3's
//! `self_attn.{q,k}_norm`), used both for full padded sequences (learner) and for cached
//! incremental steps (rollout).
//!
//! Shapes: hidden `[B, T, D]`; q `[B, H, T, hd]`; k/v `[B, H_kv, T, hd]`; boolean attention mask
//! `[B, 1, T_q, T_k]` (true = may attend). Uses LibTorch's fused SDPA with `enable_gqa`, so K/V heads
//! are never materialised H/H_kv times.

use crate::config::ModelConfig;
use crate::kv_cache::KvCache;
use crate::layers::{Linear, RmsNorm};
use crate::rope::apply_rope;
use tch::nn::Path;
use tch::Tensor;

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

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = (q.size()[0], q.size()[2]);
        let y = Tensor::scaled_dot_product_attention(q, k, v, Some(mask), 0.0, false, None::<f64>, self.kv_heads != self.heads);
        self.o_proj.forward(&y.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]))
    }

    /// Full-sequence attention: `x [B,T,D]`, `mask [B,1,T,T]` → `[B,T,D]`.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> Tensor {
        let (q, k, v) = self.qkv(x, cos, sin);
        self.attend(&q, &k, &v, mask)
    }

    /// Cached attention: writes this chunk's K/V at slots `[cache.len, cache.len + T)` of layer
    /// `layer` and attends over slots `[0, cache.len + T)` with `mask [B,1,T,cache.len+T]`.
    pub fn forward_cached(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor, cache: &mut KvCache, layer: usize) -> Tensor {
        let (q, k, v) = self.qkv(x, cos, sin);
        let (start, t) = (cache.len, x.size()[1]);
        cache.keys[layer].narrow(2, start, t).copy_(&k);
        cache.values[layer].narrow(2, start, t).copy_(&v);
        let keys = cache.keys[layer].narrow(2, 0, start + t);
        let values = cache.values[layer].narrow(2, 0, start + t);
        self.attend(&q, &keys, &values, mask)
    }
}
