//! Crash safety and incremental re-runs: `kill -9` mid-build, an enlarged manifest, a
//! changed video, changed parameters. Every outcome is a cache that verifies and holds
//! the same frames as a clean build.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn sessions(d: &Path, names: &[&str], secs: f64) {
    let mut rows = Vec::new();
    for s in names {
        testsrc(&d.join(format!("{s}.mp4")), "h264", 640, 360, "25", secs);
        rows.push((s.to_string(), format!("{s}.mp4")));
    }
    let m: Vec<(&str, &str, &str, &str, f64)> = rows
        .iter()
        .map(|(s, v)| (s.as_str(), "p1", "cam", v.as_str(), 0.0))
        .collect();
    write_manifest(&d.join("manifest.csv"), &m);
    let segs: Vec<(&str, f64, f64, &str)> = names.iter().map(|s| (*s, 0.0, 1.0, "x")).collect();
    write_segments(&d.join("segments.csv"), &segs);
}

fn same_frames(a: &Path, b: &Path) {
    let (a, b) = (Cache::open(a).unwrap(), Cache::open(b).unwrap());
    assert_eq!(a.sessions, b.sessions);
    assert_eq!(a.segments, b.segments);
    for s in &a.sessions {
        let ra: Vec<u64> = a
            .rgb_records(&s.session, "cam")
            .iter()
            .map(|r| r.xxh3)
            .collect();
        let rb: Vec<u64> = b
            .rgb_records(&s.session, "cam")
            .iter()
            .map(|r| r.xxh3)
            .collect();
        assert_eq!(ra, rb, "session {}: record checksums differ", s.session);
    }
}

fn no_tmp_files(cache: &Path) {
    let tmp: Vec<_> = files_under(cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

/// Start a build and SIGKILL it as soon as the first job has finished (its job.json exists).
fn build_and_kill(d: &Path, cache: &Path, extra: &[&str]) -> bool {
    let args = build_args(d, cache, extra);
    let mut child = Command::new(prep_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            return false; // finished before we could kill it
        }
        let done_jobs = files_under(&cache.join("shards"))
            .iter()
            .filter(|p| p.ends_with("job.json"))
            .count();
        if done_jobs >= 1 || start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn kill_9_then_rerun_redoes_only_the_missing_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sessions(d, &["s1", "s2", "s3", "s4"], 6.0);
    let opts = [
        "data.img_size=96",
        "data.num_io_threads=1",
        "data.max_video_frames=16",
    ];
    let clean = d.join("clean");
    build_ok(d, &clean, &opts);

    let cache = d.join("cache");
    let killed = build_and_kill(d, &cache, &opts);
    assert!(
        killed,
        "the build finished before it could be killed; make the test videos longer"
    );
    // Killed before the index was written: not a cache yet, and verify says so.
    let err = prep_err(&["verify", "-q", cache.to_str().unwrap()]);
    assert!(err.contains("meta.json"), "{err}");

    let out = build_ok(d, &cache, &opts);
    let (decoded, reused) = decoded_and_reused(&out);
    assert!(reused >= 1, "finished jobs should be reused: {out}");
    assert_eq!(decoded + reused, 4, "{out}");
    no_tmp_files(&cache);
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    same_frames(&clean, &cache);

    // Nothing changed: a re-run decodes nothing.
    let out = build_ok(d, &cache, &opts);
    assert_eq!(decoded_and_reused(&out), (0, 4), "{out}");
}

#[test]
fn an_enlarged_manifest_or_a_changed_video_redoes_only_that() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sessions(d, &["s1", "s2"], 1.0);
    let cache = d.join("cache");
    let opts = ["data.img_size=32"];
    build_ok(d, &cache, &opts);
    // Add a session: only it is decoded.
    let mut m = std::fs::read_to_string(d.join("manifest.csv")).unwrap();
    testsrc(&d.join("s3.mp4"), "h264", 640, 360, "25", 1.0);
    m += "s3,p1,cam,s3.mp4,0\n";
    std::fs::write(d.join("manifest.csv"), m).unwrap();
    let out = build_ok(d, &cache, &opts);
    assert_eq!(decoded_and_reused(&out), (1, 2), "{out}");
    // Change one video: only it is decoded again.
    testsrc(&d.join("s2.mp4"), "mpeg4", 320, 240, "25", 1.0);
    let out = build_ok(d, &cache, &opts);
    assert_eq!(decoded_and_reused(&out), (1, 2), "{out}");
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(c.sessions.len(), 3);
    assert_eq!(
        c.views.iter().find(|v| v.session == "s2").unwrap().codec,
        "mpeg4"
    );
    // Old shards of the replaced job are gone: every shard file is referenced.
    let referenced: std::collections::HashSet<_> =
        c.records.iter().map(|r| cache.join(&r.shard)).collect();
    for f in files_under(&cache.join("shards")) {
        if f.extension().is_some_and(|e| e == "shard") {
            assert!(
                referenced.contains(&f),
                "unreferenced shard left: {}",
                f.display()
            );
        }
    }
}

#[test]
fn a_rebuild_killed_midway_leaves_the_previous_cache_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sessions(d, &["s1", "s2", "s3"], 6.0);
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32", "data.num_io_threads=1"]);
    let before = Cache::open(&cache).unwrap().records;
    // New parameters: every job is redone under new shard names; kill it midway.
    let killed =
        build_and_kill_after_new_job(d, &cache, &["data.img_size=128", "data.num_io_threads=1"]);
    assert!(killed, "the rebuild finished before it could be killed");
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    assert_eq!(
        Cache::open(&cache).unwrap().records,
        before,
        "the old index must still be the one in force"
    );
    build_ok(d, &cache, &["data.img_size=128", "data.num_io_threads=1"]);
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    assert_eq!(Cache::open(&cache).unwrap().meta.params.img_height, 128);
    no_tmp_files(&cache);
}

/// Like `build_and_kill`, but waits for a job.json newer than the build's start.
fn build_and_kill_after_new_job(d: &Path, cache: &Path, extra: &[&str]) -> bool {
    let args = build_args(d, cache, extra);
    let started = std::time::SystemTime::now();
    let mut child = Command::new(prep_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let fresh = files_under(&cache.join("shards")).iter().any(|p| {
            p.ends_with("job.json")
                && std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t > started)
        });
        if fresh {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_changed_keypoint_file_or_a_damaged_shard_redoes_that_view() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = synth(d, 2, 0);
    let cache = d.join("cache");
    let opts = ["data.img_size=32", "prep.fps=4"];
    build_ok(&data, &cache, &opts);
    // Keypoints changed: only that view is redone, and its keypoints are now all masked.
    std::fs::write(
        data.join("keypoints/s001_front.csv"),
        "frame,joint,x,y,conf\n",
    )
    .unwrap();
    let out = build_ok(&data, &cache, &opts);
    assert_eq!(decoded_and_reused(&out), (1, 5), "{out}");
    let c = Cache::open(&cache).unwrap();
    let v = c
        .views
        .iter()
        .find(|v| v.session == "s001" && v.view == "front")
        .unwrap();
    assert_eq!(v.kpt_valid_frames, 0);
    // A flipped byte: verify names it, a plain re-run trusts the job, --rehash redoes it.
    let rec = c.rgb_records("s002", "left")[0].clone();
    let shard = cache.join(&rec.shard);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[rec.offset as usize + 10] ^= 0x55;
    std::fs::write(&shard, bytes).unwrap();
    let err = prep_err(&["verify", "-q", cache.to_str().unwrap()]);
    assert!(err.contains("--rehash"), "{err}");
    let out = build_ok(&data, &cache, &[opts[0], opts[1], "--rehash"]);
    assert_eq!(decoded_and_reused(&out), (1, 5), "{out}");
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
}
