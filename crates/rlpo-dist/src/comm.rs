//! [`Comm`]: this process's communicator over the whole run. Rendezvous through rank 0's
//! TCPStore, a Gloo group for CPU tensors, an NCCL group for CUDA tensors (when built with the
//! `nccl` feature and asked for a device), and a heartbeat that names the rank at fault when a
//! collective fails (see `health.rs`).
//!
//! Tensors: any dtype Gloo/NCCL support, contiguous, on the CPU (Gloo) or on the NCCL group's
//! CUDA device. Collectives are blocking and in place; every rank must issue the same
//! collectives in the same order with the same shapes (the callers' job).

use crate::env::LaunchEnv;
use crate::error::{DistError, Result};
use crate::ffi::{self, RawGroup, RawStore};
use crate::health::{self, Heartbeat};
use std::cell::Cell;
use std::time::Duration;
use tch::{Device, Tensor};

/// How to set up the communicator.
#[derive(Debug, Clone)]
pub struct CommOptions {
    /// Limit of the rendezvous and of every collective: a peer that does not take part within it
    /// makes the collective fail on the others.
    pub timeout: Duration,
    /// Also create an NCCL group on `cuda:N` (needs the `nccl` feature).
    pub cuda_device: Option<usize>,
}

impl Default for CommOptions {
    fn default() -> Self {
        CommOptions { timeout: Duration::from_secs(600), cuda_device: None }
    }
}

/// The reduction of an all-reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum.
    Sum,
    /// Element-wise maximum.
    Max,
}

/// Whether this build can create NCCL groups.
pub fn has_nccl() -> bool {
    ffi::has_nccl()
}

/// This process's communicator. Not `Sync`: collectives are issued from one thread, in order.
pub struct Comm {
    rank: usize,
    world: usize,
    addr: String,
    timeout: Duration,
    /// Rank 0 serves the TCPStore (else torchrun's agent does).
    rank0_hosts: bool,
    // Field order is drop order: the heartbeat stops first, the store (rank 0: the server) last.
    _heartbeat: Heartbeat,
    gloo: Option<RawGroup>,
    nccl: Option<RawGroup>,
    store: RawStore,
    /// Set by a failed collective: the communicator refuses further calls (see `Drop`).
    broken: Cell<bool>,
    /// Ranks found dead by this rank's own diagnosis, or `Some(vec![])` after
    /// [`Comm::report_failure`]; `None` while all is well.
    fault: std::cell::RefCell<Option<Vec<usize>>>,
}

impl Comm {
    /// Rendezvous with the other `env.world - 1` ranks and set up the groups. Every rank must
    /// call it; it returns when all are connected, or fails after `opts.timeout`.
    pub fn init(env: &LaunchEnv, opts: &CommOptions) -> Result<Comm> {
        let addr = format!("{}:{}", env.master_addr, env.master_port);
        let init_err = |msg: String| DistError::Init { rank: env.rank, world: env.world, addr: addr.clone(), timeout_s: opts.timeout.as_secs_f64(), msg };
        if env.world == 0 || env.rank >= env.world {
            return Err(init_err(format!("rank {} is not in a world of {}", env.rank, env.world)));
        }
        if opts.cuda_device.is_some() && !has_nccl() {
            return Err(DistError::Invalid {
                op: "connecting the ranks".into(),
                msg: "CUDA tensors need NCCL, and this rlpo was built without it (cargo build --release --features nccl)".into(),
            });
        }
        let ms = opts.timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        let hint = |e: String| {
            init_err(format!(
                "{e} (are all {} ranks started, with the same MASTER_ADDR/MASTER_PORT, and does {addr} reach rank 0? Under Slurm launch with srun)",
                env.world
            ))
        };
        let hosts_store = env.rank == 0 && !env.external_store;
        let prefix = format!("rlpo/{}", env.attempt);
        let store = RawStore::new(&env.master_addr, env.master_port, hosts_store, env.world, ms, &prefix).map_err(hint)?;
        let gloo = RawGroup::new_gloo(&store, "gloo", env.rank, env.world, ms).map_err(hint)?;
        let nccl = match opts.cuda_device {
            Some(d) => Some(RawGroup::new_nccl(&store, "nccl", env.rank, env.world, d, ms).map_err(hint)?),
            None => None,
        };
        let beat_store = store.clone_client().map_err(hint)?;
        let heartbeat = Heartbeat::start(beat_store, env.rank).map_err(hint)?;
        Ok(Comm {
            rank: env.rank,
            world: env.world,
            addr,
            timeout: opts.timeout,
            rank0_hosts: !env.external_store,
            _heartbeat: heartbeat,
            gloo: Some(gloo),
            nccl,
            store,
            broken: Cell::new(false),
            fault: Default::default(),
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether CUDA tensors can be reduced (an NCCL group exists).
    pub fn has_cuda_group(&self) -> bool {
        self.nccl.is_some()
    }

    /// In-place all-reduce of `t` on every rank. `what` names the data in errors.
    pub fn all_reduce(&self, what: &str, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        let name = format!("all-reduce ({}) of `{what}`", if op == ReduceOp::Sum { "sum" } else { "max" });
        let g = self.group_for(&name, t)?;
        self.run(&name, g.all_reduce(t, if op == ReduceOp::Sum { 0 } else { 1 }))
    }

    /// Every rank's `input` (same shape and dtype everywhere), in rank order.
    pub fn all_gather(&self, what: &str, input: &Tensor) -> Result<Vec<Tensor>> {
        let name = format!("all-gather of `{what}`");
        let g = self.group_for(&name, input)?;
        let mut outs: Vec<Tensor> = (0..self.world).map(|_| input.empty_like()).collect();
        self.run(&name, g.all_gather(input, &mut outs))?;
        Ok(outs)
    }

    /// In-place broadcast of rank `root`'s `t` (same shape and dtype everywhere).
    pub fn broadcast(&self, what: &str, t: &mut Tensor, root: usize) -> Result<()> {
        let name = format!("broadcast from rank {root} of `{what}`");
        if root >= self.world {
            return Err(DistError::Invalid { op: name, msg: format!("root {root} is not a rank (world {})", self.world) });
        }
        let g = self.group_for(&name, t)?;
        self.run(&name, g.broadcast(t, root))
    }

    /// Wait until every rank gets here.
    pub fn barrier(&self, what: &str) -> Result<()> {
        let name = format!("barrier `{what}`");
        let g = self.gloo.as_ref().expect("the gloo group lives as long as the Comm");
        self.run(&name, g.barrier())
    }

    fn group_for(&self, op: &str, t: &Tensor) -> Result<&RawGroup> {
        if self.broken.get() {
            return Err(DistError::Invalid { op: op.into(), msg: "an earlier collective failed: this communicator is unusable".into() });
        }
        if !t.is_contiguous() {
            return Err(DistError::Invalid { op: op.into(), msg: format!("the tensor {:?} is not contiguous", t.size()) });
        }
        match t.device() {
            Device::Cpu => Ok(self.gloo.as_ref().expect("the gloo group lives as long as the Comm")),
            Device::Cuda(_) => self.nccl.as_ref().ok_or_else(|| DistError::Invalid {
                op: op.into(),
                msg: "a CUDA tensor, but this communicator has no NCCL group (CommOptions::cuda_device)".into(),
            }),
            d => Err(DistError::Invalid { op: op.into(), msg: format!("tensors on {d:?} are not supported") }),
        }
    }

    /// Tell the other ranks that this one is leaving because of `what` (an error outside the
    /// collectives: a reward failure, a bad batch): their next collective fails with this text
    /// instead of "rank N stopped responding". Call it before exiting with an error.
    pub fn report_failure(&self, what: &str) {
        let mut fault = self.fault.borrow_mut();
        if fault.is_none() {
            health::publish(&self.store, &[self.rank], &format!("rank {} failed: {what}", self.rank));
            *fault = Some(Vec::new());
        }
    }

    /// Map a shim failure to an error naming the rank(s) at fault.
    fn run(&self, op: &str, r: ffi::ShimResult<()>) -> Result<()> {
        let Err(cause) = r else { return Ok(()) };
        self.broken.set(true);
        let d = health::diagnose(&self.store, self.rank, self.world, &self.addr, self.rank0_hosts);
        let _ = self.store.add(health::SEEN, 1);
        self.fault.borrow_mut().get_or_insert_with(|| d.dead.clone());
        Err(DistError::Collective { rank: self.rank, op: op.into(), diagnosis: d.text, dead_ranks: d.dead, cause: cause.trim().to_string() })
    }

    /// Rank 0 after a fault: close its connections (so peers blocked on it fail now, not at the
    /// timeout) but keep its TCPStore up until the surviving ranks have read the diagnosis,
    /// for at most LINGER.
    fn linger(&mut self, dead: usize) {
        drop(self.gloo.take());
        let expected = (self.world - 1).saturating_sub(dead) as i64;
        let end = std::time::Instant::now() + LINGER;
        while std::time::Instant::now() < end {
            match self.store.add(health::SEEN, 0) {
                Ok(seen) if seen < expected => std::thread::sleep(Duration::from_millis(50)),
                _ => return,
            }
        }
    }
}

/// How long rank 0 keeps its store up after a fault for the others to read the diagnosis (two
/// heartbeat windows and slack: a rank may still be finishing work before its next collective).
const LINGER: Duration = Duration::from_secs(11);

impl Drop for Comm {
    fn drop(&mut self) {
        let Some(dead) = self.fault.get_mut().take() else { return };
        // After a fault an NCCL communicator may block in its destructor (pending work on a
        // dead peer); the process is on its way out with an error, so leave it to the OS.
        std::mem::forget(self.nccl.take());
        if self.rank == 0 && self.rank0_hosts {
            // Gloo's group tears down cleanly even with a dead or stopped peer (tests/gloo.rs).
            self.linger(dead.len());
        }
    }
}
