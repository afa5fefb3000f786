//! `train`: a lean libtorch (tch) trainer that streams mvdrive caches.
//!
//! Modules are the nouns of training: [`backbone`] (per-view video networks), [`model`]
//! (multi-view fusion and heads), [`plot`] (metrics and confusion plots).

pub mod backbone;
pub mod bench;
pub mod bench_memory;
pub mod checkpoint;
pub mod config;
pub mod cuda_mem;
pub mod fit;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plan;
pub mod plot;
pub mod precision;
pub mod probe;
pub mod recompute;
pub mod sampler;
pub mod scaler;
pub mod step;
