//! Partitioned prep: `--part k/n` builds, `prep merge` joins them without copying shards,
//! and three parts merged equal a single build. `prep split` writes subject-grouped folds.

mod common;

use common::*;
use mvdrive_schemas::index::RecordRow;
use mvdrive_schemas::Cache;
use std::collections::{HashMap, HashSet};

fn strip_part(r: &RecordRow) -> RecordRow {
    let mut r = r.clone();
    if let Some(rest) = r.shard.strip_prefix("parts/") {
        r.shard = rest.split_once('/').unwrap().1.to_string();
    }
    r
}

#[test]
fn three_parts_merged_equal_a_single_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = synth(d, 7, 3);
    let opts = ["data.img_size=32", "prep.fps=4"];
    let single = d.join("single");
    build_ok(&data, &single, &opts);
    let mut parts = Vec::new();
    for k in 0..3 {
        let p = d.join(format!("part{k}"));
        let part = format!("{k}/3");
        build_ok(&data, &p, &[opts[0], opts[1], "--part", &part]);
        parts.push(p);
    }
    // The parts are disjoint and together hold every session.
    let mut all = HashSet::new();
    for p in &parts {
        for s in Cache::open(p).unwrap().sessions {
            assert!(
                all.insert(s.session.clone()),
                "session {} in two parts",
                s.session
            );
        }
    }
    assert_eq!(all.len(), 7);
    let merged = d.join("merged");
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(parts.iter().map(|p| p.to_str().unwrap()));
    prep_ok(&args);
    prep_ok(&["verify", "-q", merged.to_str().unwrap()]);

    let (a, b) = (Cache::open(&single).unwrap(), Cache::open(&merged).unwrap());
    let mut sa = a.sessions.clone();
    sa.sort_by(|x, y| x.session.cmp(&y.session));
    assert_eq!(sa, b.sessions);
    assert_eq!(a.segments, b.segments);
    assert_eq!(a.labels, b.labels);
    let key = |r: &RecordRow| {
        (
            r.session.clone(),
            r.view.clone(),
            r.modality.clone(),
            r.chunk,
        )
    };
    let ra: HashMap<_, _> = a.records.iter().map(|r| (key(r), r.clone())).collect();
    let rb: HashMap<_, _> = b.records.iter().map(|r| (key(r), strip_part(r))).collect();
    assert_eq!(ra, rb, "same records, same checksums, same offsets");
    let mut va = a.views.clone();
    let mut vb = b.views.clone();
    va.sort_by(|x, y| (&x.session, &x.view).cmp(&(&y.session, &y.view)));
    vb.sort_by(|x, y| (&x.session, &x.view).cmp(&(&y.session, &y.view)));
    assert_eq!(va, vb);
    // No shard was copied: the merged cache holds links to the parts only.
    assert!(!merged.join("shards").exists());
    let links: Vec<std::fs::DirEntry> = std::fs::read_dir(merged.join("parts"))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(links.len(), 3);
    for l in &links {
        assert!(l.file_type().unwrap().is_symlink());
    }
    for t in [0u64, 5] {
        assert_eq!(
            a.read_frame("s002", "left", t).unwrap(),
            b.read_frame("s002", "left", t).unwrap()
        );
    }
    // Merging again with other parts never re-points a link the current index uses: the
    // new links have new names, and the old ones go once the new index is committed.
    let before: HashSet<String> = links
        .iter()
        .map(|l| l.file_name().to_string_lossy().into_owned())
        .collect();
    let again: Vec<&str> = parts.iter().rev().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(again);
    prep_ok(&args);
    let after: HashSet<String> = std::fs::read_dir(merged.join("parts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(after.len(), 3);
    assert_eq!(
        before.intersection(&after).count(),
        1,
        "only the middle part keeps its name"
    );
    prep_ok(&["verify", "-q", merged.to_str().unwrap()]);
}

#[test]
fn overlapping_or_mismatched_parts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = synth(d, 2, 0);
    build_ok(&data, &d.join("p0"), &["data.img_size=32", "--part", "0/2"]);
    build_ok(
        &data,
        &d.join("p0b"),
        &["data.img_size=32", "--part", "0/2"],
    );
    build_ok(&data, &d.join("p1"), &["data.img_size=48", "--part", "1/2"]);
    let m = d.join("m");
    let err = prep_err(&[
        "merge",
        "--out",
        m.to_str().unwrap(),
        d.join("p0").to_str().unwrap(),
        d.join("p0b").to_str().unwrap(),
    ]);
    assert!(err.contains("is in both"), "{err}");
    let err = prep_err(&[
        "merge",
        "--out",
        m.to_str().unwrap(),
        d.join("p0").to_str().unwrap(),
        d.join("p1").to_str().unwrap(),
    ]);
    assert!(err.contains("other parameters"), "{err}");
    let err = build_err(&data, &d.join("x"), &["--part", "2/2"]);
    assert!(err.contains("K counts from 0"), "{err}");
}

#[test]
fn split_keeps_each_subject_in_one_fold_and_build_records_folds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = synth(d, 8, 0);
    let out = data.join("manifest.csv");
    prep_ok(&[
        "split",
        "--manifest",
        out.to_str().unwrap(),
        "--folds",
        "2",
        "--by",
        "subject",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut fold_of: HashMap<String, String> = HashMap::new();
    for line in text.lines().skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        let (subject, fold) = (v[1].to_string(), v.last().unwrap().to_string());
        if let Some(f) = fold_of.insert(subject.clone(), fold.clone()) {
            assert_eq!(f, fold, "subject {subject} in two folds");
        }
    }
    let folds: HashSet<&String> = fold_of.values().collect();
    assert_eq!(folds.len(), 2);
    let cache = d.join("cache");
    build_ok(&data, &cache, &["data.img_size=32", "prep.fps=2"]);
    let c = Cache::open(&cache).unwrap();
    for s in &c.sessions {
        assert_eq!(
            s.fold.map(|f| f.to_string()).as_ref(),
            fold_of.get(&s.subject)
        );
    }
    let err = prep_err(&["split", "--manifest", out.to_str().unwrap(), "--folds", "9"]);
    assert!(err.contains("--folds 9"), "{err}");
}

#[test]
fn the_make_j_recipe_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = synth(d, 3, 0);
    let out = d.join("cache");
    let status = std::process::Command::new("make")
        .arg("-f")
        .arg(root().join("examples/prep-parts.mk"))
        .args(["-j3", "-s"])
        .arg(format!("PREP={}", prep_bin().display()))
        .arg(format!("DATA={}", data.display()))
        .arg(format!("OUT={}", out.display()))
        .args(["N=3", "ARGS=data.img_size=32 prep.fps=2"])
        .status()
        .unwrap();
    assert!(status.success());
    prep_ok(&["verify", "-q", out.to_str().unwrap()]);
    assert_eq!(Cache::open(&out).unwrap().sessions.len(), 3);
}
