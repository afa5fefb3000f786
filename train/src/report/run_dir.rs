//! The run folder: `<trainer.log_dir>/<trainer.experiment>/version_N`, with the resolved
//! `config.yaml`, `metrics.csv`/`metrics.png`, `confusion.csv`/`confusion.png` and
//! `checkpoints/`. Each run gets the next free `version_N`, so no run overwrites another.

use std::path::{Path, PathBuf};

use crate::error::{IoAt, Result};

/// A run's folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// `.../version_N`.
    pub dir: PathBuf,
}

impl RunDir {
    /// Creates the next `version_N` under `log_dir/experiment`, with `checkpoints/` and the
    /// resolved configuration.
    pub fn create(log_dir: &Path, experiment: &str, config_yaml: &str) -> Result<RunDir> {
        let exp_dir = log_dir.join(experiment);
        std::fs::create_dir_all(&exp_dir).at(&exp_dir)?;
        let mut n = 0;
        while exp_dir.join(format!("version_{n}")).exists() {
            n += 1;
        }
        let run = RunDir {
            dir: exp_dir.join(format!("version_{n}")),
        };
        let ckpt = run.checkpoints();
        std::fs::create_dir_all(&ckpt).at(&ckpt)?;
        let cfg = run.dir.join("config.yaml");
        std::fs::write(&cfg, config_yaml).at(&cfg)?;
        Ok(run)
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// A file of the run folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
