//! What can go wrong when joining or using a process group.

/// A launch environment, rendezvous or collective error.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The launcher's environment variables are incomplete or malformed.
    #[error("{0}")]
    Env(String),
    /// The rendezvous at MASTER_ADDR:MASTER_PORT failed.
    #[error("rank {rank}: could not join the process group at {addr}:{port} within {timeout_s} s ({msg}); check that rank 0 runs, that MASTER_ADDR/MASTER_PORT name it, and that the address is reachable (trainer.dist_timeout_s sets the wait)")]
    Rendezvous {
        /// This process's rank.
        rank: usize,
        /// MASTER_ADDR.
        addr: String,
        /// MASTER_PORT.
        port: u16,
        /// The wait, in seconds.
        timeout_s: u64,
        /// c10d's message.
        msg: String,
    },
    /// A launcher could not serve the rendezvous store.
    #[error("could not serve the rendezvous store on port {port} ({msg}){hint}")]
    Serve {
        /// The port asked for (0: any free one).
        port: u16,
        /// c10d's message.
        msg: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A collective failed: usually another rank stopped or the timeout passed.
    #[error("rank {rank}: {op} across {world} ranks failed ({msg}); another rank has probably stopped (see its error) or did not answer within trainer.dist_timeout_s")]
    Collective {
        /// This process's rank.
        rank: usize,
        /// Ranks in the group.
        world: usize,
        /// The collective.
        op: &'static str,
        /// c10d's message.
        msg: String,
    },
    /// A tensor operation around a collective failed.
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}
