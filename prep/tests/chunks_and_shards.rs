//! Chunk boundaries, shard size caps and compression do not change a single frame.

mod common;

use common::*;
use mvdrive_schemas::Cache;

#[test]
fn chunking_sharding_and_zstd_keep_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    testsrc(&d.join("a.mp4"), "h264", 320, 240, "10", 3.0);
    testsrc(&d.join("b.mkv"), "mpeg4", 160, 120, "15", 3.0);
    write_manifest(
        &d.join("manifest.csv"),
        &[
            ("s1", "p1", "front", "a.mp4", 0.0),
            ("s1", "p1", "side", "b.mkv", 0.0),
        ],
    );
    write_segments(&d.join("segments.csv"), &[("s1", 0.0, 3.0, "x")]);

    let whole = d.join("whole");
    build_ok(
        d,
        &whole,
        &[
            "data.img_size=128",
            "prep.fps=10",
            "data.max_video_frames=1000",
        ],
    );
    // 30 frames in chunks of 7: 7+7+7+7+2, several shards of at most 1 MiB (48 KiB frames).
    let chunked = d.join("chunked");
    build_ok(
        d,
        &chunked,
        &[
            "data.img_size=128",
            "prep.fps=10",
            "data.max_video_frames=7",
            "prep.shard_size=1MiB",
        ],
    );
    let zstd = d.join("zstd");
    build_ok(
        d,
        &zstd,
        &[
            "data.img_size=128",
            "prep.fps=10",
            "data.max_video_frames=7",
            "prep.compress=zstd:3",
        ],
    );

    let w = Cache::open(&whole).unwrap();
    let c = Cache::open(&chunked).unwrap();
    let z = Cache::open(&zstd).unwrap();
    assert_eq!(w.sessions[0].timeline_frames, 30);
    for view in ["front", "side"] {
        assert_eq!(w.rgb_records("s1", view).len(), 1);
        let recs = c.rgb_records("s1", view);
        let spans: Vec<(u64, u32, u32)> = recs
            .iter()
            .map(|r| (r.frame_start, r.frame_count, r.chunk))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 7, 0), (7, 7, 1), (14, 7, 2), (21, 7, 3), (28, 2, 4)]
        );
        assert!(recs.iter().all(|r| r.offset % 4096 == 0));
        for t in 0..30 {
            let a = w.read_frame("s1", view, t).unwrap();
            assert_eq!(
                a,
                c.read_frame("s1", view, t).unwrap(),
                "{view} frame {t}: chunked differs"
            );
            assert_eq!(
                a,
                z.read_frame("s1", view, t).unwrap(),
                "{view} frame {t}: zstd differs"
            );
        }
    }
    let shards: std::collections::HashSet<&str> =
        c.records.iter().map(|r| r.shard.as_str()).collect();
    assert!(
        shards.len() >= 4,
        "a 1 MiB cap over 10 records of 336 KiB gives at least 4 shards, got {} shards",
        shards.len()
    );
    for s in &shards {
        let len = std::fs::metadata(chunked.join(s)).unwrap().len();
        assert!(len <= 1 << 20, "{s} is {len} bytes, over the 1 MiB cap");
    }
    // zstd records are smaller than raw ones and verify.
    let raw: u64 = c.records.iter().map(|r| r.length).sum();
    let packed: u64 = z.records.iter().map(|r| r.length).sum();
    assert!(packed < raw, "zstd {packed} >= raw {raw}");
    for cache in [&whole, &chunked, &zstd] {
        prep_ok(&["verify", "--quiet", cache.to_str().unwrap()]);
    }
}

#[test]
fn segments_in_frames_use_the_frame_views_rate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    testsrc(&d.join("a.mp4"), "h264", 160, 120, "20", 3.0);
    testsrc(&d.join("b.mp4"), "h264", 160, 120, "10", 3.0);
    write_manifest(
        &d.join("manifest.csv"),
        &[
            ("s1", "p1", "a", "a.mp4", 0.0),
            ("s1", "p1", "b", "b.mp4", 0.5),
        ],
    );
    // Frames 10..20 of view b (10 fps, starts at 0.5 s) = session 1.5..2.5 s;
    // frames 20..30 of view a (20 fps, the first view) = session 1.0..1.5 s.
    std::fs::write(
        d.join("segments.csv"),
        "session,start_frame,end_frame,label,frame_view\ns1,10,20,x,b\ns1,20,30,y,\n",
    )
    .unwrap();
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32", "prep.fps=10"]);
    let c = Cache::open(&cache).unwrap();
    // Timeline starts at 0.5 s at 10 fps.
    let segs: Vec<(f64, f64, u64, u64)> = c
        .segments
        .iter()
        .map(|s| (s.start_s, s.end_s, s.frame_start, s.frame_end))
        .collect();
    assert_eq!(segs, vec![(1.5, 2.5, 10, 20), (1.0, 1.5, 5, 10)]);
}
