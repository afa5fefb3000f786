//! Helpers shared by `prep` and `train` that are not the cache format (that is
//! `mvdrive-schemas`):
//!
//! - [`rng`]: a seedable SplitMix64 generator;
//! - [`sys`]: process memory figures;
//! - [`bytes`]: the one byte-size parser and formatter (binary units: `1G` = `1GiB` = 2^30);
//! - [`progress`]: the one progress-bar style.

pub mod bytes;
pub mod progress;
pub mod rng;
pub mod sys;
