//! Writing a cache's index safely: the cache lock and the commit protocol.
//!
//! A cache is trustworthy after a crash at any instant because of the order of writes:
//!
//! 1. shards (and prep's `job.json` files) are written under `*.tmp` names, fsynced and
//!    renamed into place by their writers; an existing name is never rewritten;
//! 2. [`commit`] writes every index table under a name of its own content,
//!    `index/<table>.<xxh3>.parquet` (format 2), via a `*.tmp` file, fsynced and renamed:
//!    a new table never replaces a file the current `meta.json` lists;
//! 3. `meta.json`, which lists the tables with their sizes and XXH3, is written as
//!    `meta.json.tmp`, fsynced, and renamed into place: that one rename is the commit
//!    point, so the whole index switches at once;
//! 4. index tables the new `meta.json` does not list are deleted.
//!
//! A crash before step 3 completes leaves the previous cache whole (its `meta.json` and
//! the tables it lists are untouched), or no cache; after it, the new one. Leftover
//! `*.tmp` files and unlisted tables are swept by the next writer, under the
//! [`CacheLock`].

use std::fs::File;
use std::io::Write;
use std::path::Path;

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

/// Step 2 of the protocol for one table: write `rows` to `out/index/<stem>.<xxh3>.parquet`
/// (through a fsynced `*.tmp` file) and add its path, size and checksum to `files` (for
/// `meta.json`). The name is the content's: it is new unless an identical table is
/// already there, so no file the current `meta.json` lists changes.
pub fn write_index_table<T: Table>(
    out: &Path,
    rows: &[T],
    files: &mut Vec<IndexFile>,
) -> Result<()> {
    let stem = T::FILE.trim_end_matches(".parquet");
    let tmp = out.join(format!("{INDEX_DIR}/{stem}.parquet.tmp"));
    write_table(&tmp, rows)?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    let bytes = std::fs::metadata(&tmp).map_err(io(&tmp))?.len();
    let xxh3 = to_hex(xxh3_file(&tmp)?);
    let rel = format!("{INDEX_DIR}/{stem}.{xxh3}.parquet");
    let dst = out.join(&rel);
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    files.push(IndexFile {
        path: rel,
        bytes,
        xxh3,
    });
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
    let mut files = Vec::new();
    write_index_table(out, sessions, &mut files)?;
    write_index_table(out, views, &mut files)?;
    write_index_table(out, records, &mut files)?;
    write_index_table(out, segments, &mut files)?;
    write_index_table(out, labels, &mut files)?;
    if let Ok(d) = File::open(&index) {
        let _ = d.sync_all();
    }
    meta.format_version = crate::FORMAT_VERSION;
    meta.index_files = files;
    let meta_tmp = out.join(format!("{META_FILE}.tmp"));
    write_synced(&meta_tmp, meta.to_json().as_bytes()).map_err(io(&meta_tmp))?;
    let meta_path = out.join(META_FILE);
    std::fs::rename(&meta_tmp, &meta_path).map_err(io(&meta_path))?;
    if let Ok(d) = File::open(out) {
        let _ = d.sync_all();
    }
    sweep_index(out, &meta);
    Ok(())
}

/// Step 4: delete the index tables `meta` does not list (the previous generation's, and
/// format 1's fixed names). Best effort: a leftover is only disk space.
pub fn sweep_index(out: &Path, meta: &Meta) {
    let Ok(dir) = std::fs::read_dir(out.join(INDEX_DIR)) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{INDEX_DIR}/{name}");
        let listed = meta.index_files.iter().any(|f| f.path == rel);
        if !listed && (name.ends_with(".parquet") || name.ends_with(".tmp")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
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
