//! Full verification of a cache: index checksums, table consistency, record placement,
//! record checksums and (for zstd) every frame's decompression.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::cache::{resolve, Cache};
use crate::checksum::xxh3;
use crate::index::{RecordRow, SessionRow};
use crate::shard::Compression;
use crate::PAGE_SIZE;

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per problem; empty means the cache is sound.
    pub problems: Vec<String>,
    /// Records whose bytes were checked.
    pub records_checked: u64,
    /// Record bytes read and hashed.
    pub bytes_checked: u64,
    /// What is sound but worth knowing (records without frame checksums).
    pub warnings: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verify the cache in `dir`. Never stops at the first problem; `progress` is called with
/// the number of bytes of each record checked (for a progress bar).
pub fn verify(dir: &Path, mut progress: impl FnMut(u64)) -> Report {
    let mut report = Report::default();
    let cache = match Cache::open(dir) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.warnings.extend(cache.checksum_warning());
    check_tables(&cache, &mut report.problems);
    check_records(&cache, &mut report, &mut progress);
    report
}

/// The cheap part of [`verify`]: index checksums and table consistency, without reading
/// records. `train` runs it before training.
pub fn verify_index(cache: &Cache) -> Vec<String> {
    let mut problems = Vec::new();
    check_tables(cache, &mut problems);
    problems
}

fn check_tables(c: &Cache, problems: &mut Vec<String>) {
    let sessions: HashMap<&str, &SessionRow> =
        c.sessions.iter().map(|s| (s.session.as_str(), s)).collect();
    if sessions.len() != c.sessions.len() {
        problems.push("sessions.parquet: duplicate session ids".into());
    }
    let mut views_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for v in &c.views {
        if !sessions.contains_key(v.session.as_str()) {
            problems.push(format!(
                "views.parquet: session `{}` is not in sessions.parquet",
                v.session
            ));
        }
        views_of.entry(&v.session).or_default().push(&v.view);
    }
    for s in &c.sessions {
        let have: HashSet<&str> = views_of
            .get(s.session.as_str())
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for v in &c.meta.views {
            if !have.contains(v.as_str()) && !c.meta.partial_views {
                problems.push(format!(
                    "session `{}` has no row for view `{v}` in views.parquet",
                    s.session
                ));
            }
        }
        if have.is_empty() {
            problems.push(format!(
                "session `{}` has no view in views.parquet",
                s.session
            ));
        }
        if s.fps <= 0.0 || !s.fps.is_finite() {
            problems.push(format!(
                "sessions.parquet: session `{}` has fps {}",
                s.session, s.fps
            ));
        }
    }
    // Each (session, view) must cover [0, timeline_frames) with chunks 0, 1, ... in order,
    // in RGB, and in keypoints where the view has them.
    let mut recs: BTreeMap<(&str, &str, &str), Vec<&RecordRow>> = BTreeMap::new();
    for r in &c.records {
        recs.entry((&r.modality, &r.session, &r.view))
            .or_default()
            .push(r);
    }
    let kpt_layout: HashMap<(&str, &str), &str> = c
        .views
        .iter()
        .filter_map(|v| {
            v.keypoint_layout
                .as_deref()
                .map(|l| ((v.session.as_str(), v.view.as_str()), l))
        })
        .collect();
    let p = &c.meta.params;
    let m = p.max_video_frames as u64;
    for s in &c.sessions {
        let present = |v: &&String| {
            views_of
                .get(s.session.as_str())
                .is_some_and(|vs| vs.contains(&v.as_str()))
        };
        for v in c.meta.views.iter().filter(present) {
            let layout = kpt_layout.get(&(s.session.as_str(), v.as_str())).copied();
            let mut modalities = vec!["rgb"];
            if layout.is_some() {
                modalities.push("kpt");
            }
            for modality in modalities {
                let mut list = recs
                    .remove(&(modality, s.session.as_str(), v.as_str()))
                    .unwrap_or_default();
                list.sort_by_key(|r| r.chunk);
                let mut next = 0u64;
                for (i, r) in list.iter().enumerate() {
                    let at = format!(
                        "{modality} record (session `{}`, view `{v}`, chunk {})",
                        s.session, r.chunk
                    );
                    if r.chunk as usize != i
                        || r.frame_start != next
                        || r.frame_start != r.chunk as u64 * m
                    {
                        problems.push(format!(
                            "{at}: starts at frame {} but frame {next} was expected",
                            r.frame_start
                        ));
                    }
                    if r.frame_count == 0 || r.frame_count as u64 > m {
                        problems.push(format!(
                            "{at}: {} frames (max_video_frames is {m})",
                            r.frame_count
                        ));
                    }
                    let dims_ok = match (modality, layout.and_then(crate::layout::layout)) {
                        ("kpt", Some(l)) => {
                            r.height as usize == l.len()
                                && (3..=4).contains(&r.width)
                                && r.channels == 4
                        }
                        ("kpt", None) => false,
                        _ => (r.height, r.width, r.channels) == (p.img_height, p.img_width, 3),
                    };
                    if !dims_ok {
                        problems.push(format!(
                            "{at}: shape {}x{}x{} does not fit the cache (img {}x{}, keypoint layout {:?})",
                            r.height, r.width, r.channels, p.img_height, p.img_width, layout
                        ));
                    }
                    next = r.frame_start + r.frame_count as u64;
                }
                if next != s.timeline_frames {
                    problems.push(format!(
                        "session `{}` view `{v}`: {modality} records cover {next} of {} timeline frames",
                        s.session, s.timeline_frames
                    ));
                }
            }
        }
    }
    for ((modality, s, v), _) in recs {
        problems.push(format!(
            "records.parquet: {modality} records of (session `{s}`, view `{v}`) belong to no session/view with that modality"
        ));
    }
    check_segments(c, &sessions, problems);
    check_meaning(c, problems);
}

/// What the index means, beyond its bytes: labels numbered `0..n`, segments that make
/// sense, valid parameters and the right totals. (Every table is listed with its checksum
/// in `meta.json`, or [`Cache::open`] refuses the cache.)
fn check_meaning(c: &Cache, problems: &mut Vec<String>) {
    let mut ids: Vec<u32> = c.labels.iter().map(|l| l.label_id).collect();
    ids.sort_unstable();
    // A cache built without a segments file has neither labels nor segments (recordings
    // for `train predict`); one with labels needs segments.
    let unlabelled = c.labels.is_empty() && c.segments.is_empty();
    if (c.labels.is_empty() && !unlabelled)
        || ids.iter().enumerate().any(|(i, &id)| id as usize != i)
    {
        problems.push(format!(
            "labels.parquet: label ids must be 0..{} once each, found {ids:?}",
            c.labels.len()
        ));
    }
    if c.segments.is_empty() && !unlabelled {
        problems
            .push("segments.parquet: no segments; a cache with labels needs at least one".into());
    }
    let mut seen = HashSet::new();
    for seg in &c.segments {
        if !seen.insert(seg.segment_id) {
            problems.push(format!(
                "segments.parquet: segment id {} appears twice",
                seg.segment_id
            ));
        }
        if !(seg.start_s.is_finite() && seg.end_s.is_finite() && seg.start_s < seg.end_s) {
            problems.push(format!(
                "segments.parquet: segment {} spans {}..{} s",
                seg.segment_id, seg.start_s, seg.end_s
            ));
        }
    }
    let p = &c.meta.params;
    let fps_ok = p.fps == "source" || p.fps.parse::<f64>().is_ok_and(|f| f.is_finite() && f > 0.0);
    if !fps_ok {
        problems.push(format!(
            "meta.json: params.fps `{}` is not `source` or a rate > 0",
            p.fps
        ));
    }
    if !["none", "image", "center_scale"].contains(&p.kpt_normalize.as_str()) {
        problems.push(format!(
            "meta.json: params.kpt_normalize `{}` is not none, image or center_scale",
            p.kpt_normalize
        ));
    }
    if p.shard_size == 0 {
        problems.push("meta.json: params.shard_size is 0".into());
    }
    match crate::shard::Compression::parse(&p.compress) {
        None => problems.push(format!(
            "meta.json: params.compress `{}` is not none, zstd:N or jpeg:Q",
            p.compress
        )),
        Some(comp) => {
            let column = comp.column_name();
            if let Some(r) = c
                .records
                .iter()
                .find(|r| r.modality == "rgb" && r.compression != column)
            {
                problems.push(format!(
                    "records.parquet: {} has compression `{}` but meta.json says `{}`",
                    r.shard, r.compression, p.compress
                ));
            }
        }
    }
    let totals = crate::meta::Totals::compute(&c.sessions, &c.views, &c.records, &c.segments);
    if totals != c.meta.totals {
        problems.push(format!(
            "meta.json: totals {:?} do not match the index ({totals:?})",
            c.meta.totals
        ));
    }
}

/// Segments name a session of the index, lie inside its timeline and carry their label.
fn check_segments(c: &Cache, sessions: &HashMap<&str, &SessionRow>, problems: &mut Vec<String>) {
    let labels: HashMap<u32, &str> = c
        .labels
        .iter()
        .map(|l| (l.label_id, l.label.as_str()))
        .collect();
    for seg in &c.segments {
        let at = format!(
            "segments.parquet row {} (segment {})",
            seg.segment_id, seg.source_row
        );
        match sessions.get(seg.session.as_str()) {
            None => problems.push(format!(
                "{at}: session `{}` is not in sessions.parquet",
                seg.session
            )),
            Some(s) if seg.frame_start >= seg.frame_end || seg.frame_end > s.timeline_frames => {
                problems.push(format!(
                    "{at}: frames {}..{} outside the timeline of {} frames",
                    seg.frame_start, seg.frame_end, s.timeline_frames
                ))
            }
            Some(_) => {}
        }
        if labels.get(&seg.label_id) != Some(&seg.label.as_str()) {
            problems.push(format!(
                "{at}: label `{}` does not match label id {}",
                seg.label, seg.label_id
            ));
        }
    }
}

fn check_records(c: &Cache, report: &mut Report, progress: &mut impl FnMut(u64)) {
    let mut by_shard: BTreeMap<&str, Vec<&RecordRow>> = BTreeMap::new();
    for r in &c.records {
        by_shard.entry(&r.shard).or_default().push(r);
    }
    for (shard, mut recs) in by_shard {
        let map = match resolve(&c.dir, shard).and_then(|_| c.shard(shard)) {
            Ok(m) => m,
            Err(e) => {
                report
                    .problems
                    .push(format!("{e} (referenced by {} records)", recs.len()));
                continue;
            }
        };
        recs.sort_by_key(|r| r.offset);
        let mut end = 0u64;
        for r in recs {
            let at = format!(
                "{shard} @ {} (session `{}`, view `{}`, chunk {})",
                r.offset, r.session, r.view, r.chunk
            );
            if r.offset % PAGE_SIZE != 0 {
                report
                    .problems
                    .push(format!("{at}: offset is not page aligned"));
            }
            if r.offset < end {
                report
                    .problems
                    .push(format!("{at}: overlaps the previous record"));
            }
            let Some(record_end) = r.offset.checked_add(r.length) else {
                report.problems.push(format!(
                    "{at}: offset {} + length {} is out of range",
                    r.offset, r.length
                ));
                continue;
            };
            end = record_end;
            if end > map.len() as u64 {
                report.problems.push(format!(
                    "{at}: ends at byte {end} but the shard has {} bytes",
                    map.len()
                ));
                continue;
            }
            let bytes = &map[r.offset as usize..end as usize];
            if xxh3(bytes) != r.xxh3 {
                report.problems.push(format!(
                    "{at}: checksum mismatch (the shard is corrupt; re-run `prep build` with `--rehash` to redo the damaged views)"
                ));
            }
            let deep = c.with_record(r, |view, path| {
                if Compression::from_column(&r.compression) != Some(Compression::None) {
                    for i in 0..view.len() {
                        view.frame(i, path)?;
                    }
                }
                Ok(())
            });
            if let Err(e) = deep {
                report.problems.push(format!("{at}: {e}"));
            }
            report.records_checked += 1;
            report.bytes_checked += r.length;
            progress(r.length);
        }
    }
}
