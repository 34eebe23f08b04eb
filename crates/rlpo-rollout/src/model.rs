//! [`RolloutModel`]: the few calls the engine makes on a model, so the engine can drive
//! `rlpo_model::CausalLm` directly, the faster decode path of [`crate::fast`], a model shared with
//! the learner behind a mutex (colocated and synchronous), or a mock in tests.
//!
//! Shapes: `prefill(ids [B, T] left-padded, mask [B, T]) -> logits [B, V]`,
//! `step(ids [B]) -> logits [B, V]`, both appending to a [`KvCache`] of `B` rows.

use crate::error::{Error, Result};
use rlpo_model::{CausalLm, KvCache};
use std::sync::{Arc, Mutex};
use tch::{Device, Tensor};

/// A causal LM the rollout engine can decode with.
pub trait RolloutModel {
    /// Vocabulary size V (columns of the logits).
    fn vocab_size(&self) -> i64;
    /// Longest sequence (prompt + response) the model supports.
    fn max_positions(&self) -> i64;
    /// Device the inputs must live on.
    fn device(&self) -> Device;
    /// A fresh cache for `batch` rows and `capacity` slots.
    fn new_cache(&self, batch: i64, capacity: i64) -> KvCache;
    /// Run left-padded prompts through the cache; next-token logits `[B, V]`.
    fn prefill(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor;
    /// One decode step for tokens `ids [B]`; next-token logits `[B, V]`.
    fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor;
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
    fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        CausalLm::new_cache(self, batch, capacity)
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        CausalLm::prefill(self, ids, mask, cache)
    }
    fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        CausalLm::step(self, ids, cache)
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
    fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        lock(self).new_cache(batch, capacity)
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        lock(self).prefill(ids, mask, cache)
    }
    fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        lock(self).step(ids, cache)
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
    fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        (**self).new_cache(batch, capacity)
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, cache: &mut KvCache) -> Tensor {
        (**self).prefill(ids, mask, cache)
    }
    fn step(&self, ids: &Tensor, cache: &mut KvCache) -> Tensor {
        (**self).step(ids, cache)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> Result<()> {
        (**self).load_weights(weights)
    }
    fn weights_changed(&mut self) -> Result<()> {
        (**self).weights_changed()
    }
}
