//! rlpo-dist's error type. Every variant names what is at fault: the environment variable, the
//! rendezvous address, the collective and the rank(s) that stopped answering.

/// Errors of launching, rendezvous and collectives.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is missing or malformed.
    #[error("{var}: {msg}")]
    Env {
        /// The environment variable.
        var: String,
        /// What is wrong.
        msg: String,
    },
    /// The TCPStore or a process group could not be set up.
    #[error("rank {rank} of {world}: rendezvous at {addr} failed (timeout {timeout_s} s): {msg}")]
    Init {
        /// This rank.
        rank: usize,
        /// World size.
        world: usize,
        /// `MASTER_ADDR:MASTER_PORT`.
        addr: String,
        /// The collective timeout in seconds.
        timeout_s: f64,
        /// c10d's message and a hint.
        msg: String,
    },
    /// A collective failed (a peer died, hung past the timeout, or the inputs were refused).
    #[error("rank {rank}: {op} failed: {diagnosis}; c10d: {cause}")]
    Collective {
        /// This rank.
        rank: usize,
        /// The operation and what it carried, e.g. "all-reduce (sum) of `loss normaliser`".
        op: String,
        /// Which ranks stopped answering, from the heartbeats (see [`crate::Comm`]).
        diagnosis: String,
        /// The ranks found dead or hung (empty when every peer is alive).
        dead_ranks: Vec<usize>,
        /// c10d's message.
        cause: String,
    },
    /// A collective was called with unusable arguments (caught before any communication).
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: String,
        /// What is wrong.
        msg: String,
    },
    /// A LibTorch error while preparing or unpacking a collective's tensors.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// `Result` with [`DistError`].
pub type Result<T> = std::result::Result<T, DistError>;
