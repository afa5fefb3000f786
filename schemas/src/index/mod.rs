//! The Parquet tables under `index/`: sessions, views, records, segments and labels.
//!
//! They are plain Parquet files (zstd-compressed, one row group per table) that pandas,
//! polars, duckdb or pyarrow read directly. Column meanings are documented in
//! `schemas/FORMAT.md`; the Rust row types here mirror them one field per column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::Schema;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{io, Error, Result};

/// A row type stored as one Parquet table.
pub trait Table: Sized {
    /// File name under `index/`, e.g. `records.parquet`.
    const FILE: &'static str;
    /// The Arrow schema of the table.
    fn schema() -> Schema;
    /// Column arrays for `rows`, in schema order.
    fn columns(rows: &[Self]) -> Vec<ArrayRef>;
    /// Rows of one record batch.
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>>;
}

/// One recording session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Session id from the manifest.
    pub session: String,
    /// Subject (driver) id.
    pub subject: String,
    /// Split from the manifest, if given.
    pub split: Option<String>,
    /// Timeline rate in frames per second.
    pub fps: f64,
    /// Session time (seconds) of timeline frame 0. Timeline frame `i` sits at
    /// `timeline_start_s + i / fps`.
    pub timeline_start_s: f64,
    /// Number of timeline frames; every view has every one of them.
    pub timeline_frames: u64,
    /// Cross-validation fold from the manifest's `fold` column (see `prep split`).
    pub fold: Option<u32>,
}

/// One (session, view): where it came from and how it decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ViewRow {
    /// Session id.
    pub session: String,
    /// View name.
    pub view: String,
    /// Video path relative to the data root.
    pub video: String,
    /// Session time of the view's first frame.
    pub offset_s: f64,
    /// Source width in pixels.
    pub src_width: u32,
    /// Source height in pixels.
    pub src_height: u32,
    /// Source average frame rate.
    pub src_fps: f64,
    /// Source duration in seconds.
    pub src_duration_s: f64,
    /// Codec name, e.g. `h264`.
    pub codec: String,
    /// Frames the decoder produced.
    pub decoded_frames: u64,
    /// Keypoint file relative to the data root, if the view has keypoints.
    pub keypoints: Option<String>,
    /// Joint layout of the keypoints (see `layout.rs`), if any.
    pub keypoint_layout: Option<String>,
    /// Timeline frames whose keypoints are valid (mask = 1).
    pub kpt_valid_frames: u64,
}

/// One record: a contiguous, page-aligned run of frames of one (session, view, chunk).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordRow {
    /// Session id.
    pub session: String,
    /// View name.
    pub view: String,
    /// `rgb` or `kpt`.
    pub modality: String,
    /// Chunk number: the record holds timeline frames
    /// `[chunk * max_video_frames, chunk * max_video_frames + frame_count)`.
    pub chunk: u32,
    /// Shard file, relative to the cache root.
    pub shard: String,
    /// Byte offset of the record in the shard (a multiple of 4096).
    pub offset: u64,
    /// Byte length of the record.
    pub length: u64,
    /// First timeline frame in the record.
    pub frame_start: u64,
    /// Number of frames in the record.
    pub frame_count: u32,
    /// `rgb`: frame height. `kpt`: joints K.
    pub height: u32,
    /// `rgb`: frame width. `kpt`: values per joint C (3: x, y, conf; 4: x, y, z, conf).
    pub width: u32,
    /// `rgb`: bytes per pixel (3). `kpt`: 4 (bytes per f32 value).
    pub channels: u32,
    /// `none` or `zstd` (see FORMAT.md for the zstd record layout).
    pub compression: String,
    /// XXH3-64 of the record's `length` bytes.
    pub xxh3: u64,
    /// The record ends with a table of one checksum per frame (format 3; see
    /// [`crate::record`]), which every read checks. `false` for records of format 1 and 2
    /// caches, which only `prep verify` checks (whole records).
    pub frame_xxh3: bool,
}

impl RecordRow {
    /// Bytes of one frame of this record, uncompressed: `height * width * channels` for
    /// `rgb`; for `kpt`, `(joints * values + 1) * 4`: the f32 values, then a f32 validity
    /// flag (1.0 valid, 0.0 masked).
    pub fn frame_bytes(&self) -> usize {
        let (h, w, c) = (
            self.height as usize,
            self.width as usize,
            self.channels as usize,
        );
        // Saturating: a damaged index gives an impossible size, which readers refuse
        // (`record::check_frame_bytes`), never a wrapped small one.
        if self.modality == "kpt" {
            h.saturating_mul(w).saturating_add(1).saturating_mul(c)
        } else {
            h.saturating_mul(w).saturating_mul(c)
        }
    }
}

/// One labelled segment, mapped onto the session timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    /// Row number in this table (stable id).
    pub segment_id: u64,
    /// Session id.
    pub session: String,
    /// Label text.
    pub label: String,
    /// Index into the labels table.
    pub label_id: u32,
    /// Start, seconds on the session timeline.
    pub start_s: f64,
    /// End (exclusive), seconds on the session timeline.
    pub end_s: f64,
    /// First timeline frame inside the segment.
    pub frame_start: u64,
    /// One past the last timeline frame inside the segment.
    pub frame_end: u64,
    /// Split from the segments file or, failing that, the session's.
    pub split: Option<String>,
    /// Line number in the segments file (1 = header), for error messages.
    pub source_row: u64,
}

/// One class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRow {
    /// Class index used by the trainer.
    pub label_id: u32,
    /// Label text.
    pub label: String,
    /// Number of segments with this label.
    pub segments: u64,
}

mod columns;

/// Write `rows` as a zstd-compressed Parquet file at `path` (the caller picks a temporary
/// name and renames; see `prep`'s commit protocol), and fsync it.
pub fn write_table<T: Table>(path: &Path, rows: &[T]) -> Result<()> {
    let schema = Arc::new(T::schema());
    let batch =
        RecordBatch::try_new(schema.clone(), T::columns(rows)).map_err(|cause| Error::Arrow {
            path: path.to_path_buf(),
            cause,
        })?;
    let file = File::create(path).map_err(io(path))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let pq = |cause| Error::Parquet {
        path: path.to_path_buf(),
        cause,
    };
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(pq)?;
    w.write(&batch).map_err(pq)?;
    let file = w.into_inner().map_err(pq)?;
    file.sync_all().map_err(io(path))?;
    Ok(())
}

/// Read every row of a table written by [`write_table`].
pub fn read_table<T: Table>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).map_err(io(path))?;
    let pq = |cause| Error::Parquet {
        path: path.to_path_buf(),
        cause,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    // Check columns up front so that an empty table of the wrong kind is caught too.
    for f in T::schema().fields() {
        if builder.schema().field_with_name(f.name()).is_err() {
            return Err(Error::format(
                path,
                format!("missing column `{}`; rebuild the cache", f.name()),
            ));
        }
    }
    let reader = builder.build().map_err(pq)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|cause| Error::Arrow {
            path: path.to_path_buf(),
            cause,
        })?;
        rows.extend(T::from_batch(&batch, path)?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RecordRow::FILE);
        let rows = vec![RecordRow {
            session: "s1".into(),
            view: "front".into(),
            modality: "rgb".into(),
            chunk: 2,
            shard: "shards/s1/front/rgb-0-00000.shard".into(),
            offset: 8192,
            length: 12345,
            frame_start: 128,
            frame_count: 7,
            height: 112,
            width: 96,
            channels: 3,
            compression: "zstd".into(),
            xxh3: u64::MAX - 3,
            frame_xxh3: true,
        }];
        write_table(&path, &rows).unwrap();
        assert_eq!(read_table::<RecordRow>(&path).unwrap(), rows);
    }

    #[test]
    fn nullable_split_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SessionRow::FILE);
        let row = |s: &str, split: Option<&str>| SessionRow {
            session: s.into(),
            subject: "p1".into(),
            split: split.map(String::from),
            fps: 7.5,
            timeline_start_s: 0.25,
            timeline_frames: 99,
            fold: split.map(|_| 2),
        };
        let rows = vec![row("a", Some("train")), row("b", None)];
        write_table(&path, &rows).unwrap();
        assert_eq!(read_table::<SessionRow>(&path).unwrap(), rows);
    }

    #[test]
    fn a_missing_column_names_the_file_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels.parquet");
        // A sessions table where a labels table is expected.
        write_table(&path, &Vec::<SessionRow>::new()).unwrap();
        let err = read_table::<LabelRow>(&path).unwrap_err().to_string();
        assert!(
            err.contains("labels.parquet") && err.contains("label_id"),
            "{err}"
        );
    }
}
