//! `train fit --nproc N`: starts N ranks of this same command on this machine, with the
//! environment torchrun would give them (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//! MASTER_ADDR, MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE; OMP_NUM_THREADS = cores / N unless
//! set), serves their rendezvous store, and waits for them. When one fails, the others get a
//! short grace to report their side, then are stopped.

use std::ffi::OsString;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use mvdrive_dist::{parse_port, Store};

use crate::error::Result;

/// How long the other ranks may take to stop by themselves after one failed.
const GRACE: Duration = Duration::from_secs(30);

/// The store's own wait on its keys; the ranks wait `trainer.dist_timeout_s` on theirs.
const STORE_TIMEOUT: Duration = Duration::from_secs(1800);

/// This process's arguments without `--nproc N` / `--nproc=N`.
pub fn without_nproc(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        match a.to_str() {
            Some("--nproc") => skip_next = true,
            Some(s) if s.starts_with("--nproc=") => {}
            _ => out.push(a),
        }
    }
    out
}

/// Runs `n` local ranks of this command line (without `--nproc`); Ok when all succeed.
///
/// This process serves the ranks' rendezvous store, as torchrun's agent does, on MASTER_PORT
/// or else on a free port the kernel picks when it binds: choosing a free port first and
/// letting rank 0 bind it later would race with any other program taking it in between.
pub fn run_local(n: usize, quiet: bool) -> Result<()> {
    let exe =
        std::env::current_exe().map_err(|e| format!("--nproc: cannot find this binary: {e}"))?;
    let args = without_nproc(std::env::args_os().skip(1));
    let asked = match std::env::var("MASTER_PORT") {
        Ok(p) if !p.trim().is_empty() => {
            parse_port(&p).map_err(|e| format!("--nproc: {e}; unset it for a free one"))?
        }
        _ => 0,
    };
    let store = Store::serve(asked, STORE_TIMEOUT).map_err(|e| format!("--nproc: {e}"))?;
    let port = store.port().to_string();
    let addr = std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into());
    if !quiet {
        eprintln!(
            "train fit --nproc {n}: starting {n} ranks (rendezvous {addr}:{port}); rank 0 reports"
        );
    }
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut c = Command::new(&exe);
        c.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", &addr)
            .env("MASTER_PORT", &port)
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env_remove("TORCHELASTIC_RESTART_COUNT");
        // Like torchrun: the ranks share the cores instead of each taking them all.
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            c.env("OMP_NUM_THREADS", (cores / n).max(1).to_string());
        }
        if std::env::var_os("GLOO_SOCKET_IFNAME").is_none() && addr == "127.0.0.1" {
            c.env("GLOO_SOCKET_IFNAME", "lo");
        }
        // A rank outlives no launcher: if this process dies (even by SIGKILL), the kernel
        // sends its ranks SIGTERM.
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe, called in the child between fork and exec.
            unsafe {
                c.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        match c.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children);
                return Err(format!("--nproc: could not start rank {rank}: {e}").into());
            }
        }
    }
    let done = wait_all(children);
    drop(store);
    done
}

fn stop(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits for every rank; after the first failure, gives the rest [`GRACE`], then stops them.
fn wait_all(mut children: Vec<Child>) -> Result<()> {
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failed_at: Option<(usize, Instant)> = None;
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if status[i].is_none() {
                status[i] = match c.try_wait() {
                    Ok(s) => s,
                    Err(e) => {
                        stop(&mut children);
                        return Err(format!("--nproc: lost track of rank {i}: {e}").into());
                    }
                };
                if status[i].is_some_and(|s| !s.success()) && failed_at.is_none() {
                    failed_at = Some((i, Instant::now()));
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if let Some((_, t)) = failed_at {
            if t.elapsed() > GRACE {
                stop(&mut children);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match failed_at {
        None => Ok(()),
        Some((rank, _)) => {
            let s = status[rank].map_or("was stopped".to_string(), |s| s.to_string());
            Err(format!(
                "rank {rank} of {} failed ({s}); see the ranks' errors above",
                children.len()
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nproc_is_taken_out_of_the_command_line() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            without_nproc(a(&["fit", "--nproc", "2", "--cache", "c", "x=1"])),
            a(&["fit", "--cache", "c", "x=1"])
        );
        assert_eq!(
            without_nproc(a(&["fit", "--nproc=4", "--cache", "c"])),
            a(&["fit", "--cache", "c"])
        );
    }
}
