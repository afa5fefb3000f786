//! Frames in the cache equal the ffmpeg CLI's `scale` output with the same flags, byte for
//! byte, for every codec we test (h264, mpeg4, mjpeg, and vp9 where the encoder exists),
//! every scaler, and the letterbox / center-crop modes.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::path::Path;

/// Build a one-view cache of `video` at its own frame rate and compare every frame to the
/// CLI's rawvideo output of `vf`.
fn compare(dir: &Path, video: &str, overrides: &[&str], vf: &str, h: usize, w: usize) -> usize {
    write_manifest(
        &dir.join("manifest.csv"),
        &[("s1", "p1", "cam", video, 0.0)],
    );
    write_segments(&dir.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
    let cache = dir.join(format!("cache-{}", video.replace('.', "-")));
    build_ok(dir, &cache, overrides);
    let raw = dir.join(format!("{video}.rgb"));
    let input = dir.join(video);
    ffmpeg(&[
        "-i",
        input.to_str().unwrap(),
        "-vf",
        vf,
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        raw.to_str().unwrap(),
    ]);
    let want = raw_frames(&raw, h * w * 3);
    let c = Cache::open(&cache).unwrap();
    let n = c.sessions[0].timeline_frames as usize;
    assert!(
        n >= want.len() - 1 && n <= want.len(),
        "{video}: cache has {n} frames, CLI {}",
        want.len()
    );
    for (t, frame) in want.iter().enumerate().take(n) {
        let got = c.read_frame("s1", "cam", t as u64).unwrap();
        let diff = got.iter().zip(frame).filter(|(a, b)| a != b).count();
        assert_eq!(
            diff, 0,
            "{video} frame {t}: {diff} bytes differ from `ffmpeg -vf {vf}`"
        );
    }
    n
}

#[test]
fn every_codec_matches_the_cli_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut codecs = vec![("h264", "a.mp4"), ("mpeg4", "b.mkv"), ("mjpeg", "c.avi")];
    if has_encoder("libvpx-vp9") {
        codecs.push(("vp9", "d.webm"));
    } else {
        eprintln!("libvpx-vp9 encoder not available: VP9 not tested");
    }
    for (codec, name) in codecs {
        testsrc(&dir.path().join(name), codec, 320, 240, "10", 2.0);
        let n = compare(
            dir.path(),
            name,
            &["data.img_size=96x128"],
            "scale=128:96:flags=bilinear",
            96,
            128,
        );
        assert!(n >= 19, "{codec}: only {n} frames");
    }
}

#[test]
fn bicubic_and_area_match_the_cli_too() {
    let dir = tempfile::tempdir().unwrap();
    testsrc(&dir.path().join("a.mp4"), "h264", 320, 240, "8", 1.0);
    std::fs::copy(dir.path().join("a.mp4"), dir.path().join("b.mp4")).unwrap();
    compare(
        dir.path(),
        "a.mp4",
        &["data.img_size=60x80", "prep.scaler=bicubic"],
        "scale=80:60:flags=bicubic",
        60,
        80,
    );
    compare(
        dir.path(),
        "b.mp4",
        &["data.img_size=60x80", "prep.scaler=area"],
        "scale=80:60:flags=area",
        60,
        80,
    );
}

#[test]
fn letterbox_pads_with_black_and_center_crop_keeps_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    testsrc(&dir.path().join("a.mp4"), "h264", 320, 240, "8", 1.0);
    std::fs::copy(dir.path().join("a.mp4"), dir.path().join("b.mp4")).unwrap();
    // 320x240 into 128x128: letterbox scales to 128x96 and pads 16 rows above and below.
    compare(
        dir.path(),
        "a.mp4",
        &["data.img_size=128", "prep.resize=letterbox"],
        "scale=128:96:flags=bilinear,pad=128:128:0:16:black",
        128,
        128,
    );
    // Center crop scales to 171x128 and keeps columns 21..149.
    compare(
        dir.path(),
        "b.mp4",
        &["data.img_size=128", "prep.resize=center_crop"],
        "scale=171:128:flags=bilinear,crop=128:128:21:0",
        128,
        128,
    );
}
