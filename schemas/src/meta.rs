//! `meta.json`: the commit point of a cache.
//!
//! `prep build` writes it last, after every shard and index table is in place, and it lists
//! the checksum of each index table. A cache without `meta.json`, or whose index tables do
//! not match it, is not a cache.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{io, Error, Result};
use crate::{FORMAT_VERSION, META_FILE};

/// Every parameter `prep build` used. Two builds with equal parameters and sources produce
/// the same records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepParams {
    /// `prep.fps`: timeline rate, a number or `source` (each session's first view's rate).
    pub fps: String,
    /// `data.img_size` height in pixels.
    pub img_height: u32,
    /// `data.img_size` width in pixels.
    pub img_width: u32,
    /// `prep.resize`: `stretch`, `letterbox` or `center_crop`.
    pub resize: String,
    /// `prep.scaler`: `bilinear`, `bicubic` or `area` (swscale flags).
    pub scaler: String,
    /// `prep.compress`: `none`, `zstd:N` or `jpeg:Q`.
    pub compress: String,
    /// `data.max_video_frames`: timeline frames per record at most.
    pub max_video_frames: u32,
    /// `prep.shard_size`: shard size cap in bytes (a single larger record gets its own shard).
    pub shard_size: u64,
    /// `prep.kpt_normalize`: `none`, `image` or `center_scale`.
    pub kpt_normalize: String,
}

/// Identity of a source video at the time it was cached (for incremental re-runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Session id.
    pub session: String,
    /// View name.
    pub view: String,
    /// Path as written in the manifest (relative to the data root).
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

/// One index table and its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Path relative to the cache root, e.g. `index/records.parquet`.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// XXH3-64 of the file, 16 hex digits.
    pub xxh3: String,
}

/// A (session, view) that `prep build` could not decode and left out of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Session id (the whole session is left out: its views must line up).
    pub session: String,
    /// The view that failed.
    pub view: String,
    /// One-line reason.
    pub reason: String,
}

/// Totals, for people and for `prep inspect`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Sessions in the index.
    pub sessions: u64,
    /// (session, view) pairs in the index.
    pub views: u64,
    /// Records (chunks) of RGB frames.
    pub records: u64,
    /// Timeline frames summed over sessions (each is stored once per view).
    pub timeline_frames: u64,
    /// Bytes of RGB records (without page padding).
    pub rgb_bytes: u64,
    /// Bytes of keypoint records.
    pub kpt_bytes: u64,
    /// Segments in the index.
    pub segments: u64,
}

impl Totals {
    /// Totals of an index.
    pub fn compute(
        sessions: &[crate::index::SessionRow],
        views: &[crate::index::ViewRow],
        records: &[crate::index::RecordRow],
        segments: &[crate::index::SegmentRow],
    ) -> Totals {
        let bytes = |m: &str| {
            records
                .iter()
                .filter(|r| r.modality == m)
                .map(|r| r.length)
                .sum()
        };
        Totals {
            sessions: sessions.len() as u64,
            views: views.len() as u64,
            records: records.len() as u64,
            timeline_frames: sessions.iter().map(|s| s.timeline_frames).sum(),
            rgb_bytes: bytes("rgb"),
            kpt_bytes: bytes("kpt"),
            segments: segments.len() as u64,
        }
    }
}

/// The content of `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Writer name and version, e.g. `mvdrive-prep 0.1.0`.
    pub created_by: String,
    /// Seconds since the Unix epoch when the index was committed.
    pub created_unix: u64,
    /// Every prep parameter.
    pub params: PrepParams,
    /// View names, in manifest order (every session has all of them).
    pub views: Vec<String>,
    /// Source file identities.
    pub sources: Vec<SourceFile>,
    /// The index tables and their checksums.
    pub index_files: Vec<IndexFile>,
    /// Sessions left out because a view failed to decode.
    pub skipped: Vec<Skipped>,
    /// Totals.
    pub totals: Totals,
    /// `Some((k, n))` for a partial cache built with `--part k/n` (0-based k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(u32, u32)>,
    /// For a merged cache: the partial caches it references, relative to its root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// True when some sessions lack some of `views` (built with `--allow-missing-views`):
    /// each session has the views its `views` table rows name, at least one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial_views: bool,
}

impl Meta {
    /// Read and check `CACHE/meta.json`.
    pub fn load(cache_dir: &Path) -> Result<Meta> {
        let path = cache_dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::format(
                    &path,
                    "not found: this folder is not an mvdrive cache (or its build never \
                     finished); run `prep build` to create it",
                )
            } else {
                io(&path)(e)
            }
        })?;
        let meta: Meta = serde_json::from_str(&text).map_err(|cause| Error::Json {
            path: path.clone(),
            cause,
        })?;
        // Version 1 named its index tables `index/<table>.parquet`; version 2 names them
        // by content. Both list them in `index_files`, which readers follow. Version 3
        // adds frame checksums, which each record row says it has (`frame_xxh3`).
        if !(1..=FORMAT_VERSION).contains(&meta.format_version) {
            return Err(Error::format(
                &path,
                format!(
                    "format version {} but this mvdrive reads versions 1 to {FORMAT_VERSION}; \
                     rebuild the cache with this version's `prep build`",
                    meta.format_version
                ),
            ));
        }
        Ok(meta)
    }

    /// Serialize as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
