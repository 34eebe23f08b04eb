//! rlpo-dist: the engine of multi-process rlpo. It owns no transport of its own: collectives
//! come from LibTorch's c10d (the library tch already links), through a C++ shim
//! (`csrc/shim.cpp`, compiled by `build.rs` against the venv's LibTorch headers):
//!
//! - [`LaunchEnv`]: this process's rank, world, local rank and rendezvous address, from
//!   torchrun's, `rlpo train --nproc-per-node`'s or Slurm's environment ([`slurm`] expands
//!   Slurm's compressed host lists);
//! - [`Comm`]: rendezvous through rank 0's `TCPStore`, `ProcessGroupGloo` for CPU tensors,
//!   `ProcessGroupNCCL` for CUDA tensors (feature `nccl`); all-reduce (sum, max), all-gather,
//!   broadcast and barrier, each bounded by a timeout; a failure is a [`DistError`] naming the
//!   collective and the rank that stopped answering (heartbeats through the store), never a hang
//!   or an abort.
//!
//! Higher-level reductions (f64 slices, variable-length gathers, gradient buckets) live in
//! `rlpo-train`'s `dist` module, the one seam the training step reduces through.
//!
//! `unsafe` is confined to [`ffi`](self) (the shim's declarations), each call with a SAFETY note.

mod comm;
pub mod env;
mod error;
#[allow(unsafe_code)] // FFI to the c10d shim: the only way to reach LibTorch's collectives
mod ffi;
mod health;
pub mod slurm;

pub use comm::{has_nccl, Comm, CommOptions, ReduceOp};
pub use env::{LaunchEnv, LaunchSource};
pub use error::{DistError, Result};
pub use health::{PERIOD as HEARTBEAT_PERIOD, WINDOW as HEARTBEAT_WINDOW};
