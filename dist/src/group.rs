//! A joined process group and its collectives over tch tensors.

use std::ffi::{c_char, c_int, c_longlong, c_void, CString};
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::{DistError, Launch};

/// Gradients are all-reduced in flat buckets of at most this many bytes (DDP's default).
pub const BUCKET_BYTES: usize = 25 << 20;

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ProcessGroupGloo: CPU tensors (and CUDA ones, through host copies).
    Gloo,
    /// ProcessGroupNCCL: CUDA tensors; needs the `nccl` feature.
    Nccl,
}

impl Backend {
    /// True if this build can create the backend.
    pub fn available(self) -> bool {
        match self {
            Backend::Gloo => true,
            Backend::Nccl => cfg!(feature = "nccl"),
        }
    }
}

mod ffi {
    use super::*;
    extern "C" {
        pub fn mvd_group_new(
            host: *const c_char,
            port: c_int,
            serve: c_int,
            prefix: *const c_char,
            rank: c_int,
            world: c_int,
            backend: c_int,
            timeout_ms: c_longlong,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut c_void;
        pub fn mvd_group_free(g: *mut c_void);
        pub fn mvd_all_reduce(
            g: *mut c_void,
            ts: *const *const c_void,
            n: usize,
            op: c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn mvd_broadcast(
            g: *mut c_void,
            t: *const c_void,
            root: c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn mvd_barrier(g: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    }
}

pub(crate) const ERR_LEN: usize = 2048;

/// The NUL-terminated message the shim wrote into `buf`.
pub(crate) fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

#[derive(Clone, Copy)]
enum Op {
    Sum = 0,
    Max = 1,
}

/// A process group this rank has joined. Dropping it destroys the group (and, on rank 0,
/// the rendezvous store), so keep it alive until every rank is done ([`ProcessGroup::barrier`]).
#[derive(Debug)]
pub struct ProcessGroup {
    raw: NonNull<c_void>,
    launch: Launch,
    backend: Backend,
}

// The C++ group is used from one thread at a time (the training loop); c10d's backends are
// thread-safe for issuing work anyway.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl ProcessGroup {
    /// Rendezvous at `launch`'s MASTER_ADDR:MASTER_PORT (rank 0 serves the store) and create
    /// the `backend` group. Every collective and the rendezvous give up after `timeout`.
    /// From then on the process ignores SIGPIPE, so that a peer that is gone makes the
    /// next collective fail with an error instead of killing this process.
    pub fn connect(
        launch: &Launch,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup, DistError> {
        if !backend.available() {
            return Err(DistError::Env(format!(
                "{} ranks on CUDA need NCCL, and this build has none: build with `cargo build --release --features cuda,nccl` (docs/distributed.md), or train on CPU with gloo",
                launch.world
            )));
        }
        let host = CString::new(launch.master_addr.clone())
            .map_err(|_| DistError::Env("MASTER_ADDR contains a NUL byte".into()))?;
        // torchrun's workers share its agent's store: keys of this attempt under their own
        // prefix, as PyTorch's workers do.
        let prefix = CString::new(format!("/mvdrive/attempt_{}", launch.attempt))
            .map_err(|_| DistError::Env("bad store prefix".into()))?;
        let serve = launch.rank == 0 && !launch.agent_store;
        let mut err = vec![0u8; ERR_LEN];
        let raw = unsafe {
            ffi::mvd_group_new(
                host.as_ptr(),
                launch.master_port as c_int,
                serve as c_int,
                prefix.as_ptr(),
                launch.rank as c_int,
                launch.world as c_int,
                (backend == Backend::Nccl) as c_int,
                timeout.as_millis().min(i64::MAX as u128) as c_longlong,
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| DistError::Rendezvous {
            rank: launch.rank,
            addr: launch.master_addr.clone(),
            port: launch.master_port,
            timeout_s: timeout.as_secs(),
            msg: message(&err),
        })?;
        Ok(ProcessGroup {
            raw,
            launch: launch.clone(),
            backend,
        })
    }

    /// Joins the group the environment describes ([`Launch::from_env`]: torchrun or Slurm);
    /// `Ok(None)` for a single process.
    pub fn from_env(
        backend: Backend,
        timeout: Duration,
    ) -> Result<Option<ProcessGroup>, DistError> {
        match Launch::from_env()? {
            Some(l) => ProcessGroup::connect(&l, backend, timeout).map(Some),
            None => Ok(None),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.launch.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.launch.world
    }

    /// How the ranks were launched.
    pub fn launch(&self) -> &Launch {
        &self.launch
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn check(&self, op: &'static str, rc: c_int, err: &[u8]) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::Collective {
            rank: self.rank(),
            world: self.world(),
            op,
            msg: message(err),
        })
    }

    /// NCCL takes CUDA tensors only: a CPU tensor (a metric, a flag, settings bytes) goes
    /// through a copy on this rank's GPU. `None` when `t` can be used as it is.
    fn nccl_copy(&self, t: &Tensor) -> Result<Option<Tensor>, DistError> {
        if self.backend == Backend::Nccl && t.device() == Device::Cpu {
            return Ok(Some(t.f_to_device(Device::Cuda(self.launch.local_rank))?));
        }
        Ok(None)
    }

    fn all_reduce_one(&self, t: &Tensor, op: Op, name: &'static str) -> Result<(), DistError> {
        if let Some(d) = self.nccl_copy(t)? {
            self.all_reduce_one(&d, op, name)?;
            t.shallow_clone().f_copy_(&d)?;
            return Ok(());
        }
        let mut err = vec![0u8; ERR_LEN];
        let ptrs = [t.as_ptr() as *const c_void];
        let rc = unsafe {
            ffi::mvd_all_reduce(
                self.raw.as_ptr(),
                ptrs.as_ptr(),
                1,
                op as c_int,
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        self.check(name, rc, &err)
    }

    fn broadcast_one(&self, t: &Tensor, root: usize) -> Result<(), DistError> {
        if let Some(d) = self.nccl_copy(t)? {
            self.broadcast_one(&d, root)?;
            t.shallow_clone().f_copy_(&d)?;
            return Ok(());
        }
        let mut err = vec![0u8; ERR_LEN];
        let rc = unsafe {
            ffi::mvd_broadcast(
                self.raw.as_ptr(),
                t.as_ptr() as *const c_void,
                root as c_int,
                err.as_mut_ptr() as *mut c_char,
                ERR_LEN,
            )
        };
        self.check("broadcast", rc, &err)
    }

    /// Runs `f` on flat buckets of the defined tensors of `ts` (grouped by kind and device,
    /// at most [`BUCKET_BYTES`] each, a lone contiguous tensor in place), then copies each
    /// bucket back into its tensors.
    fn bucketed(
        &self,
        ts: &[Tensor],
        mut f: impl FnMut(&Tensor) -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        let defined: Vec<&Tensor> = ts.iter().filter(|t| t.defined()).collect();
        // Per (kind, device): its buckets, and the bytes of the last one.
        type Buckets<'a> = ((Kind, Device), Vec<Vec<&'a Tensor>>, usize);
        let mut groups: Vec<Buckets> = Vec::new();
        for t in defined {
            let key = (t.kind(), t.device());
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            let g = match groups.iter_mut().position(|(k, _, _)| *k == key) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push((key, vec![Vec::new()], 0));
                    groups.last_mut().expect("just pushed")
                }
            };
            if g.2 + bytes > BUCKET_BYTES && g.1.last().is_some_and(|b| !b.is_empty()) {
                g.1.push(Vec::new());
                g.2 = 0;
            }
            g.2 += bytes;
            g.1.last_mut().expect("never empty").push(t);
        }
        tch::no_grad(|| {
            for (_, buckets, _) in &groups {
                for bucket in buckets {
                    match bucket.as_slice() {
                        [] => {}
                        [t] if t.is_contiguous() => f(t)?,
                        many => {
                            let flat = Tensor::f_cat(
                                &many.iter().map(|t| t.reshape(-1)).collect::<Vec<_>>(),
                                0,
                            )?;
                            f(&flat)?;
                            let mut at = 0i64;
                            for t in many {
                                let n = t.numel() as i64;
                                let mut dst = (*t).shallow_clone();
                                dst.f_copy_(&flat.narrow(0, at, n).view_as(t))?;
                                at += n;
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    }

    /// Sums each tensor across ranks, in place.
    pub fn all_reduce_sum_(&self, ts: &[Tensor]) -> Result<(), DistError> {
        self.bucketed(ts, |t| self.all_reduce_one(t, Op::Sum, "all-reduce"))
    }

    /// Averages each defined tensor across ranks, in place (gradients), in flat buckets.
    pub fn all_reduce_mean_(&self, ts: &[Tensor]) -> Result<(), DistError> {
        let w = self.world() as f64;
        self.bucketed(ts, |t| {
            self.all_reduce_one(t, Op::Sum, "gradient all-reduce")?;
            let mut t = t.shallow_clone();
            let _ = t.f_div_scalar_(w)?;
            Ok(())
        })
    }

    /// The element-wise maximum of each tensor across ranks, in place.
    pub fn all_reduce_max_(&self, ts: &[Tensor]) -> Result<(), DistError> {
        self.bucketed(ts, |t| self.all_reduce_one(t, Op::Max, "all-reduce (max)"))
    }

    /// Copies `root`'s values of each tensor to every rank, in place.
    pub fn broadcast_(&self, ts: &[Tensor], root: usize) -> Result<(), DistError> {
        self.bucketed(ts, |t| self.broadcast_one(t, root))
    }

    /// `root`'s bytes on every rank (what other ranks pass is ignored).
    pub fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>, DistError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast_one(&len, root)?;
        let n = len.int64_value(&[0]).max(0) as usize;
        let buf = if self.rank() == root {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([n as i64], (Kind::Uint8, Device::Cpu))
        };
        self.broadcast_one(&buf, root)?;
        Ok(Vec::<u8>::try_from(&buf)?)
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut err = vec![0u8; ERR_LEN];
        let rc = unsafe {
            ffi::mvd_barrier(self.raw.as_ptr(), err.as_mut_ptr() as *mut c_char, ERR_LEN)
        };
        self.check("barrier", rc, &err)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { ffi::mvd_group_free(self.raw.as_ptr()) }
    }
}
