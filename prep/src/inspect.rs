//! `prep inspect`: what a cache holds, for people (text) and tools (`--json`).

use std::collections::BTreeMap;
use std::path::Path;

use mvdrive_common::bytes::format_bytes;
use mvdrive_schemas::Cache;
use serde_json::{json, Value};

use crate::error::PrepError;

/// Summary of a cache as JSON. Keys: `sessions`, `views`, `timeline_frames`, `segments`,
/// `classes`, `rgb_bytes`, `kpt_bytes`, `bytes_by_codec` (`"rgb/jpeg"`: bytes, ...),
/// `img_size`, `fps`, plus `per_session` details.
pub fn summary(dir: &Path) -> Result<Value, PrepError> {
    let c = Cache::open(dir)?;
    let mut classes = BTreeMap::new();
    for l in &c.labels {
        classes.insert(l.label.clone(), l.segments);
    }
    let mut fps: Vec<f64> = c.sessions.iter().map(|s| s.fps).collect();
    fps.sort_by(f64::total_cmp);
    fps.dedup();
    let per_session: Vec<Value> = c
        .sessions
        .iter()
        .map(|s| {
            json!({
                "session": s.session,
                "subject": s.subject,
                "split": s.split,
                "fps": s.fps,
                "timeline_start_s": s.timeline_start_s,
                "timeline_frames": s.timeline_frames,
                "segments": c.segments.iter().filter(|g| g.session == s.session).count(),
            })
        })
        .collect();
    // Bytes per (modality, codec): RGB may be jpeg while keypoints stay float32.
    let mut by_codec = std::collections::BTreeMap::new();
    for r in &c.records {
        *by_codec
            .entry(format!("{}/{}", r.modality, r.compression))
            .or_insert(0u64) += r.length;
    }
    Ok(json!({
        "sessions": c.sessions.len(),
        "views": c.meta.views,
        "timeline_frames": c.sessions.iter().map(|s| s.timeline_frames).sum::<u64>(),
        "segments": c.segments.len(),
        "classes": classes,
        "rgb_bytes": c.records.iter().filter(|r| r.modality == "rgb").map(|r| r.length).sum::<u64>(),
        "kpt_bytes": c.records.iter().filter(|r| r.modality == "kpt").map(|r| r.length).sum::<u64>(),
        "img_size": [c.meta.params.img_height, c.meta.params.img_width],
        "fps": if fps.len() == 1 { json!(fps[0]) } else { json!(fps) },
        "compress": c.meta.params.compress,
        "bytes_by_codec": by_codec,
        "records": c.records.len(),
        "skipped": c.meta.skipped.len(),
        "per_session": per_session,
    }))
}

/// The text report of `prep inspect`.
pub fn text(dir: &Path) -> Result<String, PrepError> {
    let v = summary(dir)?;
    let mut s = String::new();
    let views: Vec<&str> = v["views"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    s += &format!("cache            {}\n", dir.display());
    s += &format!("sessions         {}\n", v["sessions"]);
    s += &format!("views            {} ({})\n", views.len(), views.join(", "));
    s += &format!("timeline frames  {} per view\n", v["timeline_frames"]);
    s += &format!(
        "img_size         {}x{}  compress {}\n",
        v["img_size"][0],
        v["img_size"][1],
        v["compress"].as_str().unwrap_or("")
    );
    s += &format!("fps              {}\n", v["fps"]);
    if let Some(m) = v["bytes_by_codec"].as_object() {
        let parts: Vec<String> = m
            .iter()
            .map(|(k, b)| format!("{k} {}", format_bytes(b.as_u64().unwrap_or(0))))
            .collect();
        s += &format!("bytes by codec   {}\n", parts.join(", "));
    }
    s += &format!("segments         {}\n", v["segments"]);
    s += &format!(
        "rgb bytes        {}\n",
        format_bytes(v["rgb_bytes"].as_u64().unwrap_or(0))
    );
    s += &format!(
        "kpt bytes        {}\n",
        format_bytes(v["kpt_bytes"].as_u64().unwrap_or(0))
    );
    s += "classes\n";
    let counts: Vec<(String, u64)> = v["classes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, c)| (k.clone(), c.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let max = counts.iter().map(|c| c.1).max().unwrap_or(1).max(1);
    for (label, n) in &counts {
        let bar = "#".repeat(((n * 30) / max) as usize);
        s += &format!("  {label:<20} {n:>6} {bar}\n");
    }
    s += "sessions\n";
    for p in v["per_session"].as_array().into_iter().flatten() {
        s += &format!(
            "  {:<16} subject {:<8} split {:<6} {:>6} frames @ {} fps from {:.3} s, {} segments\n",
            p["session"].as_str().unwrap_or(""),
            p["subject"].as_str().unwrap_or(""),
            p["split"].as_str().unwrap_or("-"),
            p["timeline_frames"],
            p["fps"],
            p["timeline_start_s"].as_f64().unwrap_or(0.0),
            p["segments"],
        );
    }
    if v["skipped"].as_u64().unwrap_or(0) > 0 {
        s += &format!(
            "skipped          {} view(s) at build time (see meta.json)\n",
            v["skipped"]
        );
    }
    Ok(s)
}
