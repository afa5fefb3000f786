//! Streams batches of clips from a cache: never decodes video, reads only the modalities
//! asked for, and keeps batches as `u8` until they reach the device.
//!
//! Frames are read with positioned reads (`pread`) straight into the batch buffer, so the
//! process's resident memory does not grow with the cache: the kernel's page cache holds
//! what is hot, and it is not charged to us. Shard files of a modality that is switched off
//! are never opened.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use mvdrive_common::rng::Rng;
use mvdrive_schemas::index::RecordRow;
use mvdrive_schemas::record::{decode_keypoints, read_frame_into};
use mvdrive_schemas::Cache;

use crate::data::sampler::{clip_frames, eval_clip_frames, Item, Sampler};
use crate::error::{Result, TrainError};

/// One batch, still in bytes.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Position of the batch in its epoch (among this rank's batches).
    pub index: usize,
    /// Position in the epoch's order of its first clip ([`Sampler::first_position`]).
    pub first: usize,
    /// Its index among every rank's batches of the epoch ([`Sampler::draw_index`]).
    pub draw: usize,
    /// Clips in the batch (B).
    pub size: usize,
    /// `[B, V, T, H, W, 3]` RGB bytes, when RGB is loaded.
    pub rgb: Option<Vec<u8>>,
    /// `[B, V, T, K, C]` keypoint values and `[B, V, T]` validity, when keypoints are loaded.
    pub kpt: Option<(Vec<f32>, Vec<u8>)>,
    /// `[B, V]`: 1 where the clip's session has the view, 0 where it lacks that camera
    /// (its frames are then zeros).
    pub present: Vec<u8>,
    /// Class per clip.
    pub labels: Vec<i64>,
    /// Segment id per clip.
    pub segments: Vec<u64>,
}

/// Bytes read per modality, and files opened: what the loader touched.
#[derive(Debug, Default)]
pub struct Counters {
    /// RGB record bytes read.
    pub rgb_bytes: AtomicU64,
    /// Keypoint record bytes read.
    pub kpt_bytes: AtomicU64,
}

/// Which frames of its segment each clip of a batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPick {
    /// Training: a random position inside each of the clip's `T` parts of the segment,
    /// drawn from (seed, epoch, position in the epoch).
    Jittered,
    /// Evaluation clip `k` of `n` (see [`eval_clip_frames`]); `k = 0, n = 1` is the middles.
    Fixed {
        /// This clip.
        k: usize,
        /// Clips per segment.
        n: usize,
    },
}

impl ClipPick {
    /// The one centred clip.
    pub const CENTRE: ClipPick = ClipPick::Fixed { k: 0, n: 1 };
}

/// When the loader checks a frame against its checksum (records that have them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameChecks {
    /// The first time this loader reads each frame. A frame that passed is not hashed
    /// again: its shard is open for the whole run and prep never rewrites a shard in place,
    /// so only damage after the first read (to bytes already checked) goes unseen, and
    /// `prep verify` finds it. What training uses.
    Once,
    /// Every read.
    Always,
    /// Never (the benchmark's baseline).
    Never,
}

/// A record and which of its frames this loader has checked.
struct LoadedRecord {
    row: RecordRow,
    /// One bit per frame: checked.
    checked: Vec<AtomicU64>,
}

impl LoadedRecord {
    fn new(row: RecordRow) -> Self {
        let words = (row.frame_count as usize).div_ceil(64);
        LoadedRecord {
            row,
            checked: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether frame `k` is to be checked under `mode`.
    fn needs_check(&self, k: usize, mode: FrameChecks) -> bool {
        match mode {
            FrameChecks::Never => false,
            FrameChecks::Always => true,
            FrameChecks::Once => self
                .checked
                .get(k / 64)
                .is_none_or(|w| w.load(Ordering::Relaxed) & (1 << (k % 64)) == 0),
        }
    }

    /// Frame `k` passed its check.
    fn mark_checked(&self, k: usize) {
        if let Some(w) = self.checked.get(k / 64) {
            w.fetch_or(1 << (k % 64), Ordering::Relaxed);
        }
    }
}

/// Reads clips of a fixed set of views.
pub struct Loader {
    cache: Arc<Cache>,
    /// Views read, in order (V).
    pub views: Vec<String>,
    /// Frames per clip (T).
    pub frames: usize,
    load_rgb: bool,
    load_kpt: bool,
    /// (modality, session, view) -> records in chunk order.
    records: HashMap<(String, String, String), Vec<LoadedRecord>>,
    files: Mutex<HashMap<String, Arc<File>>>,
    /// What was read.
    pub counters: Counters,
    /// Keypoint shape (K, C) shared by the views, when keypoints are loaded.
    pub kpt_shape: Option<(usize, usize)>,
    /// session -> whether it has each of `views` (records of the modality read first).
    views_of: HashMap<String, Vec<bool>>,
    /// When frames are checked against their checksums: [`FrameChecks::Once`] unless
    /// `train bench-loader` measures the others.
    pub frame_checks: FrameChecks,
}

impl Loader {
    /// A loader of `views` with `frames` frames per clip.
    pub fn new(
        cache: Arc<Cache>,
        views: Vec<String>,
        frames: usize,
        load_rgb: bool,
        load_kpt: bool,
    ) -> Result<Loader> {
        for v in &views {
            if !cache.meta.views.contains(v) {
                return Err(TrainError::Other(format!(
                    "view `{v}` is not in the cache (views: {})",
                    cache.meta.views.join(", ")
                )));
            }
        }
        let mut records: HashMap<(String, String, String), Vec<LoadedRecord>> = HashMap::new();
        for r in &cache.records {
            records
                .entry((r.modality.clone(), r.session.clone(), r.view.clone()))
                .or_default()
                .push(LoadedRecord::new(r.clone()));
        }
        for list in records.values_mut() {
            list.sort_by_key(|r| r.row.chunk);
        }
        let mut kpt_shape = None;
        if load_kpt {
            for r in cache
                .records
                .iter()
                .filter(|r| r.modality == "kpt" && views.contains(&r.view))
            {
                let shape = (r.height as usize, r.width as usize);
                match kpt_shape {
                    None => kpt_shape = Some(shape),
                    Some(s) if s != shape => {
                        return Err(TrainError::Other(format!(
                            "the views' keypoints have different shapes ({s:?} and {shape:?}); load one view or rebuild with one layout"
                        )))
                    }
                    Some(_) => {}
                }
            }
            if kpt_shape.is_none() {
                return Err(TrainError::Other(format!(
                    "data.load_kpt=true but the cache {} has no keypoints",
                    cache.dir.display()
                )));
            }
        }
        let modality = if load_rgb { "rgb" } else { "kpt" };
        let mut views_of: HashMap<String, Vec<bool>> = HashMap::new();
        for (m, session, view) in records.keys() {
            if let (true, Some(i)) = (m == modality, views.iter().position(|v| v == view)) {
                views_of
                    .entry(session.clone())
                    .or_insert_with(|| vec![false; views.len()])[i] = true;
            }
        }
        Ok(Loader {
            views_of,
            cache,
            views,
            frames,
            load_rgb,
            load_kpt,
            records,
            files: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            kpt_shape,
            frame_checks: FrameChecks::Once,
        })
    }

    /// Whether `session` has view number `vi` of [`Loader::views`].
    fn has_view(&self, session: &str, vi: usize) -> bool {
        self.views_of
            .get(session)
            .is_some_and(|v| v.get(vi).copied().unwrap_or(false))
    }

    /// Shard files opened so far (relative paths).
    pub fn opened_files(&self) -> Vec<String> {
        self.files
            .lock()
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn file(&self, rel: &str) -> Result<Arc<File>> {
        let mut files = self
            .files
            .lock()
            .map_err(|_| "loader lock poisoned".to_string())?;
        if let Some(f) = files.get(rel) {
            return Ok(f.clone());
        }
        let path: PathBuf =
            mvdrive_schemas::cache::resolve(&self.cache.dir, rel).map_err(|e| e.to_string())?;
        let f = Arc::new(File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?);
        files.insert(rel.to_string(), f.clone());
        Ok(f)
    }

    /// Read frame `t` of (modality, session, view) into `out` (exactly one frame's bytes)
    /// with the cache format's one record reader; `scratch` holds compressed bytes.
    fn read_frame(
        &self,
        modality: &str,
        session: &str,
        view: &str,
        t: u64,
        out: &mut [u8],
        scratch: &mut Vec<u8>,
    ) -> Result<bool> {
        let Some(list) =
            self.records
                .get(&(modality.to_string(), session.to_string(), view.to_string()))
        else {
            return Ok(false);
        };
        let m = self.cache.meta.params.max_video_frames as u64;
        let loaded = list
            .get((t / m) as usize)
            .filter(|r| r.row.frame_start <= t && t < r.row.frame_start + r.row.frame_count as u64)
            .ok_or_else(|| {
                format!("no {modality} frame {t} for session `{session}` view `{view}`")
            })?;
        let rec = &loaded.row;
        let file = self.file(&rec.shard)?;
        let k = (t - rec.frame_start) as usize;
        let check = loaded.needs_check(k, self.frame_checks);
        let read = read_frame_into(&file, rec, k, out, scratch, check)?;
        if check {
            loaded.mark_checked(k);
        }
        let counter = if modality == "kpt" {
            &self.counters.kpt_bytes
        } else {
            &self.counters.rgb_bytes
        };
        counter.fetch_add(read as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Load one batch: for each item, `frames` timeline frames of every view.
    pub fn load(&self, index: usize, items: &[Item], frames: &[Vec<u64>]) -> Result<Batch> {
        let segs: Vec<_> = items
            .iter()
            .map(|i| &self.cache.segments[i.segment])
            .collect();
        let sessions: Vec<&str> = segs.iter().map(|g| g.session.as_str()).collect();
        let mut batch = self.fill(index, &sessions, frames)?;
        batch.labels = items.iter().map(|i| i.label as i64).collect();
        batch.segments = segs.iter().map(|g| g.segment_id).collect();
        Ok(batch)
    }

    /// Load clips of one session at any timeline frames (`train predict`'s windows): one
    /// clip per entry of `frames`, without labels.
    pub fn load_windows(&self, index: usize, session: &str, frames: &[Vec<u64>]) -> Result<Batch> {
        let sessions = vec![session; frames.len()];
        self.fill(index, &sessions, frames)
    }

    fn fill(&self, index: usize, sessions: &[&str], frames: &[Vec<u64>]) -> Result<Batch> {
        let (b, v, t) = (sessions.len(), self.views.len(), self.frames);
        let p = &self.cache.meta.params;
        let fb = (p.img_height * p.img_width * 3) as usize;
        let mut rgb = self.load_rgb.then(|| vec![0u8; b * v * t * fb]);
        let mut kpt = self
            .kpt_shape
            .filter(|_| self.load_kpt)
            .map(|(k, c)| (vec![0f32; b * v * t * k * c], vec![0u8; b * v * t], k * c));
        let (mut kbuf, mut scratch) = (Vec::new(), Vec::new());
        let mut present = vec![1u8; b * v];
        for (bi, (session, fr)) in sessions.iter().zip(frames).enumerate() {
            for (vi, view) in self.views.iter().enumerate() {
                if !self.has_view(session, vi) {
                    present[bi * v + vi] = 0;
                    continue;
                }
                for (ti, &f) in fr.iter().enumerate() {
                    let slot = (bi * v + vi) * t + ti;
                    if let Some(buf) = rgb.as_mut() {
                        let out = &mut buf[slot * fb..(slot + 1) * fb];
                        self.read_frame("rgb", session, view, f, out, &mut scratch)?;
                    }
                    if let Some((vals, mask, kc)) = kpt.as_mut() {
                        kbuf.resize((*kc + 1) * 4, 0);
                        if self.read_frame("kpt", session, view, f, &mut kbuf, &mut scratch)? {
                            let values = &mut vals[slot * *kc..(slot + 1) * *kc];
                            let shard = Path::new(&self.cache.dir);
                            mask[slot] = decode_keypoints(&kbuf, values, shard)? as u8;
                        }
                    }
                }
            }
        }
        Ok(Batch {
            index,
            first: index * b,
            draw: index,
            size: b,
            rgb,
            kpt: kpt.map(|(v, m, _)| (v, m)),
            present,
            labels: vec![0; b],
            segments: vec![0; b],
        })
    }

    /// The frames of each item of a batch, as `pick` says.
    pub fn frames_for(
        &self,
        sampler: &Sampler,
        items: &[Item],
        epoch: u64,
        first_position: usize,
        pick: ClipPick,
    ) -> Vec<Vec<u64>> {
        items
            .iter()
            .enumerate()
            .map(|(n, it)| {
                let seg = &self.cache.segments[it.segment];
                let (start, end) = (seg.frame_start, seg.frame_end);
                match pick {
                    ClipPick::Jittered => {
                        let mut rng = Rng::for_item(
                            sampler.seed ^ 0x6a17_7e12,
                            epoch,
                            (first_position + n) as u64,
                        );
                        clip_frames(start, end, self.frames, Some(&mut rng))
                    }
                    ClipPick::Fixed { k, n } => eval_clip_frames(start, end, self.frames, k, n),
                }
            })
            .collect()
    }
}

/// What the caller's thread needs to make batches itself (no worker threads).
type Inline = (Arc<Loader>, Arc<Sampler>, Vec<Item>, u64, ClipPick);

/// Batches of one epoch from `start` on, prepared by `workers` threads (0: on demand in the
/// caller's thread). Each worker is at most two batches ahead; batches come out in order.
pub struct Prefetch {
    receivers: Vec<Receiver<Result<Batch>>>,
    first: usize,
    next: usize,
    end: usize,
    inline: Option<Inline>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    /// Start producing the batches `start..` of `epoch`, their clips picked as `pick` says.
    pub fn start(
        loader: Arc<Loader>,
        sampler: Arc<Sampler>,
        epoch: u64,
        start: usize,
        pick: ClipPick,
        workers: usize,
    ) -> Prefetch {
        let order = sampler.epoch_order(epoch);
        let end = sampler.batches();
        if workers == 0 {
            return Prefetch {
                receivers: Vec::new(),
                first: start,
                next: start,
                end,
                inline: Some((loader, sampler, order, epoch, pick)),
                handles: Vec::new(),
            };
        }
        let order = Arc::new(order);
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (tx, rx) = sync_channel(2);
            let (loader, sampler, order) = (loader.clone(), sampler.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let mut b = start + w;
                while b < end {
                    if tx
                        .send(load_batch(&loader, &sampler, &order, epoch, b, pick))
                        .is_err()
                    {
                        return; // the consumer stopped
                    }
                    b += workers;
                }
            }));
            receivers.push(rx);
        }
        Prefetch {
            receivers,
            first: start,
            next: start,
            end,
            inline: None,
            handles,
        }
    }
}

/// Batch `b` of this rank's share of `order`, its clips picked as `pick` says, with its
/// positions in the epoch set.
fn load_batch(
    loader: &Loader,
    sampler: &Sampler,
    order: &[Item],
    epoch: u64,
    b: usize,
    pick: ClipPick,
) -> Result<Batch> {
    let items = sampler.batch(order, b);
    let first = sampler.first_position(order.len(), b);
    let frames = loader.frames_for(sampler, &items, epoch, first, pick);
    let mut batch = loader.load(b, &items, &frames)?;
    batch.first = first;
    batch.draw = sampler.draw_index(b);
    Ok(batch)
}

impl Iterator for Prefetch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        if let Some((loader, sampler, order, epoch, pick)) = &self.inline {
            return Some(load_batch(loader, sampler, order, *epoch, b, *pick));
        }
        // Worker w makes batches first + w, first + w + W, ...: read them round-robin.
        let rx = &self.receivers[(b - self.first) % self.receivers.len()];
        Some(
            rx.recv()
                .unwrap_or_else(|_| Err("a loader thread stopped".into())),
        )
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.receivers.clear(); // wakes blocked workers
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
