//! Views with unequal frame rates, start offsets and a variable frame rate line up on one
//! session timeline frame for frame.
//!
//! Each test video is a flat grey frame whose level encodes the session time at which the
//! frame was captured (Y = 16 + 40 s), so neighbouring frames differ. The frame timestamps
//! listed by ffprobe and the frames decoded by the ffmpeg CLI (independent oracles) say which
//! source frame each view must show at each timeline frame; the cache must hold exactly it.

mod common;

use common::*;
use mvdrive_schemas::Cache;
use std::path::Path;
use std::process::Command;

/// Presentation times (s) of every frame, from ffprobe.
fn frame_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "frame=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// A lossless grey clip: frame at stream time T shows Y = 16 + 40 * (T + offset).
fn grey_clip(path: &Path, rate: &str, secs: f64, offset: f64, select: Option<&str>) {
    let src = format!("color=c=black:s=64x48:r={rate}");
    let geq = format!("geq=lum='16+40*(T+{offset})':cb=128:cr=128");
    let vf = match select {
        Some(sel) => format!("select='{sel}',{geq}"),
        None => geq,
    };
    let d = format!("{secs}");
    let mut args = vec!["-f", "lavfi", "-i", &src, "-t", &d, "-vf", &vf];
    if select.is_some() {
        args.extend(["-fps_mode", "vfr"]);
    }
    args.extend(codec_args("h264-lossless"));
    args.push(path.to_str().unwrap());
    ffmpeg(&args);
}

/// Every source frame decoded and scaled to 32x32 RGB by the ffmpeg CLI, in presentation
/// order, without frame-rate conversion.
fn cli_frames(dir: &Path, video: &str) -> Vec<Vec<u8>> {
    let raw = dir.join(format!("{video}.rgb"));
    let input = dir.join(video);
    ffmpeg(&[
        "-i",
        input.to_str().unwrap(),
        "-fps_mode",
        "passthrough",
        "-vf",
        "scale=32:32:flags=bilinear",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        raw.to_str().unwrap(),
    ]);
    raw_frames(&raw, 32 * 32 * 3)
}

#[test]
fn unequal_rates_offsets_and_vfr_line_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (view, rate, offset_s, select): 10 fps from 0; 15 fps from 0.3 s; 12.5 fps from -0.2 s;
    // 30 fps with every third frame dropped (VFR) from 0.1 s.
    let views = [
        ("a", "10", 0.0, None),
        ("b", "15", 0.3, None),
        ("c", "25/2", -0.2, None),
        ("d", "30", 0.1, Some("not(eq(mod(n\\,3)\\,1))")),
    ];
    let mut rows = Vec::new();
    for (v, rate, off, sel) in &views {
        grey_clip(&d.join(format!("{v}.mkv")), rate, 4.0, *off, *sel);
        rows.push(("s1", "p1", *v, format!("{v}.mkv"), *off));
    }
    let rows: Vec<(&str, &str, &str, &str, f64)> = rows
        .iter()
        .map(|(a, b, c, e, f)| (*a, *b, *c, e.as_str(), *f))
        .collect();
    write_manifest(&d.join("manifest.csv"), &rows);
    write_segments(&d.join("segments.csv"), &[("s1", 1.0, 2.0, "x")]);
    let cache = d.join("cache");
    build_ok(
        d,
        &cache,
        &["data.img_size=32", "prep.fps=8", "data.max_video_frames=5"],
    );
    let c = Cache::open(&cache).unwrap();
    let s = &c.sessions[0];
    // The timeline covers what every view sees: from the latest start (0.3 s) to the
    // earliest end (3.8 s, view c).
    assert!(
        (s.timeline_start_s - 0.3).abs() < 1e-9,
        "start {}",
        s.timeline_start_s
    );
    assert_eq!(s.timeline_frames, 28, "3.5 s at 8 fps");
    for (v, _, off, _) in &views {
        let name = format!("{v}.mkv");
        let times = frame_times(&d.join(&name));
        let frames = cli_frames(d, &name);
        assert_eq!(
            times.len(),
            frames.len(),
            "view {v}: ffprobe and the CLI disagree on the frame count"
        );
        for i in 0..s.timeline_frames {
            let t = s.timeline_start_s + i as f64 / s.fps;
            // The latest frame captured at or before t, on the session clock.
            let k = times
                .iter()
                .rposition(|&p| off + p <= t + 1e-6)
                .expect("a frame before t");
            let got = c.read_frame("s1", v, i).unwrap();
            assert!(
                got == frames[k],
                "view {v}, timeline frame {i} (t={t:.3}): not source frame {k} (captured at {:.3})",
                off + times[k]
            );
            // Neighbouring source frames differ, so the check above pins exactly one frame.
            if k + 1 < frames.len() {
                assert_ne!(frames[k], frames[k + 1]);
            }
        }
    }
    // The segment 1.0-2.0 s maps to the timeline frames whose time falls inside it.
    let seg = &c.segments[0];
    assert_eq!((seg.frame_start, seg.frame_end), (6, 14));
}
