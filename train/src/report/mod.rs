//! What a run leaves behind: [`metrics`] (confusion matrix, epoch rows, metrics.csv),
//! [`plot`] (metrics.png, confusion.png), [`run_dir`] (the `version_N` folder).

pub mod metrics;
pub mod plot;
pub mod run_dir;
