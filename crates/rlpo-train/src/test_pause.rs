//! Test hook for interrupt tests, in the style of the checkpoint pause hook: with
//! `RLPO_TEST_PAUSE_IN_ROLLOUT=K:DIR`, the K-th rollout of the process (1-based, counted at its
//! prefill, on whichever thread runs it: the trainer's, or a rollout worker's for a prefetched
//! rollout) writes `DIR/paused` right after its prefill and then waits until `DIR/go` exists (at
//! most 10 minutes) before it decodes. A test can so deliver Ctrl-C while a rollout is
//! mid-generation, also while the rollout is a prefetch running beside the trainer.
//!
//! Unset (always, outside tests), the rollout models are used as they are: the wrapper is only
//! put around them when the variable is set.

use rlpo_rollout::{DecodeCache, Engine, GenerateRequest, Logits, RolloutBatch, RolloutModel};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// `(K, DIR)` from `RLPO_TEST_PAUSE_IN_ROLLOUT`, read once.
fn hook() -> Option<&'static (u64, PathBuf)> {
    static HOOK: OnceLock<Option<(u64, PathBuf)>> = OnceLock::new();
    HOOK.get_or_init(|| {
        let v = std::env::var("RLPO_TEST_PAUSE_IN_ROLLOUT").ok()?;
        let (k, dir) = v.split_once(':')?;
        Some((k.trim().parse().ok()?, PathBuf::from(dir)))
    })
    .as_ref()
}

/// Whether the hook is set.
pub(crate) fn active() -> bool {
    hook().is_some()
}

/// Rollouts started by this process (prefills through a [`Pausing`] model).
static ROLLOUTS: AtomicU64 = AtomicU64::new(0);

fn pause_if_due() {
    let Some((k, dir)) = hook() else { return };
    if ROLLOUTS.fetch_add(1, Ordering::SeqCst) + 1 != *k {
        return;
    }
    let marker = dir.join("paused");
    let partial = marker.with_extension("partial");
    // Written then renamed, so the test never reads a half-written marker.
    if std::fs::write(&partial, format!("rollout {k}")).is_ok() {
        std::fs::rename(&partial, &marker).ok();
    }
    wait_for(&dir.join("go"), Duration::from_secs(600));
}

fn wait_for(path: &Path, at_most: Duration) {
    let until = Instant::now() + at_most;
    while !path.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rollout model that runs [`pause_if_due`] after each prefill.
pub(crate) enum Pausing<'a> {
    /// The learner's model (colocated rollout).
    Borrowed(&'a dyn RolloutModel),
    /// A rollout worker's own model.
    Owned(Box<dyn RolloutModel>),
}

impl Pausing<'_> {
    fn inner(&self) -> &dyn RolloutModel {
        match self {
            Pausing::Borrowed(m) => *m,
            Pausing::Owned(m) => m.as_ref(),
        }
    }
}

impl RolloutModel for Pausing<'_> {
    fn vocab_size(&self) -> i64 {
        self.inner().vocab_size()
    }
    fn max_positions(&self) -> i64 {
        self.inner().max_positions()
    }
    fn device(&self) -> Device {
        self.inner().device()
    }
    fn prefill(&self, ids: &Tensor, mask: &Tensor, capacity: i64) -> rlpo_rollout::Result<(Logits, DecodeCache)> {
        let out = self.inner().prefill(ids, mask, capacity)?;
        pause_if_due();
        Ok(out)
    }
    fn step(&self, ids: &[i64], cache: &mut DecodeCache) -> rlpo_rollout::Result<Logits> {
        self.inner().step(ids, cache)
    }
    fn step_tensor(&self, ids: &Tensor, cache: &mut DecodeCache) -> rlpo_rollout::Result<Logits> {
        self.inner().step_tensor(ids, cache)
    }
    fn load_weights(&mut self, weights: &[(String, Tensor)]) -> rlpo_rollout::Result<()> {
        match self {
            Pausing::Owned(m) => m.load_weights(weights),
            Pausing::Borrowed(_) => Err(rlpo_rollout::Error::Input("internal: weights loaded into a borrowed rollout model".into())),
        }
    }
    fn weights_changed(&mut self) -> rlpo_rollout::Result<()> {
        match self {
            Pausing::Owned(m) => m.weights_changed(),
            Pausing::Borrowed(_) => Ok(()),
        }
    }
}

/// `engine.generate(model, req)`, through [`Pausing`] when the hook is set.
pub(crate) fn generate(engine: &mut Engine, model: &dyn RolloutModel, req: &GenerateRequest) -> rlpo_rollout::Result<RolloutBatch> {
    if active() {
        engine.generate(&Pausing::Borrowed(model), req)
    } else {
        engine.generate(model, req)
    }
}

/// A worker's model, wrapped when the hook is set.
pub(crate) fn worker_model(m: Box<dyn RolloutModel>) -> Box<dyn RolloutModel> {
    if active() {
        Box::new(Pausing::Owned(m))
    } else {
        m
    }
}
