//! The one error type of the `train` library. Every message is written for the user: it
//! names the key, file or checkpoint involved and what to do. The binary adds context with
//! `anyhow`.

use std::path::{Path, PathBuf};

use crate::config::choice::ChoiceError;
use crate::config::ConfigError;
use crate::model::ModelError;

/// What went wrong in a training command.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting, or a combination of settings.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A choice that is not one of a setting's words.
    #[error(transparent)]
    Choice(#[from] ChoiceError),
    /// The model's configuration or input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The cache (opening, index, verification).
    #[error(transparent)]
    Cache(#[from] mvdrive_schemas::Error),
    /// Metrics or metrics.csv.
    #[error(transparent)]
    Metrics(#[from] crate::report::metrics::MetricsError),
    /// A plot.
    #[error(transparent)]
    Plot(#[from] crate::report::plot::PlotError),
    /// Writing JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A multi-process run's rendezvous or collective (c10d).
    #[error(transparent)]
    Dist(#[from] mvdrive_dist::DistError),
    /// libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// Reading or writing a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else the user can act on, in words.
    #[error("{0}")]
    Other(String),
}

impl From<String> for TrainError {
    fn from(s: String) -> Self {
        TrainError::Other(s)
    }
}

impl From<&str> for TrainError {
    fn from(s: &str) -> Self {
        TrainError::Other(s.to_string())
    }
}

/// Attaches a path to an I/O error: `fs::write(&p, b).at(&p)?`.
pub trait IoAt<T> {
    /// The error, naming `path`.
    fn at(self, path: &Path) -> Result<T, TrainError>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, TrainError> {
        self.map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The result of a training command.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
