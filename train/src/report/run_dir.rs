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
        // `create_dir` fails on an existing folder: two runs started at once never share
        // a version (each takes the first one it creates).
        let mut n = 0;
        let dir = loop {
            let dir = exp_dir.join(format!("version_{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e).at(&dir),
            }
        };
        let run = RunDir { dir };
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

    /// Removes the run folder of a run that failed before it wrote a checkpoint, so no
    /// empty `version_N/` is left behind; a run with checkpoints is kept.
    pub fn remove_if_no_checkpoint(&self) {
        let has_ckpt = std::fs::read_dir(self.checkpoints())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !has_ckpt {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A file of the run folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_started_together_take_different_versions() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let log_dir = log_dir.clone();
                std::thread::spawn(move || RunDir::create(&log_dir, "exp", "x: 1\n").unwrap().dir)
            })
            .collect();
        let mut dirs: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 8, "two runs shared a version folder");
        let failed = RunDir::create(&log_dir, "exp", "x: 1\n").unwrap();
        assert!(failed.dir.ends_with("version_8"));
        failed.remove_if_no_checkpoint();
        assert!(!failed.dir.exists());
    }
}
