//! [`FastDecoder`]: a decode step for CPU that does the same math as `CausalLm::step` with about
//! half the LibTorch calls, because at decode batch sizes a step is dominated by per-op overhead
//! and by reading every weight once, not by FLOPs.
//!
//! Differences from the reference layer-by-layer path (the math is identical up to rounding):
//! - `q/k/v_proj` are one matmul over a concatenated weight `[(H + 2·H_kv)·hd, D]`, and
//!   `gate/up_proj` one over `[2·I, D]`; `o_proj` and `down_proj` add into the residual with
//!   `addmm`. The fused copies are rebuilt on every weight update ([`RolloutModel::load_weights`],
//!   [`RolloutModel::weights_changed`]), so they never go stale.
//! - Tokens stay 2-D `[B, D]` (one position per row), q and k are rotated together with one
//!   `roll`-based RoPE (`x·cos + roll(x, hd/2)·[−sin, sin]` = `rotate_half`), RMSNorm is LibTorch's
//!   `rms_norm` (fp32 internally, like transformers).
//! - Attention over the cache is `baddbmm(mask_bias, q, Kᵀ, α = 1/√hd)` → softmax (fp32) → `· V`
//!   with q grouped per K/V head `[B·H_kv, H/H_kv, hd]`, so K/V heads are never repeated; the
//!   additive mask `[B·H_kv, 1, S]` (0 for real slots, −inf for pads) is built once per step.
//!
//! - For bf16/f16 models the KV cache is converted to fp32 after the prefill and attention runs in
//!   fp32 (q, k, v are the model-dtype projections, widened exactly): LibTorch's small batched
//!   bf16 matmuls are several times slower than fp32 ones on CPU, and fp32 scores/probabilities are
//!   what fused attention kernels keep internally anyway. The cache then takes twice the memory.
//!
//! The prompt prefill is delegated to `CausalLm::prefill` (one call per rollout), and the cache
//! layout is `rlpo_model::KvCache`'s, so the two paths interoperate.

use crate::error::{Error, Result};
use crate::model::{copy_weights, guarded, ids_tensor, torch_prefill, DecodeCache, Logits, RolloutModel};
use rlpo_model::rope::Rope;
use rlpo_model::{CausalLm, KvCache};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
struct Layer {
    input_norm: Tensor,
    qkv_w: Tensor,
    qkv_b: Option<Tensor>,
    /// Qwen3 q/k norm weights repeated per head `[H + H_kv, hd]`.
    qk_norm: Option<Tensor>,
    o_wt: Tensor,
    o_b: Option<Tensor>,
    post_norm: Tensor,
    gate_up_w: Tensor,
    gate_up_b: Option<Tensor>,
    down_wt: Tensor,
    down_b: Option<Tensor>,
}

/// A `CausalLm` plus fused copies of its projection weights for fast one-token steps.
#[derive(Debug)]
pub struct FastDecoder {
    model: CausalLm,
    layers: Vec<Layer>,
    embed: Tensor,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
    eps: f64,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    intermediate: i64,
}

fn var(vars: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    vars.get(name).map(Tensor::shallow_clone).ok_or_else(|| Error::Input(format!("model has no tensor {name}")))
}

impl FastDecoder {
    /// Wrap `model` (takes ownership; [`FastDecoder::model`] gives it back by reference).
    pub fn new(model: CausalLm) -> Result<Self> {
        let c = &model.config;
        let rope = Rope::new(c, model.device());
        let mut fd = FastDecoder {
            layers: Vec::new(),
            embed: Tensor::new(),
            norm: Tensor::new(),
            lm_head: Tensor::new(),
            rope,
            eps: c.rms_norm_eps,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate_size,
            model,
        };
        fd.rebuild()?;
        Ok(fd)
    }

    /// The wrapped model (for full forwards, saving, the learner's view).
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// Unwrap.
    pub fn into_model(self) -> CausalLm {
        self.model
    }

    /// Re-derive the fused weights from the model's current variables.
    pub fn rebuild(&mut self) -> Result<()> {
        tch::no_grad(|| {
            let vars = self.model.var_store().variables();
            let c = &self.model.config;
            let opt = |n: String| vars.get(&n).map(Tensor::shallow_clone);
            let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
            for i in 0..c.num_hidden_layers {
                let p = format!("model.layers.{i}");
                let a = |n: &str| var(&vars, &format!("{p}.self_attn.{n}"));
                let m = |n: &str| var(&vars, &format!("{p}.mlp.{n}"));
                let qkv_w = Tensor::cat(&[a("q_proj.weight")?, a("k_proj.weight")?, a("v_proj.weight")?], 0);
                let qkv_b = if c.qkv_bias {
                    Some(Tensor::cat(&[a("q_proj.bias")?, a("k_proj.bias")?, a("v_proj.bias")?], 0))
                } else {
                    None
                };
                let qk_norm = if c.qk_norm {
                    let q = a("q_norm.weight")?.unsqueeze(0).expand([self.heads, self.head_dim], false);
                    let k = a("k_norm.weight")?.unsqueeze(0).expand([self.kv_heads, self.head_dim], false);
                    Some(Tensor::cat(&[q, k], 0).contiguous())
                } else {
                    None
                };
                let gate_up_w = Tensor::cat(&[m("gate_proj.weight")?, m("up_proj.weight")?], 0);
                let gate_up_b = if c.mlp_bias { Some(Tensor::cat(&[m("gate_proj.bias")?, m("up_proj.bias")?], 0)) } else { None };
                layers.push(Layer {
                    input_norm: var(&vars, &format!("{p}.input_layernorm.weight"))?,
                    qkv_w,
                    qkv_b,
                    qk_norm,
                    o_wt: a("o_proj.weight")?.tr(),
                    o_b: if c.o_bias { Some(a("o_proj.bias")?) } else { None },
                    post_norm: var(&vars, &format!("{p}.post_attention_layernorm.weight"))?,
                    gate_up_w,
                    gate_up_b,
                    down_wt: m("down_proj.weight")?.tr(),
                    down_b: if c.mlp_bias { opt(format!("{p}.mlp.down_proj.bias")) } else { None },
                });
            }
            self.embed = var(&vars, "model.embed_tokens.weight")?;
            self.norm = var(&vars, "model.norm.weight")?;
            self.lm_head = match vars.get("lm_head.weight") {
                Some(t) => t.shallow_clone(),
                None => self.embed.shallow_clone(),
            };
            self.layers = layers;
            Ok(())
        })
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Tensor {
        x.rms_norm([x.size()[x.dim() - 1]], Some(w), self.eps)
    }

    /// One decode step: `ids [B]` → logits `[B, V]`, appending one slot to `cache`. A full
    /// cache is an error; LibTorch errors inside panic (the trait impl catches them).
    pub fn step_impl(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let b = ids.size()[0];
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (start, total) = (cache.len, cache.len + 1);
        if total > cache.capacity {
            return Err(Error::Input(format!("KV cache overflow: {total} > capacity {}", cache.capacity)));
        }
        let kind = self.embed.kind();
        let akind = cache.keys[0].kind(); // attention dtype: fp32 after `prefill` widened the cache
        let _ = cache.valid.narrow(1, start, 1).fill_(1);
        // Per-step tables shared by every layer.
        let (cos, sin) = self.rope.cos_sin(&cache.next_pos.view([b, 1]), kind); // [B, 1, 1, hd]
        let half = hd / 2;
        let sin_signed = Tensor::cat(&[-sin.narrow(3, 0, half), sin.narrow(3, half, half)], 3);
        let bias = Tensor::zeros([b, 1, total], (akind, ids.device())).masked_fill(
            &cache.valid.narrow(1, 0, total).logical_not().view([b, 1, total]),
            f64::NEG_INFINITY,
        );
        let bias = bias.unsqueeze(1).expand([b, kv, 1, total], false).reshape([b * kv, 1, total]);
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = Tensor::embedding(&self.embed, ids, -1, false, false); // [B, D]
        for (l, layer) in self.layers.iter().enumerate() {
            let y = self.rms(&x, &layer.input_norm);
            let qkv = y.linear(&layer.qkv_w, layer.qkv_b.as_ref()); // [B, (H + 2 H_kv) hd]
            let mut qk = qkv.narrow(1, 0, (h + kv) * hd).view([b, h + kv, 1, hd]);
            if let Some(w) = &layer.qk_norm {
                // rms_norm's weight must be [hd]; the per-head weights multiply afterwards (as HF does).
                qk = qk.rms_norm([hd], None::<&Tensor>, self.eps) * w.view([h + kv, 1, hd]);
            }
            let rot = (&qk * &cos).addcmul_(&qk.roll([half], [3]), &sin_signed); // [B, H + H_kv, 1, hd]
            let q = rot.narrow(1, 0, h);
            let k = rot.narrow(1, h, kv);
            let v = qkv.narrow(1, (h + kv) * hd, kv * hd).view([b, kv, 1, hd]);
            cache.keys[l].narrow(2, start, 1).copy_(&k);
            cache.values[l].narrow(2, start, 1).copy_(&v);
            let keys = cache.keys[l].narrow(2, 0, total).reshape([b * kv, total, hd]);
            let values = cache.values[l].narrow(2, 0, total).reshape([b * kv, total, hd]);
            let qg = q.reshape([b * kv, h / kv, hd]).to_kind(akind);
            let scores = bias.baddbmm(&qg, &keys.transpose(1, 2), 1.0, scale); // [B·H_kv, G, S]
            let probs = scores.softmax(-1, Kind::Float).to_kind(akind);
            let attn = probs.bmm(&values).reshape([b, h * hd]).to_kind(kind);
            x = match &layer.o_b {
                Some(ob) => x + attn.linear(&layer.o_wt.tr(), Some(ob)),
                None => x.addmm(&attn, &layer.o_wt),
            };
            let y = self.rms(&x, &layer.post_norm);
            let gu = y.linear(&layer.gate_up_w, layer.gate_up_b.as_ref()); // [B, 2I]
            let act = gu.narrow(1, 0, self.intermediate).silu() * gu.narrow(1, self.intermediate, self.intermediate);
            x = match &layer.down_b {
                Some(db) => x + act.linear(&layer.down_wt.tr(), Some(db)),
                None => x.addmm(&act, &layer.down_wt),
            };
        }
        cache.len = total;
        cache.next_pos += 1;
        Ok(self.rms(&x, &self.norm).linear::<&Tensor>(&self.lm_head, None))
    }
}

impl RolloutModel for FastDecoder {
    fn vocab_size(&self) -> i64 {
        self.model.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        self.model.config.max_position_embeddings
    }
    fn device(&self) -> Device {
        self.model.device()
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        let (logits, mut cache) = torch_prefill(&self.model, ids, mask, capacity)?;
        if cache.keys.first().is_some_and(|k| k.kind() != Kind::Float) {
            tch::no_grad(|| -> Result<()> {
                for t in cache.keys.iter_mut().chain(cache.values.iter_mut()) {
                    *t = t.f_to_kind(Kind::Float)?;
                }
                Ok(())
            })?;
        }
        Ok((logits, DecodeCache::Torch(cache)))
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        let cache = cache.torch()?;
        let ids = ids_tensor(ids, self.model.device());
        guarded("decode step", || tch::no_grad(|| self.step_impl(&ids, cache)))?.map(Logits::Tensor)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        copy_weights(&self.model, weights)?;
        self.rebuild()
    }
    fn weights_changed(&mut self) -> Result<()> {
        self.rebuild()
    }
}
