//! A bounded, seeded fuzz of the cache readers: a tiny raw, zstd and jpeg cache are
//! mutated (bytes in every file, truncation, index fields written back through the commit
//! protocol so that checksums match and the deep readers are reached, zstd and jpeg frame tables,
//! meta.json values), and every reader runs on each mutant in-process: verify, the record
//! and frame reads the training loader uses, inspect and export-frames. Each must return
//! an error or a result, never panic, and a frame read that succeeds must return exactly
//! the bytes prep wrote for that (session, view, modality, timeline frame): the frame
//! checksums let no other bytes through.
//!
//! `MVDRIVE_FUZZ_CASES=N` runs N cases per cache (default 60, a few seconds) and
//! `MVDRIVE_FUZZ_SEED=S` picks other mutations; `make fuzz` runs 2000 per cache.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use common::*;
use mvdrive_common::rng::Rng;
use mvdrive_schemas::commit::commit;
use mvdrive_schemas::record::{body_len, read_frame_into};
use mvdrive_schemas::Cache;

fn tiny_cache(dir: &Path, compress: &str) -> PathBuf {
    let data = synth(dir, 2, 3);
    let cache = dir.join("cache");
    prep_ok(&[
        "build",
        "-q",
        "--manifest",
        data.join("manifest.csv").to_str().unwrap(),
        "--segments",
        data.join("segments.csv").to_str().unwrap(),
        "--out",
        cache.to_str().unwrap(),
        "data.img_size=16",
        "prep.fps=2",
        "data.max_video_frames=4",
        &format!("prep.compress={compress}"),
    ]);
    cache
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// Every file of the cache but the lock.
fn files(cache: &Path) -> Vec<PathBuf> {
    files_under(cache)
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .collect()
}

/// A value a fuzzer would try for an integer field.
fn extreme(rng: &mut Rng, current: u64) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => u64::MAX - rng.below(16) as u64,
        2 => current.wrapping_add(1 + rng.below(4096) as u64),
        3 => current.saturating_sub(1 + rng.below(64) as u64),
        4 => u32::MAX as u64 + rng.below(3) as u64,
        _ => rng.next_u64(),
    }
}

/// Mutate one index field and commit the tables again (checksums recomputed).
fn mutate_index(cache: &Path, rng: &mut Rng) -> String {
    let c = Cache::open(cache).unwrap();
    let (mut sessions, mut records, mut segments, mut labels) = (
        c.sessions.clone(),
        c.records.clone(),
        c.segments.clone(),
        c.labels.clone(),
    );
    let what = match rng.below(10) {
        0..=4 => {
            let i = rng.below(records.len());
            let r = &mut records[i];
            match rng.below(7) {
                0 => r.offset = extreme(rng, r.offset),
                1 => r.length = extreme(rng, r.length),
                2 => r.frame_count = extreme(rng, r.frame_count as u64) as u32,
                3 => r.height = extreme(rng, r.height as u64) as u32,
                4 => r.width = extreme(rng, r.width as u64) as u32,
                5 => r.frame_start = extreme(rng, r.frame_start),
                _ => r.chunk = extreme(rng, r.chunk as u64) as u32,
            }
            "record field"
        }
        5..=6 => {
            let i = rng.below(segments.len());
            let s = &mut segments[i];
            match rng.below(4) {
                0 => s.frame_start = extreme(rng, s.frame_start),
                1 => s.frame_end = extreme(rng, s.frame_end),
                2 => s.start_s = f64::NAN,
                _ => s.label_id = extreme(rng, s.label_id as u64) as u32,
            }
            "segment field"
        }
        7 => {
            let i = rng.below(labels.len());
            labels[i].label_id = extreme(rng, labels[i].label_id as u64) as u32;
            "label id"
        }
        _ => {
            let i = rng.below(sessions.len());
            let s = &mut sessions[i];
            match rng.below(2) {
                0 => s.timeline_frames = extreme(rng, s.timeline_frames),
                _ => s.fps = [0.0, -1.0, f64::NAN, f64::INFINITY][rng.below(4)],
            }
            "session field"
        }
    };
    commit(
        cache,
        c.meta.clone(),
        &sessions,
        &c.views,
        &records,
        &segments,
        &labels,
    )
    .unwrap();
    what.into()
}

/// One mutation of the cache, named by its class.
fn mutate(cache: &Path, zstd: bool, rng: &mut Rng) -> String {
    let all = files(cache);
    match rng.below(6) {
        0 | 1 => {
            let f = &all[rng.below(all.len())];
            let mut bytes = std::fs::read(f).unwrap();
            if !bytes.is_empty() {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
                std::fs::write(f, bytes).unwrap();
            }
            "flipped bytes".into()
        }
        2 => {
            let f = &all[rng.below(all.len())];
            let len = std::fs::metadata(f).unwrap().len();
            let keep = rng.below(len as usize + 1) as u64;
            std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(keep)
                .unwrap();
            "truncated file".into()
        }
        3 if zstd => {
            // A frame-table entry of a record rewritten with a random offset.
            let c = Cache::open(cache).unwrap();
            let r = &c.records[rng.below(c.records.len())];
            let body = body_len(r.length, r.frame_count, r.frame_xxh3).unwrap();
            let table = r.offset + body - 8 * (r.frame_count as u64 + 1);
            let at = table + 8 * rng.below(r.frame_count as usize + 1) as u64;
            let path = cache.join(&r.shard);
            let mut bytes = std::fs::read(&path).unwrap();
            let v = extreme(rng, 0).to_le_bytes();
            bytes[at as usize..at as usize + 8].copy_from_slice(&v);
            std::fs::write(&path, bytes).unwrap();
            "frame table".into()
        }
        4 => {
            let path = cache.join("meta.json");
            let mut m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let keys = ["img_height", "img_width", "max_video_frames", "shard_size"];
            let k = keys[rng.below(keys.len())];
            m["params"][k] = extreme(rng, 8).into();
            std::fs::write(&path, m.to_string()).unwrap();
            "meta.json value".into()
        }
        _ => mutate_index(cache, rng),
    }
}

/// (session, view, modality, timeline frame) -> the frame's bytes.
type Frames = HashMap<(String, String, String, u64), Vec<u8>>;

/// Every frame of a sound cache, as the one frame reader returns it.
fn frames_of(cache: &Path) -> Frames {
    let c = Cache::open(cache).unwrap();
    let mut all = Frames::new();
    let mut scratch = Vec::new();
    for r in &c.records {
        let file = std::fs::File::open(cache.join(&r.shard)).unwrap();
        for f in 0..r.frame_count as usize {
            let mut buf = vec![0u8; r.frame_bytes()];
            read_frame_into(&file, r, f, &mut buf, &mut scratch, true).unwrap();
            let key = (r.session.clone(), r.view.clone(), r.modality.clone());
            all.insert((key.0, key.1, key.2, r.frame_start + f as u64), buf);
        }
    }
    all
}

/// Every reader on `cache`; returns how many of them said Ok, and one line per read that
/// said Ok with bytes other than `truth`'s for that frame.
fn read_everything(cache: &Path, out: &Path, truth: &Frames) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut wrong = Vec::new();
    let mut judge = |what: String, key: (String, String, String, u64), got: Option<&[u8]>| {
        let Some(got) = got else { return };
        ok += 1;
        if truth.get(&key).map(|v| v.as_slice()) != Some(got) {
            wrong.push(format!("{what} returned bytes that are not frame {key:?}"));
        }
    };
    let verified = mvdrive_schemas::verify::verify(cache, |_| {}).ok() as usize;
    if let Ok(c) = Cache::open(cache) {
        let (mut buf, mut scratch) = (Vec::new(), Vec::new());
        for r in c.records.iter().take(64) {
            let Ok(file) = std::fs::File::open(cache.join(&r.shard)) else {
                continue;
            };
            for f in 0..(r.frame_count as usize).min(8) {
                // The loader asks for frames of the size the cache declares.
                buf.resize(r.frame_bytes().min(1 << 20), 0);
                let read = read_frame_into(&file, r, f, &mut buf, &mut scratch, true);
                let t = r.frame_start.wrapping_add(f as u64);
                let key = (r.session.clone(), r.view.clone(), r.modality.clone(), t);
                judge("read_frame_into".into(), key, read.ok().map(|_| &buf[..]));
            }
        }
        if let (Some(s), Some(v)) = (c.sessions.first(), c.meta.views.first()) {
            let (s, v) = (s.session.clone(), v.clone());
            let rgb = c.read_frame(&s, v.as_str(), 1).ok();
            judge(
                "Cache::read_frame".into(),
                (s.clone(), v.clone(), "rgb".into(), 1),
                rgb.as_deref(),
            );
            let kpt = c.read_keypoints(&s, &v, 1);
            ok += kpt.is_ok() as usize;
        }
    }
    ok += verified;
    ok += mvdrive_prep::inspect::summary(cache).is_ok() as usize;
    ok += mvdrive_prep::inspect::text(cache).is_ok() as usize;
    let _ = std::fs::remove_dir_all(out);
    ok += mvdrive_prep::export::export_frames(cache, "s001", "front", 0, 2, out).is_ok() as usize;
    (ok, wrong)
}

#[test]
fn mutated_caches_give_errors_never_panics() {
    let cases: usize = std::env::var("MVDRIVE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let mut classes: std::collections::BTreeMap<String, usize> = Default::default();
    let mut panics = Vec::new();
    let mut bad_bytes = Vec::new();
    for (k, compress) in ["none", "zstd:3", "jpeg:90"].into_iter().enumerate() {
        let pristine = tiny_cache(&dir.path().join(format!("p{k}")), compress);
        let truth = frames_of(&pristine);
        let (ok, wrong) = read_everything(&pristine, &dir.path().join("png"), &truth);
        assert!(ok > 0 && wrong.is_empty(), "{wrong:?}");
        let seed: u64 = std::env::var("MVDRIVE_FUZZ_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x6675_7a7a);
        let mut rng = Rng::new(seed + k as u64);
        for case in 0..cases {
            let cache = dir.path().join(format!("case-{k}-{case}"));
            copy_dir(&pristine, &cache);
            let what = mutate(&cache, compress != "none", &mut rng);
            *classes.entry(what.clone()).or_default() += 1;
            let png = dir.path().join("png");
            let r = catch_unwind(AssertUnwindSafe(|| read_everything(&cache, &png, &truth)));
            if let Ok((_, w)) = &r {
                bad_bytes.extend(
                    w.iter()
                        .map(|w| format!("{compress} case {case} ({what}): {w}")),
                );
            }
            if let Err(e) = r {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.push(format!("{compress} case {case} ({what}): {msg}"));
            }
            let _ = std::fs::remove_dir_all(&cache);
        }
    }
    eprintln!("fuzz: {} cases per cache, classes {classes:?}", cases);
    assert!(
        panics.is_empty(),
        "readers panicked:\n{}",
        panics.join("\n")
    );
    assert!(
        bad_bytes.is_empty(),
        "reads succeeded with the wrong bytes:\n{}",
        bad_bytes.join("\n")
    );
}
