//! Writing a cache's index safely: the cache lock and the commit protocol.
//!
//! A cache is trustworthy after a crash at any instant because of the order of writes:
//!
//! 1. shards (and prep's `job.json` files) are written under `*.tmp` names, fsynced and
//!    renamed into place by their writers; an existing name is never rewritten;
//! 2. [`commit`] writes every index table as `index/<table>.parquet.tmp`, then
//!    `meta.json.tmp` (which holds each table's size and XXH3), fsynced;
//! 3. the tables are renamed into place, then `meta.json` last: its rename is the commit
//!    point.
//!
//! A crash before step 3 leaves the previous `meta.json` and tables (or none: no cache);
//! a crash between the table renames and the `meta.json` rename leaves tables whose
//! checksums do not match `meta.json`, which [`Cache::open`](crate::Cache::open) refuses
//! with a "re-run `prep build`" message. Leftover `*.tmp` files are swept by the next
//! writer, under the [`CacheLock`].

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::checksum::{to_hex, xxh3_file};
use crate::error::{io, Result};
use crate::index::{write_table, LabelRow, RecordRow, SegmentRow, SessionRow, Table, ViewRow};
use crate::meta::{IndexFile, Meta};
use crate::{INDEX_DIR, META_FILE};

/// File name of the lock inside a cache folder.
pub const LOCK_FILE: &str = ".lock";

/// An exclusive advisory lock on a cache folder (`<cache>/.lock`): one writer
/// (`prep build`, `prep merge`) at a time. Held until dropped; the operating system
/// releases it if the process dies.
#[derive(Debug)]
pub struct CacheLock {
    _file: File,
}

impl CacheLock {
    /// Take the lock of the cache folder `dir` (which must exist) without waiting:
    /// `Ok(None)` when another process holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<CacheLock>> {
        let path = dir.join(LOCK_FILE);
        let file = File::create(&path).map_err(io(&path))?;
        Ok(file.try_lock().is_ok().then_some(CacheLock { _file: file }))
    }
}

/// Write `bytes` to `path` and fsync it (the caller renames it into place).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Step 2 of the protocol for one table: write `rows` as `out/index/<T::FILE>.tmp`, add
/// its size and checksum to `files` (for `meta.json`) and its pending rename to
/// `renames`. Nothing is renamed here; [`commit`] does that.
pub fn write_index_table<T: Table>(
    out: &Path,
    rows: &[T],
    renames: &mut Vec<(PathBuf, PathBuf)>,
    files: &mut Vec<IndexFile>,
) -> Result<()> {
    let rel = format!("{INDEX_DIR}/{}", T::FILE);
    let dst = out.join(&rel);
    let tmp = out.join(format!("{rel}.tmp"));
    write_table(&tmp, rows)?;
    let bytes = std::fs::metadata(&tmp).map_err(io(&tmp))?.len();
    files.push(IndexFile {
        path: rel,
        bytes,
        xxh3: to_hex(xxh3_file(&tmp)?),
    });
    renames.push((tmp, dst));
    Ok(())
}

/// Commit a cache's index in `out`: write the five index tables and `meta.json` (with
/// `meta.index_files` filled in) under temporary names, then rename the tables into
/// place and `meta.json` last, and fsync the folder. See the module documentation for
/// why this order is crash-safe. The caller holds the [`CacheLock`] and has finished
/// every shard the tables reference.
pub fn commit(
    out: &Path,
    mut meta: Meta,
    sessions: &[SessionRow],
    views: &[ViewRow],
    records: &[RecordRow],
    segments: &[SegmentRow],
    labels: &[LabelRow],
) -> Result<()> {
    let index = out.join(INDEX_DIR);
    std::fs::create_dir_all(&index).map_err(io(&index))?;
    let mut renames = Vec::new();
    let mut files = Vec::new();
    write_index_table(out, sessions, &mut renames, &mut files)?;
    write_index_table(out, views, &mut renames, &mut files)?;
    write_index_table(out, records, &mut renames, &mut files)?;
    write_index_table(out, segments, &mut renames, &mut files)?;
    write_index_table(out, labels, &mut renames, &mut files)?;
    meta.index_files = files;
    let meta_tmp = out.join(format!("{META_FILE}.tmp"));
    write_synced(&meta_tmp, meta.to_json().as_bytes()).map_err(io(&meta_tmp))?;
    for (tmp, dst) in renames {
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    }
    let meta_path = out.join(META_FILE);
    std::fs::rename(&meta_tmp, &meta_path).map_err(io(&meta_path))?;
    if let Ok(d) = File::open(out) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let held = CacheLock::try_acquire(dir.path()).unwrap();
        assert!(held.is_some());
        assert!(CacheLock::try_acquire(dir.path()).unwrap().is_none());
        drop(held);
        assert!(CacheLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
