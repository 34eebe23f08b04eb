//! Where a training step's rollout runs, and how it gets the learner's weights.
//!
//! - [`RolloutBackend::Shared`]: colocated and synchronous (`max_staleness = 0`, rollout on the
//!   learner's device and dtype). The rollout reads the learner's own tensors: nothing is copied.
//!   On CPU the decode steps run on packed host weights ([`HostWeights`], ~2.7x faster than
//!   LibTorch at decode batch sizes), re-packed once per policy version; elsewhere (and with
//!   `trainer.rollout_decoder = "torch"`) on [`BoundFastDecoder`], the fast LibTorch decode step
//!   (grouped `baddbmm` attention over the cache) over the learner's own tensors. On CUDA the
//!   tokens are sampled on the device (`rollout.sampler = "auto"`).
//! - [`RolloutBackend::Workers`]: rollout worker threads ([`RolloutPool`]) with their own model
//!   copy on the rollout device, fed over bounded crossbeam channels and synced by version with a
//!   snapshot of the learner's weights. Used when `max_staleness >= 1` (the next step's rollout
//!   runs while the learner trains) or when the rollout has its own device or dtype.
//!
//! Determinism: a job's output depends only on its request (seeded per step and generation
//! batch) and the weights version applied before it. Weights are only sent when no job is in
//! flight, so that version never depends on thread timing.

use crate::error::{invalid, Result, TrainError};
use crate::recipe::{Recipe, RolloutDecoder};
use rlpo_model::{parse_device, parse_dtype, CausalLm, LoadOptions, TextTokenizer};
use rlpo_rollout::{BoundFastDecoder, CpuDecoder, Engine, GenerateRequest, HostWeights, RolloutBatch, RolloutModel, RolloutPool, WeightUpdate};
use std::collections::HashMap;
use std::sync::Arc;
use tch::Device;

/// The rollout's decode path and weight copy (see module docs).
pub enum RolloutBackend {
    /// The learner's model, optionally with packed host weights for CPU decode.
    Shared {
        /// Decode on packed host weights (CPU).
        host_decode: bool,
        /// The packed copy of the learner's weights and the version it was packed at (packed
        /// on first use, after any checkpoint was loaded).
        packed: Option<(HostWeights, u64)>,
    },
    /// Worker threads with their own model copies.
    Workers {
        /// The workers.
        pool: RolloutPool,
        /// Version last sent to the workers.
        synced: Option<u64>,
        /// Finished jobs not yet asked for, by id.
        done: HashMap<u64, RolloutBatch>,
        /// Jobs submitted and not yet received.
        in_flight: usize,
    },
}

/// Whether the decode path is `host` for a model on `device`.
fn host_decode(choice: RolloutDecoder, device: Device, key: &str) -> Result<bool> {
    match (choice, device) {
        (RolloutDecoder::Torch, _) => Ok(false),
        (RolloutDecoder::Auto, d) => Ok(d == Device::Cpu),
        (RolloutDecoder::Host, Device::Cpu) => Ok(true),
        (RolloutDecoder::Host, d) => Err(invalid(key, format!("\"host\" decodes on the CPU only, the rollout runs on {d:?}"))),
    }
}

impl RolloutBackend {
    /// The backend `recipe` asks for, next to the learner's `model`.
    pub fn new(recipe: &Recipe, model: &CausalLm, tokenizer: &Arc<TextTokenizer>) -> Result<Self> {
        let (device, kind) = recipe.rollout_device_and_dtype()?;
        let separate = device != model.device() || kind != model.kind();
        if recipe.trainer.max_staleness == 0 && !separate {
            let host_decode = host_decode(recipe.trainer.rollout_decoder, device, "trainer.rollout_decoder")?;
            return Ok(RolloutBackend::Shared { host_decode, packed: None });
        }
        let host = host_decode(recipe.trainer.rollout_decoder, device, "trainer.rollout_decoder")?;
        let path = recipe.model.path.clone();
        let tok = tokenizer.clone();
        let opts = LoadOptions { device, kind };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = recipe.rollout.worker_threads(cores);
        let pool = RolloutPool::spawn(recipe.rollout.workers, threads, move |_| {
            let m = CausalLm::load(&path, &opts).map_err(|e| rlpo_rollout::Error::Input(format!("loading the rollout model: {e}")))?;
            // Built on the worker thread, so the boxed model never crosses threads.
            let m: Box<dyn RolloutModel> = if host { Box::new(CpuDecoder::new(m)?) } else { Box::new(m) };
            Ok((crate::test_pause::worker_model(m), Engine::with_tokenizer(tok.clone())))
        })?;
        Ok(RolloutBackend::Workers { pool, synced: None, done: HashMap::new(), in_flight: 0 })
    }

    /// Whether the rollout's recorded log-probs come from the learner's own kernels (then they
    /// equal a recomputing forward up to summation order and can serve as old log-probs).
    pub fn uses_learner_kernels(&self) -> bool {
        matches!(self, RolloutBackend::Shared { host_decode: false, .. })
    }

    /// The decode path, attention kernels and sampler placement of the rollout (one line).
    pub fn describe(&self, recipe: &Recipe, model: &CausalLm) -> String {
        let (device, _) = recipe.rollout_device_and_dtype().unwrap_or((model.device(), model.kind()));
        let sampler = if recipe.rollout.sampler.on_device(device) { "sampling on the device" } else { "sampling on the host" };
        let prefill = rlpo_model::AttentionPath::SdpaCausal.describe();
        let decode = rlpo_model::AttentionPath::GroupedDecode.describe();
        match self {
            RolloutBackend::Shared { host_decode: true, .. } => {
                format!("colocated; prefill {prefill}; decode on packed host weights (Rust kernels); {sampler}")
            }
            RolloutBackend::Shared { .. } => format!("colocated; prefill {prefill}; decode BoundFastDecoder on the learner's tensors, {decode}; {sampler}"),
            RolloutBackend::Workers { .. } => format!(
                "{} worker(s) on {device:?} with their own weights; prefill {prefill}; decode {}; {sampler}",
                recipe.rollout.workers,
                if device == tch::Device::Cpu && !matches!(recipe.trainer.rollout_decoder, RolloutDecoder::Torch) { "packed host weights".to_string() } else { format!("CausalLm, {decode}") }
            ),
        }
    }

    /// Make the rollout see `model`'s weights at `version` (no-op when it already does).
    /// Workers are only updated with no job in flight, so every job's weights are well defined.
    pub fn sync(&mut self, model: &CausalLm, version: u64) -> Result<()> {
        match self {
            RolloutBackend::Shared { host_decode: false, .. } => Ok(()),
            RolloutBackend::Shared { packed: Some((h, v)), .. } => {
                if *v != version {
                    h.repack(model)?;
                    *v = version;
                }
                Ok(())
            }
            RolloutBackend::Shared { packed, .. } => {
                *packed = Some((HostWeights::pack(model)?, version));
                Ok(())
            }
            RolloutBackend::Workers { pool, synced, in_flight, .. } => {
                if *synced == Some(version) {
                    return Ok(());
                }
                if *in_flight > 0 {
                    return Err(TrainError::Aborted(format!("internal: weight sync with {in_flight} rollout job(s) in flight")));
                }
                pool.update_weights(WeightUpdate::snapshot(version, model))?;
                *synced = Some(version);
                Ok(())
            }
        }
    }

    /// Start a job on the workers; returns its id (workers only).
    pub fn submit(&mut self, req: GenerateRequest) -> Result<u64> {
        match self {
            RolloutBackend::Shared { .. } => {
                Err(TrainError::Aborted("internal: background rollout on the shared model (no workers)".into()))
            }
            RolloutBackend::Workers { pool, in_flight, .. } => {
                let id = pool.submit(req)?;
                *in_flight += 1;
                Ok(id)
            }
        }
    }

    /// The result of job `id` (waits for it).
    pub fn wait(&mut self, id: u64) -> Result<RolloutBatch> {
        let RolloutBackend::Workers { pool, done, in_flight, .. } = self else {
            return Err(TrainError::Aborted("internal: wait on a shared rollout".into()));
        };
        loop {
            if let Some(b) = done.remove(&id) {
                return Ok(b);
            }
            let r = pool.recv()?;
            *in_flight -= 1;
            done.insert(r.id, r.batch);
        }
    }

    /// Generate now and wait: on the learner's model (shared) or through the workers.
    pub fn generate(&mut self, engine: &mut Engine, model: &CausalLm, req: &GenerateRequest) -> Result<RolloutBatch> {
        match self {
            RolloutBackend::Shared { packed: Some((h, v)), .. } => {
                if *v != req.policy_version {
                    return Err(TrainError::Aborted(format!("internal: host weights at version {v}, request for {}", req.policy_version)));
                }
                Ok(crate::test_pause::generate(engine, &h.bind(model), req)?)
            }
            RolloutBackend::Shared { host_decode: false, .. } => Ok(crate::test_pause::generate(engine, &BoundFastDecoder::new(model)?, req)?),
            RolloutBackend::Shared { .. } => Err(TrainError::Aborted("internal: rollout before the weights were packed".into())),
            RolloutBackend::Workers { .. } => {
                let id = self.submit(req.clone())?;
                self.wait(id)
            }
        }
    }
}

impl Recipe {
    /// The rollout's device and dtype: `model.rollout_device` / `model.rollout_dtype`, or the
    /// learner's when unset.
    pub fn rollout_device_and_dtype(&self) -> Result<(Device, tch::Kind)> {
        let m = &self.model;
        let dev = m.rollout_device.as_deref().unwrap_or(&m.device);
        let dt = m.rollout_dtype.as_deref().unwrap_or(&m.dtype);
        let key_d = if m.rollout_device.is_some() { "model.rollout_device" } else { "model.device" };
        let key_t = if m.rollout_dtype.is_some() { "model.rollout_dtype" } else { "model.dtype" };
        let device = parse_device(dev).map_err(|e| invalid(key_d, e.to_string()))?;
        let kind = parse_dtype(dt).map_err(|e| invalid(key_t, e.to_string()))?;
        Ok((device, kind))
    }
}
