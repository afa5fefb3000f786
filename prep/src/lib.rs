//! `prep`: turn multi-view driver recordings into an mvdrive cache.
//!
//! The pipeline, one module per step: [`manifest`] and [`segments`] (read and validate
//! inputs, through [`table`]) -> [`video`] (probe, decode) -> [`timeline`] (put every view on one session
//! clock) -> [`resize`] (fit frames to `data.img_size`) -> [`job`] (chunk into
//! page-aligned records in shards) -> [`pipeline`] (run jobs in parallel, commit the
//! index). The cache format itself lives in `mvdrive-schemas`.

pub mod config;
pub mod encode;
pub mod error;
pub mod export;
pub mod import;
pub mod inspect;
pub mod job;
pub mod keypoints;
pub mod manifest;
pub mod merge;
pub mod pipeline;
pub mod resize;
pub mod segments;
pub mod split;
mod sweep;
pub mod synth;
pub mod table;
pub mod timeline;
pub mod video;

pub use error::PrepError;
