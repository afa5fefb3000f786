//! The Parquet tables under `index/`: sessions, views, records, segments and labels.
//!
//! They are plain Parquet files (zstd-compressed, one row group per table) that pandas,
//! polars, duckdb or pyarrow read directly. Column meanings are documented in
//! `schemas/FORMAT.md`; the Rust row types here mirror them one field per column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};
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

fn field(name: &str, dt: DataType, nullable: bool) -> Field {
    Field::new(name, dt, nullable)
}

fn strs<T>(rows: &[T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn opt_strs<T>(rows: &[T], f: impl Fn(&T) -> Option<&str>) -> ArrayRef {
    Arc::new(rows.iter().map(f).collect::<StringArray>())
}

fn u64s<T>(rows: &[T], f: impl Fn(&T) -> u64) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
}

fn u32s<T>(rows: &[T], f: impl Fn(&T) -> u32) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
}

fn f64s<T>(rows: &[T], f: impl Fn(&T) -> f64) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
}

/// Typed access to the columns of one batch, with errors that name the file and column.
struct Cols<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Cols<'a> {
    fn get<A: Array + 'static>(&self, name: &str) -> Result<&'a A> {
        let col = self.batch.column_by_name(name).ok_or_else(|| {
            Error::format(
                self.path,
                format!("missing column `{name}`; rebuild the cache"),
            )
        })?;
        col.as_any().downcast_ref::<A>().ok_or_else(|| {
            Error::format(
                self.path,
                format!("column `{name}` has type {}", col.data_type()),
            )
        })
    }
    fn str(&self, name: &str) -> Result<Vec<String>> {
        let a = self.get::<StringArray>(name)?;
        Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
    }
    fn opt_str(&self, name: &str) -> Result<Vec<Option<String>>> {
        let a = self.get::<StringArray>(name)?;
        Ok((0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
            .collect())
    }
    fn u64(&self, name: &str) -> Result<Vec<u64>> {
        Ok(self.get::<UInt64Array>(name)?.values().to_vec())
    }
    fn opt_u32(&self, name: &str) -> Result<Vec<Option<u32>>> {
        let a = self.get::<UInt32Array>(name)?;
        Ok((0..a.len())
            .map(|i| (!a.is_null(i)).then(|| a.value(i)))
            .collect())
    }
    fn u32(&self, name: &str) -> Result<Vec<u32>> {
        Ok(self.get::<UInt32Array>(name)?.values().to_vec())
    }
    fn f64(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self.get::<Float64Array>(name)?.values().to_vec())
    }
}

impl Table for SessionRow {
    const FILE: &'static str = "sessions.parquet";
    fn schema() -> Schema {
        Schema::new(vec![
            field("session", DataType::Utf8, false),
            field("subject", DataType::Utf8, false),
            field("split", DataType::Utf8, true),
            field("fps", DataType::Float64, false),
            field("timeline_start_s", DataType::Float64, false),
            field("timeline_frames", DataType::UInt64, false),
            field("fold", DataType::UInt32, true),
        ])
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            strs(rows, |r| &r.session),
            strs(rows, |r| &r.subject),
            opt_strs(rows, |r| r.split.as_deref()),
            f64s(rows, |r| r.fps),
            f64s(rows, |r| r.timeline_start_s),
            u64s(rows, |r| r.timeline_frames),
            Arc::new(rows.iter().map(|r| r.fold).collect::<UInt32Array>()),
        ]
    }
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>> {
        let c = Cols { batch, path };
        let (session, subject, split) = (c.str("session")?, c.str("subject")?, c.opt_str("split")?);
        let (fps, start, frames) = (
            c.f64("fps")?,
            c.f64("timeline_start_s")?,
            c.u64("timeline_frames")?,
        );
        let fold = c.opt_u32("fold")?;
        Ok((0..batch.num_rows())
            .map(|i| SessionRow {
                session: session[i].clone(),
                subject: subject[i].clone(),
                split: split[i].clone(),
                fps: fps[i],
                timeline_start_s: start[i],
                timeline_frames: frames[i],
                fold: fold[i],
            })
            .collect())
    }
}

impl Table for ViewRow {
    const FILE: &'static str = "views.parquet";
    fn schema() -> Schema {
        Schema::new(vec![
            field("session", DataType::Utf8, false),
            field("view", DataType::Utf8, false),
            field("video", DataType::Utf8, false),
            field("offset_s", DataType::Float64, false),
            field("src_width", DataType::UInt32, false),
            field("src_height", DataType::UInt32, false),
            field("src_fps", DataType::Float64, false),
            field("src_duration_s", DataType::Float64, false),
            field("codec", DataType::Utf8, false),
            field("decoded_frames", DataType::UInt64, false),
            field("keypoints", DataType::Utf8, true),
            field("keypoint_layout", DataType::Utf8, true),
            field("kpt_valid_frames", DataType::UInt64, false),
        ])
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            strs(rows, |r| &r.session),
            strs(rows, |r| &r.view),
            strs(rows, |r| &r.video),
            f64s(rows, |r| r.offset_s),
            u32s(rows, |r| r.src_width),
            u32s(rows, |r| r.src_height),
            f64s(rows, |r| r.src_fps),
            f64s(rows, |r| r.src_duration_s),
            strs(rows, |r| &r.codec),
            u64s(rows, |r| r.decoded_frames),
            opt_strs(rows, |r| r.keypoints.as_deref()),
            opt_strs(rows, |r| r.keypoint_layout.as_deref()),
            u64s(rows, |r| r.kpt_valid_frames),
        ]
    }
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>> {
        let c = Cols { batch, path };
        let (session, view, video, codec) = (
            c.str("session")?,
            c.str("view")?,
            c.str("video")?,
            c.str("codec")?,
        );
        let (offset, w, h) = (
            c.f64("offset_s")?,
            c.u32("src_width")?,
            c.u32("src_height")?,
        );
        let (fps, dur, dec) = (
            c.f64("src_fps")?,
            c.f64("src_duration_s")?,
            c.u64("decoded_frames")?,
        );
        let (kp, kl, kv) = (
            c.opt_str("keypoints")?,
            c.opt_str("keypoint_layout")?,
            c.u64("kpt_valid_frames")?,
        );
        Ok((0..batch.num_rows())
            .map(|i| ViewRow {
                session: session[i].clone(),
                view: view[i].clone(),
                video: video[i].clone(),
                offset_s: offset[i],
                src_width: w[i],
                src_height: h[i],
                src_fps: fps[i],
                src_duration_s: dur[i],
                codec: codec[i].clone(),
                decoded_frames: dec[i],
                keypoints: kp[i].clone(),
                keypoint_layout: kl[i].clone(),
                kpt_valid_frames: kv[i],
            })
            .collect())
    }
}

impl Table for RecordRow {
    const FILE: &'static str = "records.parquet";
    fn schema() -> Schema {
        Schema::new(vec![
            field("session", DataType::Utf8, false),
            field("view", DataType::Utf8, false),
            field("modality", DataType::Utf8, false),
            field("chunk", DataType::UInt32, false),
            field("shard", DataType::Utf8, false),
            field("offset", DataType::UInt64, false),
            field("length", DataType::UInt64, false),
            field("frame_start", DataType::UInt64, false),
            field("frame_count", DataType::UInt32, false),
            field("height", DataType::UInt32, false),
            field("width", DataType::UInt32, false),
            field("channels", DataType::UInt32, false),
            field("compression", DataType::Utf8, false),
            field("xxh3", DataType::UInt64, false),
        ])
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            strs(rows, |r| &r.session),
            strs(rows, |r| &r.view),
            strs(rows, |r| &r.modality),
            u32s(rows, |r| r.chunk),
            strs(rows, |r| &r.shard),
            u64s(rows, |r| r.offset),
            u64s(rows, |r| r.length),
            u64s(rows, |r| r.frame_start),
            u32s(rows, |r| r.frame_count),
            u32s(rows, |r| r.height),
            u32s(rows, |r| r.width),
            u32s(rows, |r| r.channels),
            strs(rows, |r| &r.compression),
            u64s(rows, |r| r.xxh3),
        ]
    }
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>> {
        let c = Cols { batch, path };
        let (session, view, modality, shard, comp) = (
            c.str("session")?,
            c.str("view")?,
            c.str("modality")?,
            c.str("shard")?,
            c.str("compression")?,
        );
        let (chunk, offset, length) = (c.u32("chunk")?, c.u64("offset")?, c.u64("length")?);
        let (fstart, fcount) = (c.u64("frame_start")?, c.u32("frame_count")?);
        let (h, w, ch, xx) = (
            c.u32("height")?,
            c.u32("width")?,
            c.u32("channels")?,
            c.u64("xxh3")?,
        );
        Ok((0..batch.num_rows())
            .map(|i| RecordRow {
                session: session[i].clone(),
                view: view[i].clone(),
                modality: modality[i].clone(),
                chunk: chunk[i],
                shard: shard[i].clone(),
                offset: offset[i],
                length: length[i],
                frame_start: fstart[i],
                frame_count: fcount[i],
                height: h[i],
                width: w[i],
                channels: ch[i],
                compression: comp[i].clone(),
                xxh3: xx[i],
            })
            .collect())
    }
}

impl Table for SegmentRow {
    const FILE: &'static str = "segments.parquet";
    fn schema() -> Schema {
        Schema::new(vec![
            field("segment_id", DataType::UInt64, false),
            field("session", DataType::Utf8, false),
            field("label", DataType::Utf8, false),
            field("label_id", DataType::UInt32, false),
            field("start_s", DataType::Float64, false),
            field("end_s", DataType::Float64, false),
            field("frame_start", DataType::UInt64, false),
            field("frame_end", DataType::UInt64, false),
            field("split", DataType::Utf8, true),
            field("source_row", DataType::UInt64, false),
        ])
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            u64s(rows, |r| r.segment_id),
            strs(rows, |r| &r.session),
            strs(rows, |r| &r.label),
            u32s(rows, |r| r.label_id),
            f64s(rows, |r| r.start_s),
            f64s(rows, |r| r.end_s),
            u64s(rows, |r| r.frame_start),
            u64s(rows, |r| r.frame_end),
            opt_strs(rows, |r| r.split.as_deref()),
            u64s(rows, |r| r.source_row),
        ]
    }
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>> {
        let c = Cols { batch, path };
        let (id, session, label, label_id) = (
            c.u64("segment_id")?,
            c.str("session")?,
            c.str("label")?,
            c.u32("label_id")?,
        );
        let (s, e, fs, fe) = (
            c.f64("start_s")?,
            c.f64("end_s")?,
            c.u64("frame_start")?,
            c.u64("frame_end")?,
        );
        let (split, row) = (c.opt_str("split")?, c.u64("source_row")?);
        Ok((0..batch.num_rows())
            .map(|i| SegmentRow {
                segment_id: id[i],
                session: session[i].clone(),
                label: label[i].clone(),
                label_id: label_id[i],
                start_s: s[i],
                end_s: e[i],
                frame_start: fs[i],
                frame_end: fe[i],
                split: split[i].clone(),
                source_row: row[i],
            })
            .collect())
    }
}

impl Table for LabelRow {
    const FILE: &'static str = "labels.parquet";
    fn schema() -> Schema {
        Schema::new(vec![
            field("label_id", DataType::UInt32, false),
            field("label", DataType::Utf8, false),
            field("segments", DataType::UInt64, false),
        ])
    }
    fn columns(rows: &[Self]) -> Vec<ArrayRef> {
        vec![
            u32s(rows, |r| r.label_id),
            strs(rows, |r| &r.label),
            u64s(rows, |r| r.segments),
        ]
    }
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>> {
        let c = Cols { batch, path };
        let (id, label, n) = (c.u32("label_id")?, c.str("label")?, c.u64("segments")?);
        Ok((0..batch.num_rows())
            .map(|i| LabelRow {
                label_id: id[i],
                label: label[i].clone(),
                segments: n[i],
            })
            .collect())
    }
}

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
