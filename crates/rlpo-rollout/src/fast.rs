//! [`FastDecoder`] and [`BoundFastDecoder`]: a decode step that does the same math as
//! `CausalLm::step` with about half the LibTorch calls, because at decode batch sizes a step is
//! dominated by per-op overhead and by reading every weight once, not by FLOPs.
//!
//! Differences from the reference layer-by-layer path (the math is identical up to rounding):
//! - [`FastDecoder`] owns its model and fuses `q/k/v_proj` into one matmul over a concatenated
//!   weight `[(H + 2·H_kv)·hd, D]` and `gate/up_proj` into one over `[2·I, D]`; the fused copies
//!   are rebuilt on every weight update ([`RolloutModel::load_weights`],
//!   [`RolloutModel::weights_changed`]), so they never go stale. [`BoundFastDecoder`] borrows a
//!   model owned by someone else (the colocated learner) and uses its tensors as they are —
//!   shallow handles, no copies, so in-place weight updates are seen at once — with separate
//!   projections whose outputs are concatenated (a `[B, ·]` copy, not a weight copy);
//! - `o_proj` and `down_proj` add into the residual with `addmm`; tokens stay 2-D `[B, D]` (one
//!   position per row); q and k are rotated together with one `roll`-based RoPE
//!   (`x·cos + roll(x, hd/2)·[−sin, sin]` = `rotate_half`); RMSNorm is LibTorch's `rms_norm`
//!   (fp32 internally, like transformers);
//! - attention over the cache is `rlpo_model::attention::grouped_decode_attention`: `baddbmm` of
//!   q grouped per K/V head against the cache with an additive pad bias, fp32 softmax, `· V`; K/V
//!   heads are never repeated and SDPA is never called with a one-token query.
//!
//! On the CPU, bf16/f16 models get their KV cache converted to fp32 after the prefill and attend
//! in fp32: LibTorch's small batched bf16 matmuls are several times slower than fp32 ones there
//! (the cache then takes twice the memory). On CUDA the cache keeps the model dtype and the scores
//! come out of `baddbmm` in fp32.
//!
//! The prompt prefill is delegated to `CausalLm::prefill` (one call per rollout), and the cache
//! layout is `rlpo_model::KvCache`'s, so the paths interoperate.

use crate::error::{Error, Result};
use crate::model::{copy_weights, guarded, ids_tensor, torch_prefill, DecodeCache, Logits, RolloutModel};
use rlpo_model::attention::{decode_bias, grouped_decode_attention, score_kind};
use rlpo_model::rope::Rope;
use rlpo_model::{CausalLm, KvCache};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// A projection: one fused matmul, or several whose outputs are concatenated.
#[derive(Debug)]
enum Proj {
    Fused(Tensor, Option<Tensor>),
    Split(Vec<(Tensor, Option<Tensor>)>),
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Proj::Fused(w, b) => x.linear(w, b.as_ref()),
            Proj::Split(parts) => Tensor::cat(&parts.iter().map(|(w, b)| x.linear(w, b.as_ref())).collect::<Vec<_>>(), 1),
        }
    }
}

#[derive(Debug)]
struct Layer {
    input_norm: Tensor,
    qkv: Proj,
    /// Qwen3 q/k norm weights repeated per head `[H + H_kv, hd]`.
    qk_norm: Option<Tensor>,
    o_wt: Tensor,
    o_b: Option<Tensor>,
    post_norm: Tensor,
    gate_up: Proj,
    down_wt: Tensor,
    down_b: Option<Tensor>,
}

/// The tensors of a fast decode step (fused copies or shallow handles of a model's variables).
#[derive(Debug)]
pub struct FastWeights {
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
    /// Attend in fp32 over a widened cache (low-precision models on the CPU).
    widen_cache: bool,
}

fn var(vars: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    vars.get(name).map(Tensor::shallow_clone).ok_or_else(|| Error::Input(format!("model has no tensor {name}")))
}

impl FastWeights {
    /// Build from `model`'s variables: `fuse` = concatenated copies of q/k/v and gate/up (faster,
    /// more memory), otherwise shallow handles of the model's own tensors.
    pub fn new(model: &CausalLm, fuse: bool) -> Result<Self> {
        tch::no_grad(|| {
            let vars = model.var_store().variables();
            let c = &model.config;
            let (h, kv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
            let proj = |names: &[String], bias: bool| -> Result<Proj> {
                let ws = names.iter().map(|n| var(&vars, &format!("{n}.weight"))).collect::<Result<Vec<_>>>()?;
                let bs = if bias {
                    names.iter().map(|n| var(&vars, &format!("{n}.bias")).map(Some)).collect::<Result<Vec<_>>>()?
                } else {
                    names.iter().map(|_| None).collect()
                };
                Ok(if fuse {
                    let b = if bias { Some(Tensor::cat(&bs.iter().flatten().collect::<Vec<_>>(), 0)) } else { None };
                    Proj::Fused(Tensor::cat(&ws, 0), b)
                } else {
                    Proj::Split(ws.into_iter().zip(bs).collect())
                })
            };
            let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
            for i in 0..c.num_hidden_layers {
                let p = format!("model.layers.{i}");
                let a = |n: &str| var(&vars, &format!("{p}.self_attn.{n}"));
                let m = |n: &str| var(&vars, &format!("{p}.mlp.{n}"));
                let qkv_names: Vec<String> = ["q_proj", "k_proj", "v_proj"].iter().map(|n| format!("{p}.self_attn.{n}")).collect();
                let gu_names: Vec<String> = ["gate_proj", "up_proj"].iter().map(|n| format!("{p}.mlp.{n}")).collect();
                let qk_norm = if c.qk_norm {
                    let q = a("q_norm.weight")?.unsqueeze(0).expand([h, hd], false);
                    let k = a("k_norm.weight")?.unsqueeze(0).expand([kv, hd], false);
                    Some(Tensor::cat(&[q, k], 0).contiguous())
                } else {
                    None
                };
                layers.push(Layer {
                    input_norm: var(&vars, &format!("{p}.input_layernorm.weight"))?,
                    qkv: proj(&qkv_names, c.qkv_bias)?,
                    qk_norm,
                    o_wt: a("o_proj.weight")?.tr(),
                    o_b: if c.o_bias { Some(a("o_proj.bias")?) } else { None },
                    post_norm: var(&vars, &format!("{p}.post_attention_layernorm.weight"))?,
                    gate_up: proj(&gu_names, c.mlp_bias)?,
                    down_wt: m("down_proj.weight")?.tr(),
                    down_b: if c.mlp_bias { Some(m("down_proj.bias")?) } else { None },
                });
            }
            let embed = var(&vars, "model.embed_tokens.weight")?;
            let lm_head = match vars.get("lm_head.weight") {
                Some(t) => t.shallow_clone(),
                None => embed.shallow_clone(),
            };
            let low = matches!(model.kind(), Kind::BFloat16 | Kind::Half);
            Ok(FastWeights {
                layers,
                norm: var(&vars, "model.norm.weight")?,
                embed,
                lm_head,
                rope: Rope::new(c, model.device()),
                eps: c.rms_norm_eps,
                heads: h,
                kv_heads: kv,
                head_dim: hd,
                intermediate: c.intermediate_size,
                widen_cache: low && model.device() == Device::Cpu,
            })
        })
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Tensor {
        x.rms_norm([x.size()[x.dim() - 1]], Some(w), self.eps)
    }

    /// `CausalLm::prefill` into a fresh cache, widened to fp32 when this path attends in fp32.
    fn prefill(&self, model: &CausalLm, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        let (logits, mut cache) = torch_prefill(model, ids, mask, capacity)?;
        if self.widen_cache {
            tch::no_grad(|| -> Result<()> {
                for t in cache.keys.iter_mut().chain(cache.values.iter_mut()) {
                    *t = t.f_to_kind(Kind::Float)?;
                }
                Ok(())
            })?;
        }
        Ok((logits, DecodeCache::Torch(cache)))
    }

    /// One decode step: `ids [B]` → logits `[B, V]`, appending one slot to `cache`. A full
    /// cache is an error; LibTorch errors inside panic (the trait impls catch them).
    pub fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let b = ids.size()[0];
        let (h, kv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (start, total) = (cache.len, cache.len + 1);
        if total > cache.capacity {
            return Err(Error::Input(format!("KV cache overflow: {total} > capacity {}", cache.capacity)));
        }
        let kind = self.embed.kind();
        let _ = cache.valid.narrow(1, start, 1).fill_(1);
        // Per-step tables shared by every layer.
        let (cos, sin) = self.rope.cos_sin(&cache.next_pos.view([b, 1]), kind); // [B, 1, 1, hd]
        let half = hd / 2;
        let sin_signed = Tensor::cat(&[-sin.narrow(3, 0, half), sin.narrow(3, half, half)], 3);
        let bias = decode_bias(&cache.valid.narrow(1, 0, total), kv, score_kind(cache.keys[0].kind(), ids.device()));

        let mut x = Tensor::embedding(&self.embed, ids, -1, false, false); // [B, D]
        for (l, layer) in self.layers.iter().enumerate() {
            let y = self.rms(&x, &layer.input_norm);
            let qkv = layer.qkv.forward(&y); // [B, (H + 2 H_kv) hd]
            let mut qk = qkv.narrow(1, 0, (h + kv) * hd).view([b, h + kv, 1, hd]);
            if let Some(w) = &layer.qk_norm {
                // rms_norm's weight must be [hd]; the per-head weights multiply afterwards (as HF does).
                qk = qk.rms_norm([hd], None::<&Tensor>, self.eps) * w.view([h + kv, 1, hd]);
            }
            let rot = (&qk * &cos).addcmul_(&qk.roll([half], [3]), &sin_signed); // [B, H + H_kv, 1, hd]
            let q = rot.narrow(1, 0, h).reshape([b, h, hd]);
            let k = rot.narrow(1, h, kv);
            let v = qkv.narrow(1, (h + kv) * hd, kv * hd).view([b, kv, 1, hd]);
            cache.keys[l].narrow(2, start, 1).copy_(&k);
            cache.values[l].narrow(2, start, 1).copy_(&v);
            let keys = cache.keys[l].narrow(2, 0, total);
            let values = cache.values[l].narrow(2, 0, total);
            let attn = grouped_decode_attention(&q, &keys, &values, &bias).to_kind(kind); // [B, H·hd]
            x = match &layer.o_b {
                Some(ob) => x + attn.linear(&layer.o_wt.tr(), Some(ob)),
                None => x.addmm(&attn, &layer.o_wt),
            };
            let y = self.rms(&x, &layer.post_norm);
            let gu = layer.gate_up.forward(&y); // [B, 2I]
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

/// A `CausalLm` plus fused copies of its projection weights for fast one-token steps.
#[derive(Debug)]
pub struct FastDecoder {
    model: CausalLm,
    w: FastWeights,
}

impl FastDecoder {
    /// Wrap `model` (takes ownership; [`FastDecoder::model`] gives it back by reference).
    pub fn new(model: CausalLm) -> Result<Self> {
        let w = FastWeights::new(&model, true)?;
        Ok(FastDecoder { model, w })
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
        self.w = FastWeights::new(&self.model, true)?;
        Ok(())
    }

    /// One decode step: `ids [B]` → logits `[B, V]`, appending one slot to `cache`.
    pub fn step_impl(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        self.w.step(ids, cache)
    }
}

/// The fast decode step over a model owned by someone else (the colocated learner), using its
/// tensors without copying them (see the module docs). Cheap to build: one per rollout.
#[derive(Debug)]
pub struct BoundFastDecoder<'a> {
    model: &'a CausalLm,
    w: FastWeights,
}

impl<'a> BoundFastDecoder<'a> {
    /// Borrow `model`'s weights.
    pub fn new(model: &'a CausalLm) -> Result<Self> {
        Ok(BoundFastDecoder { model, w: FastWeights::new(model, false)? })
    }
}

/// The `RolloutModel` methods both fast decoders share (`self.model` is a `CausalLm` or a
/// reference to one, `self.w` the step weights).
macro_rules! fast_common {
    () => {
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
            self.w.prefill(&self.model, ids, mask, capacity)
        }
        fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
            self.step_tensor(&ids_tensor(ids, self.model.device()), cache)
        }
        fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> Result<Logits> {
            let cache = cache.torch()?;
            guarded("decode step", || tch::no_grad(|| self.w.step(ids, cache)))?.map(Logits::Tensor)
        }
    };
}

impl RolloutModel for FastDecoder {
    fast_common!();
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        copy_weights(&self.model, weights)?;
        self.rebuild()
    }
    fn weights_changed(&mut self) -> Result<()> {
        self.rebuild()
    }
}

impl RolloutModel for BoundFastDecoder<'_> {
    fast_common!();
    fn load_weights(&mut self, _weights: &[(String, Tensor)]) -> Result<()> {
        Err(Error::Input("a bound fast decoder borrows its model: update the model it borrows".into()))
    }
}
