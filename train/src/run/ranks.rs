//! The ranks of a multi-process run (torchrun, `srun`, `train fit --nproc N`): joining
//! libtorch's c10d group, and the few agreements `train fit` needs beyond the gradient
//! all-reduce of [`crate::run::trainer::Trainer::sync_gradients`]: the same settings on every
//! rank, rank 0's weights everywhere, sums of metrics.

use std::sync::Arc;
use std::time::Duration;

use mvdrive_dist::{Backend, Launch, ProcessGroup};
use tch::nn::VarStore;
use tch::{Device, Tensor};

use crate::config::{Settings, KEYS};
use crate::error::Result;
use crate::report::metrics::ConfusionMatrix;
use crate::run::eval::Evaluation;

/// This process's place in the run: alone, or one rank of a c10d group.
#[derive(Debug, Clone, Default)]
pub struct Ranks {
    group: Option<Arc<ProcessGroup>>,
}

impl Ranks {
    /// A single process.
    pub fn single() -> Ranks {
        Ranks::default()
    }

    /// Joins the group `launch` describes (gloo on CPU, NCCL on CUDA), or stays single
    /// without one. The rendezvous and every collective give up after `timeout_s`.
    pub fn join(launch: Option<Launch>, device: Device, timeout_s: u64) -> Result<Ranks> {
        let Some(launch) = launch else {
            return Ok(Ranks::single());
        };
        let backend = match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        };
        let pg = ProcessGroup::connect(&launch, backend, Duration::from_secs(timeout_s))?;
        Ok(Ranks {
            group: Some(Arc::new(pg)),
        })
    }

    /// The c10d group, when there is one.
    pub fn group(&self) -> Option<&Arc<ProcessGroup>> {
        self.group.as_ref()
    }

    /// This process's rank (0 alone).
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    /// Number of ranks (1 alone).
    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world())
    }

    /// Rank 0: the one that writes logs, plots and checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Errors on every rank unless all ranks were started with rank 0's settings (`yaml`,
    /// [`crate::config::TrainConfig::to_yaml`]), naming the first key that differs.
    pub fn check_same_settings(&self, yaml: &str) -> Result<()> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let main = String::from_utf8_lossy(&g.broadcast_bytes(yaml.as_bytes(), 0)?).into_owned();
        let differs = first_difference(&main, yaml);
        let count = Tensor::from_slice(&[differs.is_some() as i64]);
        g.all_reduce_sum_(std::slice::from_ref(&count))?;
        let n = count.int64_value(&[0]);
        match differs {
            Some((key, theirs, ours)) => Err(format!(
                "rank {} was started with {key}={ours}, rank 0 with {key}={theirs}: every rank must get the same --config and key=value settings",
                g.rank()
            )
            .into()),
            None if n > 0 => Err(format!(
                "{n} rank(s) were started with settings different from rank 0's (their errors name the key): every rank must get the same --config and key=value settings"
            )
            .into()),
            None => Ok(()),
        }
    }

    /// Copies rank 0's variables (weights and buffers) to every rank.
    pub fn broadcast_model(&self, vs: &VarStore) -> Result<()> {
        if let Some(g) = &self.group {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            let ts: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
            g.broadcast_(&ts, 0)?;
        }
        Ok(())
    }

    /// Sums `values` across ranks, in place.
    pub fn sum(&self, values: &mut [f64]) -> Result<()> {
        if let Some(g) = &self.group {
            let t = Tensor::from_slice(values);
            g.all_reduce_sum_(std::slice::from_ref(&t))?;
            values.copy_from_slice(&Vec::<f64>::try_from(&t)?);
        }
        Ok(())
    }

    /// Each rank evaluated its share of the validation segments: their confusion matrices
    /// and loss sums, added up (the same on every rank). Returns the matrix and mean loss.
    pub fn sum_evaluation(&self, ev: &Evaluation) -> Result<(ConfusionMatrix, f64)> {
        let n = ev.predictions.len() as f64;
        let mut sums: Vec<f64> = ev.confusion.counts().iter().map(|&c| c as f64).collect();
        sums.extend([ev.loss * n, n]);
        self.sum(&mut sums)?;
        let classes = ev.confusion.num_classes();
        let mut cm = ConfusionMatrix::new(classes);
        for (i, &c) in sums.iter().take(classes * classes).enumerate() {
            cm.add_n(i / classes, i % classes, c.round() as u64)
                .map_err(|e| e.to_string())?;
        }
        let cells = classes * classes;
        Ok((cm, sums[cells] / sums[cells + 1].max(1.0)))
    }

    /// Rank 0's `text` on every rank.
    pub fn broadcast_text(&self, text: &str) -> Result<String> {
        match &self.group {
            Some(g) => {
                Ok(String::from_utf8_lossy(&g.broadcast_bytes(text.as_bytes(), 0)?).into_owned())
            }
            None => Ok(text.to_string()),
        }
    }

    /// Waits for every rank (the end of a run: rank 0's store must outlive the others' use).
    pub fn barrier(&self) -> Result<()> {
        if let Some(g) = &self.group {
            g.barrier()?;
        }
        Ok(())
    }
}

/// Refuses to run `command` as one of several ranks: only `train fit` is distributed, and
/// every rank of `train eval` or `train predict` would write the same files. A launch of
/// one process (or none) passes.
pub fn single_process(command: &str) -> Result<()> {
    // Where rank 0 listens does not matter here: a missing MASTER_ADDR is no reason to refuse,
    // and neither is a half-set launch environment (a stray RANK): that is `train fit`'s error.
    let launch = Launch::from_vars(|k| {
        std::env::var(k)
            .ok()
            .or_else(|| (k == "MASTER_ADDR").then(|| "127.0.0.1".into()))
    });
    match launch {
        Ok(Some(l)) if l.world > 1 => Err(format!(
            "`train {command}` runs in one process, but this is rank {} of {} (RANK/WORLD_SIZE or SLURM_PROCID/SLURM_STEP_NUM_TASKS are set): only `train fit` is distributed; run `train {command}` without torchrun or srun, or with one task",
            l.rank, l.world
        )
        .into()),
        _ => Ok(()),
    }
}

/// The first key (in `train keys` order) whose value differs between two resolved
/// configurations (the YAML of [`crate::config::TrainConfig::to_yaml`]), read back through
/// [`Settings`]: (key, value in `a`, value in `b`).
pub fn first_difference(a: &str, b: &str) -> Option<(String, String, String)> {
    let read = |y: &str| {
        let mut s = Settings::default();
        s.apply_yaml(y).map(|_| s)
    };
    match (read(a), read(b)) {
        (Ok(x), Ok(y)) => KEYS
            .iter()
            .map(|k| k.name)
            .find(|k| x.raw(k) != y.raw(k))
            .map(|k| (k.to_string(), x.raw(k).to_string(), y.raw(k).to_string())),
        // Another mvdrive version's settings (an unknown key): name the whole file.
        _ => (a != b).then(|| {
            let what = |r: &Result<Settings, _>| match r {
                Ok(_) => "readable settings".to_string(),
                Err(e) => format!("settings this version cannot read ({e})"),
            };
            ("the settings".to_string(), what(&read(a)), what(&read(b)))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    #[test]
    fn the_first_differing_key_is_named() {
        let a = TrainConfig::load(None, &["train.lr=0.001".into()])
            .unwrap()
            .to_yaml();
        let b = TrainConfig::load(None, &["train.lr=0.002".into(), "data.batch_size=3".into()])
            .unwrap()
            .to_yaml();
        assert_eq!(first_difference(&a, &a), None);
        let (key, x, y) = first_difference(&a, &b).unwrap();
        // data.* comes before train.* in the resolved file.
        assert_eq!(key, "data.batch_size");
        assert_ne!(x, y);
        assert_eq!(y, "3");
    }
}
