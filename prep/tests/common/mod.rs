//! Shared helpers of prep's end-to-end tests: locate the `prep` binary, make small videos with the
//! ffmpeg CLI, write manifests, run `prep`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the parent of the `prep` package).
pub fn root() -> PathBuf {
    let prep = Path::new(env!("CARGO_MANIFEST_DIR"));
    prep.parent()
        .expect("prep sits in the workspace")
        .to_path_buf()
}

/// The `prep` binary Cargo built for these tests.
pub fn prep_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_prep"))
}

/// Run `prep` with `args`.
pub fn prep(args: &[&str]) -> Output {
    Command::new(prep_bin())
        .args(args)
        .output()
        .expect("run prep")
}

/// Run `prep` and require success; returns stdout.
pub fn prep_ok(args: &[&str]) -> String {
    let out = prep(args);
    assert!(
        out.status.success(),
        "prep {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run `prep` and require failure; returns stderr.
pub fn prep_err(args: &[&str]) -> String {
    let out = prep(args);
    assert!(
        !out.status.success(),
        "prep {args:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run the ffmpeg CLI (quiet, overwrite).
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin"])
        .args(args)
        .output()
        .expect("ffmpeg CLI (installed by `make setup`)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// True if this FFmpeg has the named encoder.
pub fn has_encoder(name: &str) -> bool {
    Command::new("ffmpeg")
        .args(["-v", "error", "-hide_banner", "-encoders"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|w| w == name)
        })
        .unwrap_or(false)
}

/// Encoder arguments for a codec name used in the tests.
pub fn codec_args(codec: &str) -> Vec<&'static str> {
    match codec {
        "h264" => vec![
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ],
        "h264-lossless" => vec![
            "-c:v", "libx264", "-preset", "veryfast", "-qp", "0", "-pix_fmt", "yuv420p",
        ],
        "mpeg4" => vec!["-c:v", "mpeg4", "-q:v", "3"],
        "mjpeg" => vec!["-c:v", "mjpeg", "-q:v", "3"],
        "vp9" => vec![
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-b:v",
            "1M",
        ],
        other => panic!("unknown test codec {other}"),
    }
}

/// A `testsrc2` clip (moving, detailed) of `secs` seconds.
pub fn testsrc(path: &Path, codec: &str, w: u32, h: u32, rate: &str, secs: f64) {
    let src = format!("testsrc2=size={w}x{h}:rate={rate}");
    let d = format!("{secs}");
    let mut args = vec!["-f", "lavfi", "-i", &src, "-t", &d];
    args.extend(codec_args(codec));
    args.push(path.to_str().expect("utf-8 path"));
    ffmpeg(&args);
}

/// Write a manifest with rows `(session, subject, view, video, offset_s)`.
pub fn write_manifest(path: &Path, rows: &[(&str, &str, &str, &str, f64)]) {
    let mut s = String::from("session,subject,view,video,offset_s\n");
    for (a, b, c, d, o) in rows {
        s += &format!("{a},{b},{c},{d},{o}\n");
    }
    std::fs::write(path, s).expect("write manifest");
}

/// Write segments `(session, start_s, end_s, label)`.
pub fn write_segments(path: &Path, rows: &[(&str, f64, f64, &str)]) {
    let mut s = String::from("session,start_s,end_s,label\n");
    for (a, b, c, d) in rows {
        s += &format!("{a},{b},{c},{d}\n");
    }
    std::fs::write(path, s).expect("write segments");
}

/// `prep build` arguments for a folder holding manifest.csv and segments.csv.
pub fn build_args<'a>(dir: &'a Path, cache: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut v = vec![
        "build".to_string(),
        "--quiet".into(),
        "--manifest".into(),
        dir.join("manifest.csv").display().to_string(),
        "--segments".into(),
        dir.join("segments.csv").display().to_string(),
        "--out".into(),
        cache.display().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Run `prep build` on a folder, requiring success; returns stdout.
pub fn build_ok(dir: &Path, cache: &Path, extra: &[&str]) -> String {
    let args = build_args(dir, cache, extra);
    prep_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Run `prep build` on a folder, requiring failure; returns stderr.
pub fn build_err(dir: &Path, cache: &Path, extra: &[&str]) -> String {
    let args = build_args(dir, cache, extra);
    prep_err(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The whole content of an RGB raw file as (frames, bytes per frame).
pub fn raw_frames(path: &Path, frame_bytes: usize) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).expect("read raw");
    assert_eq!(
        data.len() % frame_bytes,
        0,
        "raw size not a multiple of the frame size"
    );
    data.chunks(frame_bytes).map(<[u8]>::to_vec).collect()
}

/// Every file path under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Parse "N views decoded ... M reused" from prep build's summary.
pub fn decoded_and_reused(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find(|l| l.contains("views decoded"))
        .expect("summary line");
    let decoded = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("decoded count");
    let reused = line
        .split(", ")
        .find(|p| p.ends_with("reused"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("reused count");
    (decoded, reused)
}

/// The Python of the project venv (numpy + pyarrow), or `MVDRIVE_PYTHON`.
pub fn python() -> PathBuf {
    let p = std::env::var_os("MVDRIVE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} not found: run `make setup` (it installs numpy + pyarrow into .venv)",
        p.display()
    );
    p
}

/// Run the Python reader example `schemas/python/read_cache.py CACHE ARGS... --out OUT`
/// and return the bytes it wrote.
pub fn python_reader(cache: &Path, args: &[&str], out: &Path) -> Vec<u8> {
    let status = Command::new(python())
        .arg(root().join("schemas/python/read_cache.py"))
        .arg(cache)
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .expect("run the Python reader");
    assert!(status.success(), "read_cache.py {args:?} failed");
    std::fs::read(out).expect("reader output")
}

/// `prep synth --sessions N --seed S` into `dir/data`; returns that folder.
pub fn synth(dir: &Path, sessions: u32, seed: u64) -> PathBuf {
    let data = dir.join("data");
    let (n, s) = (sessions.to_string(), seed.to_string());
    prep_ok(&[
        "synth",
        "-q",
        "--out",
        data.to_str().unwrap(),
        "--sessions",
        &n,
        "--seed",
        &s,
    ]);
    data
}
