//! [`CpuDecoder`]: decode steps computed on the host, for CPU rollouts. The prompt prefill still
//! runs through `CausalLm::prefill` (large matmuls, where LibTorch is efficient); its cache is then
//! copied into a [`HostCache`] and every decode step runs in Rust:
//!
//! - projections with weights packed once into 16-column panels ([`crate::gemm`]; bf16 models
//!   multiply bf16 × bf16 with f32 accumulation, f32 models in f32), split over rayon's threads;
//! - RMSNorm, RoPE (the model's own `Rope` tables), attention over the cache, SwiGLU, residuals
//!   in f32, attention parallel over rows; all vectorised for AVX-512 when present.
//!
//! Why: at decode batch sizes a LibTorch step is ~700 small ops plus matmuls that repack their
//! weights on every call (see `gemm.rs`); on the 2-core benchmark machine that left a SmolLM2 step
//! at a fifth of memory bandwidth. Shapes per step: hidden `x [B, D]`, `qkv [B, (H + 2 H_kv)·hd]`,
//! attention output `[B, H·hd]`, MLP `[B, 2I]`, logits `[B, V]` (host f32, handed to the sampler
//! without another copy).
//!
//! Numerics: f32 models compute what the learner's forward computes, up to summation order (the
//! rollout logprobs match a full forward to ~1e-5). bf16 models keep the residual stream and
//! attention in f32 and round only the matmul inputs to bf16 (transformers rounds every
//! intermediate to bf16), so their logits are slightly more accurate than a bf16 forward.
//! Memory: the packed weights are a second copy of the model's matmul weights (the LibTorch copy
//! serves the prefill and the learner), and the host cache is f32.

use crate::error::{Error, Result};
use crate::gemm::{matmul_into, GemmScratch, PackedMatrix};
use crate::cpu_kernels::{add_bias, add_into, attention_rows, rms_in_place, rms_rows, rope_rotate, swiglu};
use crate::host_cache::{HostCache, KvRows, SLOT_BLOCK};
use crate::model::{copy_weights, torch_prefill, DecodeCache, Logits, RolloutModel};
use rayon::prelude::*;
use rlpo_model::rope::Rope;
use rlpo_model::CausalLm;
use std::cell::RefCell;
use tch::{Device, Kind, Tensor};

#[derive(Debug)]
struct Layer {
    input_norm: Vec<f32>,
    qkv: PackedMatrix,
    qkv_b: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    o: PackedMatrix,
    o_b: Option<Vec<f32>>,
    post_norm: Vec<f32>,
    gate_up: PackedMatrix,
    gate_up_b: Option<Vec<f32>>,
    down: PackedMatrix,
    down_b: Option<Vec<f32>>,
}

/// Buffers of one row part of a step (one per thread), reused across steps.
#[derive(Debug, Default)]
struct Scratch {
    x: Vec<f32>,
    y: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    gemm: GemmScratch,
}

/// RoPE cos/sin for positions `[0, len)`, `[len, hd]` each, grown on demand.
#[derive(Debug, Default)]
struct RopeTable {
    cos: Vec<f32>,
    sin: Vec<f32>,
    len: usize,
}

/// Model dimensions used by the step.
#[derive(Debug, Clone, Copy)]
struct Dims {
    d: usize,
    h: usize,
    kv: usize,
    hd: usize,
    inter: usize,
    vocab: usize,
    eps: f32,
}

/// The packed weights and dimensions: plain host data, shared by the row parts of a step.
#[derive(Debug)]
struct Weights {
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: PackedMatrix,
    dims: Dims,
}

/// How a step uses the threads. Measured on the 2-core benchmark box (SmolLM2, batch 16):
/// rows 22 ms vs columns 33–40 ms per bf16 step, 40 vs 41–50 ms per f32 step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// Rows when there are at least as many rows as threads, else columns (default).
    Auto,
    /// Each thread runs the whole layer stack for a contiguous part of the rows (one join per
    /// step; both threads read every weight, mostly from the shared L3).
    Rows,
    /// One layer stack; every matmul splits its columns across threads (weights read once; one
    /// fork/join per matmul).
    Columns,
}

/// Host-side packed copies of a `CausalLm`'s weights plus the step's buffers: everything a CPU
/// decode step needs except the model itself (used for the prefill and the embedding lookup).
/// Keep one next to a learner's model and [`HostWeights::repack`] it after each update; decode
/// with [`HostWeights::bind`]. [`CpuDecoder`] bundles one with its own model.
#[derive(Debug)]
pub struct HostWeights {
    parallelism: Parallelism,
    w: Weights,
    rope: Rope,
    dims: Dims,
    scratch: RefCell<Vec<Scratch>>,
    rope_table: RefCell<RopeTable>,
}

/// A `CausalLm` plus its [`HostWeights`]: the CPU decode path as one owned value.
#[derive(Debug)]
pub struct CpuDecoder {
    model: CausalLm,
    host: HostWeights,
}

/// A borrowed model with its packed weights, usable as a [`RolloutModel`] (for a learner's model
/// that the rollout shares when colocated and synchronous).
#[derive(Debug, Clone, Copy)]
pub struct BoundCpuDecoder<'a> {
    model: &'a CausalLm,
    host: &'a HostWeights,
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.f_to_kind(Kind::Float)?.f_contiguous()?.f_copy_data(&mut v, n)?;
    Ok(v)
}

impl CpuDecoder {
    /// Pack `model`'s weights (bf16 panels for bf16/f16 models, f32 otherwise). CPU models only.
    pub fn new(model: CausalLm) -> Result<Self> {
        let host = HostWeights::pack(&model)?;
        Ok(CpuDecoder { model, host })
    }

    /// Choose how steps use the threads (default: [`Parallelism::Auto`]).
    pub fn set_parallelism(&mut self, p: Parallelism) {
        self.host.set_parallelism(p);
    }

    /// The wrapped model.
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// Unwrap.
    pub fn into_model(self) -> CausalLm {
        self.model
    }

    /// The packed weights.
    pub fn host_weights(&self) -> &HostWeights {
        &self.host
    }

    /// Re-pack the weights from the model's current variables (after a weight update).
    pub fn rebuild(&mut self) -> Result<()> {
        self.host.repack(&self.model)
    }
}

impl HostWeights {
    /// Pack `model`'s weights (bf16 panels for bf16/f16 models, f32 otherwise). CPU models only.
    pub fn pack(model: &CausalLm) -> Result<Self> {
        if model.device() != Device::Cpu {
            return Err(Error::Input("CpuDecoder needs a model on the CPU (use FastDecoder on GPUs)".into()));
        }
        let c = &model.config;
        let dims = Dims {
            d: c.hidden_size as usize,
            h: c.num_attention_heads as usize,
            kv: c.num_key_value_heads as usize,
            hd: c.head_dim as usize,
            inter: c.intermediate_size as usize,
            vocab: c.vocab_size as usize,
            eps: c.rms_norm_eps as f32,
        };
        let rope = Rope::new(c, Device::Cpu);
        let mut d = HostWeights {
            parallelism: Parallelism::Auto,
            w: Weights { layers: Vec::new(), norm: Vec::new(), lm_head: PackedMatrix::new::<f32>(&[], 0, 0, false), dims },
            rope,
            dims,
            scratch: RefCell::new(Vec::new()),
            rope_table: RefCell::new(RopeTable::default()),
        };
        d.repack(model)?;
        Ok(d)
    }

    /// Choose how steps use the threads (default: [`Parallelism::Auto`]).
    pub fn set_parallelism(&mut self, p: Parallelism) {
        self.parallelism = p;
    }

    /// Decode with `model` (the one these weights were packed from, or a copy with the same
    /// weights): prefill through it, steps on the packed weights.
    pub fn bind<'a>(&'a self, model: &'a CausalLm) -> BoundCpuDecoder<'a> {
        BoundCpuDecoder { model, host: self }
    }

    /// Re-pack from `model`'s current variables (after a weight update); `model` must have the
    /// architecture these weights were packed for.
    pub fn repack(&mut self, model: &CausalLm) -> Result<()> {
        if model.device() != Device::Cpu {
            return Err(Error::Input("CpuDecoder needs a model on the CPU (use FastDecoder on GPUs)".into()));
        }
        let vars = model.var_store().variables();
        let c = &model.config;
        let bf16 = matches!(model.kind(), Kind::BFloat16 | Kind::Half);
        let get = |n: &str| -> Result<Vec<f32>> {
            host(vars.get(n).ok_or_else(|| Error::Input(format!("model has no tensor {n}")))?)
        };
        let opt = |n: &str, on: bool| -> Result<Option<Vec<f32>>> { if on { get(n).map(Some) } else { Ok(None) } };
        let pack = |names: &[String], k: usize| -> Result<PackedMatrix> {
            let ts: Vec<Tensor> = names
                .iter()
                .map(|n| vars.get(n).map(Tensor::shallow_clone).ok_or_else(|| Error::Input(format!("model has no tensor {n}"))))
                .collect::<Result<_>>()?;
            let w = tch::no_grad(|| Tensor::cat(&ts, 0));
            if bf16 {
                // bf16 bit patterns straight from the tensor (tch names bf16 elements Kind::Half).
                let w = w.f_to_kind(Kind::BFloat16)?.f_contiguous()?.f_view_dtype(Kind::Int16)?;
                let numel = w.numel();
                let mut bits = vec![0i16; numel];
                w.f_copy_data(&mut bits, numel)?;
                Ok(PackedMatrix::new(&bits, bits.len() / k, k, true))
            } else {
                let w = host(&w)?;
                Ok(PackedMatrix::new(&w, w.len() / k, k, false))
            }
        };
        let Dims { d, h, hd, inter, .. } = self.dims;
        let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
        for i in 0..c.num_hidden_layers {
            let a = |n: &str| format!("model.layers.{i}.self_attn.{n}");
            let m = |n: &str| format!("model.layers.{i}.mlp.{n}");
            let cat_bias = |names: [String; 3], on: bool| -> Result<Option<Vec<f32>>> {
                // Fused q/k/v bias, in the order the weights are concatenated.
                if !on {
                    return Ok(None);
                }
                let mut b = Vec::new();
                for n in names {
                    b.extend(get(&n)?);
                }
                Ok(Some(b))
            };
            layers.push(Layer {
                input_norm: get(&format!("model.layers.{i}.input_layernorm.weight"))?,
                qkv: pack(&[a("q_proj.weight"), a("k_proj.weight"), a("v_proj.weight")], d)?,
                qkv_b: cat_bias([a("q_proj.bias"), a("k_proj.bias"), a("v_proj.bias")], c.qkv_bias)?,
                q_norm: opt(&a("q_norm.weight"), c.qk_norm)?,
                k_norm: opt(&a("k_norm.weight"), c.qk_norm)?,
                o: pack(&[a("o_proj.weight")], h * hd)?,
                o_b: opt(&a("o_proj.bias"), c.o_bias)?,
                post_norm: get(&format!("model.layers.{i}.post_attention_layernorm.weight"))?,
                gate_up: pack(&[m("gate_proj.weight"), m("up_proj.weight")], d)?,
                gate_up_b: if c.mlp_bias { Some([get(&m("gate_proj.bias"))?, get(&m("up_proj.bias"))?].concat()) } else { None },
                down: pack(&[m("down_proj.weight")], inter)?,
                down_b: opt(&m("down_proj.bias"), c.mlp_bias)?,
            });
        }
        let head = if vars.contains_key("lm_head.weight") { "lm_head.weight" } else { "model.embed_tokens.weight" };
        self.w.lm_head = pack(&[head.to_string()], d)?;
        self.w.norm = get("model.norm.weight")?;
        self.w.layers = layers;
        Ok(())
    }

    /// Bytes of packed weights held in addition to the model's own.
    pub fn packed_bytes(&self) -> usize {
        let w = &self.w;
        w.lm_head.bytes() + w.layers.iter().map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes()).sum::<usize>()
    }

    /// One step for all rows: rows are split into one contiguous part per thread, and each part
    /// runs the whole layer stack on its own (serial matmuls over the shared packed weights).
    /// Splitting rows instead of matmul columns leaves one synchronisation per step instead of
    /// ~150; both parts stream the same layer's weights at about the same time, so the second
    /// read mostly hits the shared L3.
    fn step_host(&self, model: &CausalLm, ids: &[i64], cache: &mut HostCache) -> Result<Vec<f32>> {
        let Dims { d, vocab, hd, .. } = self.dims;
        let b = ids.len();
        let (slot, total, cap) = (cache.len, cache.len + 1, cache.capacity);
        if total > cap {
            return Err(Error::Input(format!("KV cache overflow: {total} > capacity {cap}")));
        }
        if b != cache.batch {
            return Err(Error::Input(format!("decode step with {b} token ids for a KV cache of {} rows", cache.batch)));
        }
        // Embeddings come from the model's tensor (one small op per step).
        let embed = model.var_store().variables().get("model.embed_tokens.weight").map(Tensor::shallow_clone);
        let embed = embed.ok_or_else(|| Error::Input("model has no tensor model.embed_tokens.weight".into()))?;
        let emb = tch::no_grad(|| embed.f_index_select(0, &Tensor::from_slice(ids)))?;
        let x = host(&emb)?;
        let max_pos = cache.next_pos.iter().copied().max().unwrap_or(0).max(0) as usize;
        let mut rope = self.rope_table.borrow_mut();
        if max_pos >= rope.len {
            // One table for many steps: the model's own RoPE (scaling included), computed by LibTorch.
            let n = (max_pos + 1).max(2 * rope.len).max(256);
            let (cos, sin) = self.rope.cos_sin(&Tensor::arange(n as i64, (Kind::Int64, Device::Cpu)).view([1, -1]), Kind::Float);
            *rope = RopeTable { cos: host(&cos)?, sin: host(&sin)?, len: n };
        }
        for r in 0..b {
            cache.valid[r * cap + slot] = true;
        }
        let threads = rayon::current_num_threads();
        let rows = match self.parallelism {
            Parallelism::Auto => b >= threads,
            p => p == Parallelism::Rows,
        };
        let (parts, gemm_threads) = if rows { (threads.clamp(1, b.max(1)), 1) } else { (1, threads) };
        let bounds: Vec<usize> = (0..=parts).map(|p| p * b / parts).collect();
        let mut logits = vec![0f32; b * vocab];
        let mut scratch = self.scratch.borrow_mut();
        scratch.resize_with(parts, Scratch::default);
        let row_len = cache.kv_heads * cap * hd;
        let HostCache { keys, values, valid, next_pos, .. } = cache;
        let kv_parts = crate::host_cache::split_rows(keys, values, &bounds, row_len);
        let mut logit_parts = Vec::with_capacity(parts);
        let mut rest: &mut [f32] = &mut logits;
        for w in bounds.windows(2) {
            let (a, r) = rest.split_at_mut((w[1] - w[0]) * vocab);
            logit_parts.push(a);
            rest = r;
        }
        let work: Vec<Work> = scratch.iter_mut().zip(kv_parts).zip(logit_parts).enumerate().map(|(p, ((s, kv), out))| Work { p, s, kv, out }).collect();
        let (valid, next_pos, rope, weights) = (&valid[..], &next_pos[..], &*rope, &self.w);
        let run = |Work { p, s, kv, out }: Work| {
            let rows = bounds[p]..bounds[p + 1];
            let part = Part {
                x: &x[rows.start * d..rows.end * d],
                valid: &valid[rows.start * cap..rows.end * cap],
                pos: &next_pos[rows.clone()],
                kv,
                slot,
                total,
                cap,
                threads: gemm_threads,
            };
            weights.decode_rows(s, part, rope, out);
        };
        if parts == 1 {
            work.into_iter().for_each(run);
        } else {
            work.into_par_iter().for_each(run);
        }
        cache.len = total;
        for p in &mut cache.next_pos {
            *p += 1;
        }
        Ok(logits)
    }
}

impl Weights {
    /// The layer stack for one part of the rows, writing its logits into `out [rows, V]`.
    fn decode_rows(&self, s: &mut Scratch, mut part: Part<'_>, rope: &RopeTable, out: &mut [f32]) {
        let Dims { d, h, kv, hd, inter, eps, .. } = self.dims;
        let m = part.pos.len();
        if m == 0 {
            return;
        }
        let (slot, total, cap) = (part.slot, part.total, part.cap);
        let nq = (h + 2 * kv) * hd;
        s.x.clear();
        s.x.extend_from_slice(part.x);
        let sized = |v: &mut Vec<f32>, n: usize| v.resize(n, 0.0);
        for (l, layer) in self.layers.iter().enumerate() {
            rms_rows(&s.x, &layer.input_norm, eps, &mut s.y, d);
            sized(&mut s.qkv, m * nq);
            matmul_into(&s.y, m, &layer.qkv, &mut s.qkv, &mut s.gemm, part.threads);
            add_bias(&mut s.qkv, layer.qkv_b.as_deref(), nq);
            let (kl, vl) = &mut part.kv[l];
            for r in 0..m {
                let row = &mut s.qkv[r * nq..(r + 1) * nq];
                let p = part.pos[r] as usize;
                let (cs, sn) = (&rope.cos[p * hd..(p + 1) * hd], &rope.sin[p * hd..(p + 1) * hd]);
                for head in 0..h + kv {
                    let x = &mut row[head * hd..(head + 1) * hd];
                    let norm = if head < h { layer.q_norm.as_deref() } else { layer.k_norm.as_deref() };
                    if let Some(w) = norm {
                        rms_in_place(x, w, eps);
                    }
                    rope_rotate(x, cs, sn);
                }
                for j in 0..kv {
                    let o = (r * kv + j) * cap * hd;
                    for (e, &kx) in row[(h + j) * hd..(h + j + 1) * hd].iter().enumerate() {
                        kl.set(o + key_index(slot, e, hd), kx);
                    }
                    vl.set_slice(o + slot * hd, &row[(h + kv + j) * hd..(h + kv + j + 1) * hd]);
                }
            }
            sized(&mut s.attn, m * h * hd);
            attention_rows(&s.qkv, nq, kl, vl, part.valid, kv, cap, hd, total, h, &mut s.attn, part.threads > 1);
            sized(&mut s.proj, m * d);
            matmul_into(&s.attn, m, &layer.o, &mut s.proj, &mut s.gemm, part.threads);
            add_bias(&mut s.proj, layer.o_b.as_deref(), d);
            add_into(&mut s.x, &s.proj);
            rms_rows(&s.x, &layer.post_norm, eps, &mut s.y, d);
            sized(&mut s.gu, m * 2 * inter);
            matmul_into(&s.y, m, &layer.gate_up, &mut s.gu, &mut s.gemm, part.threads);
            add_bias(&mut s.gu, layer.gate_up_b.as_deref(), 2 * inter);
            swiglu(&s.gu, inter, &mut s.act);
            matmul_into(&s.act, m, &layer.down, &mut s.proj, &mut s.gemm, part.threads);
            add_bias(&mut s.proj, layer.down_b.as_deref(), d);
            add_into(&mut s.x, &s.proj);
        }
        rms_rows(&s.x, &self.norm, eps, &mut s.y, d);
        matmul_into(&s.y, m, &self.lm_head, out, &mut s.gemm, part.threads);
    }
}

/// One row part's inputs to `step_host`'s parallel section: its index, scratch, cache rows and
/// logits rows.
struct Work<'a, 'b> {
    p: usize,
    s: &'b mut Scratch,
    kv: Vec<(KvRows<'a>, KvRows<'a>)>,
    out: &'b mut [f32],
}

/// One thread's share of a step: its rows' hidden states `x [m, D]`, `valid [m, cap]`, positions
/// `[m]`, and per layer its rows of the keys and values.
struct Part<'a> {
    x: &'a [f32],
    valid: &'a [bool],
    pos: &'a [i64],
    kv: Vec<(KvRows<'a>, KvRows<'a>)>,
    slot: usize,
    total: usize,
    cap: usize,
    /// Threads for each matmul and for attention over rows (1 when rows are split).
    threads: usize,
}

/// Index of element `e` of slot `t` in a head's key blocks `[cap/16, hd, 16]`.
fn key_index(t: usize, e: usize, hd: usize) -> usize {
    ((t / SLOT_BLOCK) * hd + e) * SLOT_BLOCK + t % SLOT_BLOCK
}

impl RolloutModel for BoundCpuDecoder<'_> {
    fn vocab_size(&self) -> i64 {
        self.model.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        self.model.config.max_position_embeddings
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        let (logits, cache) = torch_prefill(self.model, ids, mask, capacity)?;
        let bf16 = matches!(self.model.kind(), Kind::BFloat16 | Kind::Half);
        let host = HostCache::from_torch(&cache, bf16)?;
        Ok((logits, DecodeCache::Host(host)))
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        let DecodeCache::Host(c) = cache else {
            return Err(Error::Input("the CPU decoder was given a LibTorch KV cache".into()));
        };
        let rows = ids.len();
        let data = self.host.step_host(self.model, ids, c)?;
        Ok(Logits::Host { data, rows, vocab: self.host.dims.vocab })
    }
    fn load_weights(&mut self, _weights: &[(String, Tensor)]) -> Result<()> {
        Err(Error::Input("a bound CPU decoder borrows its model: update the model, then HostWeights::repack".into()))
    }
    fn weights_changed(&mut self) -> Result<()> {
        Err(Error::Input("a bound CPU decoder borrows its weights: call HostWeights::repack".into()))
    }
}

impl RolloutModel for CpuDecoder {
    fn vocab_size(&self) -> i64 {
        self.model.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        self.model.config.max_position_embeddings
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        self.host.bind(&self.model).prefill(ids, mask, capacity)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        self.host.bind(&self.model).step(ids, cache)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        copy_weights(&self.model, weights)?;
        self.rebuild()
    }
    fn weights_changed(&mut self) -> Result<()> {
        self.rebuild()
    }
}
