//! Bad input gets a clear error naming the file or row, and leaves nothing half-written.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::path::Path;

/// Two good sessions with views `front` and `side`.
fn good_dataset(d: &Path) {
    for s in ["s1", "s2"] {
        testsrc(
            &d.join(format!("{s}_front.mp4")),
            "h264",
            160,
            120,
            "10",
            2.0,
        );
        testsrc(
            &d.join(format!("{s}_side.mkv")),
            "mpeg4",
            128,
            96,
            "10",
            2.0,
        );
    }
    write_manifest(
        &d.join("manifest.csv"),
        &[
            ("s1", "p1", "front", "s1_front.mp4", 0.0),
            ("s1", "p1", "side", "s1_side.mkv", 0.0),
            ("s2", "p2", "front", "s2_front.mp4", 0.0),
            ("s2", "p2", "side", "s2_side.mkv", 0.0),
        ],
    );
    write_segments(
        &d.join("segments.csv"),
        &[("s1", 0.0, 1.0, "a"), ("s2", 0.5, 1.5, "b")],
    );
}

/// A validation error: message names `needles`, and no cache folder was created.
fn assert_rejected(d: &Path, needles: &[&str]) {
    let cache = d.join("cache");
    let err = build_err(d, &cache, &["data.img_size=32"]);
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        !cache.exists(),
        "validation failed but {} was created",
        cache.display()
    );
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from));
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_missing_video_names_the_row_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(&dir.path().join("manifest.csv"), "s2_side.mkv", "nope.mkv");
    assert_rejected(
        dir.path(),
        &["manifest.csv line 5", "nope.mkv", "not found"],
    );
}

#[test]
fn a_session_missing_a_view_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(
        &dir.path().join("manifest.csv"),
        "s2,p2,side,s2_side.mkv,0\n",
        "",
    );
    assert_rejected(
        dir.path(),
        &[
            "session `s2`",
            "missing view(s) side",
            "--allow-missing-views",
        ],
    );
    // With --allow-missing-views the session is cached with the view it has.
    let cache = dir.path().join("cache");
    build_ok(
        dir.path(),
        &cache,
        &["data.img_size=32", "--allow-missing-views"],
    );
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = mvdrive_schemas::Cache::open(&cache).unwrap();
    assert!(c.meta.partial_views);
    assert_eq!(c.meta.views, ["front", "side"]);
    let s2: Vec<&str> = c
        .views
        .iter()
        .filter(|v| v.session == "s2")
        .map(|v| v.view.as_str())
        .collect();
    assert_eq!(s2, ["front"]);
    assert!(c.rgb_records("s2", "side").is_empty() && !c.rgb_records("s2", "front").is_empty());
}

#[test]
fn duplicate_rows_name_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    let m = dir.path().join("manifest.csv");
    let mut text = std::fs::read_to_string(&m).unwrap();
    text += "s1,p1,front,s1_front.mp4,0\n";
    std::fs::write(&m, text).unwrap();
    assert_rejected(
        dir.path(),
        &["line 6", "duplicate (session `s1`, view `front`)", "line 2"],
    );
}

#[test]
fn a_path_escaping_the_data_root_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    std::fs::create_dir(&d).unwrap();
    good_dataset(&d);
    testsrc(&dir.path().join("outside.mp4"), "h264", 160, 120, "10", 2.0);
    edit(&d.join("manifest.csv"), "s1_front.mp4", "../outside.mp4");
    assert_rejected(&d, &["manifest.csv line 2", "escapes the data root"]);
}

#[test]
fn a_malformed_csv_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(
        &dir.path().join("manifest.csv"),
        "s2,p2,front,s2_front.mp4,0",
        "s2,p2,front",
    );
    assert_rejected(
        dir.path(),
        &[
            "manifest.csv line 4",
            "malformed CSV",
            "3 fields but the header has 5",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(
        &dir.path().join("segments.csv"),
        "s2,0.5,1.5,b",
        "s2,half,1.5,b",
    );
    assert_rejected(
        dir.path(),
        &["segments.csv line 3", "start_s and end_s must be numbers"],
    );
}

#[test]
fn a_segment_outside_the_video_names_its_row() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(&dir.path().join("segments.csv"), "s2,0.5,1.5,b", "s2,5,6,b");
    assert_rejected(
        dir.path(),
        &[
            "segments.csv line 3",
            "session `s2`",
            "outside its video timeline",
            "covers",
            "by its header",
        ],
    );
    // And a segment of an unknown session.
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    edit(
        &dir.path().join("segments.csv"),
        "s2,0.5,1.5,b",
        "s9,0.5,1.5,b",
    );
    assert_rejected(
        dir.path(),
        &["segments.csv line 3", "session `s9` is not in the manifest"],
    );
}

#[test]
fn unknown_config_keys_suggest_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    let cache = dir.path().join("cache");
    let err = build_err(dir.path(), &cache, &["data.img_sise=32"]);
    assert!(
        err.contains("unknown config key `data.img_sise`")
            && err.contains("did you mean `data.img_size`"),
        "{err}"
    );
    assert!(!cache.exists());
}

/// A video that fails to decode skips its session: exit 1 without --allow-skips, and the
/// cache that is written holds the other sessions and verifies.
fn assert_skipped(d: &Path, needles: &[&str]) {
    let cache = d.join("cache");
    let err = build_err(d, &cache, &["data.img_size=32"]);
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert!(err.contains("--allow-skips"), "{err}");
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        c.sessions
            .iter()
            .map(|s| s.session.as_str())
            .collect::<Vec<_>>(),
        vec!["s1"]
    );
    assert!(c.segments.iter().all(|s| s.session == "s1"));
    assert_eq!(c.meta.skipped.len(), 1);
    assert!(files_under(&cache)
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp")));
    let out = build_ok(d, &cache, &["data.img_size=32", "--allow-skips"]);
    assert!(out.contains("1 sessions"), "{out}");
}

#[test]
fn a_truncated_video_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_dataset(d);
    // moov atom first, so the header survives and claims 2 s while half the data is gone.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=10",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-movflags",
        "+faststart",
        d.join("s2_front.mp4").to_str().unwrap(),
    ]);
    let data = std::fs::read(d.join("s2_front.mp4")).unwrap();
    std::fs::write(d.join("s2_front.mp4"), &data[..data.len() / 2]).unwrap();
    assert_skipped(
        d,
        &["s2_front.mp4", "truncated", "session `s2` view `front`"],
    );
}

#[test]
fn a_corrupt_video_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_dataset(d);
    let garbage: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("s2_side.mkv"), garbage).unwrap();
    assert_skipped(d, &["s2_side.mkv", "cannot be opened as a video"]);
}

#[test]
fn a_zero_length_video_is_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_dataset(d);
    std::fs::write(d.join("s2_side.mkv"), b"").unwrap();
    assert_skipped(d, &["s2_side.mkv", "is empty (0 bytes)"]);
}

#[test]
fn a_directory_where_a_video_should_be_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    std::fs::remove_file(dir.path().join("s1_side.mkv")).unwrap();
    std::fs::create_dir(dir.path().join("s1_side.mkv")).unwrap();
    assert_rejected(dir.path(), &["manifest.csv line 3", "is not a file"]);
}

#[test]
fn an_image_given_as_a_video_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    // A PNG under the video's name: the demuxer reads one picture.
    let png = dir.path().join("still.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=1",
        "-frames:v",
        "1",
        png.to_str().unwrap(),
    ]);
    std::fs::rename(&png, dir.path().join("s1_side.mkv")).unwrap();
    assert_rejected(
        dir.path(),
        &[
            "manifest.csv line 3",
            "s1_side.mkv",
            "single frame",
            "not a video",
        ],
    );
}

#[test]
fn duplicate_labels_and_an_out_folder_that_is_not_a_cache_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    good_dataset(dir.path());
    std::fs::write(dir.path().join("labels.txt"), "a\nb\na\n").unwrap();
    assert_rejected(dir.path(), &["labels.txt line 3", "listed twice"]);
    std::fs::remove_file(dir.path().join("labels.txt")).unwrap();
    // --out pointing at a folder of other files (here: the data folder itself).
    let err = build_err(dir.path(), dir.path(), &["data.img_size=32"]);
    assert!(
        err.contains("not a cache") && err.contains("empty or new folder"),
        "{err}"
    );
    assert!(!dir.path().join("meta.json").exists() && !dir.path().join("index").exists());
    // --out pointing at a file says so.
    let file = dir.path().join("labels.csv");
    std::fs::write(&file, "x\n").unwrap();
    let err = build_err(dir.path(), &file, &["data.img_size=32"]);
    assert!(err.contains("labels.csv: is a file, not a folder"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x\n");
}
