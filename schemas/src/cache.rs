//! [`Cache`]: an opened cache: `meta.json`, the index tables, and memory-mapped shards.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;

use crate::checksum::{to_hex, xxh3_file};
use crate::error::{io, Error, Result};
use crate::index::{read_table, LabelRow, RecordRow, SegmentRow, SessionRow, Table, ViewRow};
use crate::meta::Meta;
use crate::record::{decode_keypoints, FrameSeed};
use crate::shard::{Compression, RecordView};
use crate::INDEX_DIR;

/// Whether `path` (relative to the cache root) names index table `T`: `index/<T::FILE>`
/// (format 1) or `index/<stem>.<generation>.parquet` (format 2, see [`crate::commit`]).
pub fn is_table_path<T: Table>(path: &str) -> bool {
    let stem = T::FILE.trim_end_matches(".parquet");
    let Some(name) = path.strip_prefix(&format!("{INDEX_DIR}/")) else {
        return false;
    };
    name == T::FILE
        || name
            .strip_prefix(stem)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(".parquet"))
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Path of index table `T` inside a cache, relative to the cache root, as `meta.json`
/// lists it; `None` when `meta.json` does not list it.
pub fn index_rel_path<T: Table>(meta: &Meta) -> Option<String> {
    meta.index_files
        .iter()
        .map(|f| f.path.clone())
        .find(|p| is_table_path::<T>(p))
}

/// An opened cache. Shards are memory-mapped on first use and shared.
pub struct Cache {
    /// Cache root folder.
    pub dir: PathBuf,
    /// `meta.json`.
    pub meta: Meta,
    /// Sessions table.
    pub sessions: Vec<SessionRow>,
    /// Views table.
    pub views: Vec<ViewRow>,
    /// Records table.
    pub records: Vec<RecordRow>,
    /// Segments table.
    pub segments: Vec<SegmentRow>,
    /// Labels table.
    pub labels: Vec<LabelRow>,
    maps: Mutex<HashMap<String, Arc<Mmap>>>,
}

impl Cache {
    /// Open a cache: read `meta.json`, check that each index table matches the checksum
    /// recorded there, and read the tables. Shards are not touched until used.
    pub fn open(dir: &Path) -> Result<Cache> {
        let meta = Meta::load(dir)?;
        for f in &meta.index_files {
            let path = resolve(dir, &f.path)?;
            let actual = xxh3_file(&path)?;
            if to_hex(actual) != f.xxh3 {
                return Err(Error::format(
                    &path,
                    "does not match the checksum in meta.json (the cache was changed or its \
                     build was interrupted); re-run `prep build` to repair it",
                ));
            }
        }
        fn table<T: Table>(dir: &Path, meta: &Meta) -> Result<Vec<T>> {
            let rel = index_rel_path::<T>(meta).ok_or_else(|| {
                Error::format(
                    dir.join(crate::META_FILE),
                    format!(
                        "index_files does not list the {} table; re-run `prep build` to repair the cache",
                        T::FILE
                    ),
                )
            })?;
            read_table(&resolve(dir, &rel)?)
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            sessions: table(dir, &meta)?,
            views: table(dir, &meta)?,
            records: table(dir, &meta)?,
            segments: table(dir, &meta)?,
            labels: table(dir, &meta)?,
            meta,
            maps: Mutex::new(HashMap::new()),
        })
    }

    /// A warning when some records have no frame checksums (written by a format 1 or 2
    /// `prep build`): their frames are read unchecked, and only `prep verify` finds damage
    /// in them. `None` when every record carries them.
    pub fn checksum_warning(&self) -> Option<String> {
        let unchecked = self.records.iter().filter(|r| !r.frame_xxh3).count();
        (unchecked > 0).then(|| {
            format!(
                "{}: {unchecked} of {} records have no frame checksums (the cache was written \
                 by an older prep, format {}), so damage in them is found only by `prep verify`; \
                 re-run `prep build` to add them",
                self.dir.display(),
                self.records.len(),
                self.meta.format_version
            )
        })
    }

    /// The memory map of a shard (relative path as in the records table).
    pub fn shard(&self, rel: &str) -> Result<Arc<Mmap>> {
        let mut maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = maps.get(rel) {
            return Ok(m.clone());
        }
        let path = resolve(&self.dir, rel)?;
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        // SAFETY: shards are immutable once renamed into place; prep never rewrites a
        // shard that an index references (a rebuild writes new shard names).
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(io(&path))?);
        maps.insert(rel.to_string(), map.clone());
        Ok(map)
    }

    /// Run `f` on a record's frames, borrowed straight from the shard's mmap.
    pub fn with_record<R>(
        &self,
        rec: &RecordRow,
        f: impl FnOnce(RecordView<'_>, &Path) -> Result<R>,
    ) -> Result<R> {
        let map = self.shard(&rec.shard)?;
        let path = self.dir.join(&rec.shard);
        let end = rec.offset.checked_add(rec.length);
        let Some((a, b)) = end
            .filter(|&e| e <= map.len() as u64)
            .map(|e| (rec.offset as usize, e as usize))
        else {
            return Err(Error::format(
                &path,
                format!(
                    "record at {} of {} bytes lies past the end of the shard ({} bytes); run `prep verify`",
                    rec.offset,
                    rec.length,
                    map.len()
                ),
            ));
        };
        let comp = Compression::from_column(&rec.compression).ok_or_else(|| {
            Error::format(&path, format!("unknown compression `{}`", rec.compression))
        })?;
        let fb = rec.frame_bytes();
        let seed = rec.frame_xxh3.then(|| FrameSeed::of(rec));
        let view = RecordView::new(&map[a..b], rec.frame_count, fb, comp, seed, &path)?;
        f(view, &path)
    }

    /// The records of one modality (`rgb` or `kpt`) of one (session, view), in timeline order.
    pub fn records_of(&self, modality: &str, session: &str, view: &str) -> Vec<&RecordRow> {
        let mut v: Vec<&RecordRow> = self
            .records
            .iter()
            .filter(|r| r.modality == modality && r.session == session && r.view == view)
            .collect();
        v.sort_by_key(|r| r.frame_start);
        v
    }

    /// The RGB records of one (session, view), in timeline order.
    pub fn rgb_records(&self, session: &str, view: &str) -> Vec<&RecordRow> {
        self.records_of("rgb", session, view)
    }

    /// Keypoints of timeline frame `t` of (session, view): `joints * values` f32 values
    /// and whether the frame is valid. `None` if the view has no keypoints.
    pub fn read_keypoints(
        &self,
        session: &str,
        view: &str,
        t: u64,
    ) -> Result<Option<(Vec<f32>, bool)>> {
        let recs = self.records_of("kpt", session, view);
        if recs.is_empty() {
            return Ok(None);
        }
        let rec = recs
            .into_iter()
            .find(|r| r.frame_start <= t && t < r.frame_start + r.frame_count as u64)
            .ok_or_else(|| {
                Error::format(
                    &self.dir,
                    format!("no keypoint frame {t} for session `{session}` view `{view}`"),
                )
            })?;
        self.with_record(rec, |v, p| {
            let bytes = v.frame((t - rec.frame_start) as usize, p)?;
            let mut vals = vec![0f32; (bytes.len() / 4).saturating_sub(1)];
            let valid = decode_keypoints(&bytes, &mut vals, p)?;
            Ok(Some((vals, valid)))
        })
    }

    /// A copy of timeline frame `t` of (session, view) as HWC RGB bytes.
    pub fn read_frame(&self, session: &str, view: &str, t: u64) -> Result<Vec<u8>> {
        let rec = self
            .rgb_records(session, view)
            .into_iter()
            .find(|r| r.frame_start <= t && t < r.frame_start + r.frame_count as u64)
            .ok_or_else(|| {
                Error::format(
                    &self.dir,
                    format!("no frame {t} for session `{session}` view `{view}`"),
                )
            })?;
        self.with_record(rec, |v, p| {
            Ok(v.frame((t - rec.frame_start) as usize, p)?.into_owned())
        })
    }
}

/// Join a cache-relative path onto the cache root, refusing absolute paths and `..`.
pub fn resolve(dir: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::format(
            dir,
            format!("index names `{rel}`, which is not a plain path inside the cache"),
        ));
    }
    Ok(dir.join(p))
}
