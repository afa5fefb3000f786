//! The ranks of a multi-process run (torchrun, `srun`, `train fit --nproc N`): joining
//! libtorch's c10d group, and the few agreements `train fit` needs beyond the gradient
//! all-reduce of [`crate::run::trainer::Trainer::sync_gradients`]: the same settings on every
//! rank, rank 0's weights everywhere, sums of metrics.

use std::sync::Arc;
use std::time::Duration;

use mvdrive_dist::{Backend, Launch, ProcessGroup};
use tch::nn::VarStore;
use tch::{Device, Tensor};

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

/// The first `section.key` whose value differs between two resolved configurations (the
/// YAML of [`crate::config::TrainConfig::to_yaml`]): (key, value in `a`, value in `b`).
pub fn first_difference(a: &str, b: &str) -> Option<(String, String, String)> {
    let entries = |y: &str| -> Vec<(String, String)> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in y.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                section = line.trim_end_matches(':').to_string();
            } else if let Some((k, v)) = line.trim().split_once(':') {
                out.push((
                    format!("{section}.{k}"),
                    v.trim().trim_matches('"').to_string(),
                ));
            }
        }
        out
    };
    let (ea, eb) = (entries(a), entries(b));
    for (x, y) in ea.iter().zip(&eb) {
        if x != y {
            let key = if x.0 == y.0 {
                x.0.clone()
            } else {
                x.0.clone().min(y.0.clone())
            };
            return Some((key, x.1.clone(), y.1.clone()));
        }
    }
    match ea.len().cmp(&eb.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some((
            ea[eb.len()].0.clone(),
            ea[eb.len()].1.clone(),
            "(unknown key)".into(),
        )),
        std::cmp::Ordering::Less => Some((
            eb[ea.len()].0.clone(),
            "(unknown key)".into(),
            eb[ea.len()].1.clone(),
        )),
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
