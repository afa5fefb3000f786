//! `prep synth`: a small but learnable multi-view driver dataset, written as real encoded
//! videos plus `manifest.csv`, `segments.csv` and keypoint CSVs.
//!
//! A cartoon driver (torso, head, two hands, a steering wheel) is animated in one shared
//! 2-D world. Four classes differ only by motion: `safe_driving` (hands on the wheel),
//! `texting` (right hand fast and small at the lap, head down), `drinking` (right hand
//! slowly to the mouth and back) and `looking_left` (head turns left and back). Three
//! cameras see the world with their own framing, resolution, frame rate, codec and start
//! offset; subjects differ in size and colours.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ffmpeg_next::Rational;

use crate::encode::{Codec, VideoWriter};
use crate::error::{io, PrepError};
use mvdrive_common::rng::Rng;

/// The classes, in label order.
pub const CLASSES: [&str; 4] = ["drinking", "looking_left", "safe_driving", "texting"];

/// One camera.
struct Camera {
    name: &'static str,
    width: u32,
    height: u32,
    /// Frame rate as num/den.
    rate: (i32, i32),
    /// Session time of the first frame.
    offset_s: f64,
    codec: Codec,
    ext: &'static str,
    /// world (x, y) -> normalized image (sx * x + tx, sy * y + ty); mirrored if `mirror`.
    sx: f64,
    tx: f64,
    sy: f64,
    ty: f64,
    mirror: bool,
    background: [u8; 3],
}

const CAMERAS: [Camera; 3] = [
    Camera {
        name: "front",
        width: 160,
        height: 120,
        rate: (15, 1),
        offset_s: 0.0,
        codec: Codec::H264,
        ext: "mp4",
        sx: 1.0,
        tx: 0.0,
        sy: 1.0,
        ty: 0.0,
        mirror: false,
        background: [70, 80, 95],
    },
    Camera {
        name: "left",
        width: 128,
        height: 96,
        rate: (10, 1),
        offset_s: 0.4,
        codec: Codec::Mjpeg,
        ext: "avi",
        sx: 1.25,
        tx: -0.2,
        sy: 1.2,
        ty: -0.15,
        mirror: false,
        background: [95, 85, 70],
    },
    Camera {
        name: "right",
        width: 176,
        height: 132,
        rate: (25, 2),
        offset_s: -0.25,
        codec: Codec::Mpeg4,
        ext: "mkv",
        sx: 0.9,
        tx: 0.05,
        sy: 0.9,
        ty: 0.08,
        mirror: true,
        background: [60, 95, 75],
    },
];

struct Subject {
    id: String,
    scale: f64,
    shirt: [u8; 3],
    skin: [u8; 3],
}

struct Segment {
    start: f64,
    end: f64,
    class: usize,
}

/// The driver's pose at one instant, in world units.
struct Pose {
    head: (f64, f64),
    right_hand: (f64, f64),
    left_hand: (f64, f64),
}

fn lerp(a: (f64, f64), b: (f64, f64), t: f64) -> (f64, f64) {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

fn pose(segs: &[Segment], s: f64, phase: f64) -> Pose {
    let wheel_r = (0.44, 0.62);
    let wheel_l = (0.26, 0.64);
    let sway = 0.006 * (s * 1.3 + phase).sin();
    let mut p = Pose {
        head: (0.5 + sway, 0.36),
        right_hand: (wheel_r.0, wheel_r.1 + sway),
        left_hand: wheel_l,
    };
    let Some(seg) = segs.iter().find(|g| g.start <= s && s < g.end) else {
        return p;
    };
    let tau = (s - seg.start) / (seg.end - seg.start);
    let pi = std::f64::consts::PI;
    match CLASSES[seg.class] {
        "texting" => {
            p.head.1 += 0.04;
            p.right_hand = (
                0.6,
                0.84 + 0.03 * (2.0 * pi * 3.0 * (s - seg.start) + phase).sin(),
            );
        }
        "drinking" => {
            let b = (pi * tau).sin().powi(2);
            p.right_hand = lerp(wheel_r, (0.53, 0.46), b);
        }
        "looking_left" => {
            p.head.0 -= 0.09 * (pi * tau).sin();
        }
        _ => {}
    }
    p
}

struct Canvas<'a> {
    buf: &'a mut [u8],
    w: usize,
    h: usize,
}

impl Canvas<'_> {
    fn disc(&mut self, c: (f64, f64), r: f64, col: [u8; 3], ring: Option<f64>) {
        let (cx, cy) = (c.0 * self.w as f64, c.1 * self.h as f64);
        let rp = r * self.w as f64;
        let inner = ring.map(|t| (r - t) * self.w as f64).unwrap_or(-1.0);
        let (x0, x1) = (
            (cx - rp).floor().max(0.0) as usize,
            ((cx + rp).ceil() as usize).min(self.w),
        );
        let (y0, y1) = (
            (cy - rp).floor().max(0.0) as usize,
            ((cy + rp).ceil() as usize).min(self.h),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                if d <= rp && d >= inner {
                    let o = (y * self.w + x) * 3;
                    self.buf[o..o + 3].copy_from_slice(&col);
                }
            }
        }
    }
    fn rect(&mut self, a: (f64, f64), b: (f64, f64), col: [u8; 3]) {
        let x0 = (a.0.min(b.0) * self.w as f64).max(0.0) as usize;
        let x1 = ((a.0.max(b.0) * self.w as f64) as usize).min(self.w);
        let y0 = (a.1.min(b.1) * self.h as f64).max(0.0) as usize;
        let y1 = ((a.1.max(b.1) * self.h as f64) as usize).min(self.h);
        for y in y0..y1 {
            for x in x0..x1 {
                let o = (y * self.w + x) * 3;
                self.buf[o..o + 3].copy_from_slice(&col);
            }
        }
    }
}

fn project(cam: &Camera, p: (f64, f64)) -> (f64, f64) {
    let x = if cam.mirror { 1.0 - p.0 } else { p.0 };
    (cam.sx * x + cam.tx, cam.sy * p.1 + cam.ty)
}

fn joints(pose: &Pose, sub: &Subject) -> [(f64, f64, f64); 17] {
    let k = sub.scale;
    let (hx, hy) = pose.head;
    let ls = (0.5 - 0.12 * k, 0.56);
    let rs = (0.5 + 0.12 * k, 0.56);
    let le = lerp(ls, pose.left_hand, 0.5);
    let re = {
        let m = lerp(rs, pose.right_hand, 0.5);
        (m.0 + 0.03, m.1 + 0.04)
    };
    let v = 1.0;
    [
        (hx, hy, v),
        (hx - 0.03 * k, hy - 0.02, v),
        (hx + 0.03 * k, hy - 0.02, v),
        (hx - 0.07 * k, hy, v),
        (hx + 0.07 * k, hy, v),
        (ls.0, ls.1, v),
        (rs.0, rs.1, v),
        (le.0, le.1, v),
        (re.0, re.1, v),
        (pose.left_hand.0, pose.left_hand.1, v),
        (pose.right_hand.0, pose.right_hand.1, v),
        (0.43, 0.95, 0.6),
        (0.57, 0.95, 0.6),
        // Legs are under the dashboard: not detected.
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0),
        (0.0, 0.0, 0.0),
    ]
}

fn render(cam: &Camera, sub: &Subject, pose: &Pose, buf: &mut [u8]) {
    let (w, h) = (cam.width as usize, cam.height as usize);
    // Background with vertical stripes, so each camera has its own texture.
    for y in 0..h {
        for x in 0..w {
            let stripe = if (x / 8) % 2 == 0 { 12 } else { 0 };
            let o = (y * w + x) * 3;
            for c in 0..3 {
                buf[o + c] = cam.background[c].saturating_add(stripe + (y * 30 / h) as u8);
            }
        }
    }
    let mut cv = Canvas { buf, w, h };
    let k = sub.scale;
    let pr = |p| project(cam, p);
    let sxr = |r: f64| r * cam.sx;
    // Torso, then wheel, head and hands.
    let (a, b) = (pr((0.5 - 0.14 * k, 0.55)), pr((0.5 + 0.14 * k, 1.05)));
    cv.rect(a, b, sub.shirt);
    cv.disc(pr((0.35, 0.66)), sxr(0.15), [30, 30, 30], Some(sxr(0.025)));
    cv.disc(pr(pose.head), sxr(0.1 * k), sub.skin, None);
    cv.disc(
        pr((pose.head.0, pose.head.1 + 0.07 * k)),
        sxr(0.03 * k),
        [60, 20, 20],
        None,
    );
    cv.disc(pr(pose.left_hand), sxr(0.035), sub.skin, None);
    cv.disc(
        pr(pose.right_hand),
        sxr(0.035),
        [sub.skin[0], sub.skin[1].saturating_sub(30), sub.skin[2]],
        None,
    );
}

/// What `synth` wrote.
#[derive(Debug, Clone)]
pub struct SynthSummary {
    /// Output folder.
    pub out: PathBuf,
    /// Sessions written.
    pub sessions: usize,
    /// Videos written.
    pub videos: usize,
    /// Segments written.
    pub segments: usize,
}

/// Segments per session of [`synth`] (each class once, then two drawn at random).
pub const SEGMENTS_PER_SESSION: usize = 6;

/// Write `sessions` sessions (seeded by `seed`) into `out`.
pub fn synth(
    out: &Path,
    sessions: usize,
    seed: u64,
    quiet: bool,
) -> Result<SynthSummary, PrepError> {
    synth_with(out, sessions, seed, SEGMENTS_PER_SESSION, quiet)
}

/// [`synth`] with `segments` segments per session (at least one per class): longer
/// recordings, e.g. for `train predict`'s memory benchmark.
pub fn synth_with(
    out: &Path,
    sessions: usize,
    seed: u64,
    segments: usize,
    quiet: bool,
) -> Result<SynthSummary, PrepError> {
    if sessions == 0 {
        return Err(PrepError::Other("--sessions must be at least 1".into()));
    }
    if segments < CLASSES.len() {
        return Err(PrepError::Other(format!(
            "--segments-per-session {segments}: at least {} (one per class)",
            CLASSES.len()
        )));
    }
    let mut rng = Rng::new(seed ^ 0x006d_7664_7269_7665);
    // Two sessions per subject beyond four, so larger datasets show the model more drivers.
    let n_subjects = sessions.clamp(1, 4).max((sessions / 2).min(8));
    let palette = [
        [200, 60, 60],
        [60, 120, 200],
        [230, 190, 60],
        [120, 200, 120],
        [180, 90, 200],
    ];
    let skins = [
        [235, 200, 170],
        [200, 150, 110],
        [150, 100, 70],
        [250, 220, 190],
    ];
    let subjects: Vec<Subject> = (0..n_subjects)
        .map(|i| Subject {
            id: format!("p{:02}", i + 1),
            scale: rng.range(0.85, 1.15),
            shirt: palette[rng.below(palette.len())],
            skin: skins[i % skins.len()],
        })
        .collect();
    let videos_dir = out.join("videos");
    let kpt_dir = out.join("keypoints");
    for d in [&videos_dir, &kpt_dir] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    let mut manifest =
        String::from("session,subject,view,video,offset_s,keypoints,keypoint_layout,split\n");
    let mut segcsv = String::from("session,start_s,end_s,label\n");
    let mut n_segments = 0;
    let pb = mvdrive_common::progress::bar((sessions * CAMERAS.len()) as u64, "videos", quiet);
    for si in 0..sessions {
        let sub = &subjects[si % n_subjects];
        // The last subject is the test split, the one before it validation (with at
        // least four subjects); everyone else trains.
        let split = if n_subjects >= 4 && si % n_subjects == n_subjects - 1 {
            "test"
        } else if n_subjects >= 4 && si % n_subjects == n_subjects - 2 {
            "val"
        } else {
            "train"
        };
        let session = format!("s{:03}", si + 1);
        // Labelled segments tile [0.5, end) with every class at least once per session.
        let mut segs = Vec::new();
        let mut t = 0.5;
        let mut order: Vec<usize> = (0..CLASSES.len()).collect();
        rng.shuffle(&mut order);
        for _ in CLASSES.len()..segments {
            order.push(rng.below(CLASSES.len()));
        }
        for class in order {
            let d = rng.range(2.0, 3.2);
            segs.push(Segment {
                start: t,
                end: t + d,
                class,
            });
            t += d;
        }
        let end = t;
        for g in &segs {
            let _ = writeln!(
                segcsv,
                "{session},{:.3},{:.3},{}",
                g.start, g.end, CLASSES[g.class]
            );
            n_segments += 1;
        }
        let phase = rng.range(0.0, 6.0);
        for cam in &CAMERAS {
            let (num, den) = cam.rate;
            let fps = num as f64 / den as f64;
            // Each camera runs from its offset to a little past the last segment.
            let last = end + 0.3 + 0.1 * (cam.width % 3) as f64;
            let frames = ((last - cam.offset_s) * fps).ceil() as i64;
            let rel_video = format!("videos/{session}_{}.{}", cam.name, cam.ext);
            let rel_kpt = format!("keypoints/{session}_{}.csv", cam.name);
            let path = out.join(&rel_video);
            let mut w = VideoWriter::create(
                &path,
                cam.codec,
                cam.width,
                cam.height,
                Rational(den, num),
                Rational(num, den),
            )
            .map_err(PrepError::Other)?;
            let mut buf = vec![0u8; (cam.width * cam.height * 3) as usize];
            let mut kcsv = String::from("frame,joint,x,y,conf\n");
            for k in 0..frames {
                let s = cam.offset_s + k as f64 / fps;
                let p = pose(&segs, s, phase);
                render(cam, sub, &p, &mut buf);
                w.push_rgb(&buf, k)
                    .map_err(|e| PrepError::Other(format!("{}: {e}", path.display())))?;
                for (j, (x, y, c)) in joints(&p, sub).iter().enumerate() {
                    let (u, v) = project(cam, (*x, *y));
                    let (px, py) = if *c > 0.0 {
                        (u * cam.width as f64, v * cam.height as f64)
                    } else {
                        (0.0, 0.0)
                    };
                    let _ = writeln!(kcsv, "{k},{j},{px:.2},{py:.2},{c:.2}");
                }
            }
            w.finish()
                .map_err(|e| PrepError::Other(format!("{}: {e}", path.display())))?;
            let kpath = out.join(&rel_kpt);
            std::fs::write(&kpath, kcsv).map_err(io(&kpath))?;
            let _ = writeln!(
                manifest,
                "{session},{},{},{rel_video},{},{rel_kpt},coco17,{split}",
                sub.id, cam.name, cam.offset_s
            );
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let mpath = out.join("manifest.csv");
    std::fs::write(&mpath, manifest).map_err(io(&mpath))?;
    let spath = out.join("segments.csv");
    std::fs::write(&spath, segcsv).map_err(io(&spath))?;
    let lpath = out.join("labels.txt");
    std::fs::write(&lpath, CLASSES.join("\n") + "\n").map_err(io(&lpath))?;
    Ok(SynthSummary {
        out: out.to_path_buf(),
        sessions,
        videos: sessions * CAMERAS.len(),
        segments: n_segments,
    })
}
