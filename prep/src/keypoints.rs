//! Keypoints: read a view's keypoint file (five forms), resample it onto the session
//! timeline through the same source frames the RGB records show, and normalise it.
//!
//! Forms, chosen from the path and the layout:
//! - `*.npy` / `*.npz`: a NumPy array `[T, K, C]` per view, row `t` = source frame `t`
//!   (any layout; see [`npy`] for the channels and the `conf` array of an `.npz`);
//! - a folder: OpenPose per-frame JSON (`*_<frame>_keypoints.json`, `people[0].pose_keypoints_2d`)
//!   with layout `openpose25` (BODY_25) or `openpose18` (COCO-18);
//! - layout `driveact26`: Drive&Act `openpose_3d` CSV: 3 header rows, then one row per frame
//!   of 26 joints x (x, y, z, conf), optionally led by a frame number;
//! - a CSV/Parquet with a `joint` column: the canonical long form `frame, joint, x, y[, z][, conf]`
//!   (`joint` is an index or a joint name of the layout);
//! - layout `mediapipe33` without a `joint` column: a wide MediaPipe CSV, `frame` then
//!   33 x (x, y, z, visibility); normalised [0, 1] coordinates are turned into pixels.
//!
//! Every frame of the file is indexed by its source-video frame number. Frames without a
//! detection, or whose joints all have confidence 0, are marked invalid in the per-frame
//! mask; NaN values count as undetected joints (with a warning). In the array form a frame
//! that is all NaN or all zero has no detection.

pub mod npy;

use std::collections::BTreeMap;
use std::path::Path;

use mvdrive_schemas::layout::{layout, layout_names, Layout};

use crate::table::TextTable;

/// How keypoint coordinates are normalised (`prep.kpt_normalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KptNormalize {
    /// Source pixels (or the file's units).
    None,
    /// Divided by the source width (x, z) and height (y): [0, 1].
    Image,
    /// Per frame: minus the mean of the valid joints, divided by the largest distance of a
    /// valid joint from that mean (in x, y): within [-1, 1].
    CenterScale,
}

/// One view's keypoints, indexed by source frame.
#[derive(Debug, Clone)]
pub struct Track {
    /// The joint layout.
    pub layout: Layout,
    /// Values per joint: 3 (x, y, conf) or 4 (x, y, z, conf).
    pub channels: usize,
    /// Source frame -> `joints * channels` values.
    pub frames: BTreeMap<u64, Vec<f32>>,
    /// NaN values found (those joints were marked undetected).
    pub nan_values: u64,
    /// True when coordinates are pixels of the source video.
    pub pixels: bool,
    /// The array form's T (source frames the file covers); frames past it are masked.
    pub array_frames: Option<u64>,
}

impl Track {
    fn new(layout: Layout, channels: usize, pixels: bool) -> Track {
        Track {
            layout,
            channels,
            frames: BTreeMap::new(),
            nan_values: 0,
            pixels,
            array_frames: None,
        }
    }

    /// Store joint `j` of `frame`; NaNs make the joint undetected.
    fn set(&mut self, frame: u64, j: usize, vals: &[f32]) {
        let (k, c) = (self.layout.len(), self.channels);
        let row = self.frames.entry(frame).or_insert_with(|| vec![0.0; k * c]);
        if vals.iter().any(|v| v.is_nan()) {
            self.nan_values += 1;
            row[j * c..(j + 1) * c].fill(0.0);
        } else {
            row[j * c..(j + 1) * c].copy_from_slice(vals);
        }
    }

    /// Warnings to show the user about this file.
    pub fn warnings(&self, path: &Path, decoded_frames: Option<u64>) -> Vec<String> {
        let mut w = Vec::new();
        if self.nan_values > 0 {
            w.push(format!(
                "{}: {} joint(s) with NaN values were treated as undetected",
                path.display(),
                self.nan_values
            ));
        }
        if let (Some(t), Some(n)) = (self.array_frames, decoded_frames) {
            if t < n {
                w.push(format!(
                    "{}: the array covers {t} source frame(s) but the video has {n}; frames {t}..{n} are masked",
                    path.display()
                ));
            }
        }
        if let Some(n) = decoded_frames {
            let past = self.frames.range(n..).count();
            if past > 0 {
                w.push(format!(
                    "{}: {past} keypoint frame(s) lie past the end of the video ({n} frames) and were ignored",
                    path.display()
                ));
            }
        }
        if self.frames.is_empty() {
            w.push(format!(
                "{}: no frame has a detection; the view's keypoints are all masked",
                path.display()
            ));
        }
        w
    }
}

fn parse_f32(s: &str) -> Option<f32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("nan") || s.is_empty() {
        return Some(f32::NAN);
    }
    s.parse().ok()
}

/// Read a keypoint file (any of the five forms) for a view of `src_w x src_h` pixels.
pub fn load(path: &Path, layout_name: &str, src_w: u32, src_h: u32) -> Result<Track, String> {
    let shown = path.display();
    let lay = layout(layout_name).ok_or_else(|| {
        format!(
            "{shown}: unknown keypoint_layout `{layout_name}` (known: {})",
            layout_names()
        )
    })?;
    if path.is_dir() {
        return load_openpose_dir(path, lay);
    }
    if !path.is_file() {
        return Err(format!("{shown}: keypoint file not found"));
    }
    if npy::is_array_path(path) {
        return npy::load_array(path, lay);
    }
    if lay.name == "driveact26" {
        return load_driveact(path, lay);
    }
    let t = TextTable::read(path)?;
    if t.col("joint").is_some() {
        load_long(&t, lay)
    } else if lay.name == "mediapipe33" {
        load_mediapipe_wide(&t, lay, src_w, src_h)
    } else {
        Err(format!(
            "{shown}: expected the long form `frame, joint, x, y[, z][, conf]` (it has: {})",
            t.headers.join(", ")
        ))
    }
}

fn load_long(t: &TextTable, lay: Layout) -> Result<Track, String> {
    let shown = t.path.display();
    let need = |c: &str| {
        t.col(c).ok_or_else(|| {
            format!("{shown}: missing column `{c}` (long form: frame, joint, x, y[, z][, conf])")
        })
    };
    let (fi, ji, xi, yi) = (need("frame")?, need("joint")?, need("x")?, need("y")?);
    let (zi, ci) = (
        t.col("z"),
        t.col("conf")
            .or_else(|| t.col("score"))
            .or_else(|| t.col("visibility")),
    );
    let channels = if zi.is_some() { 4 } else { 3 };
    let mut track = Track::new(lay, channels, true);
    for (line, row) in &t.rows {
        let at = || format!("{shown} line {line}");
        let frame: u64 = row[fi]
            .trim()
            .parse()
            .map_err(|_| format!("{}: frame `{}` is not a frame number", at(), row[fi]))?;
        let jt = row[ji].trim();
        let j = match jt.parse::<usize>() {
            Ok(j) => j,
            Err(_) => lay.joint(jt).ok_or_else(|| {
                format!(
                    "{}: joint `{jt}` is not a joint of layout {}",
                    at(),
                    lay.name
                )
            })?,
        };
        if j >= lay.len() {
            return Err(format!(
                "{}: joint {j} but layout {} has {} joints (wrong layout?)",
                at(),
                lay.name,
                lay.len()
            ));
        }
        let num = |i: usize| {
            parse_f32(&row[i]).ok_or_else(|| format!("{}: `{}` is not a number", at(), row[i]))
        };
        let mut vals = vec![num(xi)?, num(yi)?];
        if let Some(z) = zi {
            vals.push(num(z)?);
        }
        vals.push(match ci {
            Some(c) => num(c)?,
            None => 1.0,
        });
        track.set(frame, j, &vals);
    }
    Ok(track)
}

fn load_mediapipe_wide(
    t: &TextTable,
    lay: Layout,
    src_w: u32,
    src_h: u32,
) -> Result<Track, String> {
    let shown = t.path.display();
    let fi = t
        .col("frame")
        .ok_or_else(|| format!("{shown}: a wide MediaPipe CSV needs a `frame` column"))?;
    let value_cols: Vec<usize> = (0..t.headers.len()).filter(|&i| i != fi).collect();
    if value_cols.len() != lay.len() * 4 {
        return Err(format!(
            "{shown}: {} value columns, expected 33 landmarks x (x, y, z, visibility) = 132 (wrong joint count?)",
            value_cols.len()
        ));
    }
    let mut track = Track::new(lay, 4, true);
    let mut raw: Vec<(u64, Vec<f32>)> = Vec::new();
    let mut max_xy = 0f32;
    for (line, row) in &t.rows {
        let frame: u64 = row[fi].trim().parse().map_err(|_| {
            format!(
                "{shown} line {line}: frame `{}` is not a frame number",
                row[fi]
            )
        })?;
        let mut vals = Vec::with_capacity(132);
        for &c in &value_cols {
            vals.push(
                parse_f32(&row[c])
                    .ok_or_else(|| format!("{shown} line {line}: `{}` is not a number", row[c]))?,
            );
        }
        for j in 0..lay.len() {
            for v in &vals[j * 4..j * 4 + 2] {
                if v.is_finite() {
                    max_xy = max_xy.max(v.abs());
                }
            }
        }
        raw.push((frame, vals));
    }
    // MediaPipe writes image-normalised coordinates; z uses the scale of x.
    let normalised = max_xy <= 1.5;
    let (sw, sh) = if normalised {
        (src_w as f32, src_h as f32)
    } else {
        (1.0, 1.0)
    };
    for (frame, vals) in raw {
        for j in 0..lay.len() {
            let v = &vals[j * 4..j * 4 + 4];
            track.set(frame, j, &[v[0] * sw, v[1] * sh, v[2] * sw, v[3]]);
        }
    }
    Ok(track)
}

fn load_driveact(path: &Path, lay: Layout) -> Result<Track, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut track = Track::new(lay, 4, false);
    let want = lay.len() * 4;
    for (i, line) in text.lines().enumerate().skip(3) {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        let (frame, vals) = if cells.len() == want + 1 {
            let f = cells[0]
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "{shown} line {line_no}: frame `{}` is not a frame number",
                        cells[0]
                    )
                })?;
            (f as u64, &cells[1..])
        } else if cells.len() == want {
            ((i - 3) as u64, &cells[..])
        } else {
            return Err(format!(
                "{shown} line {line_no}: {} values, expected 26 joints x (x, y, z, conf) = 104 (optionally after a frame number); wrong joint count?",
                cells.len()
            ));
        };
        for j in 0..lay.len() {
            let mut v = [0f32; 4];
            for (c, slot) in v.iter_mut().enumerate() {
                let s = vals[j * 4 + c];
                *slot = parse_f32(s)
                    .ok_or_else(|| format!("{shown} line {line_no}: `{s}` is not a number"))?;
            }
            track.set(frame, j, &v);
        }
    }
    Ok(track)
}

fn frame_number(name: &str, fallback: u64) -> u64 {
    let stem = name
        .trim_end_matches(".json")
        .trim_end_matches("_keypoints");
    let digits: String = stem
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().unwrap_or(fallback)
}

fn load_openpose_dir(dir: &Path, lay: Layout) -> Result<Track, String> {
    let shown = dir.display();
    if lay.name != "openpose25" && lay.name != "openpose18" {
        return Err(format!(
            "{shown}: OpenPose JSON folders need keypoint_layout openpose25 or openpose18, not {}",
            lay.name
        ));
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{shown}: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "{shown}: no *.json files (expected OpenPose output, one file per frame)"
        ));
    }
    let mut track = Track::new(lay, 3, true);
    for (i, f) in files.iter().enumerate() {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let frame = frame_number(&name, i as u64);
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: invalid JSON: {e}", f.display()))?;
        let people = v
            .get("people")
            .and_then(|p| p.as_array())
            .ok_or_else(|| format!("{}: no `people` list", f.display()))?;
        let Some(first) = people.first() else {
            continue;
        }; // nobody detected: masked
        let kp = first
            .get("pose_keypoints_2d")
            .and_then(|k| k.as_array())
            .ok_or_else(|| format!("{}: people[0] has no pose_keypoints_2d", f.display()))?;
        if kp.len() != lay.len() * 3 {
            return Err(format!(
                "{}: pose_keypoints_2d has {} values, but {} needs {} joints x 3 = {} (wrong layout?)",
                f.display(),
                kp.len(),
                lay.name,
                lay.len(),
                lay.len() * 3
            ));
        }
        for j in 0..lay.len() {
            let g = |c: usize| kp[j * 3 + c].as_f64().map(|x| x as f32).unwrap_or(f32::NAN);
            track.set(frame, j, &[g(0), g(1), g(2)]);
        }
    }
    Ok(track)
}

/// Values and validity of one timeline frame taken from source frame `src`, normalised.
/// Layout of the output: `joints * channels` values.
pub fn frame_values(
    track: &Track,
    src: u64,
    norm: KptNormalize,
    src_w: u32,
    src_h: u32,
) -> (Vec<f32>, bool) {
    let (k, c) = (track.layout.len(), track.channels);
    let Some(vals) = track.frames.get(&src) else {
        return (vec![0.0; k * c], false);
    };
    let mut v = vals.clone();
    let conf = |v: &[f32], j: usize| v[j * c + c - 1];
    let valid: Vec<usize> = (0..k).filter(|&j| conf(&v, j) > 0.0).collect();
    if valid.is_empty() {
        return (vec![0.0; k * c], false);
    }
    let dims = c - 1; // coordinates before conf
    match norm {
        KptNormalize::None => {}
        KptNormalize::Image => {
            for j in &valid {
                v[j * c] /= src_w as f32;
                v[j * c + 1] /= src_h as f32;
                if dims == 3 {
                    v[j * c + 2] /= src_w as f32;
                }
            }
        }
        KptNormalize::CenterScale => {
            let mut centre = vec![0f32; dims];
            for j in &valid {
                for d in 0..dims {
                    centre[d] += v[j * c + d] / valid.len() as f32;
                }
            }
            let scale = valid
                .iter()
                .map(|j| {
                    ((v[j * c] - centre[0]).powi(2) + (v[j * c + 1] - centre[1]).powi(2)).sqrt()
                })
                .fold(0f32, f32::max)
                .max(1e-6);
            for j in &valid {
                for d in 0..dims {
                    v[j * c + d] = (v[j * c + d] - centre[d]) / scale;
                }
            }
        }
    }
    // Undetected joints stay exactly zero.
    for j in 0..k {
        if conf(&v, j) <= 0.0 {
            v[j * c..(j + 1) * c].fill(0.0);
        }
    }
    (v, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn long_form_by_index_or_name_with_nans_and_wrong_joints() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "k.csv",
            "frame,joint,x,y,conf\n0,0,10,20,0.9\n0,left_wrist,5,6,0.8\n2,1,nan,3,1\n",
        );
        let t = load(&p, "coco17", 100, 100).unwrap();
        assert_eq!(t.channels, 3);
        assert_eq!(&t.frames[&0][..3], &[10.0, 20.0, 0.9]);
        assert_eq!(&t.frames[&0][9 * 3..9 * 3 + 3], &[5.0, 6.0, 0.8]);
        assert_eq!(t.nan_values, 1);
        assert!(t
            .warnings(&p, Some(1))
            .iter()
            .any(|w| w.contains("past the end")));
        let p = write(d.path(), "bad.csv", "frame,joint,x,y,conf\n0,17,1,2,1\n");
        let e = load(&p, "coco17", 100, 100).unwrap_err();
        assert!(
            e.contains("bad.csv line 2") && e.contains("joint 17"),
            "{e}"
        );
    }

    #[test]
    fn openpose_json_folders_and_mediapipe_and_driveact() {
        let d = tempfile::tempdir().unwrap();
        let op = d.path().join("op");
        std::fs::create_dir(&op).unwrap();
        let kp: Vec<String> = (0..25).map(|j| format!("{j},{},0.5", j * 2)).collect();
        write(
            &op,
            "clip_000000000003_keypoints.json",
            &format!(
                "{{\"people\":[{{\"pose_keypoints_2d\":[{}]}}]}}",
                kp.join(",")
            ),
        );
        write(&op, "clip_000000000004_keypoints.json", "{\"people\":[]}");
        let t = load(&op, "openpose25", 100, 100).unwrap();
        assert_eq!(t.frames.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(&t.frames[&3][3..6], &[1.0, 2.0, 0.5]);
        assert!(load(&op, "openpose18", 100, 100)
            .unwrap_err()
            .contains("54"));

        let mut wide = String::from("frame");
        for j in 0..33 {
            wide += &format!(",x{j},y{j},z{j},v{j}");
        }
        wide += "\n7";
        for _ in 0..33 {
            wide += ",0.5,0.25,0.1,0.9";
        }
        let p = write(d.path(), "mp.csv", &(wide + "\n"));
        let t = load(&p, "mediapipe33", 200, 100).unwrap();
        assert_eq!(&t.frames[&7][..4], &[100.0, 25.0, 20.0, 0.9]);

        let row: Vec<String> = (0..104).map(|i| format!("{}", i % 4)).collect();
        let text = format!("a\nb\nc\n{}\n{}\n", row.join(","), row.join(","));
        let p = write(d.path(), "da.csv", &text);
        let t = load(&p, "driveact26", 1, 1).unwrap();
        assert_eq!(t.frames.len(), 2);
        assert_eq!(t.channels, 4);
        let p = write(d.path(), "da_bad.csv", "a\nb\nc\n1,2,3\n");
        assert!(load(&p, "driveact26", 1, 1)
            .unwrap_err()
            .contains("da_bad.csv line 4"));
    }

    #[test]
    fn normalisation_and_masking() {
        let lay = layout("coco17").unwrap();
        let mut t = Track::new(lay, 3, true);
        t.set(0, 0, &[10.0, 10.0, 1.0]);
        t.set(0, 1, &[30.0, 10.0, 1.0]);
        t.set(0, 2, &[99.0, 99.0, 0.0]); // undetected
        let (v, ok) = frame_values(&t, 0, KptNormalize::CenterScale, 100, 50);
        assert!(ok);
        assert_eq!(&v[..6], &[-1.0, 0.0, 1.0, 1.0, 0.0, 1.0]);
        assert_eq!(&v[6..9], &[0.0, 0.0, 0.0]);
        let (v, _) = frame_values(&t, 0, KptNormalize::Image, 100, 50);
        assert_eq!(&v[..3], &[0.1, 0.2, 1.0]);
        let (v, ok) = frame_values(&t, 5, KptNormalize::None, 100, 50);
        assert!(!ok && v.iter().all(|x| *x == 0.0));
    }
}
