//! [`RolloutModel`]: the few calls the engine makes on a model, so the engine can drive
//! `rlpo_model::CausalLm` directly, the decode paths of [`crate::fast`] (LibTorch, any device) and
//! [`crate::cpu_decoder`] (host kernels), a model shared with the learner behind a mutex (colocated
//! and synchronous), or a mock in tests.
//!
//! Shapes: `prefill(ids [B, T] left-padded, mask [B, T]) -> logits [B, V]` plus a cache of B rows,
//! `step(ids [B]) -> logits [B, V]` appending one slot. A cache is a LibTorch [`KvCache`] or a
//! [`HostCache`]; the engine only gathers its rows ([`DecodeCache::select_rows`]).
//!
//! Failures are `Result`s: LibTorch reports its errors (CUDA out of memory, a bad shape) by
//! panicking inside tch's infallible ops, so the LibTorch paths run under [`guarded`], which
//! turns such a panic into an [`Error::Model`]-style error naming the call; the trainer then
//! saves the last completed step instead of dying with it.

use crate::error::{Error, Result};
use crate::host_cache::HostCache;
use rlpo_model::{CausalLm, KvCache};
use std::sync::{Arc, Mutex};
use tch::{Device, Tensor};

/// The KV cache of a rollout, in the representation of the model that produced it.
#[derive(Debug)]
pub enum DecodeCache {
    /// LibTorch tensors (CPU or GPU).
    Torch(KvCache),
    /// Host memory (the CPU decoder).
    Host(HostCache),
}

impl DecodeCache {
    /// Keep (or repeat) rows `rows` of the batch (fan-out, compaction). The fan-out copies the
    /// prompt cache G times, the likeliest place for a GPU to run out of memory: an error.
    pub fn select_rows(&self, rows: &[i64]) -> Result<DecodeCache> {
        match self {
            DecodeCache::Torch(c) => guarded("KV cache row selection", || {
                DecodeCache::Torch(c.select_rows(&Tensor::from_slice(rows).to_device(c.valid.device())))
            }),
            DecodeCache::Host(c) => Ok(DecodeCache::Host(c.select_rows(rows))),
        }
    }

    /// Rows B.
    pub fn batch(&self) -> usize {
        match self {
            DecodeCache::Torch(c) => c.batch() as usize,
            DecodeCache::Host(c) => c.batch,
        }
    }

    /// The LibTorch cache; an error on a host cache (a model was handed another model's cache).
    pub fn torch(&mut self) -> Result<&mut KvCache> {
        match self {
            DecodeCache::Torch(c) => Ok(c),
            DecodeCache::Host(_) => Err(Error::Input("a LibTorch decode path was given a host KV cache".into())),
        }
    }
}

/// Next-token logits `[B, V]` of a prefill or step.
#[derive(Debug)]
pub enum Logits {
    /// A tensor (any dtype, any device).
    Tensor(Tensor),
    /// Host f32, row-major `[rows, vocab]`.
    Host {
        /// The values.
        data: Vec<f32>,
        /// B.
        rows: usize,
        /// V.
        vocab: usize,
    },
}

impl Logits {
    /// As a tensor `[B, V]` (host logits become a CPU f32 tensor).
    pub fn into_tensor(self) -> Tensor {
        match self {
            Logits::Tensor(t) => t,
            Logits::Host { data, rows, vocab } => Tensor::from_slice(&data).view([rows as i64, vocab as i64]),
        }
    }
}

/// A causal LM the rollout engine can decode with.
pub trait RolloutModel {
    /// Vocabulary size V (columns of the logits).
    fn vocab_size(&self) -> i64;
    /// Longest sequence (prompt + response) the model supports.
    fn max_positions(&self) -> i64;
    /// Device the inputs must live on.
    fn device(&self) -> Device;
    /// Run left-padded prompts `ids [B, T]` / `mask [B, T]` through a fresh cache of `capacity`
    /// slots; returns the next-token logits `[B, V]` and the cache.
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)>;
    /// One decode step for tokens `ids [B]`; next-token logits `[B, V]`.
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits>;
    /// [`RolloutModel::step`] for ids already on the model's device (`[B]` i64): the
    /// device-resident decode loop feeds each step's sampled ids back without a host round trip.
    /// Default: copy the ids to the host and call `step` (host decoders).
    fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> Result<Logits> {
        let host = ids.f_to_device(Device::Cpu).and_then(|t| t.f_to_kind(tch::Kind::Int64)).and_then(|t| Vec::<i64>::try_from(&t))?;
        self.step(&host, cache)
    }
    /// Copy new weights (HF names) into the model. Every name must exist with the same shape.
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()>;
    /// The weights were changed in place by someone else (the colocated learner): rebuild anything
    /// derived from them. Default: nothing to rebuild.
    fn weights_changed(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Copy `weights` into `model`'s variables (no grad), checking names and shapes.
pub fn copy_weights(model: &CausalLm, weights: &[(String, Tensor)]) -> Result<()> {
    let vars = model.var_store().variables();
    tch::no_grad(|| {
        for (name, src) in weights {
            let mut dst = vars
                .get(name)
                .ok_or_else(|| Error::Input(format!("weight update names unknown tensor {name}")))?
                .shallow_clone();
            if dst.size() != src.size() {
                return Err(Error::Input(format!("weight update {name}: shape {:?}, model has {:?}", src.size(), dst.size())));
            }
            dst.f_copy_(src)?;
        }
        Ok(())
    })
}

/// Run `f`, turning a panic (how tch's infallible ops report LibTorch errors such as CUDA out
/// of memory) into an error naming `what`. The default panic hook has already printed the
/// panic with its location by then.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
        Error::Failed(format!("{what}: {}", msg.unwrap_or_else(|| "panicked (non-string payload)".into())))
    })
}

/// `CausalLm::prefill` into a fresh LibTorch cache.
pub fn torch_prefill(model: &CausalLm, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, KvCache)> {
    guarded("prefill", || {
        let mut cache = model.new_cache(ids.size()[0], capacity);
        let logits = tch::no_grad(|| model.prefill(ids, mask, &mut cache));
        (Logits::Tensor(logits), cache)
    })
}

/// Host ids `[B]` as an i64 tensor on `device`.
pub fn ids_tensor(ids: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(ids).to_device(device)
}

impl RolloutModel for CausalLm {
    fn vocab_size(&self) -> i64 {
        self.config.vocab_size
    }
    fn max_positions(&self) -> i64 {
        self.config.max_position_embeddings
    }
    fn device(&self) -> Device {
        CausalLm::device(self)
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        let (logits, cache) = torch_prefill(self, ids, mask, capacity)?;
        Ok((logits, DecodeCache::Torch(cache)))
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        self.step_tensor(&ids_tensor(ids, CausalLm::device(self)), cache)
    }
    fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> Result<Logits> {
        let cache = cache.torch()?;
        guarded("decode step", || Logits::Tensor(tch::no_grad(|| CausalLm::step(self, ids, cache))))
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        copy_weights(self, weights)
    }
}

/// A model shared with the learner when colocated and synchronous: the trainer holds the same
/// `Arc<Mutex<_>>`, updates the weights in place between rollouts, and the worker locks it for the
/// duration of each call. A poisoned lock (the other side panicked) is treated as usable: the
/// weights are plain tensors and the version tag tells the caller what it got.
impl<M: RolloutModel> RolloutModel for Arc<Mutex<M>> {
    fn vocab_size(&self) -> i64 {
        lock(self).vocab_size()
    }
    fn max_positions(&self) -> i64 {
        lock(self).max_positions()
    }
    fn device(&self) -> Device {
        lock(self).device()
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        lock(self).prefill(ids, mask, capacity)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        lock(self).step(ids, cache)
    }
    fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> Result<Logits> {
        lock(self).step_tensor(ids, cache)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        lock(self).load_weights(weights)
    }
    fn weights_changed(&mut self) -> Result<()> {
        lock(self).weights_changed()
    }
}

fn lock<M>(m: &Mutex<M>) -> std::sync::MutexGuard<'_, M> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<M: RolloutModel + ?Sized> RolloutModel for Box<M> {
    fn vocab_size(&self) -> i64 {
        (**self).vocab_size()
    }
    fn max_positions(&self) -> i64 {
        (**self).max_positions()
    }
    fn device(&self) -> Device {
        (**self).device()
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> Result<(Logits, DecodeCache)> {
        (**self).prefill(ids, mask, capacity)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> Result<Logits> {
        (**self).step(ids, cache)
    }
    fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> Result<Logits> {
        (**self).step_tensor(ids, cache)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        (**self).load_weights(weights)
    }
    fn weights_changed(&mut self) -> Result<()> {
        (**self).weights_changed()
    }
}
