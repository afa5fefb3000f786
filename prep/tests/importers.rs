//! `prep import`: each format's published layout, written as fixtures, becomes the exact
//! manifest.csv + segments.csv rows; bad input is one clear line and writes nothing.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Run `prep import` with `args`.
fn import(args: &[String]) -> Output {
    let mut v = vec!["import".to_string()];
    v.extend(args.iter().cloned());
    prep(&v.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Run `prep import`, require success; returns stderr (warnings).
fn import_ok(args: &[String]) -> String {
    let out = import(args);
    assert!(
        out.status.success(),
        "prep import {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("prep import"), "summary: {stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `prep import`, require failure that mentions every needle and writes nothing into
/// `out` (an old manifest there is left as it was).
fn import_err(out: &Path, args: &[String], needles: &[&str]) -> String {
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("manifest.csv"), "old\n").unwrap();
    let o = import(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "should have failed: {args:?}\n{err}");
    for n in needles {
        assert!(err.contains(n), "error should mention `{n}`:\n{err}");
    }
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.csv")).unwrap(),
        "old\n",
        "the old manifest was touched"
    );
    assert!(
        !out.join("segments.csv").exists(),
        "segments.csv was written"
    );
    let leftovers: Vec<PathBuf> = files_under(out)
        .into_iter()
        .filter(|p| p.file_name().unwrap() != "manifest.csv")
        .collect();
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
    err
}

fn rows(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(String::from)
        .collect()
}

fn assert_rows(path: &Path, expected: &[&str]) {
    assert_eq!(rows(path), expected, "rows of {}", path.display());
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------- Label Studio

/// A full JSON export with three annotators on one task (one cancelled), a task without
/// annotations, URL prefixes of local files, uploads and a full http URL.
const LS_TASKS: &str = r#"[
  {
    "id": 1,
    "data": {"video": "/data/local-files/?d=videos/s1_front.mp4", "session": "s1", "view": "front", "subject": "p1"},
    "annotations": [
      {"id": 12, "completed_by": 2, "was_cancelled": false,
       "result": [{"id": "b1", "from_name": "timeline", "to_name": "video", "type": "timelinelabels",
                   "value": {"ranges": [{"start": 6, "end": 25}], "timelinelabels": ["texting"]}}]},
      {"id": 11, "completed_by": 1, "was_cancelled": false,
       "result": [{"id": "a1", "from_name": "timeline", "to_name": "video", "type": "timelinelabels",
                   "value": {"ranges": [{"start": 5, "end": 10}], "timelinelabels": ["drinking"]}},
                  {"id": "a2", "from_name": "timeline", "to_name": "video", "type": "timelinelabels",
                   "value": {"ranges": [{"start": 21, "end": 30}], "timelinelabels": ["texting"]}},
                  {"id": "c1", "from_name": "quality", "to_name": "video", "type": "choices",
                   "value": {"choices": ["good"]}}]},
      {"id": 13, "completed_by": 3,
       "result": [{"id": "c1", "from_name": "timeline", "to_name": "video", "type": "timelinelabels",
                   "value": {"ranges": [{"start": 8, "end": 12}], "timelinelabels": ["texting"]}}]},
      {"id": 14, "completed_by": 4, "was_cancelled": true,
       "result": [{"value": {"ranges": [{"start": 1, "end": 40}], "timelinelabels": ["eating"]}}]}
    ],
    "predictions": []
  },
  {
    "id": 2,
    "data": {"video": "/data/upload/3/s1_left.mp4", "session": "s1", "view": "left", "subject": "p1"},
    "annotations": []
  },
  {
    "id": 3,
    "data": {"video": "http://localhost:8080/data/local-files/?d=videos%2Fs2.mp4"},
    "annotations": []
  }
]"#;

/// A JSON-MIN export: one flat record per annotation, results under the control's name.
const LS_MIN: &str = r#"[
  {"video": "/data/local-files/?d=videos/s2_left.mp4", "session": "s2", "view": "left", "id": 4,
   "videoLabels": [{"ranges": [{"start": 3, "end": 3}], "timelinelabels": ["drinking"]}],
   "annotator": 1, "annotation_id": 40, "created_at": "2024-08-13T10:00:00Z", "lead_time": 3.2}
]"#;

fn label_studio_fixture(d: &Path) -> (PathBuf, PathBuf) {
    let a = d.join("export/tasks.json");
    let b = d.join("export/min.json");
    write(&a, LS_TASKS);
    write(&b, LS_MIN);
    (a, b)
}

#[test]
fn label_studio_merges_annotators_and_converts_inclusive_one_based_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = label_studio_fixture(d);
    let warnings = import_ok(&args(&[
        "label-studio",
        &s(&a),
        &s(&b),
        "--out",
        &s(d),
        "--background",
        "idle",
    ]));
    assert_rows(
        &d.join("manifest.csv"),
        &[
            "session,subject,view,video",
            "s1,p1,front,videos/s1_front.mp4",
            "s1,p1,left,s1_left.mp4",
            "s2,unknown,front,videos/s2.mp4",
            "s2,unknown,left,videos/s2_left.mp4",
        ],
    );
    // Frames (0-based, end exclusive): annotator 11 drinking 4..10 and texting 20..30,
    // 12 texting 5..25, 13 texting 7..12. 5..7 is a 1:1 tie won by the smaller id (11);
    // from 7 texting has two votes. s2's one-frame range {3,3} is frame 2.
    assert_rows(
        &d.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view",
            "s1,0,4,idle,front",
            "s1,4,7,drinking,front",
            "s1,7,30,texting,front",
            "s2,0,2,idle,left",
            "s2,2,3,drinking,left",
        ],
    );
    assert!(
        warnings.contains("not found under the data root"),
        "{warnings}"
    );
}

/// The original Python project's files: the video at the top level and annotations whose
/// timeline items sit under the control name (`videoLabels`), with no `result`.
const LS_ORIGINAL: &str = r#"{"video": "videos/s3_front.mp4", "session": "s3", "view": "front",
  "annotations": [
    {"annotator": 1, "updated_at": "2024-08-13T10:00:00Z",
     "videoLabels": [{"timelinelabels": ["left"], "ranges": [{"start": 10, "end": 40}]},
                     {"timelinelabels": ["texting"], "ranges": [{"start": 41, "end": 50}]}]}
  ]}"#;

#[test]
fn label_studio_reads_the_original_projects_files_and_refuses_files_without_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = d.join("export/original.json");
    write(&f, LS_ORIGINAL);
    import_ok(&args(&["label-studio", &s(&f), "--out", &s(d)]));
    // Ranges are 1-based and inclusive: 10..=40 is frames 9..40, 41..=50 is 40..50.
    assert_rows(
        &d.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view",
            "s3,9,40,left,front",
            "s3,40,50,texting,front",
        ],
    );
    // A file in which no layout finds a segment is an error naming it and the keys.
    let empty = d.join("export/empty.json");
    write(
        &empty,
        r#"[{"data": {"video": "videos/s4.mp4"}, "annotations": [{"id": 1, "result": []}]}]"#,
    );
    let out = d.join("out2");
    import_err(
        &out,
        &args(&["label-studio", &s(&empty), "--out", &s(&out)]),
        &[
            "empty.json",
            "no timeline segments",
            "videoLabels",
            "result",
        ],
    );
}

#[test]
fn label_studio_min_votes_and_no_background() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, _) = label_studio_fixture(d);
    let out = d.join("out");
    // tasks.json alone has s2 only in front view: import the front view only.
    import_ok(&args(&[
        "label-studio",
        &s(&a),
        "--out",
        &s(&out),
        "--data-root",
        &s(d),
        "--views",
        "front",
        "--min-votes",
        "2",
    ]));
    assert_rows(
        &out.join("manifest.csv"),
        &[
            "session,subject,view,video",
            "s1,p1,front,videos/s1_front.mp4",
            "s2,unknown,front,videos/s2.mp4",
        ],
    );
    // Two votes: texting 7..12 (12+13) and 20..25 (11+12).
    assert_rows(
        &out.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view",
            "s1,7,12,texting,front",
            "s1,20,25,texting,front",
        ],
    );
}

#[test]
fn label_studio_bad_input_is_named_by_json_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = label_studio_fixture(d);
    let out = d.join("out");
    let base = |extra: &[&str]| {
        let mut v = args(&[
            "label-studio",
            &s(&a),
            &s(&b),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]);
        v.extend(args(extra));
        v
    };

    // A vocabulary without `texting`.
    let labels = d.join("labels.txt");
    write(&labels, "drinking\nidle\n");
    import_err(
        &out,
        &base(&["--labels", &s(&labels)]),
        &[
            "tasks.json: [0].annotations[0].result[0].value.ranges[0]",
            "label `texting` is not in",
        ],
    );

    // Frame 0 does not exist in Label Studio.
    let bad = d.join("bad0.json");
    write(
        &bad,
        &LS_TASKS.replacen(r#""start": 8, "end": 12"#, r#""start": 0, "end": 12"#, 1),
    );
    import_err(
        &out,
        &args(&[
            "label-studio",
            &s(&bad),
            &s(&b),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]),
        &[
            "bad0.json: [0].annotations[2].result[0].value.ranges[0]",
            "numbers video frames from 1",
        ],
    );

    // No video key.
    let bad = d.join("novideo.json");
    write(
        &bad,
        &LS_TASKS.replacen(r#""video": "/data/upload"#, r#""clip": "/data/upload"#, 1),
    );
    import_err(
        &out,
        &args(&[
            "label-studio",
            &s(&bad),
            &s(&b),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]),
        &["novideo.json: [1].data", "no `video` key", "--video-key"],
    );

    // A region without ranges.
    let bad = d.join("noranges.json");
    write(
        &bad,
        &LS_TASKS.replacen(r#""ranges": [{"start": 6, "end": 25}], "#, "", 1),
    );
    import_err(
        &out,
        &args(&[
            "label-studio",
            &s(&bad),
            &s(&b),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]),
        &[
            "noranges.json: [0].annotations[0].result[0].value",
            "no `ranges`",
        ],
    );

    // Broken JSON names line and column.
    let bad = d.join("broken.json");
    write(&bad, "[\n  {\"data\": {\"video\": \"a.mp4\"},\n  }\n]");
    import_err(
        &out,
        &args(&[
            "label-studio",
            &s(&bad),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]),
        &["broken.json line 3 column", "not valid JSON"],
    );

    // s2 without its left task: a session would miss a view.
    import_err(
        &out,
        &args(&[
            "label-studio",
            &s(&a),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
        ]),
        &[
            "tasks.json: [2].data",
            "session `s2` has no video for view(s) left",
        ],
    );

    // An option of another format.
    import_err(
        &out,
        &base(&["--fps", "30"]),
        &["--fps does not apply to `label-studio`"],
    );

    // A video outside the data root.
    let abs = d.join("abs.json");
    write(
        &abs,
        r#"[{"data": {"video": "/somewhere/else/v.mp4"}, "annotations": []}]"#,
    );
    import_err(
        &out,
        &args(&["label-studio", &s(&abs), "--out", &s(&out)]),
        &[
            "abs.json: [0].data.video",
            "is not inside the data root",
            "--data-root /somewhere/else",
        ],
    );
}

// ---------------------------------------------------------------- Drive&Act

const DA_HEADER: &str =
    "participant_id,file_id,annotation_id,frame_start,frame_end,activity,chunk_id\n";

fn drive_act_fixture(d: &Path) -> PathBuf {
    let acts = d.join("activities_3s");
    // Chunks out of order; annotation 0 spans three chunks, the last one short.
    write(
        &acts.join("kinect_color/midlevel.chunks_90.csv"),
        &format!(
            "{DA_HEADER}\
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,0,90,180,fastening_seat_belt,1
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,0,0,90,fastening_seat_belt,0
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,0,180,215,fastening_seat_belt,2
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,1,215,305,drinking,0
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,2,400,490,eating,0
1,vp1/run1b_2018-05-29-14-02-47.kinect_color,2,490,580,eating,1
2,vp2/run2_2018-05-30-10-00-00.kinect_color,0,30,120,sitting_still,0
"
        ),
    );
    // The NIR camera's file_id ends in `.ids_1`; annotation 1 is 10 frames off.
    write(
        &acts.join("inner_mirror/midlevel.chunks_90.csv"),
        &format!(
            "{DA_HEADER}\
1,vp1/run1b_2018-05-29-14-02-47.ids_1,0,0,90,fastening_seat_belt,0
1,vp1/run1b_2018-05-29-14-02-47.ids_1,0,90,180,fastening_seat_belt,1
1,vp1/run1b_2018-05-29-14-02-47.ids_1,0,180,215,fastening_seat_belt,2
1,vp1/run1b_2018-05-29-14-02-47.ids_1,1,225,315,drinking,0
1,vp1/run1b_2018-05-29-14-02-47.ids_1,2,400,580,eating,0
2,vp2/run2_2018-05-30-10-00-00.ids_1,0,30,120,sitting_still,0
"
        ),
    );
    acts
}

#[test]
fn drive_act_merges_chunks_and_maps_views() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let acts = drive_act_fixture(d);
    let warnings = import_ok(&args(&["drive-act", &s(&acts), "--out", &s(d)]));
    assert_rows(
        &d.join("manifest.csv"),
        &[
            "session,subject,view,video",
            "vp1/run1b_2018-05-29-14-02-47,vp1,front,kinect_color/vp1/run1b_2018-05-29-14-02-47.kinect_color.mp4",
            "vp1/run1b_2018-05-29-14-02-47,vp1,mirror,inner_mirror/vp1/run1b_2018-05-29-14-02-47.ids_1.mp4",
            "vp2/run2_2018-05-30-10-00-00,vp2,front,kinect_color/vp2/run2_2018-05-30-10-00-00.kinect_color.mp4",
            "vp2/run2_2018-05-30-10-00-00,vp2,mirror,inner_mirror/vp2/run2_2018-05-30-10-00-00.ids_1.mp4",
        ],
    );
    assert_rows(
        &d.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view",
            "vp1/run1b_2018-05-29-14-02-47,0,215,fastening_seat_belt,front",
            "vp1/run1b_2018-05-29-14-02-47,215,305,drinking,front",
            "vp1/run1b_2018-05-29-14-02-47,400,580,eating,front",
            "vp2/run2_2018-05-30-10-00-00,30,120,sitting_still,front",
        ],
    );
    assert!(
        warnings.contains("view `mirror`: 1 of 4 annotations differ"),
        "{warnings}"
    );
}

#[test]
fn drive_act_split_files_custom_view_map_and_time_view() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let acts = d.join("activities_3s");
    for view in ["kinect_color", "a_column_driver"] {
        let suffix = if view == "kinect_color" {
            "kinect_color"
        } else {
            "ids_5"
        };
        write(
            &acts.join(format!("{view}/midlevel.chunks_90.split_0.train.csv")),
            &format!("{DA_HEADER}1,vp1/run1.{suffix},4,10,100,eating,0\n"),
        );
        write(
            &acts.join(format!("{view}/midlevel.chunks_90.split_0.test.csv")),
            &format!("{DA_HEADER}3,vp3/run7.{suffix},0,0,90,drinking,0\n"),
        );
        // Another split and another level are not read.
        write(
            &acts.join(format!("{view}/midlevel.chunks_90.split_1.train.csv")),
            &format!("{DA_HEADER}3,vp3/run7.{suffix},0,0,90,drinking,0\n"),
        );
        write(
            &acts.join(format!("{view}/tasklevel.chunks_90.split_0.train.csv")),
            &format!("{DA_HEADER}1,vp1/run1.{suffix},0,0,900,eating_and_drinking,0\n"),
        );
    }
    let out = d.join("prepared");
    import_ok(&args(&[
        "drive-act",
        &s(&acts),
        "--out",
        &s(&out),
        "--data-root",
        &s(d),
        "--view-map",
        "a_column_driver=left,kinect_color=right",
        "--time-view",
        "right",
        "--video-pattern",
        "videos/{name}/{session}.mp4",
    ]));
    assert_rows(
        &out.join("manifest.csv"),
        &[
            "session,subject,view,video,split",
            "vp3/run7,vp3,left,videos/left/vp3/run7.mp4,test",
            "vp3/run7,vp3,right,videos/right/vp3/run7.mp4,test",
            "vp1/run1,vp1,left,videos/left/vp1/run1.mp4,train",
            "vp1/run1,vp1,right,videos/right/vp1/run1.mp4,train",
        ],
    );
    assert_rows(
        &out.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view",
            "vp3/run7,0,90,drinking,right",
            "vp1/run1,10,100,eating,right",
        ],
    );
}

#[test]
fn drive_act_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let csv = d.join("activities_3s/kinect_color/midlevel.chunks_90.csv");
    let run = |text: &str, needles: &[&str]| {
        write(&csv, text);
        import_err(
            &out,
            &args(&[
                "drive-act",
                &s(&csv),
                "--out",
                &s(&out),
                "--data-root",
                &s(d),
            ]),
            needles,
        );
    };
    run(
        "participant_id,file_id,annotation_id,frame_start,frame_end,chunk_id\n1,vp1/r.kinect_color,0,0,90,0\n",
        &["midlevel.chunks_90.csv: missing column(s) activity"],
    );
    run(
        &format!("{DA_HEADER}1,vp1/r.kinect_color,0,0,90,eating,0\n1,vp1/r.kinect_color,0,90,180,drinking,1\n"),
        &["midlevel.chunks_90.csv line 3", "annotation_id `0` has activity `drinking`", "one activity per annotation"],
    );
    run(
        &format!("{DA_HEADER}1,vp1/r.kinect_color,0,0,90,eating,0\n1,vp1/r.kinect_color,1,60,150,drinking,0\n"),
        &["midlevel.chunks_90.csv line 3", "segment `drinking` frames 60-150 of `front` overlaps segment `eating` frames 0-90", "line 2"],
    );
    run(
        &format!("{DA_HEADER}1,vp1/r.kinect_color,0,90,x,eating,0\n"),
        &[
            "midlevel.chunks_90.csv line 2",
            "frame_end `x` must be whole frame numbers",
        ],
    );
    let labels = d.join("labels.txt");
    write(&labels, "# Drive&Act midlevel subset\neating\ndrinking\n");
    write(
        &csv,
        &format!("{DA_HEADER}1,vp1/r.kinect_color,0,0,90,eatin,0\n"),
    );
    import_err(
        &out,
        &args(&[
            "drive-act",
            &s(&csv),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
            "--labels",
            &s(&labels),
        ]),
        &[
            "midlevel.chunks_90.csv line 2: label `eatin` is not in",
            "did you mean `eating`?",
        ],
    );
}

// ---------------------------------------------------------------- AI City

/// A user CSV as published: BOM, spaces after commas, blank cells repeating the cell above,
/// H:MM:SS, MM:SS and plain-second times, an NA row, a blank Camera View on a new file, a
/// Filename without the `_NoAudio` that the video file has.
const AICITY_CSV: &str = "\u{feff}Filename, Camera View, Activity Type, Start Time, End Time, Label (Primary), Appearance Block
Dashboard_User_id_24026_NoAudio_3, Dashboard, Distracted, 0:00:10, 0:00:18, Class 1, None
, , Distracted, 0:00:25, 0:00:31, Class 5,
, , Normal, 0:00:40, 0:00:40, NA,
Rear_view_User_id_24026_NoAudio_3, Rear_view, Distracted, 0:00:11, 0:00:18, Class 1, None
, , Distracted, 0:00:27, 0:00:31, Class 5,
Right_side_window_User_id_24026_NoAudio_3, Right_side_window, Distracted, 00:10, 00:18, Class 1, None
,  , Distracted, 25, 31, Class 5 ,
Dashboard_User_id_24026_NoAudio_5, Dashboard, Distracted, 1:02:03, 1:02:09, Class 12, Sunglass
Rear_view_User_id_24026_NoAudio_5, , Distracted, 1:02:03, 1:02:09, Class 12,
Right_side_window_User_id_24026_5, Right_side_window, Distracted, 1:02:03, 1:02:09, Class 12,
";

#[test]
fn aicity_fills_blank_cells_and_reads_hms_times() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("A1");
    let csv = d.join("user_id_24026/user_id_24026.csv");
    write(&csv, AICITY_CSV);
    // Two videos are on disk under other names: another case, and `_NoAudio` that the
    // Filename cell lacks.
    write(
        &d.join("user_id_24026/Dashboard_user_id_24026_NoAudio_3.mp4"),
        "",
    );
    write(
        &d.join("user_id_24026/Right_side_window_user_id_24026_NoAudio_5.MP4"),
        "",
    );
    let warnings = import_ok(&args(&["aicity", &s(&d), "--out", &s(&d)]));
    assert_rows(
        &d.join("manifest.csv"),
        &[
            "session,subject,view,video",
            "user_24026_block3,user_24026,dashboard,user_id_24026/Dashboard_user_id_24026_NoAudio_3.mp4",
            "user_24026_block3,user_24026,rear_view,user_id_24026/Rear_view_User_id_24026_NoAudio_3.MP4",
            "user_24026_block3,user_24026,right_side_window,user_id_24026/Right_side_window_User_id_24026_NoAudio_3.MP4",
            "user_24026_block5,user_24026,dashboard,user_id_24026/Dashboard_User_id_24026_NoAudio_5.MP4",
            "user_24026_block5,user_24026,rear_view,user_id_24026/Rear_view_User_id_24026_NoAudio_5.MP4",
            "user_24026_block5,user_24026,right_side_window,user_id_24026/Right_side_window_user_id_24026_NoAudio_5.MP4",
        ],
    );
    assert_rows(
        &d.join("segments.csv"),
        &[
            "session,start_s,end_s,label",
            "user_24026_block3,10,18,class_1",
            "user_24026_block3,25,31,class_5",
            "user_24026_block5,3723,3729,class_12",
        ],
    );
    // The rear view's second activity starts 2 s later than the dashboard's.
    assert!(warnings.contains("line 6: view `rear_view`"), "{warnings}");
    assert!(warnings.contains("more than 1 s apart"), "{warnings}");

    // Class names, another time view, a background label.
    let names = dir.path().join("names.csv");
    write(
        &names,
        "id,name\n1,drinking\n5,text_right\n12,pick_up_from_floor_driver\n",
    );
    let out = dir.path().join("named");
    import_ok(&args(&[
        "aicity",
        &s(&csv),
        "--out",
        &s(&out),
        "--data-root",
        &s(&d),
        "--labels-map",
        &s(&names),
        "--time-view",
        "Rear_view",
        "--background",
        "normal",
        "--views",
        "dashboard,rear_view",
    ]));
    assert_rows(
        &out.join("segments.csv"),
        &[
            "session,start_s,end_s,label",
            "user_24026_block3,0,11,normal",
            "user_24026_block3,11,18,drinking",
            "user_24026_block3,18,27,normal",
            "user_24026_block3,27,31,text_right",
            "user_24026_block5,0,3723,normal",
            "user_24026_block5,3723,3729,pick_up_from_floor_driver",
        ],
    );
    assert_eq!(rows(&out.join("manifest.csv")).len(), 5);
}

#[test]
fn aicity_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let csv = d.join("user_id_1.csv");
    let run = |text: &str, needles: &[&str]| {
        write(&csv, text);
        import_err(
            &out,
            &args(&["aicity", &s(&csv), "--out", &s(&out), "--data-root", &s(d)]),
            needles,
        );
    };
    let head = "Filename, Camera View, Activity Type, Start Time, End Time, Label (Primary), Appearance Block\n";
    run(
        &format!("{head}Dashboard_user_id_1_NoAudio_0, Dashboard, Distracted, 0:0x:10, 0:00:18, Class 1, None\n"),
        &["user_id_1.csv line 2: Start Time `0:0x:10` is not a time", "H:MM:SS"],
    );
    run(
        "Filename, Camera View, Start Time, Label (Primary)\nDashboard_user_id_1_NoAudio_0, Dashboard, 0:00:10, Class 1\n",
        &["user_id_1.csv: missing column(s) End Time"],
    );
    run(
        &format!("{head}Dashboard_user_id_1_NoAudio_0, Dashboard, D, 0:00:10, 0:00:18, Class 1, None\n, , D, 0:00:15, 0:00:20, Class 2,\n"),
        &["user_id_1.csv line 3: segment `class_2` 15-20 s overlaps segment `class_1` 10-18 s (", "line 2)"],
    );
    run(
        &format!(
            "{head}Dashboard_user_id_1_NoAudio_0, Dashboard, D, 0:00:10, 0:00:18, Texting, None\n"
        ),
        &["user_id_1.csv line 2: Label (Primary) `Texting` is neither `Class N` nor `NA`"],
    );
    run(
        &format!("{head}, Dashboard, D, 0:00:10, 0:00:18, Class 1, None\n"),
        &["user_id_1.csv line 2: no Filename on this row or any row above"],
    );
    run(
        &format!("{head}Dashboard_user_id_1_NoAudio_0, Dashboard, D, 0:00:10, 0:00:18, Class 1, None\nRear_view_user_id_1_NoAudio_0, Rear_view, D, 0:00:10, 0:00:18, Class 1, None\nDashboard_user_id_1_NoAudio_2, Dashboard, D, 0:00:10, 0:00:18, Class 1, None\n"),
        &["line 4: session `user_1_block2` has no video for view(s) rear_view"],
    );
}

// ---------------------------------------------------------------- DMD

const DMD_NAME: &str = "gA_1_s1_2019-03-08T09;31;15+01;00_rgb_ann_distraction.json";

/// OpenLABEL as DMD publishes it: actions with inclusive frame_end in several namespaces,
/// streams with frame shifts relative to the face camera.
const DMD_JSON: &str = r#"{"openlabel": {
  "metadata": {"schema_version": "1.0.0", "name": "gA_1_s1_2019-03-08T09;31;15+01;00"},
  "streams": {
    "face_camera": {"type": "camera", "uri": "gA_1_s1_2019-03-08T09;31;15+01;00_rgb_face.mp4",
                    "stream_properties": {"total_frames": 300}},
    "body_camera": {"type": "camera", "uri": "gA_1_s1_2019-03-08T09;31;15+01;00_rgb_body.mp4",
                    "stream_properties": {"total_frames": 300, "sync": {"frame_shift": 6}}},
    "hands_camera": {"type": "camera", "uri": "gA_1_s1_2019-03-08T09;31;15+01;00_rgb_hands.mp4",
                     "stream_properties": {"total_frames": 300, "sync": {"frame_shift": -3}}}
  },
  "actions": {
    "0": {"name": "0", "type": "driver_actions/safe_drive",
          "frame_intervals": [{"frame_start": 0, "frame_end": 99}, {"frame_start": 160, "frame_end": 299}]},
    "1": {"name": "1", "type": "driver_actions/texting_right",
          "frame_intervals": [{"frame_start": 100, "frame_end": 159}]},
    "2": {"name": "2", "type": "hands_using_wheel/both",
          "frame_intervals": [{"frame_start": 0, "frame_end": 299}]},
    "3": {"name": "3", "type": "gaze_on_road/looking_road",
          "frame_intervals": [{"frame_start": 0, "frame_end": 50}]}
  },
  "frames": {"0": {"actions": {"0": {}, "2": {}, "3": {}}}}
}}"#;

#[test]
fn dmd_inclusive_ends_namespaces_and_frame_shifts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let json = d.join("dmd/gA/1/s1").join(DMD_NAME);
    write(&json, DMD_JSON);
    import_ok(&args(&["dmd", &s(&d.join("dmd")), "--out", &s(d)]));
    let session = "gA_1_s1_2019-03-08T09;31;15+01;00";
    let video = |cam: &str| format!("dmd/gA/1/s1/{session}_rgb_{cam}.mp4");
    // Shifts face 0, body +6, hands -3: the hands camera starts first (offset 0), the face
    // 3 frames and the body 9 frames later, at 29.76 fps.
    assert_rows(
        &d.join("manifest.csv"),
        &[
            "session,subject,view,video,offset_s".to_string(),
            format!("{session},gA_1,face,{},0.100806", video("face")),
            format!("{session},gA_1,body,{},0.302419", video("body")),
            format!("{session},gA_1,hands,{},0", video("hands")),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_rows(
        &d.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view".to_string(),
            format!("{session},0,100,safe_drive,hands"),
            format!("{session},100,160,texting_right,hands"),
            format!("{session},160,300,safe_drive,hands"),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );

    // Full types from two namespaces (they may overlap each other), views renamed and
    // restricted: the face camera now starts first, so frames shift by its 3.
    let out = d.join("full");
    import_ok(&args(&[
        "dmd",
        &s(&json),
        "--out",
        &s(&out),
        "--data-root",
        &s(d),
        "--namespace",
        "driver_actions,gaze_on_road",
        "--full-type",
        "--view-map",
        "face_camera=face,body_camera=body",
        "--views",
        "face,body",
        "--fps",
        "30",
    ]));
    assert_rows(
        &out.join("manifest.csv"),
        &[
            "session,subject,view,video,offset_s".to_string(),
            format!("{session},gA_1,face,{},0.1", video("face")),
            format!("{session},gA_1,body,{},0.3", video("body")),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    assert_rows(
        &out.join("segments.csv"),
        &[
            "session,start_frame,end_frame,label,frame_view".to_string(),
            format!("{session},0,97,driver_actions/safe_drive,face"),
            format!("{session},0,48,gaze_on_road/looking_road,face"),
            format!("{session},97,157,driver_actions/texting_right,face"),
            format!("{session},157,297,driver_actions/safe_drive,face"),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
}

#[test]
fn dmd_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let json = d.join(DMD_NAME);
    let run = |text: &str, needles: &[&str]| {
        write(&json, text);
        import_err(
            &out,
            &args(&["dmd", &s(&json), "--out", &s(&out), "--data-root", &s(d)]),
            needles,
        );
    };
    // Overlapping driver actions (texting from 90, inclusive end 99 of safe_drive).
    run(
        &DMD_JSON.replacen(r#""frame_start": 100, "frame_end": 159"#, r#""frame_start": 90, "frame_end": 159"#, 1),
        &[
            "openlabel.actions.1.frame_intervals[0]: segment `texting_right` frames 90-160 of `hands` overlaps segment `safe_drive` frames 0-100 of `hands`",
            "openlabel.actions.0.frame_intervals[0]",
        ],
    );
    run(
        &DMD_JSON.replacen(r#""frame_start": 100, "frame_end": 159"#, r#""frame_start": 100, "frame_end": 99"#, 1),
        &["openlabel.actions.1.frame_intervals[0]: need 0 <= frame_start <= frame_end (inclusive), got 100..99"],
    );
    run(
        &DMD_JSON.replacen(r#""actions""#, r#""events""#, 1),
        &["openlabel.actions: missing"],
    );
    run(
        &DMD_JSON.replacen(r#""type": "driver_actions/texting_right","#, "", 1),
        &["openlabel.actions.1: no `type` string"],
    );
    run(r#"{"vcd_like": {}}"#, &["no `openlabel` object"]);
    let labels = d.join("labels.txt");
    write(&labels, "safe_drive\ntexting_left\n");
    write(&json, DMD_JSON);
    import_err(
        &out,
        &args(&[
            "dmd",
            &s(&json),
            "--out",
            &s(&out),
            "--data-root",
            &s(d),
            "--labels",
            &s(&labels),
        ]),
        &[
            "openlabel.actions.1.frame_intervals[0]: label `texting_right` is not in",
            "did you mean `texting_left`?",
        ],
    );
}

// ---------------------------------------------------------------- consumable by prep build

#[test]
fn an_imported_label_studio_project_builds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = label_studio_fixture(d);
    for v in [
        "videos/s1_front.mp4",
        "s1_left.mp4",
        "videos/s2.mp4",
        "videos/s2_left.mp4",
    ] {
        std::fs::create_dir_all(d.join(v).parent().unwrap()).unwrap();
        testsrc(&d.join(v), "h264", 96, 64, "10", 4.0);
    }
    let labels = d.join("labels.txt");
    write(&labels, "idle\ndrinking\ntexting\n");
    let stderr = import_ok(&args(&[
        "label-studio",
        &s(&a),
        &s(&b),
        "--out",
        &s(d),
        "--background",
        "idle",
        "--labels",
        &s(&labels),
    ]));
    assert!(!stderr.contains("not found"), "{stderr}");
    let cache = d.join("cache");
    build_ok(d, &cache, &["data.img_size=32"]);
    let json = prep_ok(&["inspect", &s(&cache), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["sessions"], 2, "{json}");
    assert_eq!(v["segments"], 5, "{json}");
    assert_eq!(
        v["classes"],
        serde_json::json!({"idle": 2, "drinking": 2, "texting": 1}),
        "{json}"
    );
}
