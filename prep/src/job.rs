//! One unit of work: decode one (session, view), pick its frames onto the session timeline,
//! resize them and stream them into page-aligned records in the view's shard folder.
//!
//! A job's output lives in `shards/<session>/<view>/`: shards named after the job's
//! generation (a hash of everything that determines their bytes) and a `job.json` written
//! last. A re-run reuses a job whose `job.json` has the same generation and whose shards
//! are all there; anything else is redone under a new generation name, so shards that an
//! existing index references are never overwritten.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use mvdrive_schemas::checksum::{to_hex, xxh3};
use mvdrive_schemas::commit::write_synced;
use mvdrive_schemas::index::{RecordRow, ViewRow};
use mvdrive_schemas::record::{encode_keypoints, FrameSeed};
use mvdrive_schemas::shard::{Compression, ShardWriter};
use serde::{Deserialize, Serialize};

use crate::config::PrepConfig;
use crate::keypoints;
use crate::manifest::ViewEntry;
use crate::resize::Resizer;
use crate::timeline::{Picker, Timeline};
use crate::video::{self, Flow, VideoInfo};

/// Name of the per-job completion file.
pub const JOB_FILE: &str = "job.json";

/// A (session, view) to cache.
#[derive(Debug, Clone)]
pub struct Job {
    /// Manifest row.
    pub entry: ViewEntry,
    /// Probed video header.
    pub info: VideoInfo,
    /// The session's timeline.
    pub timeline: Timeline,
    /// Shard folder relative to the cache root (`shards/<session>/<view>`).
    pub rel_dir: String,
    /// Generation: hash of source identity, parameters and timeline.
    pub gen: String,
    /// Source file size.
    pub size: u64,
    /// Source modification time (ns since epoch).
    pub mtime_ns: i128,
}

/// What `job.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobFile {
    /// Generation this output belongs to.
    pub gen: String,
    /// The view's row of the views table.
    pub view: ViewRow,
    /// The records written, with shard paths relative to the cache root.
    pub records: Vec<RecordRow>,
    /// Damaged packets seen (within `prep.max_decode_errors`).
    pub decode_errors: u64,
    /// Warnings about the view's keypoint file.
    #[serde(default)]
    pub warnings: Vec<String>,
}

pub use mvdrive_schemas::checksum::safe_component;

/// File size and modification time.
pub fn identity(path: &Path) -> std::io::Result<(u64, i128)> {
    let m = std::fs::metadata(path)?;
    let mtime = m
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

/// Identity of a file, or of a folder's files (count, total size, newest mtime).
pub fn tree_identity(path: &Path) -> std::io::Result<(u64, u64, i128)> {
    if path.is_dir() {
        let (mut n, mut bytes, mut newest) = (0u64, 0u64, 0i128);
        for e in std::fs::read_dir(path)? {
            let (b, t) = identity(&e?.path())?;
            n += 1;
            bytes += b;
            newest = newest.max(t);
        }
        Ok((n, bytes, newest))
    } else {
        let (b, t) = identity(path)?;
        Ok((1, b, t))
    }
}

impl Job {
    /// Plan a job; computes its generation.
    pub fn new(
        entry: ViewEntry,
        info: VideoInfo,
        timeline: Timeline,
        cfg: &PrepConfig,
    ) -> std::io::Result<Job> {
        let (size, mtime_ns) = identity(&entry.path)?;
        let rel_dir = format!(
            "shards/{}/{}",
            safe_component(&entry.session),
            safe_component(&entry.view)
        );
        // Keypoints are part of the job's output: their file's identity and layout too.
        let kpt = match &entry.keypoints_path {
            Some(p) => format!(
                "{:?}|{:?}|{:?}",
                p,
                entry.keypoint_layout,
                tree_identity(p)?
            ),
            None => "none".into(),
        };
        let key = format!(
            "v{}|{:?}|{:?}|{size}|{mtime_ns}|{:?}|{:?}|{:?}|{kpt}",
            mvdrive_schemas::FORMAT_VERSION,
            cfg.params(),
            entry
                .path
                .canonicalize()
                .unwrap_or_else(|_| entry.path.clone()),
            entry.offset_s,
            entry.fps,
            timeline,
        );
        Ok(Job {
            gen: to_hex(xxh3(key.as_bytes())),
            entry,
            info,
            timeline,
            rel_dir,
            size,
            mtime_ns,
        })
    }

    /// Absolute shard folder.
    pub fn dir(&self, cache: &Path) -> PathBuf {
        cache.join(&self.rel_dir)
    }

    /// The finished output of this exact job, if a previous run left it complete. With
    /// `rehash`, every record's bytes must also match their checksum (`--rehash`, after
    /// `prep verify` found a damaged shard).
    pub fn reusable(&self, cache: &Path, rehash: bool) -> Option<JobFile> {
        let text = std::fs::read_to_string(self.dir(cache).join(JOB_FILE)).ok()?;
        let jf: JobFile = serde_json::from_str(&text).ok()?;
        if jf.gen != self.gen {
            return None;
        }
        for r in &jf.records {
            let path = cache.join(&r.shard);
            let len = std::fs::metadata(&path).ok()?.len();
            if r.offset + r.length > len {
                return None;
            }
            if rehash {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::open(&path).ok()?;
                let mut buf = vec![0u8; r.length as usize];
                f.read_exact_at(&mut buf, r.offset).ok()?;
                if xxh3(&buf) != r.xxh3 {
                    return None;
                }
            }
        }
        Some(jf)
    }

    /// Decode, resize and write the job. `progress(n)` is told of every `n` timeline
    /// frames written. On error nothing of this job is left behind.
    pub fn run(
        &self,
        cache: &Path,
        cfg: &PrepConfig,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<JobFile, String> {
        let dir = self.dir(cache);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let g = &self.gen[..8];
        let mut rgb = ShardWriter::new(&dir, &format!("rgb-{g}"), cfg.shard_size, cfg.compress)
            .with_image(cfg.img_height, cfg.img_width);
        let mut kpt =
            ShardWriter::new(&dir, &format!("kpt-{g}"), cfg.shard_size, Compression::None);
        let written = self.write_rgb(&mut rgb, cfg, progress).and_then(
            |(records, sources, view, errors, stopped)| {
                // Decoding stops once the timeline is filled: the frame count is then
                // a lower bound, not the video's length.
                let decoded = (!stopped).then_some(view.decoded_frames);
                let (kpt_records, valid, warnings) =
                    self.write_keypoints(&mut kpt, &sources, decoded, cfg)?;
                Ok((records, kpt_records, view, errors, valid, warnings))
            },
        );
        match written {
            Ok((mut records, kpt_records, mut view, errors, valid, warnings)) => {
                rgb.finish().map_err(|e| e.to_string())?;
                kpt.finish().map_err(|e| e.to_string())?;
                records.extend(kpt_records);
                for r in &mut records {
                    r.shard = format!("{}/{}", self.rel_dir, r.shard);
                }
                view.kpt_valid_frames = valid;
                let jf = JobFile {
                    gen: self.gen.clone(),
                    view,
                    records,
                    decode_errors: errors,
                    warnings,
                };
                let tmp = dir.join(format!("{JOB_FILE}.tmp"));
                let json = serde_json::to_vec_pretty(&jf).map_err(|e| e.to_string())?;
                write_synced(&tmp, &json).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, dir.join(JOB_FILE))
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(jf)
            }
            Err(e) => {
                rgb.abort();
                kpt.abort();
                Err(e)
            }
        }
    }

    fn record_template(
        &self,
        modality: &str,
        height: u32,
        width: u32,
        channels: u32,
        compression: Compression,
    ) -> RecordRow {
        RecordRow {
            session: self.entry.session.clone(),
            view: self.entry.view.clone(),
            modality: modality.into(),
            chunk: 0,
            shard: String::new(),
            offset: 0,
            length: 0,
            frame_start: 0,
            frame_count: 0,
            height,
            width,
            channels,
            compression: compression.column_name().into(),
            xxh3: 0,
            frame_xxh3: true,
        }
    }

    /// Decode and write RGB records; returns them, the source frame shown at each timeline
    /// frame, the view's row and the number of damaged packets.
    #[allow(clippy::type_complexity)]
    fn write_rgb(
        &self,
        writer: &mut ShardWriter,
        cfg: &PrepConfig,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<RecordRow>, Vec<u64>, ViewRow, u64, bool), String> {
        let tl = &self.timeline;
        let mut resizer = Resizer::new(cfg.resize, cfg.scaler, cfg.img_width, cfg.img_height);
        let fb = resizer.frame_bytes();
        let template = self.record_template("rgb", cfg.img_height, cfg.img_width, 3, cfg.compress);
        let mut chunks = Chunker::new(writer, cfg.max_video_frames, tl.frames, fb, template);
        let mut picker = Picker::new(tl, self.entry.offset_s);
        let mut prev: Option<(ffmpeg_next::frame::Video, u64)> = None;
        let mut scaled = vec![0u8; fb];
        let mut scaled_valid = false;
        let mut sources: Vec<u64> = Vec::with_capacity(tl.frames as usize);
        let mut decoded = 0u64;

        // Write timeline frames `range` from source frame `src` (number `k`), scaled once
        // and repeated while it is held.
        let mut emit = |range: std::ops::Range<u64>,
                        src: &ffmpeg_next::frame::Video,
                        k: u64,
                        scaled_valid: &mut bool,
                        chunks: &mut Chunker<'_>,
                        sources: &mut Vec<u64>|
         -> Result<(), String> {
            for i in range {
                if !*scaled_valid {
                    resizer.resize(src, &mut scaled)?;
                    *scaled_valid = true;
                }
                chunks.push(i, &scaled)?;
                sources.push(k);
                progress(1);
            }
            Ok(())
        };

        let stats = video::decode(&self.entry.path, self.entry.fps, |frame, t| {
            let k = decoded;
            decoded += 1;
            let range = picker.advance_to(t);
            if !range.is_empty() {
                // Frames before the first source frame can only come from rounding: use it.
                let (src, sk) = match prev.as_ref() {
                    Some((f, pk)) => (f, *pk),
                    None => (&frame, k),
                };
                emit(range, src, sk, &mut scaled_valid, &mut chunks, &mut sources)?;
            }
            if picker.done() {
                return Ok(Flow::Stop);
            }
            prev = Some((frame, k));
            scaled_valid = false;
            Ok(Flow::Continue)
        })?;
        if !picker.done() {
            if let Some((last, k)) = prev.as_ref() {
                // The last frame is shown for one frame interval (half more for rounding).
                let range = picker.finish(stats.last_time + 1.5 / self.info.fps);
                emit(
                    range,
                    last,
                    *k,
                    &mut scaled_valid,
                    &mut chunks,
                    &mut sources,
                )?;
            }
        }
        let damaged = match &stats.first_error {
            Some(e) if stats.errors > 0 => {
                format!("; {} damaged packet(s), first: {e}", stats.errors)
            }
            _ => String::new(),
        };
        if !picker.done() {
            return Err(format!(
                "frames end at {:.2} s but the header says {:.2} s and the timeline needs frames until {:.2} s: the video looks truncated{damaged}",
                if stats.frames == 0 { 0.0 } else { stats.last_time + 1.0 / self.info.fps },
                self.info.duration_s,
                picker.next_local_time()
            ));
        }
        if stats.errors > cfg.max_decode_errors {
            return Err(format!("the video is damaged{damaged} (raise prep.max_decode_errors to accept damaged videos)"));
        }
        let view = ViewRow {
            session: self.entry.session.clone(),
            view: self.entry.view.clone(),
            video: self.entry.video.clone(),
            offset_s: self.entry.offset_s,
            src_width: self.info.width,
            src_height: self.info.height,
            src_fps: self.info.fps,
            src_duration_s: self.info.duration_s,
            codec: self.info.codec.clone(),
            decoded_frames: stats.frames,
            keypoints: self.entry.keypoints.clone(),
            keypoint_layout: self
                .entry
                .keypoints
                .as_ref()
                .and(self.entry.keypoint_layout.clone()),
            kpt_valid_frames: 0,
        };
        Ok((chunks.records, sources, view, stats.errors, stats.stopped))
    }

    /// Write keypoint records: for each timeline frame, the keypoints of the source frame
    /// the RGB record shows, normalised, with a validity flag. Returns the records, the
    /// number of valid frames and warnings about the file.
    fn write_keypoints(
        &self,
        writer: &mut ShardWriter,
        sources: &[u64],
        decoded: Option<u64>,
        cfg: &PrepConfig,
    ) -> Result<(Vec<RecordRow>, u64, Vec<String>), String> {
        let (Some(path), Some(layout)) = (&self.entry.keypoints_path, &self.entry.keypoint_layout)
        else {
            return Ok((Vec::new(), 0, Vec::new()));
        };
        let track = keypoints::load(path, layout, self.info.width, self.info.height)?;
        let warnings = track.warnings(path, decoded);
        let (k, c) = (track.layout.len(), track.channels);
        let template = self.record_template("kpt", k as u32, c as u32, 4, Compression::None);
        let mut chunks = Chunker::new(
            writer,
            cfg.max_video_frames,
            self.timeline.frames,
            (k * c + 1) * 4,
            template,
        );
        let mut bytes = Vec::with_capacity((k * c + 1) * 4);
        let mut valid_frames = 0;
        for (i, &src) in sources.iter().enumerate() {
            let (vals, valid) = keypoints::frame_values(
                &track,
                src,
                cfg.kpt_normalize,
                self.info.width,
                self.info.height,
            );
            encode_keypoints(&vals, valid, &mut bytes);
            valid_frames += valid as u64;
            chunks.push(i as u64, &bytes)?;
        }
        Ok((chunks.records, valid_frames, warnings))
    }
}

/// Cuts a view's timeline frames into records of at most `max_video_frames` frames:
/// record `c` holds frames `[c * m, min((c + 1) * m, frames))`, for every view alike.
struct Chunker<'a> {
    writer: &'a mut ShardWriter,
    m: u64,
    frames: u64,
    frame_bytes: usize,
    template: RecordRow,
    records: Vec<RecordRow>,
}

impl<'a> Chunker<'a> {
    fn new(
        writer: &'a mut ShardWriter,
        m: u32,
        frames: u64,
        frame_bytes: usize,
        template: RecordRow,
    ) -> Self {
        Chunker {
            writer,
            m: m as u64,
            frames,
            frame_bytes,
            template,
            records: Vec::new(),
        }
    }

    /// Append timeline frame `i` (frames arrive in order).
    fn push(&mut self, i: u64, frame: &[u8]) -> Result<(), String> {
        let m = self.m;
        if i.is_multiple_of(m) {
            let count = m.min(self.frames - i) as u32;
            let t = &self.template;
            let seed = FrameSeed::new(&t.session, &t.view, &t.modality, i);
            self.writer
                .begin_record(self.frame_bytes, count, seed)
                .map_err(|e| e.to_string())?;
        }
        self.writer.push_frame(frame).map_err(|e| e.to_string())?;
        if (i + 1).is_multiple_of(m) || i + 1 == self.frames {
            let loc = self.writer.end_record().map_err(|e| e.to_string())?;
            let chunk = i / m;
            self.records.push(RecordRow {
                chunk: chunk as u32,
                shard: loc.shard,
                offset: loc.offset,
                length: loc.length,
                frame_start: chunk * m,
                frame_count: (i + 1 - chunk * m) as u32,
                xxh3: loc.xxh3,
                ..self.template.clone()
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_stay_and_odd_ones_are_made_safe_and_unique() {
        assert_eq!(safe_component("vp1_run-2.a"), "vp1_run-2.a");
        let a = safe_component("vp1/run1");
        let b = safe_component("vp1:run1");
        assert!(a.starts_with("vp1_run1-") && b.starts_with("vp1_run1-") && a != b);
        assert!(!safe_component("..").starts_with('.'));
    }
}
