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

use mvdrive_schemas::checksum::to_hex;
use mvdrive_schemas::index::{RecordRow, ViewRow};
use mvdrive_schemas::shard::ShardWriter;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::PrepConfig;
use crate::manifest::ViewEntry;
use crate::scaler::Resizer;
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
}

/// A path component made from a user's id: kept when it is plain, else made plain and
/// suffixed with a hash so that two ids never collide.
pub fn safe_component(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if plain == name && !name.starts_with('.') && !name.is_empty() {
        plain
    } else {
        format!(
            "{}-{:08x}",
            plain.trim_start_matches('.'),
            xxh3_64(name.as_bytes()) as u32
        )
    }
}

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
        let key = format!(
            "v{}|{:?}|{:?}|{size}|{mtime_ns}|{:?}|{:?}|{:?}",
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
            gen: to_hex(xxh3_64(key.as_bytes())),
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

    /// The finished output of this exact job, if a previous run left it complete.
    pub fn reusable(&self, cache: &Path) -> Option<JobFile> {
        let text = std::fs::read_to_string(self.dir(cache).join(JOB_FILE)).ok()?;
        let jf: JobFile = serde_json::from_str(&text).ok()?;
        if jf.gen != self.gen {
            return None;
        }
        for r in &jf.records {
            let len = std::fs::metadata(cache.join(&r.shard)).ok()?.len();
            if r.offset + r.length > len {
                return None;
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
        let prefix = format!("rgb-{}", &self.gen[..8]);
        let mut writer = ShardWriter::new(&dir, &prefix, cfg.shard_size, cfg.compress);
        match self.write_records(&mut writer, cfg, progress) {
            Ok((mut records, view, errors)) => {
                let names = writer.finish().map_err(|e| e.to_string())?;
                debug_assert!(!names.is_empty());
                for r in &mut records {
                    r.shard = format!("{}/{}", self.rel_dir, r.shard);
                }
                let jf = JobFile {
                    gen: self.gen.clone(),
                    view,
                    records,
                    decode_errors: errors,
                };
                let tmp = dir.join(format!("{JOB_FILE}.tmp"));
                let json = serde_json::to_vec_pretty(&jf).map_err(|e| e.to_string())?;
                write_synced(&tmp, &json).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, dir.join(JOB_FILE))
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(jf)
            }
            Err(e) => {
                writer.abort();
                Err(e)
            }
        }
    }

    fn write_records(
        &self,
        writer: &mut ShardWriter,
        cfg: &PrepConfig,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<RecordRow>, ViewRow, u64), String> {
        let tl = &self.timeline;
        let m = cfg.max_video_frames as u64;
        let mut resizer = Resizer::new(cfg.resize, cfg.scaler, cfg.img_width, cfg.img_height);
        let fb = resizer.frame_bytes();
        let mut picker = Picker::new(tl, self.entry.offset_s);
        let mut prev: Option<ffmpeg_next::frame::Video> = None;
        let mut scaled = vec![0u8; fb];
        let mut scaled_valid = false;
        let mut records: Vec<RecordRow> = Vec::new();

        // Write timeline frames `range` from `src` (scaled once, then repeated if held).
        let mut emit = |range: std::ops::Range<u64>,
                        src: &ffmpeg_next::frame::Video,
                        scaled_valid: &mut bool,
                        records: &mut Vec<RecordRow>|
         -> Result<(), String> {
            for i in range {
                if !*scaled_valid {
                    resizer.resize(src, &mut scaled)?;
                    *scaled_valid = true;
                }
                if i % m == 0 {
                    let count = m.min(tl.frames - i) as u32;
                    writer.begin_record(fb, count).map_err(|e| e.to_string())?;
                }
                writer.push_frame(&scaled).map_err(|e| e.to_string())?;
                if (i + 1) % m == 0 || i + 1 == tl.frames {
                    let loc = writer.end_record().map_err(|e| e.to_string())?;
                    let chunk = (i / m) as u32;
                    records.push(RecordRow {
                        session: self.entry.session.clone(),
                        view: self.entry.view.clone(),
                        modality: "rgb".into(),
                        chunk,
                        shard: loc.shard,
                        offset: loc.offset,
                        length: loc.length,
                        frame_start: chunk as u64 * m,
                        frame_count: (i + 1 - chunk as u64 * m) as u32,
                        height: cfg.img_height,
                        width: cfg.img_width,
                        channels: 3,
                        compression: cfg.compress.column_name().into(),
                        xxh3: loc.xxh3,
                    });
                }
                progress(1);
            }
            Ok(())
        };

        let stats = video::decode(&self.entry.path, self.entry.fps, |frame, t| {
            let range = picker.advance_to(t);
            if !range.is_empty() {
                // Frames before the first source frame can only come from rounding: use it.
                let src = prev.as_ref().unwrap_or(&frame);
                emit(range, src, &mut scaled_valid, &mut records)?;
            }
            if picker.done() {
                return Ok(Flow::Stop);
            }
            prev = Some(frame);
            scaled_valid = false;
            Ok(Flow::Continue)
        })?;
        if !picker.done() {
            if let Some(last) = prev.as_ref() {
                // The last frame is shown for one frame interval (half more for rounding).
                let range = picker.finish(stats.last_time + 1.5 / self.info.fps);
                emit(range, last, &mut scaled_valid, &mut records)?;
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
            return Err(format!(
                "the video is damaged{damaged} (raise prep.max_decode_errors to accept damaged videos)"
            ));
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
        };
        Ok((records, view, stats.errors))
    }
}

/// Write `bytes` to `path` and fsync.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
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
