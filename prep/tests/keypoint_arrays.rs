//! Keypoints as NumPy arrays (`.npy`, `.npz`) and the SAM-3D-Body converter
//! (`scripts/sam3d_to_npy.py`): per-frame files made here with numpy, converted, built;
//! masked frames, short arrays and bad files.

mod common;

use common::*;
use mvdrive_schemas::layout::SAM3D52_FROM_70;
use mvdrive_schemas::Cache;
use std::path::Path;
use std::process::Command;

/// Run a Python snippet (numpy) with `args` as `sys.argv[1:]`; require success.
fn py(code: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SAM-3D-Body's 3-D keypoint `j` of frame `f` in the test files (exact in float32).
fn sam3d_value(view: usize, f: u64, j: usize) -> [f32; 3] {
    [
        f as f32 + j as f32 * 0.25 + 0.5,
        view as f32 * 100.0 + j as f32 + 1.0,
        2.0 + f as f32 * 0.125,
    ]
}

/// Per-frame SAM-3D-Body files, `output` a pickled dict, as the original project writes
/// them: ROOT/p1/env1/<view>/<frame:06d>_sam3d_body.npz for 10 frames, one missing per view.
const WRITE_SAM3D: &str = r#"
import sys, pathlib, numpy as np
root = pathlib.Path(sys.argv[1])
for v, (view, missing) in enumerate([("a", 4), ("b", 7)]):
    d = root / "p1" / "env1" / view
    d.mkdir(parents=True)
    j = np.arange(70, dtype=np.float32)
    for f in range(10):
        if f == missing:
            continue
        kp3 = np.stack([f + j * 0.25 + 0.5, v * 100.0 + j + 1.0, 2.0 + f * 0.125 + 0 * j], 1)
        out = np.empty((), dtype=object)
        out[()] = {"pred_keypoints_3d": kp3.astype(np.float32)[None],
                   "pred_keypoints_2d": kp3[:, :2].astype(np.float32),
                   "pred_cam_t": np.zeros(3, np.float32)}
        np.savez(d / f"{f:06d}_sam3d_body.npz", output=out)
"#;

fn convert(root: &Path, out: &Path, joints: &str) -> String {
    let out = Command::new(python())
        .arg(common::root().join("scripts/sam3d_to_npy.py"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--joints", joints])
        .output()
        .expect("run sam3d_to_npy.py");
    assert!(
        out.status.success(),
        "sam3d_to_npy.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sam3d_files_are_converted_built_and_their_missing_frame_masked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("sam3d");
    py(WRITE_SAM3D, &[&root]);
    let said = convert(&root, &d.join("k52"), "52");
    assert!(said.contains("10 frames, 1 missing"), "{said}");
    convert(&root, &d.join("k70"), "70");
    testsrc(&d.join("a.mp4"), "h264", 160, 120, "10", 1.0);
    testsrc(&d.join("b.mp4"), "h264", 160, 120, "10", 1.0);
    std::fs::write(
        d.join("manifest.csv"),
        "session,subject,view,video,keypoints,keypoint_layout\n\
         s1,p1,a,a.mp4,k52/p1/env1/a.npy,sam3d52\n\
         s1,p1,b,b.mp4,k70/p1/env1/b.npy,sam3d70\n",
    )
    .unwrap();
    write_segments(&d.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32"]);
    prep_ok(&["verify", "-q", cache.to_str().unwrap()]);
    let c = Cache::open(&cache).unwrap();
    assert_eq!(c.sessions[0].timeline_frames, 10);
    for (v, view, missing, joints) in [(0, "a", 4, 52), (1, "b", 7, 70)] {
        let row = c.views.iter().find(|r| r.view == view).unwrap();
        assert_eq!(row.kpt_valid_frames, 9, "{view}");
        assert_eq!(
            row.keypoint_layout.as_deref(),
            Some(if joints == 52 { "sam3d52" } else { "sam3d70" })
        );
        for f in 0..10u64 {
            let (vals, valid) = c.read_keypoints("s1", view, f).unwrap().unwrap();
            assert_eq!(vals.len(), joints * 4);
            if f == missing {
                assert!(!valid, "{view}: the missing frame {f} is masked");
                assert!(vals.iter().all(|x| *x == 0.0));
                continue;
            }
            assert!(valid, "{view} frame {f}");
            for j in 0..joints {
                let j70 = if joints == 52 {
                    SAM3D52_FROM_70[j] as usize
                } else {
                    j
                };
                let [x, y, z] = sam3d_value(v, f, j70);
                assert_eq!(
                    &vals[j * 4..j * 4 + 4],
                    &[x, y, z, 1.0],
                    "{view} frame {f} joint {j}"
                );
            }
        }
    }
}

/// A 10-frame video `a.mp4` with keypoints `kpt` (layout `layout`) in manifest.csv.
fn one_view(d: &Path, kpt: &str, layout: &str) {
    if !d.join("a.mp4").exists() {
        testsrc(&d.join("a.mp4"), "h264", 160, 120, "10", 1.0);
    }
    std::fs::write(
        d.join("manifest.csv"),
        format!(
            "session,subject,view,video,keypoints,keypoint_layout\ns1,p1,a,a.mp4,{kpt},{layout}\n"
        ),
    )
    .unwrap();
    write_segments(&d.join("segments.csv"), &[("s1", 0.0, 1.0, "x")]);
}

#[test]
fn short_arrays_nan_and_zero_rows_and_npz_conf_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // .npy [6, 17, 3] (x, y, conf): frame 2 all NaN, frame 3 all zero; 6 of 10 frames.
    // .npz: keypoints [10, 17, 2] float64 in Fortran order, conf [10, 17] with joint 1 at 0.
    py(
        r#"
import sys, numpy as np
d = sys.argv[1]
a = np.zeros((6, 17, 3), np.float32)
a[..., 0] = np.arange(6)[:, None] + 1
a[..., 1] = np.arange(17)[None, :] + 1
a[..., 2] = 0.5
a[2] = np.nan
a[3] = 0
np.save(d + "/short.npy", a)
k = np.asfortranarray(np.tile(a[:1, :, :2].astype(np.float64), (10, 1, 1)))
conf = np.full((10, 17), 0.75)
conf[:, 1] = 0
np.savez(d + "/kc.npz", keypoints=k, conf=conf)
"#,
        &[d],
    );
    one_view(d, "short.npy", "coco17");
    let args = build_args(d, &d.join("c1"), &["data.img_size=32"]);
    let out = prep(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("short.npy: the array covers 6 source frame(s) but the video has 10"),
        "{err}"
    );
    let c = Cache::open(&d.join("c1")).unwrap();
    for f in 0..10u64 {
        let (vals, valid) = c.read_keypoints("s1", "a", f).unwrap().unwrap();
        assert_eq!(valid, matches!(f, 0 | 1 | 4 | 5), "frame {f}");
        if valid {
            assert_eq!(&vals[3..6], &[f as f32 + 1.0, 2.0, 0.5], "frame {f}");
        } else {
            assert!(vals.iter().all(|x| *x == 0.0), "masked frame {f} is zeros");
        }
    }
    one_view(d, "kc.npz", "coco17");
    build_ok(d, &d.join("c2"), &["data.img_size=32"]);
    let c = Cache::open(&d.join("c2")).unwrap();
    assert_eq!(c.views[0].kpt_valid_frames, 10);
    let (vals, valid) = c.read_keypoints("s1", "a", 9).unwrap().unwrap();
    assert!(valid);
    assert_eq!(&vals[..3], &[1.0, 1.0, 0.75]);
    assert_eq!(&vals[3..6], &[0.0, 0.0, 0.0], "conf 0: undetected");
    assert_eq!(&vals[16 * 3..], &[1.0, 17.0, 0.75]);
}

#[test]
fn bad_arrays_are_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    py(
        r#"
import sys, numpy as np
d = sys.argv[1]
np.save(d + "/k17.npy", np.ones((10, 17, 3), np.float32))
out = np.empty((), dtype=object)
out[()] = {"pred_keypoints_3d": np.ones((70, 3))}
np.savez(d + "/000000_sam3d_body.npz", output=out)
np.savez(d + "/two.npz", a=np.ones((10, 17, 2)), b=np.ones((10, 17, 2)))
np.save(d + "/ints.npy", np.ones((10, 17, 3), np.int32))
"#,
        &[d],
    );
    std::fs::write(d.join("text.npy"), "frame,joint,x,y\n0,0,1,2\n").unwrap();
    std::fs::write(d.join("text.npz"), "not a zip").unwrap();
    let cases = [
        ("k17.npy", "sam3d52", "17 joints per frame"),
        ("k17.npy", "sam3d52", "layouts with 17 joints: coco17"),
        ("text.npy", "coco17", "not a NumPy .npy array"),
        ("text.npz", "coco17", "not a NumPy .npz archive"),
        (
            "000000_sam3d_body.npz",
            "sam3d70",
            "scripts/sam3d_to_npy.py",
        ),
        ("two.npz", "coco17", "name it `keypoints`"),
        (
            "ints.npy",
            "coco17",
            "save the keypoints as float32 or float64",
        ),
    ];
    for (file, layout, want) in cases {
        one_view(d, file, layout);
        let err = build_err(d, &d.join("cache"), &["data.img_size=32"]);
        assert!(!err.contains("panicked"), "{err}");
        let line = err
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no line names {file}: {err}"));
        assert!(line.contains(want), "{file}: {line}");
        assert!(!d.join("cache").exists(), "nothing written for {file}");
    }
}
