//! Multi-process data parallelism on libtorch's own c10d: a `TCPStore` rendezvous and a
//! `ProcessGroupGloo` (CPU) or `ProcessGroupNCCL` (CUDA, feature `nccl`), through a small C++
//! shim (`src/shim.cpp`) that takes tch's tensors directly.
//!
//! [`Launch::from_env`] reads how the process was started (torchrun's `RANK`/`WORLD_SIZE`/
//! `LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT`, or srun's `SLURM_PROCID`/`SLURM_STEP_NUM_TASKS`/
//! `SLURM_LOCALID`/`SLURM_NODELIST`); [`ProcessGroup::connect`] joins the group. Dropping the
//! group destroys it. A launcher that starts the ranks itself serves their store with
//! [`Store::serve`], as torchrun's agent does.

mod error;
mod group;
mod launch;
mod store;

pub use error::DistError;
pub use group::{Backend, ProcessGroup, BUCKET_BYTES};
pub use launch::{first_host, parse_port, Launch, Launcher, DEFAULT_PORT};
pub use store::Store;
