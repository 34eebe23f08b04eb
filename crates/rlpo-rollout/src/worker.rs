//! [`RolloutPool`]: N rollout workers, each a thread with its own [`Engine`] and model, fed
//! requests over one bounded job channel and answering over one bounded result channel.
//!
//! - Models are built on the worker thread by the caller's factory (its own copy, or a clone of an
//!   `Arc<Mutex<_>>` shared with a colocated, synchronous learner). Startup errors are returned by
//!   [`RolloutPool::spawn`].
//! - Weight updates are broadcast on a per-worker control channel with a version number; a worker
//!   applies every pending update before it starts its next job and stamps that version on every
//!   completion, so a job submitted after `update_weights` returns always sees the new weights.
//! - Failures never hang the caller: a job's error or panic (caught with `catch_unwind`) comes back
//!   as [`Error::Worker`]; a worker thread that dies anyway reports its exit from a drop guard, and
//!   [`RolloutPool::recv`] turns that (or all workers gone) into [`Error::Pool`].
//! - Shutdown: dropping the senders ends the workers' loops; the pool drains results so no worker
//!   blocks on a full channel, then joins every thread.

use crate::engine::{Engine, GenerateRequest};
use crate::error::{Error, Result};
use crate::model::RolloutModel;
use crate::output::RolloutBatch;
use crossbeam::channel::{bounded, select, unbounded, Receiver, Sender, TryRecvError, TrySendError};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;
use tch::Tensor;

/// New weights for the workers, tagged with the policy version they produce.
#[derive(Debug)]
pub enum WeightUpdate {
    /// A snapshot of named tensors (HF names) that each worker copies into its own model. The pool
    /// only reads them, so pass a snapshot ([`WeightUpdate::snapshot`]), not live parameters that
    /// the learner keeps changing.
    State {
        /// Policy version the weights belong to.
        version: u64,
        /// `(name, tensor)` pairs.
        weights: Vec<(String, Tensor)>,
    },
    /// The weights were changed in place (shared model): just record the version and let the
    /// model rebuild derived copies ([`RolloutModel::weights_changed`]).
    InPlace {
        /// Policy version now in the shared weights.
        version: u64,
    },
}

impl WeightUpdate {
    /// Deep copy of every variable of `model` (safe to send while the learner keeps training).
    pub fn snapshot(version: u64, model: &rlpo_model::CausalLm) -> Self {
        let weights = tch::no_grad(|| model.var_store().variables().into_iter().map(|(k, v)| (k, v.copy())).collect());
        WeightUpdate::State { version, weights }
    }

    fn version(&self) -> u64 {
        match self {
            WeightUpdate::State { version, .. } | WeightUpdate::InPlace { version } => *version,
        }
    }

    /// A per-worker copy sharing the tensors' storage (workers only read them).
    fn share(&self) -> WeightUpdate {
        match self {
            WeightUpdate::State { version, weights } => WeightUpdate::State {
                version: *version,
                weights: weights.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect(),
            },
            WeightUpdate::InPlace { version } => WeightUpdate::InPlace { version: *version },
        }
    }
}

/// A finished job.
#[derive(Debug)]
pub struct JobResult {
    /// Id returned by [`RolloutPool::submit`].
    pub id: u64,
    /// Worker that ran it.
    pub worker: usize,
    /// The groups.
    pub batch: RolloutBatch,
}

struct Job {
    id: u64,
    request: GenerateRequest,
}

enum Msg {
    Started { worker: usize, result: std::result::Result<(), String> },
    Done { worker: usize, id: u64, result: std::result::Result<RolloutBatch, String> },
    Updated { worker: usize, version: u64, result: std::result::Result<(), String> },
    Exited { worker: usize, panicked: bool },
}

/// Sends `Exited` when the worker thread ends, even by unwinding.
struct ExitGuard {
    worker: usize,
    tx: Sender<Msg>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Exited { worker: self.worker, panicked: std::thread::panicking() });
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
    format!("panicked: {}", msg.unwrap_or_else(|| "(non-string payload)".into()))
}

/// N rollout workers behind bounded channels.
pub struct RolloutPool {
    jobs: Option<Sender<Job>>,
    controls: Vec<Sender<WeightUpdate>>,
    results: Receiver<Msg>,
    handles: Vec<JoinHandle<()>>,
    next_id: u64,
    pending: usize,
}

impl std::fmt::Debug for RolloutPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutPool").field("workers", &self.handles.len()).field("pending", &self.pending).finish()
    }
}

impl RolloutPool {
    /// Start `workers` threads; worker `i` builds its model and engine with `factory(i)` and runs
    /// LibTorch with `threads_per_worker` intra-op threads. Returns once every worker is ready, or
    /// the first startup error.
    pub fn spawn<M, F>(workers: usize, threads_per_worker: usize, factory: F) -> Result<Self>
    where
        M: RolloutModel + 'static,
        F: Fn(usize) -> Result<(M, Engine)> + Send + Sync + 'static,
    {
        if workers == 0 {
            return Err(Error::Config { key: "rollout.workers".into(), message: "must be at least 1, got 0".into() });
        }
        let factory = std::sync::Arc::new(factory);
        let (job_tx, job_rx) = bounded::<Job>(2 * workers);
        let (res_tx, res_rx) = bounded::<Msg>(4 * workers);
        let mut controls = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            // Unbounded: updates are rare and must never block the trainer behind a busy worker.
            let (ctl_tx, ctl_rx) = unbounded::<WeightUpdate>();
            controls.push(ctl_tx);
            let (job_rx, res_tx, factory) = (job_rx.clone(), res_tx.clone(), factory.clone());
            let handle = std::thread::Builder::new()
                .name(format!("rollout-{w}"))
                .spawn(move || worker_main(w, threads_per_worker, &*factory, job_rx, ctl_rx, res_tx))
                .map_err(|e| Error::Pool(format!("cannot start worker {w}: {e}")))?;
            handles.push(handle);
        }
        drop(res_tx);
        let pool = RolloutPool { jobs: Some(job_tx), controls, results: res_rx, handles, next_id: 0, pending: 0 };
        let mut started = 0;
        while started < workers {
            match pool.results.recv() {
                Ok(Msg::Started { result: Ok(()), .. }) => started += 1,
                Ok(Msg::Started { worker, result: Err(message) }) => return Err(Error::Worker { worker, message }),
                Ok(Msg::Exited { worker, .. }) => return Err(Error::Pool(format!("worker {worker} exited during startup"))),
                Ok(_) => {}
                Err(_) => return Err(Error::Pool("all workers exited during startup".into())),
            }
        }
        Ok(pool)
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.handles.len()
    }

    /// Jobs submitted and not yet received.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Queue a request (blocks while the job channel is full); returns its job id.
    pub fn submit(&mut self, request: GenerateRequest) -> Result<u64> {
        let id = self.next_id;
        let tx = self.jobs.as_ref().ok_or_else(|| Error::Pool("pool is shut down".into()))?;
        tx.send(Job { id, request }).map_err(|_| Error::Pool("all workers have exited".into()))?;
        self.next_id += 1;
        self.pending += 1;
        Ok(id)
    }

    /// Broadcast new weights; every job submitted afterwards runs with them and is tagged with
    /// their version. Errors applying them surface from the next [`RolloutPool::recv`].
    pub fn update_weights(&mut self, update: WeightUpdate) -> Result<()> {
        for (w, tx) in self.controls.iter().enumerate() {
            tx.send(update.share()).map_err(|_| Error::Pool(format!("worker {w} has exited")))?;
        }
        Ok(())
    }

    /// The next finished job (in completion order). Errors: a job's error or panic, a failed weight
    /// update, a worker that died, or no job pending (instead of waiting forever).
    pub fn recv(&mut self) -> Result<JobResult> {
        loop {
            if self.pending == 0 {
                return Err(Error::Pool("recv with no job pending".into()));
            }
            match self.results.recv() {
                Ok(Msg::Done { worker, id, result }) => {
                    self.pending -= 1;
                    return result.map(|batch| JobResult { id, worker, batch }).map_err(|message| Error::Worker { worker, message });
                }
                Ok(Msg::Updated { worker, version, result: Err(e) }) => {
                    return Err(Error::Worker { worker, message: format!("weight update to version {version}: {e}") })
                }
                Ok(Msg::Exited { worker, panicked }) => {
                    let how = if panicked { "panicked" } else { "exited" };
                    return Err(Error::Pool(format!("worker {worker} {how} with {} job(s) pending", self.pending)));
                }
                Ok(_) => {}
                Err(_) => return Err(Error::Pool("all workers have exited".into())),
            }
        }
    }

    /// Run all `requests` and return their batches in request order (submits and receives
    /// interleaved, so bounded channels cannot deadlock).
    pub fn generate_all(&mut self, requests: Vec<GenerateRequest>) -> Result<Vec<RolloutBatch>> {
        let n = requests.len();
        let first = self.next_id;
        let mut out: Vec<Option<RolloutBatch>> = (0..n).map(|_| None).collect();
        let mut queue = requests.into_iter();
        let mut held: Option<GenerateRequest> = None;
        let mut received = 0;
        while received < n {
            if held.is_none() {
                held = queue.next();
            }
            if let Some(req) = held.take() {
                let tx = self.jobs.as_ref().ok_or_else(|| Error::Pool("pool is shut down".into()))?;
                match tx.try_send(Job { id: self.next_id, request: req }) {
                    Ok(()) => {
                        self.next_id += 1;
                        self.pending += 1;
                        continue;
                    }
                    Err(TrySendError::Full(job)) => held = Some(job.request),
                    Err(TrySendError::Disconnected(_)) => return Err(Error::Pool("all workers have exited".into())),
                }
            }
            let r = self.recv()?;
            let slot = r.id.checked_sub(first).map(|i| i as usize).filter(|&i| i < n);
            let slot = slot.ok_or_else(|| Error::Pool(format!("result for job {} not in this batch", r.id)))?;
            out[slot] = Some(r.batch);
            received += 1;
        }
        Ok(out.into_iter().map(|b| b.expect("every slot received")).collect())
    }

    /// Stop the workers and join them; reports a worker thread that panicked outside a job.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        self.jobs = None;
        self.controls.clear();
        // Drain until every worker dropped its sender, so none blocks on a full result channel.
        let mut panicked = Vec::new();
        for msg in self.results.iter() {
            if let Msg::Exited { worker, panicked: true } = msg {
                panicked.push(worker);
            }
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        match panicked.first() {
            Some(w) => Err(Error::Pool(format!("worker {w} panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RolloutPool {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn worker_main<M, F>(w: usize, threads: usize, factory: &F, jobs: Receiver<Job>, ctl: Receiver<WeightUpdate>, tx: Sender<Msg>)
where
    M: RolloutModel,
    F: Fn(usize) -> Result<(M, Engine)>,
{
    let _guard = ExitGuard { worker: w, tx: tx.clone() };
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    let (mut model, mut engine) = match catch_unwind(AssertUnwindSafe(|| factory(w))) {
        Ok(Ok(me)) => me,
        Ok(Err(e)) => {
            let _ = tx.send(Msg::Started { worker: w, result: Err(e.to_string()) });
            return;
        }
        Err(p) => {
            let _ = tx.send(Msg::Started { worker: w, result: Err(panic_message(p)) });
            return;
        }
    };
    if tx.send(Msg::Started { worker: w, result: Ok(()) }).is_err() {
        return;
    }
    let mut version = 0u64;
    let apply = |model: &mut M, version: &mut u64, u: WeightUpdate| -> bool {
        let v = u.version();
        let r = catch_unwind(AssertUnwindSafe(|| match &u {
            WeightUpdate::State { weights, .. } => model.load_weights(weights),
            WeightUpdate::InPlace { .. } => model.weights_changed(),
        }));
        let result = match r {
            Ok(Ok(())) => {
                *version = v;
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(p) => Err(panic_message(p)),
        };
        tx.send(Msg::Updated { worker: w, version: v, result }).is_ok()
    };
    loop {
        select! {
            recv(ctl) -> msg => match msg {
                Ok(u) => if !apply(&mut model, &mut version, u) { return },
                Err(_) => return,
            },
            recv(jobs) -> msg => {
                let Ok(mut job) = msg else { return };
                // Updates sent before this job was submitted are already queued: apply them first.
                loop {
                    match ctl.try_recv() {
                        Ok(u) => if !apply(&mut model, &mut version, u) { return },
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                job.request.policy_version = version;
                let result = match catch_unwind(AssertUnwindSafe(|| engine.generate(&model, &job.request))) {
                    Ok(Ok(batch)) => Ok(batch),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(p) => Err(panic_message(p)),
                };
                if tx.send(Msg::Done { worker: w, id: job.id, result }).is_err() {
                    return;
                }
            },
        }
    }
}
