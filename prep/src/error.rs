//! Errors of `prep`, each phrased for the user: what is wrong, where, and what to do.

use std::path::PathBuf;

/// A failed `prep` command.
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    /// The inputs are invalid; one line per problem. Nothing was written.
    #[error("{}\n{} problem(s) in the inputs; nothing was written", .0.join("\n"), .0.len())]
    Invalid(Vec<String>),
    /// A configuration key or value is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The cache is unreadable or inconsistent.
    #[error(transparent)]
    Cache(#[from] mvdrive_schemas::Error),
    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (in the message; not chained, so it is printed once).
        cause: std::io::Error,
    },
    /// Anything else, already phrased.
    #[error("{0}")]
    Other(String),
}

/// Attach a path to an `io::Error`.
pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PrepError {
    let path = path.into();
    move |cause| PrepError::Io { path, cause }
}
