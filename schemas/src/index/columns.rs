//! How each index table maps to Arrow columns: the column helpers and one [`Table`]
//! implementation per row type (schema, rows to columns, columns to rows).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema};

use super::{LabelRow, RecordRow, SegmentRow, SessionRow, Table, ViewRow};
use crate::error::{Error, Result};

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
    /// A boolean column that older formats lack: absent reads as all `false`.
    fn bool_or_false(&self, name: &str) -> Result<Vec<bool>> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(vec![false; self.batch.num_rows()]);
        }
        let a = self.get::<BooleanArray>(name)?;
        Ok((0..a.len()).map(|i| !a.is_null(i) && a.value(i)).collect())
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
            field("frame_xxh3", DataType::Boolean, false),
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
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.frame_xxh3))
                    .collect::<BooleanArray>(),
            ),
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
        let sums = c.bool_or_false("frame_xxh3")?;
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
                frame_xxh3: sums[i],
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
