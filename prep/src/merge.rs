//! `prep merge --out CACHE PART...`: join partial caches (built with `prep build --part k/n`)
//! into one index, without copying shards.
//!
//! The merged cache holds `parts/<i>-<id>`, a symbolic link to each partial cache, and an
//! index whose records point through those links (`parts/<i>-<id>/shards/...`). Move the partial
//! caches and the merged one together, or merge again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mvdrive_schemas::commit::{commit, CacheLock};
use mvdrive_schemas::meta::{Meta, Totals};
use mvdrive_schemas::{Cache, FORMAT_VERSION, META_FILE};

use crate::error::{io, PrepError};

/// What `merge` did.
#[derive(Debug, Clone)]
pub struct MergeSummary {
    /// Parts merged.
    pub parts: usize,
    /// Sessions in the merged index.
    pub sessions: usize,
    /// Records in the merged index.
    pub records: usize,
}

/// Merge `parts` into `out`.
pub fn merge(out: &Path, parts: &[PathBuf]) -> Result<MergeSummary, PrepError> {
    if parts.is_empty() {
        return Err(PrepError::Other("give the partial caches to merge".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in parts {
        if !seen.insert(p.canonicalize().unwrap_or_else(|_| p.clone())) {
            return Err(PrepError::Other(format!(
                "{} is given twice; list each part once",
                p.display()
            )));
        }
    }
    let caches: Vec<Cache> = parts
        .iter()
        .map(|p| Cache::open(p))
        .collect::<Result<_, _>>()?;
    let first = &caches[0];
    let problems = check_parts(&caches, parts);
    if let Some((_, n)) = first.meta.part {
        if caches.len() as u32 != n {
            tracing::warn!(
                "merging {} parts of a build split into {n}; the merged cache lacks some sessions",
                caches.len()
            );
        }
    }
    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }
    if out.join("shards").exists() {
        return Err(PrepError::Other(format!(
            "{}: holds a built cache; merge into a new folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let Some(lock) = CacheLock::try_acquire(out)? else {
        return Err(PrepError::Other(format!(
            "{}: another prep command is writing this cache",
            out.display()
        )));
    };
    let (links, merged_from) = link_parts(out, parts)?;

    let mut sessions = Vec::new();
    let mut views = Vec::new();
    let mut records = Vec::new();
    let mut segments = Vec::new();
    let mut sources = Vec::new();
    let mut skipped = Vec::new();
    for (i, c) in caches.iter().enumerate() {
        sessions.extend(c.sessions.iter().cloned());
        views.extend(c.views.iter().cloned());
        records.extend(c.records.iter().cloned().map(|mut r| {
            r.shard = format!("parts/{}/{}", links[i], r.shard);
            r
        }));
        segments.extend(c.segments.iter().cloned());
        sources.extend(c.meta.sources.iter().cloned());
        skipped.extend(c.meta.skipped.iter().cloned());
    }
    // A single build lists segments in segments-file order: so does the merge.
    sessions.sort_by(|a, b| a.session.cmp(&b.session));
    segments.sort_by_key(|s| s.source_row);
    for (i, s) in segments.iter_mut().enumerate() {
        s.segment_id = i as u64;
    }
    let mut labels = first.labels.clone();
    for l in &mut labels {
        l.segments = segments.iter().filter(|s| s.label_id == l.label_id).count() as u64;
    }
    let totals = Totals::compute(&sessions, &views, &records, &segments);

    let meta = Meta {
        format_version: FORMAT_VERSION,
        created_by: format!("mvdrive-prep {} (merge)", env!("CARGO_PKG_VERSION")),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        params: first.meta.params.clone(),
        views: first.meta.views.clone(),
        sources,
        index_files: Vec::new(),
        skipped,
        totals,
        part: None,
        merged_from,
        partial_views: caches.iter().any(|c| c.meta.partial_views),
    };
    let summary = MergeSummary {
        parts: parts.len(),
        sessions: sessions.len(),
        records: records.len(),
    };
    commit(out, meta, &sessions, &views, &records, &segments, &labels)?;
    debug_assert!(out.join(META_FILE).exists());
    sweep_links(out, &links);
    drop(lock);
    Ok(summary)
}

/// Everything that keeps `caches` (opened from `parts`) from being merged: other
/// parameters, views or classes, a merged cache, overlapping sessions.
fn check_parts(caches: &[Cache], parts: &[PathBuf]) -> Vec<String> {
    let first = &caches[0];
    let mut problems = Vec::new();
    let mut owner: HashMap<&str, &Path> = HashMap::new();
    for (c, p) in caches.iter().zip(parts) {
        let shown = p.display();
        if c.meta.params != first.meta.params {
            let a = serde_json::to_value(&c.meta.params).unwrap_or_default();
            let b = serde_json::to_value(&first.meta.params).unwrap_or_default();
            let diff: Vec<String> = a
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| b.get(k.as_str()) != Some(v))
                .map(|(k, v)| {
                    format!(
                        "{k} {v} vs {}",
                        b.get(k.as_str()).cloned().unwrap_or_default()
                    )
                })
                .collect();
            problems.push(format!(
                "{shown}: built with other parameters than {} ({}); rebuild the parts with the same settings",
                parts[0].display(),
                diff.join(", ")
            ));
        }
        if c.meta.views != first.meta.views {
            problems.push(format!(
                "{shown}: views {:?} differ from {:?}",
                c.meta.views, first.meta.views
            ));
        }
        let labels = |c: &Cache| {
            c.labels
                .iter()
                .map(|l| (l.label_id, l.label.clone()))
                .collect::<Vec<_>>()
        };
        if labels(c) != labels(first) {
            problems.push(format!("{shown}: its classes differ from {}'s; build every part from the same segments file", parts[0].display()));
        }
        if !c.meta.merged_from.is_empty() {
            problems.push(format!(
                "{shown}: is itself a merged cache; merge the original parts"
            ));
        }
        for s in &c.sessions {
            if let Some(other) = owner.insert(&s.session, p) {
                problems.push(format!(
                    "session `{}` is in both {} and {shown}; parts must not overlap",
                    s.session,
                    other.display()
                ));
            }
        }
    }
    problems
}

/// Link each part as `out/parts/<i>-<id>` (a symbolic link renamed into place), where
/// `<id>` is the XXH3 of the part's absolute path: a link the current index uses is never
/// re-pointed, so a merge that stops before its commit leaves the previous merged cache
/// whole. Returns the link names and the parts' absolute paths.
fn link_parts(out: &Path, parts: &[PathBuf]) -> Result<(Vec<String>, Vec<String>), PrepError> {
    let dir = out.join("parts");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let (mut names, mut merged_from) = (Vec::new(), Vec::new());
    for (i, p) in parts.iter().enumerate() {
        let target = p.canonicalize().map_err(io(p))?;
        let shown = target.display().to_string();
        let name = format!(
            "{i}-{:016x}",
            mvdrive_schemas::checksum::xxh3(shown.as_bytes())
        );
        let link = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &link).map_err(io(&link))?;
        names.push(name);
        merged_from.push(shown);
    }
    Ok((names, merged_from))
}

/// After the commit: remove the links of `parts/` the new index does not use.
fn sweep_links(out: &Path, keep: &[String]) {
    let Ok(dir) = std::fs::read_dir(out.join("parts")) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
