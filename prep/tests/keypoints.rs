//! Keypoints are resampled onto the session timeline through the same source frames the
//! RGB records show, stored in their own shards with a validity mask, and normalised.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::collections::HashMap;
use std::path::Path;

/// frame -> joint -> (x, y, conf) from a long-form CSV.
fn read_long(path: &Path) -> HashMap<u64, HashMap<usize, (f32, f32, f32)>> {
    let mut out: HashMap<u64, HashMap<usize, (f32, f32, f32)>> = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines().skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        let (f, j) = (v[0].parse().unwrap(), v[1].parse().unwrap());
        out.entry(f).or_default().insert(
            j,
            (
                v[2].parse().unwrap(),
                v[3].parse().unwrap(),
                v[4].parse().unwrap(),
            ),
        );
    }
    out
}

#[test]
fn synth_keypoints_follow_the_frames_the_rgb_shows() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 1, 0);
    let cache = dir.path().join("cache");
    build_ok(
        &data,
        &cache,
        &["data.img_size=32", "prep.fps=5", "data.max_video_frames=6"],
    );
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = Cache::open(&cache).unwrap();
    let s = &c.sessions[0];
    for v in &c.views {
        assert_eq!(v.keypoint_layout.as_deref(), Some("coco17"));
        assert_eq!(
            v.kpt_valid_frames, s.timeline_frames,
            "{}: every synth frame has a detection",
            v.view
        );
        let kpt = c.records_of("kpt", &v.session, &v.view);
        assert_eq!(kpt.len(), c.rgb_records(&v.session, &v.view).len());
        assert!(kpt
            .iter()
            .all(|r| (r.height, r.width, r.channels) == (17, 3, 4)));
        let csv = read_long(&data.join(v.keypoints.as_ref().unwrap()));
        for i in 0..s.timeline_frames {
            let t = s.timeline_start_s + i as f64 / s.fps;
            // Synth videos are constant-rate from their offset: the frame shown at t.
            let k = ((t - v.offset_s) * v.src_fps + 1e-6).floor() as u64;
            let (vals, valid) = c.read_keypoints(&v.session, &v.view, i).unwrap().unwrap();
            assert!(valid);
            for j in 0..17 {
                let (x, y, conf) = csv[&k][&j];
                let got = (vals[j * 3], vals[j * 3 + 1], vals[j * 3 + 2]);
                let want = if conf > 0.0 {
                    (x, y, conf)
                } else {
                    (0.0, 0.0, 0.0)
                };
                assert_eq!(got, want, "{} frame {i} (source {k}) joint {j}", v.view);
            }
        }
    }
    let v: serde_json::Value =
        serde_json::from_str(&prep_ok(&["inspect", "--json", cache.to_str().unwrap()])).unwrap();
    assert!(v["kpt_bytes"].as_u64().unwrap() > 0);
}

fn two_views(d: &Path, kpt_rows: &str, layout: &str) {
    testsrc(&d.join("a.mp4"), "h264", 200, 100, "10", 2.0);
    testsrc(&d.join("b.mp4"), "h264", 160, 120, "10", 2.0);
    std::fs::write(d.join("a.csv"), kpt_rows).unwrap();
    std::fs::write(
        d.join("manifest.csv"),
        format!("session,subject,view,video,keypoints,keypoint_layout\ns1,p1,a,a.mp4,a.csv,{layout}\ns1,p1,b,b.mp4,,\n"),
    )
    .unwrap();
    write_segments(&d.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
}

#[test]
fn missing_frames_are_masked_views_without_keypoints_are_allowed_and_normalisation_applies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Detections on even frames only; joint 1 has no confidence on frame 2.
    let mut rows = String::from("frame,joint,x,y,conf\n");
    for f in (0..20).step_by(2) {
        for j in 0..17 {
            let conf = if f == 2 && j == 1 { 0.0 } else { 0.9 };
            rows += &format!("{f},{j},{},{},{conf}\n", 10 * j + f, 5 * j);
        }
    }
    two_views(d, &rows, "coco17");
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32", "prep.kpt_normalize=image"]);
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(
        c.read_keypoints("s1", "b", 0).unwrap(),
        None,
        "view b has no keypoints"
    );
    let vb = c.views.iter().find(|v| v.view == "b").unwrap();
    assert_eq!(
        (vb.keypoints.as_deref(), vb.keypoint_layout.as_deref()),
        (None, None)
    );
    for t in 0..20u64 {
        let (vals, valid) = c.read_keypoints("s1", "a", t).unwrap().unwrap();
        assert_eq!(valid, t % 2 == 0, "frame {t}");
        if !valid {
            assert!(vals.iter().all(|v| *v == 0.0));
            continue;
        }
        // image normalisation: x / 200, y / 100.
        assert!((vals[3 * 3] - (30 + t) as f32 / 200.0).abs() < 1e-6);
        assert!((vals[3 * 3 + 1] - 15.0 / 100.0).abs() < 1e-6);
        if t == 2 {
            assert_eq!(&vals[3..6], &[0.0, 0.0, 0.0], "undetected joint is zero");
        }
    }
    assert_eq!(
        c.views
            .iter()
            .find(|v| v.view == "a")
            .unwrap()
            .kpt_valid_frames,
        10
    );
}

#[test]
fn bad_keypoint_files_are_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_views(d, "frame,joint,x,y,conf\n0,17,1,2,1\n", "coco17");
    let err = build_err(d, &d.join("cache"), &["data.img_size=32"]);
    assert!(
        err.contains("a.csv line 2")
            && err.contains("joint 17")
            && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!d.join("cache").exists());
    two_views(d, "frame,joint,x,y,conf\n0,0,1,2,1\n", "coco99");
    let err = build_err(d, &d.join("cache"), &["data.img_size=32"]);
    assert!(
        err.contains("manifest.csv line 2") && err.contains("unknown keypoint_layout `coco99`"),
        "{err}"
    );
}

#[test]
fn nans_and_frames_past_the_video_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_views(
        d,
        "frame,joint,x,y,conf\n0,0,nan,2,1\n500,0,1,2,1\n",
        "coco17",
    );
    let args = build_args(d, &d.join("cache"), &["data.img_size=32"]);
    let out = prep(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.csv: 1 joint(s) with NaN values"), "{err}");
    assert!(
        err.contains("a.csv: 1 keypoint frame(s) lie past the end of the video"),
        "{err}"
    );
}

#[test]
fn openpose_json_folders_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    testsrc(&d.join("a.mp4"), "h264", 160, 120, "10", 1.0);
    let op = d.join("openpose");
    std::fs::create_dir(&op).unwrap();
    for f in 0..10 {
        let kp: Vec<String> = (0..25).map(|j| format!("{},{},0.8", j + f, j)).collect();
        let people = if f == 5 {
            String::new()
        } else {
            format!("{{\"pose_keypoints_2d\":[{}]}}", kp.join(","))
        };
        std::fs::write(
            op.join(format!("a_{f:012}_keypoints.json")),
            format!("{{\"version\":1.3,\"people\":[{people}]}}"),
        )
        .unwrap();
    }
    std::fs::write(
        d.join("manifest.csv"),
        "session,subject,view,video,keypoints,keypoint_layout\ns1,p1,a,a.mp4,openpose,openpose25\n",
    )
    .unwrap();
    write_segments(&d.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32"]);
    let c = Cache::open(&cache).unwrap();
    let (vals, valid) = c.read_keypoints("s1", "a", 3).unwrap().unwrap();
    assert!(valid);
    assert_eq!(&vals[2 * 3..2 * 3 + 3], &[5.0, 2.0, 0.8]);
    assert!(
        !c.read_keypoints("s1", "a", 5).unwrap().unwrap().1,
        "nobody detected on frame 5"
    );
}

#[test]
fn the_python_reader_reads_keypoints_too() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), 1, 0);
    let cache = dir.path().join("cache");
    build_ok(
        &data,
        &cache,
        &[
            "data.img_size=32",
            "prep.fps=5",
            "prep.kpt_normalize=center_scale",
        ],
    );
    let c = Cache::open(&cache).unwrap();
    let out = dir.path().join("k.f32");
    let args = [
        "--session",
        "s001",
        "--view",
        "right",
        "--frame",
        "7",
        "--keypoints",
    ];
    let bytes = python_reader(&cache, &args, &out);
    let vals: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (want, valid) = c.read_keypoints("s001", "right", 7).unwrap().unwrap();
    assert!(valid && vals[vals.len() - 1] == 1.0);
    assert_eq!(&vals[..vals.len() - 1], want.as_slice());
    // center_scale: coordinates of valid joints lie within [-1, 1].
    assert!(want
        .chunks(3)
        .filter(|j| j[2] > 0.0)
        .all(|j| j[0].abs() <= 1.0 && j[1].abs() <= 1.0));
}
