//! `prep verify` catches corruption; `inspect`, `export-frames`, `synth` and the Python
//! reader example work on caches the tests build.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::path::{Path, PathBuf};

fn small_cache(d: &Path, extra: &[&str]) -> PathBuf {
    testsrc(&d.join("a.mp4"), "h264", 160, 120, "10", 2.0);
    testsrc(&d.join("b.avi"), "mjpeg", 128, 96, "15", 2.0);
    write_manifest(
        &d.join("manifest.csv"),
        &[
            ("s1", "p1", "front", "a.mp4", 0.0),
            ("s1", "p1", "side", "b.avi", 0.2),
        ],
    );
    write_segments(&d.join("segments.csv"), &[("s1", 0.5, 1.5, "texting")]);
    let cache = d.join("cache");
    let mut opts = vec!["data.img_size=48", "data.max_video_frames=8"];
    opts.extend_from_slice(extra);
    build_ok(d, &cache, &opts);
    cache
}

#[test]
fn verify_detects_flipped_bytes_truncation_and_a_swapped_index() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let c = cache.to_str().unwrap();
    prep_ok(&["verify", "-q", c]);
    let rec = Cache::open(&cache).unwrap().records[2].clone();
    let shard = cache.join(&rec.shard);

    // One flipped bit inside a record.
    let mut data = std::fs::read(&shard).unwrap();
    let at = (rec.offset + rec.length / 2) as usize;
    data[at] ^= 0x10;
    std::fs::write(&shard, &data).unwrap();
    let err = prep_err(&["verify", "-q", c]);
    assert!(
        err.contains(&rec.shard) && err.contains("checksum mismatch"),
        "{err}"
    );
    data[at] ^= 0x10;
    std::fs::write(&shard, &data).unwrap();
    prep_ok(&["verify", "-q", c]);

    // A truncated shard.
    let last = Cache::open(&cache)
        .unwrap()
        .records
        .iter()
        .filter(|r| r.shard == rec.shard)
        .map(|r| r.offset + r.length)
        .max()
        .unwrap();
    std::fs::write(&shard, &data[..(last - 100) as usize]).unwrap();
    let err = prep_err(&["verify", "-q", c]);
    assert!(err.contains("but the shard has"), "{err}");
    std::fs::write(&shard, &data).unwrap();

    // An index table from another build.
    let other = small_cache(&dir.path().join("other").tap_mkdir(), &["data.img_size=40"]);
    let records = |c: &Path| {
        let meta = mvdrive_schemas::meta::Meta::load(c).unwrap();
        c.join(
            mvdrive_schemas::cache::index_rel_path::<mvdrive_schemas::index::RecordRow>(&meta)
                .unwrap(),
        )
    };
    let listed = records(&cache);
    std::fs::copy(records(&other), &listed).unwrap();
    let err = prep_err(&["verify", "-q", c]);
    assert!(
        err.contains("index/records.") && err.contains("does not match the checksum in meta.json"),
        "{err}"
    );

    // No meta.json at all.
    std::fs::remove_file(cache.join("meta.json")).unwrap();
    let err = prep_err(&["verify", "-q", c]);
    assert!(
        err.contains("meta.json") && err.contains("not an mvdrive cache"),
        "{err}"
    );
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn verify_checks_every_zstd_frame() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &["prep.compress=zstd:3"]);
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let rec = Cache::open(&cache).unwrap().records[0].clone();
    assert_eq!(rec.compression, "zstd");
    // Corrupt the offset table at the end of the record (checksum updated to match in the
    // index would need a rebuild, so verify must report both layers).
    let shard = cache.join(&rec.shard);
    let mut data = std::fs::read(&shard).unwrap();
    // The table's last entry: just before the frame checksums.
    let body = mvdrive_schemas::record::body_len(rec.length, rec.frame_count, true).unwrap();
    let table = (rec.offset + body - 8) as usize;
    data[table] = data[table].wrapping_add(1);
    std::fs::write(&shard, &data).unwrap();
    let err = prep_err(&["verify", "-q", cache.to_str().unwrap()]);
    assert!(
        err.contains("checksum mismatch") && err.contains("offset table"),
        "{err}"
    );
}

#[test]
fn inspect_json_has_the_documented_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let out = prep_ok(&["inspect", "--json", cache.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["sessions"], 1);
    assert_eq!(v["views"], serde_json::json!(["front", "side"]));
    assert_eq!(v["segments"], 1);
    assert_eq!(v["classes"]["texting"], 1);
    assert_eq!(v["img_size"], serde_json::json!([48, 48]));
    assert_eq!(v["fps"], 10.0); // prep.fps=source: the first view's rate
    assert_eq!(v["kpt_bytes"], 0);
    let frames = v["timeline_frames"].as_u64().unwrap();
    assert_eq!(frames, 18, "0.2 .. 2.0 s at 10 fps");
    // Frames and their 8-byte checksums.
    assert_eq!(
        v["rgb_bytes"].as_u64().unwrap(),
        2 * frames * (48 * 48 * 3 + 8)
    );
    let text = prep_ok(&["inspect", cache.to_str().unwrap()]);
    assert!(
        text.contains("texting") && text.contains("front, side"),
        "{text}"
    );
}

#[test]
fn export_frames_writes_pngs_of_the_cached_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let out = dir.path().join("png");
    prep_ok(&[
        "export-frames",
        cache.to_str().unwrap(),
        "--session",
        "s1",
        "--view",
        "side",
        "--start",
        "5",
        "--count",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let mut files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3);
    assert!(files[0].ends_with("s1_side_000005.png"));
    // The PNG decodes (via the ffmpeg CLI) to exactly the cached frame.
    let raw = dir.path().join("f.rgb");
    ffmpeg(&[
        "-i",
        files[0].to_str().unwrap(),
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        raw.to_str().unwrap(),
    ]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        std::fs::read(&raw).unwrap(),
        c.read_frame("s1", "side", 5).unwrap()
    );
    let err = prep_err(&[
        "export-frames",
        cache.to_str().unwrap(),
        "--session",
        "nope",
        "--view",
        "side",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("no session `nope`"), "{err}");
}

#[test]
fn the_python_reader_reads_frames_without_mvdrive() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let c = Cache::open(&cache).unwrap();
    for (view, t) in [("front", 0u64), ("side", 9), ("side", 17)] {
        let out = dir.path().join(format!("{view}-{t}.rgb"));
        let frame = t.to_string();
        let bytes = python_reader(
            &cache,
            &["--session", "s1", "--view", view, "--frame", &frame],
            &out,
        );
        assert_eq!(
            bytes,
            c.read_frame("s1", view, t).unwrap(),
            "{view} frame {t}"
        );
    }
}

#[test]
fn synth_makes_a_multi_view_dataset_that_builds() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 4, 7);
    let manifest = std::fs::read_to_string(data.join("manifest.csv")).unwrap();
    assert!(
        manifest.starts_with("session,subject,view,video,offset_s,keypoints,keypoint_layout,split")
    );
    let kpt = std::fs::read_to_string(data.join("keypoints/s001_front.csv")).unwrap();
    assert!(kpt.starts_with("frame,joint,x,y,conf\n0,0,"));
    let cache = dir.path().join("cache");
    build_ok(&data, &cache, &["data.img_size=64", "prep.fps=8"]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(c.sessions.len(), 4);
    assert_eq!(c.meta.views, vec!["front", "left", "right"]);
    // Three views with different resolutions, rates, codecs and start offsets.
    let v: Vec<_> = c.views.iter().filter(|v| v.session == "s001").collect();
    let sizes: std::collections::HashSet<_> =
        v.iter().map(|v| (v.src_width, v.src_height)).collect();
    let rates: std::collections::HashSet<_> = v
        .iter()
        .map(|v| (v.src_fps * 100.0).round() as i64)
        .collect();
    let offsets: std::collections::HashSet<_> = v
        .iter()
        .map(|v| (v.offset_s * 100.0).round() as i64)
        .collect();
    assert_eq!(
        (sizes.len(), rates.len(), offsets.len()),
        (3, 3, 3),
        "{v:?}"
    );
    // At least 4 classes and several subjects.
    assert!(
        c.labels.len() >= 4 && c.labels.iter().all(|l| l.segments > 0),
        "{:?}",
        c.labels
    );
    let subjects: std::collections::HashSet<_> = c.sessions.iter().map(|s| &s.subject).collect();
    assert!(subjects.len() >= 3);
    // Same seed, same dataset.
    let again = synth(&dir.path().join("again"), 4, 7);
    assert_eq!(
        std::fs::read(data.join("segments.csv")).unwrap(),
        std::fs::read(again.join("segments.csv")).unwrap()
    );
}

/// Classes differ by motion: the mean absolute frame-to-frame change inside segments of
/// `texting` and `drinking` (moving hands) exceeds that of `safe_driving`.
#[test]
fn synth_classes_differ_by_motion() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 2, 1);
    let cache = dir.path().join("cache");
    build_ok(&data, &cache, &["data.img_size=64", "prep.fps=10"]);
    let c = Cache::open(&cache).unwrap();
    let mut motion: std::collections::HashMap<String, (f64, u64)> = Default::default();
    for seg in &c.segments {
        for t in seg.frame_start + 1..seg.frame_end {
            let a = c.read_frame(&seg.session, "front", t - 1).unwrap();
            let b = c.read_frame(&seg.session, "front", t).unwrap();
            let diff: u64 = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y) as u64).sum();
            let e = motion.entry(seg.label.clone()).or_default();
            e.0 += diff as f64;
            e.1 += 1;
        }
    }
    let m = |l: &str| motion.get(l).map(|(s, n)| s / *n as f64).unwrap_or(0.0);
    assert!(m("texting") > 2.0 * m("safe_driving"), "{motion:?}");
    assert!(m("drinking") > 2.0 * m("safe_driving"), "{motion:?}");
    assert!(m("looking_left") > 2.0 * m("safe_driving"), "{motion:?}");
}

#[test]
fn verify_checks_what_the_index_means_not_only_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let c = cache.to_str().unwrap();
    let meta_path = cache.join("meta.json");
    let original = std::fs::read_to_string(&meta_path).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let edits: [(Edit, &str); 5] = [
        (
            |m| {
                let files = m["index_files"].as_array_mut().unwrap();
                files.retain(|f| !f["path"].as_str().unwrap().contains("labels"));
            },
            "does not list the labels.parquet table",
        ),
        (|m| m["params"]["fps"] = "-1".into(), "params.fps `-1`"),
        (
            |m| m["params"]["kpt_normalize"] = "sideways".into(),
            "params.kpt_normalize `sideways`",
        ),
        (
            |m| m["params"]["compress"] = "zstd:3".into(),
            "but meta.json says `zstd:3`",
        ),
        (
            |m| {
                let n = m["totals"]["segments"].as_u64().unwrap();
                m["totals"]["segments"] = (n + 1).into();
            },
            "totals",
        ),
    ];
    for (edit, needle) in edits {
        let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
        edit(&mut m);
        std::fs::write(&meta_path, serde_json::to_string(&m).unwrap()).unwrap();
        let err = prep_err(&["verify", "-q", c]);
        assert!(err.contains(needle), "{needle}: {err}");
    }
    std::fs::write(&meta_path, &original).unwrap();
    prep_ok(&["verify", "-q", c]);
    // Label ids outside 0..n, written through the commit protocol so that every checksum
    // is right: verify refuses them (train would index its classifier with them).
    let cache_now = Cache::open(&cache).unwrap();
    let mut labels = cache_now.labels.clone();
    labels[0].label_id = 1000;
    let mut segments = cache_now.segments.clone();
    for s in &mut segments {
        s.label_id = 1000;
    }
    mvdrive_schemas::commit::commit(
        &cache,
        cache_now.meta.clone(),
        &cache_now.sessions,
        &cache_now.views,
        &cache_now.records,
        &segments,
        &labels,
    )
    .unwrap();
    let err = prep_err(&["verify", "-q", c]);
    assert!(
        err.contains("label ids must be 0..1") && err.contains("1000"),
        "{err}"
    );
}

#[test]
fn a_commit_switches_the_whole_index_at_once() {
    use mvdrive_schemas::commit::{commit, write_index_table};
    let dir = tempfile::tempdir().unwrap();
    let cache = small_cache(dir.path(), &[]);
    let c = cache.to_str().unwrap();
    let before = Cache::open(&cache).unwrap();
    let index_files = |cache: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache.join("index"))
            .unwrap()
            .map(|e| format!("index/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        v.sort();
        v
    };
    let listed = |m: &mvdrive_schemas::meta::Meta| -> Vec<String> {
        let mut v: Vec<String> = m.index_files.iter().map(|f| f.path.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(index_files(&cache), listed(&before.meta));
    // A crash after new tables were written but before meta.json: the old cache is whole.
    let mut labels = before.labels.clone();
    labels[0].label = "renamed".into();
    let mut segments = before.segments.clone();
    segments.iter_mut().for_each(|s| s.label = "renamed".into());
    let mut files = Vec::new();
    write_index_table(&cache, &labels, &mut files).unwrap();
    write_index_table(&cache, &segments, &mut files).unwrap();
    prep_ok(&["verify", "-q", c]);
    assert_eq!(Cache::open(&cache).unwrap().labels, before.labels);
    // The commit switches to the new index and leaves only the tables it lists.
    commit(
        &cache,
        before.meta.clone(),
        &before.sessions,
        &before.views,
        &before.records,
        &segments,
        &labels,
    )
    .unwrap();
    let after = Cache::open(&cache).unwrap();
    assert_eq!(after.labels[0].label, "renamed");
    assert_eq!(after.meta.format_version, mvdrive_schemas::FORMAT_VERSION);
    assert_eq!(index_files(&cache), listed(&after.meta));
    prep_ok(&["verify", "-q", c]);
}

#[test]
fn a_cache_without_segments_has_no_labels_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_cache(d, &[]);
    let cache = d.join("unlabelled");
    prep_ok(&[
        "build",
        "-q",
        "--manifest",
        d.join("manifest.csv").to_str().unwrap(),
        "--out",
        cache.to_str().unwrap(),
        "data.img_size=48",
    ]);
    prep_ok(&["verify", cache.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&prep_ok(&["inspect", "--json", cache.to_str().unwrap()])).unwrap();
    assert_eq!(
        (v["sessions"].as_u64(), v["segments"].as_u64()),
        (Some(1), Some(0))
    );
    let c = Cache::open(&cache).unwrap();
    assert!(c.labels.is_empty() && c.segments.is_empty());
}

/// PSNR in dB of `b` against `a` (same length, 8-bit).
fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let mse = se / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn jpeg_records_are_small_close_to_raw_and_read_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 1, 4);
    let build = |name: &str, compress: &str| {
        let cache = dir.path().join(name);
        let settings = ["data.img_size=64", "prep.fps=8", "data.max_video_frames=32"];
        build_ok(&data, &cache, &[&settings[..], &[compress]].concat());
        cache
    };
    let raw = build("raw", "prep.compress=none");
    let jpeg = build("jpeg", "prep.compress=jpeg:90");
    let (r, j) = (Cache::open(&raw).unwrap(), Cache::open(&jpeg).unwrap());
    assert!(j
        .records
        .iter()
        .all(|x| x.compression == if x.modality == "rgb" { "jpeg" } else { "none" }));
    let bytes = |c: &Cache| -> u64 {
        c.records
            .iter()
            .filter(|x| x.modality == "rgb")
            .map(|x| x.length)
            .sum()
    };
    assert!(
        bytes(&j) * 4 < bytes(&r),
        "jpeg {} vs raw {}",
        bytes(&j),
        bytes(&r)
    );
    prep_ok(&["verify", "--quiet", jpeg.to_str().unwrap()]);
    let v: serde_json::Value =
        serde_json::from_str(&prep_ok(&["inspect", "--json", jpeg.to_str().unwrap()])).unwrap();
    assert_eq!(v["bytes_by_codec"]["rgb/jpeg"].as_u64(), Some(bytes(&j)));
    assert!(v["bytes_by_codec"]["kpt/none"].as_u64().unwrap() > 0);
    // Every frame close to the raw cache's: PSNR >= 38 dB at Q = 90.
    let mut worst = f64::INFINITY;
    for s in &r.sessions {
        for v in &r.meta.views {
            for t in 0..s.timeline_frames {
                let (a, b) = (
                    r.read_frame(&s.session, v, t).unwrap(),
                    j.read_frame(&s.session, v, t).unwrap(),
                );
                worst = worst.min(psnr(&a, &b));
            }
        }
    }
    assert!(worst >= 38.0, "worst frame PSNR {worst:.1} dB");
    // Python's reader (Pillow's libjpeg) decodes the same frames, up to IDCT rounding.
    let out = dir.path().join("f.rgb");
    let s = &j.sessions[0].session;
    let py = python_reader(
        &jpeg,
        &["--session", s, "--view", "front", "--frame", "5"],
        &out,
    );
    let ours = j.read_frame(s, "front", 5).unwrap();
    assert!(psnr(&ours, &py) > 45.0, "{}", psnr(&ours, &py));

    // A damaged JPEG payload: verify names the record, readers return errors.
    let rec = j.records.iter().find(|x| x.compression == "jpeg").unwrap();
    let path = jpeg.join(&rec.shard);
    let mut file = std::fs::read(&path).unwrap();
    file[rec.offset as usize + 700] ^= 0x5a;
    std::fs::write(&path, file).unwrap();
    let e = prep_err(&["verify", jpeg.to_str().unwrap()]);
    assert!(e.contains(&rec.session) && e.contains(&rec.view), "{e}");
    let j = Cache::open(&jpeg).unwrap();
    assert!(j
        .read_frame(&rec.session, &rec.view, rec.frame_start)
        .is_err());
}

#[test]
fn changing_the_jpeg_quality_redoes_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 1, 2);
    let cache = dir.path().join("cache");
    let build = |q: &str| {
        let codec = format!("prep.compress={q}");
        build_ok(&data, &cache, &["data.img_size=32", "prep.fps=4", &codec])
    };
    let size = || -> u64 {
        let c = Cache::open(&cache).unwrap();
        c.records
            .iter()
            .filter(|r| r.modality == "rgb")
            .map(|r| r.length)
            .sum()
    };
    build("jpeg:90");
    let (first, again) = (size(), build("jpeg:90"));
    assert!(again.contains("3 reused"), "{again}");
    let lower = build("jpeg:40");
    assert!(lower.contains("0 reused"), "{lower}");
    assert!(size() < first);
}
