//! Errors of the cache format library. Every variant names the file it is about.

use std::path::PathBuf;

/// An error reading or writing part of a cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not chained: printed once).
        cause: std::io::Error,
    },
    /// A Parquet error on an index table.
    #[error("{}: parquet: {cause}", path.display())]
    Parquet {
        /// The table file.
        path: PathBuf,
        /// The underlying error (in the message, not chained: printed once).
        cause: parquet::errors::ParquetError,
    },
    /// An Arrow error while building or reading a table.
    #[error("{}: arrow: {cause}", path.display())]
    Arrow {
        /// The table file.
        path: PathBuf,
        /// The underlying error (in the message, not chained: printed once).
        cause: arrow_schema::ArrowError,
    },
    /// `meta.json` (or another JSON file) could not be parsed.
    #[error("{}: invalid JSON: {cause}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error (in the message, not chained: printed once).
        cause: serde_json::Error,
    },
    /// The file is readable but does not follow the format.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where possible, what to do.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Attach a path to an `io::Error`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |cause| Error::Io { path, cause }
}
