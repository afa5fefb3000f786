//! The mvdrive cache format: the contract between `prep` (writer) and `train` (reader).
//!
//! The authoritative description of the on-disk layout is `schemas/FORMAT.md`; this crate
//! is its Rust implementation:
//!
//! - [`meta`]: `meta.json`, the commit point of a cache (format version, every prep
//!   parameter, source file identities, checksums of the index files);
//! - [`index`]: the Parquet tables under `index/` (sessions, views, records, segments, labels);
//! - [`shard`]: page-aligned records inside shard files, written by [`shard::ShardWriter`]
//!   and read as zero-copy frame slices by [`shard::RecordView`];
//! - [`record`]: the inside of a record (the zstd frame table, keypoint frames) and
//!   [`record::read_frame_into`], the positioned-read frame reader;
//! - [`cache`]: [`cache::Cache`], an opened cache with memory-mapped shards;
//! - [`commit`]: the cache lock and the crash-safe commit of the index (`meta.json` last);
//! - [`verify`]: full consistency and checksum verification;
//! - [`layout`]: keypoint joint layouts; [`settings`]: YAML settings shared by prep and train.
//!
//! No ffmpeg and no torch in here, so every tool can read a cache cheaply.

pub mod cache;
pub mod checksum;
pub mod codec;
pub mod commit;
pub mod error;
pub mod index;
pub mod jpeg;
pub mod layout;
pub mod meta;
pub mod record;
pub mod settings;
pub mod shard;
pub mod verify;

pub use cache::Cache;
pub use error::{Error, Result};

/// Version of the on-disk format written into `meta.json` (3: frame checksums). Readers
/// read 1 to this one and refuse others.
pub const FORMAT_VERSION: u32 = 3;

/// Every record starts at a multiple of this many bytes inside its shard, so a record can
/// be memory-mapped (and handed to numpy / torch) on its own.
pub const PAGE_SIZE: u64 = 4096;

/// File name of the cache's commit point.
pub const META_FILE: &str = "meta.json";

/// Folder (inside the cache) holding the Parquet index tables.
pub const INDEX_DIR: &str = "index";

/// Round `n` up to the next multiple of [`PAGE_SIZE`].
pub fn page_align(n: u64) -> u64 {
    n.div_ceil(PAGE_SIZE) * PAGE_SIZE
}
