//! Cleaning a cache folder: temporary files of a crashed run (swept under the cache lock
//! before a build writes) and, after a commit, shards and job folders the new index no
//! longer references.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mvdrive_schemas::{INDEX_DIR, META_FILE};

use crate::job::JOB_FILE;

/// Call `f(path, is_dir)` on everything under `dir`, children before their folder.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, bool)) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&p, f);
            }
            f(&p, is_dir);
        }
    }
}

/// Delete temporary files a crashed run left behind (called under the cache lock): only
/// in the folders prep writes (`shards/`, `index/`) and `meta.json.tmp`.
pub(crate) fn remove_tmp_files(out: &Path) {
    for dir in [out.join("shards"), out.join(INDEX_DIR)] {
        walk(&dir, &mut |p, is_dir| {
            if !is_dir && p.extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(p);
            }
        });
    }
    let _ = std::fs::remove_file(out.join(format!("{META_FILE}.tmp")));
}

/// Delete shards the new index does not reference and job folders of jobs not in it.
pub(crate) fn collect_garbage(
    out: &Path,
    referenced: &HashSet<PathBuf>,
    kept_dirs: &HashSet<PathBuf>,
) {
    let shards = out.join("shards");
    walk(&shards, &mut |p, is_dir| {
        if is_dir {
            let _ = std::fs::remove_dir(p); // only succeeds when empty
            return;
        }
        let stale_shard = p.extension().is_some_and(|e| e == "shard") && !referenced.contains(p);
        let stale_job = p.file_name().is_some_and(|n| n == JOB_FILE)
            && !p.parent().is_some_and(|d| kept_dirs.contains(d));
        if stale_shard || stale_job {
            let _ = std::fs::remove_file(p);
        }
    });
}
