//! The one seam every global reduction of the training step goes through. A [`Dist`] handle
//! knows this process's rank, the world size and its local rank, and offers the operations the
//! step needs, on host values where the step has host values:
//!
//! - [`Dist::sum_f64`] / [`Dist::max_f64`]: counts, normalisers, metric sums (`[f64]`, in place);
//! - [`Dist::all_gather_f32`] / [`Dist::all_gather_f64`]: variable-length vectors, every rank's
//!   in rank order (entropies for exact HAPO quantiles, D³S advantage pools);
//! - [`Dist::broadcast_bytes`] / [`Dist::broadcast_tensor`]: rank 0's decisions;
//! - [`Dist::all_reduce_grads`]: gradients, flattened into buckets of a given byte size, summed
//!   or averaged ([`GradReduce`]); the step will use `Sum`, because its loss normaliser is the
//!   global token/row count, so each rank's gradient is already its share of the global mean;
//! - [`Dist::barrier`].
//!
//! World size 1 is the identity and never calls the shim. Every call is timed into
//! [`CommStats`] (for `rlpo bench step`). The engine under it is rlpo-dist (c10d: Gloo for CPU
//! tensors, NCCL for CUDA tensors); the launch environment and the per-rank device/thread
//! placement are in [`place`].

pub mod place;

use crate::error::{Result, TrainError};
use rlpo_dist::{Comm, CommOptions, LaunchEnv, ReduceOp};
use std::cell::Cell;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Environment variable with the collective timeout in seconds (rendezvous included).
pub const TIMEOUT_ENV: &str = "RLPO_DIST_TIMEOUT_S";
/// The collective timeout when [`TIMEOUT_ENV`] is unset: longer than any legitimate wait of one
/// rank for another (rank 0 writing a checkpoint, uneven rollouts), short enough that a hung
/// peer is reported the same session.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How [`Dist::all_reduce_grads`] combines the ranks' gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradReduce {
    /// Σ over ranks: the right choice when each rank's loss is already divided by the global
    /// normaliser (rlpo's step).
    Sum,
    /// Σ / world (DDP's convention, for losses normalised per rank).
    Mean,
}

/// Time and volume spent in collectives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommStats {
    /// Collectives issued.
    pub calls: u64,
    /// Bytes this rank contributed.
    pub bytes: u64,
    /// Wall time inside collectives (waiting for slower ranks included).
    pub seconds: f64,
}

/// This process's place in the run and its communicator (none for a single process).
pub struct Dist {
    env: LaunchEnv,
    comm: Option<Comm>,
    stats: Cell<CommStats>,
}

impl Dist {
    /// A single process: every operation is the identity.
    pub fn single() -> Dist {
        Dist { env: LaunchEnv::single(), comm: None, stats: Cell::default() }
    }

    /// Rendezvous with the other ranks of `env` (nothing for a single process). `cuda_device`:
    /// also an NCCL group on that device, for CUDA gradients.
    pub fn connect(env: LaunchEnv, cuda_device: Option<usize>) -> Result<Dist> {
        if !env.is_distributed() {
            return Ok(Dist::single());
        }
        let opts = CommOptions { timeout: timeout_from_env()?, cuda_device };
        let comm = Comm::init(&env, &opts)?;
        Ok(Dist { env, comm: Some(comm), stats: Cell::default() })
    }

    /// Global rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.env.world
    }

    /// Rank on this node.
    pub fn local_rank(&self) -> usize {
        self.env.local_rank
    }

    /// Whether this rank writes the run directory (metrics, checkpoints): rank 0.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// Whether there is more than one rank.
    pub fn is_distributed(&self) -> bool {
        self.comm.is_some()
    }

    /// The launch environment.
    pub fn env(&self) -> &LaunchEnv {
        &self.env
    }

    /// Time and bytes spent in collectives so far.
    pub fn stats(&self) -> CommStats {
        self.stats.get()
    }

    /// Element-wise sum over ranks, in place.
    pub fn sum_f64(&self, what: &str, v: &mut [f64]) -> Result<()> {
        self.reduce_f64(what, v, ReduceOp::Sum)
    }

    /// Element-wise maximum over ranks, in place.
    pub fn max_f64(&self, what: &str, v: &mut [f64]) -> Result<()> {
        self.reduce_f64(what, v, ReduceOp::Max)
    }

    fn reduce_f64(&self, what: &str, v: &mut [f64], op: ReduceOp) -> Result<()> {
        let Some(comm) = &self.comm else { return Ok(()) };
        if v.is_empty() {
            return Ok(());
        }
        let mut t = Tensor::from_slice(v);
        self.timed(8 * v.len(), || comm.all_reduce(what, &mut t, op))?;
        t.f_copy_data(v, v.len())?;
        Ok(())
    }

    /// Every rank's `v` (lengths may differ), in rank order.
    pub fn all_gather_f32(&self, what: &str, v: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.gather(what, v, Kind::Float)
    }

    /// Every rank's `v` (lengths may differ), in rank order.
    pub fn all_gather_f64(&self, what: &str, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.gather(what, v, Kind::Double)
    }

    /// Gloo gathers equal shapes: gather the lengths, pad to the longest, cut each back.
    fn gather<T: tch::kind::Element + Copy + Default>(&self, what: &str, v: &[T], kind: Kind) -> Result<Vec<Vec<T>>> {
        let Some(comm) = &self.comm else { return Ok(vec![v.to_vec()]) };
        let lens = self.timed(8, || comm.all_gather(&format!("{what} (lengths)"), &Tensor::from_slice(&[v.len() as i64])))?;
        let lens: Vec<usize> = lens.iter().map(|t| t.int64_value(&[0]) as usize).collect();
        let max = lens.iter().copied().max().unwrap_or(0);
        if max == 0 {
            return Ok(vec![Vec::new(); lens.len()]);
        }
        let padded = Tensor::zeros([max as i64], (kind, Device::Cpu));
        if !v.is_empty() {
            padded.narrow(0, 0, v.len() as i64).copy_(&Tensor::from_slice(v));
        }
        let all = self.timed(max * kind.elt_size_in_bytes(), || comm.all_gather(what, &padded))?;
        all.iter()
            .zip(&lens)
            .map(|(t, &n)| {
                let mut out = vec![T::default(); n];
                t.narrow(0, 0, n as i64).f_copy_data(&mut out, n)?;
                Ok(out)
            })
            .collect()
    }

    /// Rank `root`'s bytes on every rank (`bytes` is replaced on the others).
    pub fn broadcast_bytes(&self, what: &str, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let Some(comm) = &self.comm else { return Ok(()) };
        let mut len = Tensor::from_slice(&[bytes.len() as i64]);
        self.timed(8, || comm.broadcast(&format!("{what} (length)"), &mut len, root))?;
        let n = len.int64_value(&[0]) as usize;
        let mut t = if self.rank() == root { Tensor::from_slice(bytes.as_slice()) } else { Tensor::zeros([n as i64], (Kind::Uint8, Device::Cpu)) };
        if n > 0 {
            self.timed(n, || comm.broadcast(what, &mut t, root))?;
        }
        bytes.resize(n, 0);
        t.f_copy_data(bytes, n)?;
        Ok(())
    }

    /// Rank `root`'s tensor on every rank, in place (same shape and dtype everywhere; contiguous).
    pub fn broadcast_tensor(&self, what: &str, t: &mut Tensor, root: usize) -> Result<()> {
        let Some(comm) = &self.comm else { return Ok(()) };
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        self.timed(bytes, || comm.broadcast(what, t, root))
    }

    /// All-reduce gradients in place, `mode` over ranks. Consecutive tensors of one dtype and
    /// device are packed into buckets of about `bucket_bytes` (one collective each; a tensor
    /// larger than that is a bucket of its own), so a model of many small tensors costs few
    /// collectives. Every rank must pass the same list (same order, shapes and dtypes).
    pub fn all_reduce_grads(&self, grads: &[Tensor], bucket_bytes: usize, mode: GradReduce) -> Result<()> {
        let Some(comm) = &self.comm else { return Ok(()) };
        if let Some(i) = grads.iter().position(|g| !g.defined()) {
            return Err(TrainError::Aborted(format!("all_reduce_grads: gradient {i} is undefined (pass only parameters that have a gradient)")));
        }
        for bucket in buckets(grads, bucket_bytes) {
            let part = &grads[bucket.clone()];
            let bytes: usize = part.iter().map(|g| g.numel() * g.kind().elt_size_in_bytes()).sum();
            let what = format!("gradients {}..{} of {}", bucket.start, bucket.end, grads.len());
            if let [g] = part {
                if g.is_contiguous() {
                    // One contiguous tensor: reduce it where it is.
                    let mut t = g.shallow_clone();
                    self.timed(bytes, || comm.all_reduce(&what, &mut t, ReduceOp::Sum))?;
                    if mode == GradReduce::Mean {
                        let _ = t.f_div_scalar_(self.world() as f64)?;
                    }
                    continue;
                }
            }
            let mut flat = Tensor::cat(&part.iter().map(|g| g.reshape([-1])).collect::<Vec<_>>(), 0);
            self.timed(bytes, || comm.all_reduce(&what, &mut flat, ReduceOp::Sum))?;
            if mode == GradReduce::Mean {
                let _ = flat.f_div_scalar_(self.world() as f64)?;
            }
            let mut off = 0;
            for g in part {
                let n = g.numel() as i64;
                g.shallow_clone().f_copy_(&flat.narrow(0, off, n).view(g.size().as_slice()))?;
                off += n;
            }
        }
        Ok(())
    }

    /// Wait until every rank gets here.
    pub fn barrier(&self, what: &str) -> Result<()> {
        let Some(comm) = &self.comm else { return Ok(()) };
        self.timed(0, || comm.barrier(what))
    }

    /// Tell the other ranks this one is leaving with `what` (before exiting with an error), so
    /// their next collective reports it instead of a dead peer.
    pub fn report_failure(&self, what: &str) {
        if let Some(comm) = &self.comm {
            comm.report_failure(what);
        }
    }

    fn timed<T>(&self, bytes: usize, f: impl FnOnce() -> rlpo_dist::Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let out = f();
        let mut s = self.stats.get();
        s.calls += 1;
        s.bytes += bytes as u64;
        s.seconds += t0.elapsed().as_secs_f64();
        self.stats.set(s);
        Ok(out?)
    }
}

/// The collective timeout: [`TIMEOUT_ENV`] or [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(rlpo_dist::DistError::Env { var: TIMEOUT_ENV.into(), msg: format!("{v:?} is not a positive number of seconds") }.into()),
        },
    }
}

/// Index ranges of `grads` reduced together: consecutive, same dtype and device, up to
/// `bucket_bytes` (at least one tensor each).
pub fn buckets(grads: &[Tensor], bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0usize);
    for (i, g) in grads.iter().enumerate() {
        let b = g.numel() * g.kind().elt_size_in_bytes();
        let same = i > start && g.kind() == grads[start].kind() && g.device() == grads[start].device();
        if i > start && (!same || size + b > bucket_bytes) {
            out.push(start..i);
            (start, size) = (i, 0);
        }
        size += b;
    }
    if start < grads.len() {
        out.push(start..grads.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_the_identity() {
        let d = Dist::single();
        assert!(d.is_main() && !d.is_distributed() && d.world() == 1);
        let mut v = [1.5, -2.0];
        d.sum_f64("x", &mut v).unwrap();
        d.max_f64("x", &mut v).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!(d.all_gather_f32("x", &[1.0, 2.0]).unwrap(), vec![vec![1.0f32, 2.0]]);
        let mut b = vec![1u8, 2, 3];
        d.broadcast_bytes("x", &mut b, 0).unwrap();
        assert_eq!(b, [1, 2, 3]);
        let g = [Tensor::from_slice(&[1.0f32, 2.0])];
        d.all_reduce_grads(&g, 1, GradReduce::Mean).unwrap();
        assert_eq!(Vec::<f32>::try_from(&g[0]).unwrap(), [1.0, 2.0]);
        d.barrier("x").unwrap();
        assert_eq!(d.stats(), CommStats::default(), "no collective may run for one process");
    }

    #[test]
    fn buckets_split_by_size_dtype_and_keep_big_tensors_alone() {
        let f = |n: i64, k: Kind| Tensor::zeros([n], (k, Device::Cpu));
        // 4-byte floats: 10, 10, 100 (alone), 5, then a double and another float.
        let g = [f(10, Kind::Float), f(10, Kind::Float), f(100, Kind::Float), f(5, Kind::Float), f(3, Kind::Double), f(1, Kind::Float)];
        assert_eq!(buckets(&g, 80), vec![0..2, 2..3, 3..4, 4..5, 5..6]);
        assert_eq!(buckets(&g, 1 << 20), vec![0..4, 4..5, 5..6]);
        assert_eq!(buckets(&g, 1), vec![0..1, 1..2, 2..3, 3..4, 4..5, 5..6]);
        assert!(buckets(&[], 8).is_empty());
    }
}
