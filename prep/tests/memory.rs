//! Memory stays flat: peak RSS of `prep build` does not grow with video length, because
//! frames are streamed from the decoder to the shard and never held.

mod common;

use common::*;

fn peak_rss_mib(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.contains("peak RSS"))
        .expect("summary with peak RSS");
    let tail = line.rsplit("peak RSS ").next().unwrap();
    let mut it = tail.split_whitespace();
    let v: f64 = it.next().unwrap().parse().unwrap();
    match it.next().unwrap() {
        "KiB" => v / 1024.0,
        "MiB" => v,
        "GiB" => v * 1024.0,
        u => panic!("unit {u}"),
    }
}

#[test]
fn peak_rss_does_not_grow_with_video_length() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rss = Vec::new();
    for secs in [3.0, 24.0] {
        let sub = d.join(format!("len{secs}"));
        std::fs::create_dir(&sub).unwrap();
        testsrc(&sub.join("v.mp4"), "h264", 640, 480, "25", secs);
        write_manifest(
            &sub.join("manifest.csv"),
            &[("s1", "p1", "cam", "v.mp4", 0.0)],
        );
        write_segments(&sub.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
        let out = build_ok(
            &sub,
            &sub.join("cache"),
            &[
                "data.img_size=224",
                "data.max_video_frames=50",
                "data.num_io_threads=1",
            ],
        );
        rss.push(peak_rss_mib(&out));
    }
    // 8x the frames (600 vs 75 frames of 147 KiB: 88 MiB vs 11 MiB of output).
    assert!(
        rss[1] < rss[0] * 1.10 + 8.0,
        "peak RSS grew with video length: {:.1} MiB for 3 s, {:.1} MiB for 24 s",
        rss[0],
        rss[1]
    );
}
