//! `train`: a lean libtorch (tch) trainer that streams mvdrive caches.
//!
//! The modules are rooms that follow the data flow of a training run:
//!
//! - [`error`]: the one error type, [`error::TrainError`];
//! - [`config`]: the key table and the one typed [`config::TrainConfig`];
//! - [`data`]: cache records -> `u8` batches ([`data::loader`]), which clips
//!   ([`data::sampler`]), batches -> tensors on the device ([`data::input`]);
//! - [`model`]: the multi-view model, fusion, and one file per backbone;
//! - [`optim`]: AdamW and its schedule, loss scaling, precision, recompute (checkpointing);
//! - [`run`]: the session shared by every command, one training step, `fit`, `eval`,
//!   resume checks, checkpoint files;
//! - [`measure`]: probe, plan, bench-memory, bench-loader, CUDA memory;
//! - [`report`]: metrics, plots, the run folder.

pub mod config;
pub mod data;
pub mod error;
pub mod measure;
pub mod model;
pub mod optim;
pub mod report;
pub mod run;
