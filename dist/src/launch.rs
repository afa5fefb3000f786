//! How this process was launched: its rank, the world size and where rank 0 listens, read
//! the torchrun way or the Slurm way.

use crate::DistError;

/// MASTER_PORT when a Slurm launch does not set one (torchrun's default too).
pub const DEFAULT_PORT: u16 = 29500;

/// Who started the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun, `train fit --nproc N`, or any launcher that sets RANK and WORLD_SIZE.
    Torchrun,
    /// `srun`: SLURM_PROCID and SLURM_STEP_NUM_TASKS (SLURM_NTASKS alone is also set in
    /// an sbatch script's own shell, which is one process).
    Slurm,
}

/// One rank's place in a multi-process run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, 0..world.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Rank on this machine (selects `cuda:LOCAL_RANK`).
    pub local_rank: usize,
    /// Where rank 0 serves the rendezvous store.
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// Which variables it came from.
    pub launcher: Launcher,
    /// torchrun's agent already serves the store at MASTER_PORT
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank, rank 0 too, joins it as a client.
    pub agent_store: bool,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`): keys of an earlier attempt
    /// in a shared store are not this attempt's.
    pub attempt: u64,
}

impl Launch {
    /// Reads the process environment. `Ok(None)` for a single process (no launcher, or a
    /// world of one).
    pub fn from_env() -> Result<Option<Launch>, DistError> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// As [`Launch::from_env`], from any variable lookup.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>, DistError> {
        let num = |k: &str| -> Result<Option<usize>, DistError> {
            match var(k) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    DistError::Env(format!("{k}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let port = || var("MASTER_PORT").map_or(Ok(DEFAULT_PORT), |v| parse_port(&v));
        let (rank, world, local_rank, addr, launcher) = if let Some(world) = num("WORLD_SIZE")? {
            let Some(rank) = num("RANK")? else {
                return Err(DistError::Env(format!(
                    "WORLD_SIZE={world} is set but RANK is not: start every rank with RANK=0..{} (torchrun and `train fit --nproc N` set both), or unset WORLD_SIZE for one process",
                    world.saturating_sub(1)
                )));
            };
            let local = num("LOCAL_RANK")?.unwrap_or(rank);
            (rank, world, local, var("MASTER_ADDR"), Launcher::Torchrun)
        } else if let (Some(rank), Some(world)) =
            (num("SLURM_PROCID")?, num("SLURM_STEP_NUM_TASKS")?)
        {
            // The world is the job step's tasks, which only `srun` sets: a batch script's
            // own shell has SLURM_PROCID=0 and SLURM_NTASKS=N too, but it is one process.
            let local = num("SLURM_LOCALID")?.unwrap_or(0);
            let addr = var("MASTER_ADDR")
                .or_else(|| var("SLURM_NODELIST").as_deref().and_then(first_host))
                .or_else(|| var("SLURM_JOB_NODELIST").as_deref().and_then(first_host));
            (rank, world, local, addr, Launcher::Slurm)
        } else if let Some(rank) = num("RANK")? {
            return Err(DistError::Env(format!(
                "RANK={rank} is set but WORLD_SIZE is not: set WORLD_SIZE to the number of ranks"
            )));
        } else {
            return Ok(None);
        };
        if world == 0 || rank >= world {
            return Err(DistError::Env(format!(
                "rank {rank} is outside a world of {world} ranks ({})",
                match launcher {
                    Launcher::Torchrun => "RANK must be below WORLD_SIZE",
                    Launcher::Slurm => "SLURM_PROCID must be below SLURM_STEP_NUM_TASKS",
                }
            )));
        }
        if world == 1 {
            return Ok(None);
        }
        let Some(master_addr) = addr.map(|a| a.trim().to_string()).filter(|a| !a.is_empty()) else {
            return Err(DistError::Env(format!(
                "{world} ranks but no MASTER_ADDR: set it to rank 0's host{}",
                if launcher == Launcher::Slurm {
                    " (or run under srun, which sets SLURM_NODELIST)"
                } else {
                    ""
                }
            )));
        };
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master_addr,
            master_port: port()?,
            launcher,
            agent_store: var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.trim() == "True"),
            attempt: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0) as u64,
        }))
    }
}

/// A MASTER_PORT value: a port in 1..65535.
pub fn parse_port(v: &str) -> Result<u16, DistError> {
    v.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| DistError::Env(format!("MASTER_PORT={v:?} is not a port (1..65535)")))
}

/// The first host of a Slurm node list: `gpu[03-04,07],cpu1` -> `gpu03`, `a,b` -> `a`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list
        .char_indices()
        .scan(0i32, |depth, (i, c)| {
            match c {
                '[' => *depth += 1,
                ']' => *depth -= 1,
                _ => {}
            }
            Some((i, c, *depth))
        })
        .find(|(_, c, d)| *c == ',' && *d == 0)
        .map_or(list.len(), |(i, _, _)| i);
    let first = &list[..end];
    let host = match first.split_once('[') {
        None => first.to_string(),
        Some((prefix, rest)) => {
            let range = rest.trim_end_matches(']');
            let first_item = range.split(',').next()?;
            let lo = first_item.split('-').next()?;
            format!("{prefix}{lo}")
        }
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>, DistError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables_make_a_launch() {
        let l = launch(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.2"),
            ("MASTER_PORT", "29600"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                l.rank,
                l.world,
                l.local_rank,
                l.master_addr.as_str(),
                l.master_port
            ),
            (1, 4, 1, "10.0.0.2", 29600)
        );
        assert_eq!(l.launcher, Launcher::Torchrun);
        assert!(!l.agent_store);
        let l = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert!(l.agent_store, "rank 0 joins torchrun's agent store");
        assert_eq!(l.attempt, 2);
    }

    #[test]
    fn slurm_variables_take_the_first_node_as_master() {
        let l = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODELIST", "gpu[03-04,07]"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world, l.local_rank), (5, 8, 1));
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("gpu03", DEFAULT_PORT)
        );
        assert_eq!(l.launcher, Launcher::Slurm);
    }

    #[test]
    fn one_process_is_not_a_group() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None);
        assert_eq!(
            launch(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "1"),
                ("SLURM_STEP_NUM_TASKS", "1")
            ])
            .unwrap(),
            None
        );
        // An sbatch script's own shell (`#SBATCH --ntasks=4`, no srun): one process, not
        // rank 0 of 4 waiting for three ranks that never come.
        assert_eq!(
            launch(&[
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "4"),
                ("SLURM_NODELIST", "gpu[01-02]")
            ])
            .unwrap(),
            None
        );
    }

    #[test]
    fn incomplete_or_malformed_environments_are_named() {
        let e = launch(&[("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(e.contains("WORLD_SIZE=2 is set but RANK is not"), "{e}");
        let e = launch(&[("RANK", "1")]).unwrap_err().to_string();
        assert!(e.contains("WORLD_SIZE is not"), "{e}");
        let e = launch(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside a world of 2"), "{e}");
        let e = launch(&[("RANK", "x"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("RANK=\"x\""), "{e}");
        let e = launch(&[("RANK", "0"), ("WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no MASTER_ADDR"), "{e}");
        let e = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("MASTER_PORT=\"0\""), "{e}");
    }

    #[test]
    fn slurm_node_lists() {
        assert_eq!(first_host("node1").as_deref(), Some("node1"));
        assert_eq!(first_host("a,b").as_deref(), Some("a"));
        assert_eq!(first_host("gpu[3,5]").as_deref(), Some("gpu3"));
        assert_eq!(first_host("gpu[10-12],cpu[1-2]").as_deref(), Some("gpu10"));
        assert_eq!(first_host("").as_deref(), None);
    }
}
