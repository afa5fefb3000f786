//! What the trainer does with a damaged cache: a flipped byte in a frame stops training
//! with a message that names the frame and points at `prep verify`, for RGB and for
//! keypoints; a cache written before frame checksums (format 2) still trains, with a
//! warning.

use std::path::Path;
use std::sync::Arc;

use mvdrive_schemas::commit::commit;
use mvdrive_schemas::index::RecordRow;
use mvdrive_schemas::Cache;
use mvdrive_train::data::loader::{ClipPick, Loader, Prefetch};
use mvdrive_train::data::sampler::{select, Sampler, Selection};

mod common;
use common::tiny_cache;

/// Flip one byte in the middle of every frame of every `modality` record (raw records).
fn flip_every_frame(cache: &Path, modality: &str) {
    let c = Cache::open(cache).unwrap();
    for r in c.records.iter().filter(|r| r.modality == modality) {
        assert_eq!(r.compression, "none");
        let path = cache.join(&r.shard);
        let mut bytes = std::fs::read(&path).unwrap();
        let fb = r.frame_bytes() as u64;
        for k in 0..r.frame_count as u64 {
            let at = (r.offset + k * fb + fb / 2) as usize;
            bytes[at] ^= 0x40;
        }
        std::fs::write(&path, bytes).unwrap();
    }
}

/// One pass of a loader of every view over the training split.
fn load_all(cache: &Path, rgb: bool, kpt: bool) -> Result<usize, String> {
    let cache = Arc::new(Cache::open(cache).unwrap());
    let views = cache.meta.views.clone();
    let items = select(&cache, &Selection::Split("train".into())).unwrap();
    let sampler = Arc::new(Sampler {
        items,
        batch_size: 2,
        seed: 0,
        balanced: false,
        shuffle: true,
        shard: mvdrive_train::data::sampler::Shard::WHOLE,
    });
    let loader = Arc::new(Loader::new(cache, views, 4, rgb, kpt).unwrap());
    let mut clips = 0;
    for b in Prefetch::start(loader, sampler, 0, 0, ClipPick::Jittered, 1) {
        clips += b.map_err(|e| e.to_string())?.size;
    }
    Ok(clips)
}

fn train(args: &[&str], cache: &Path, logs: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["fit", "-q", "--cache"])
        .arg(cache)
        .args([
            "data.img_size=16",
            "data.uniform_temporal_subsample_num=2",
            "data.batch_size=2",
            "train.max_epochs=1",
            "train.view=single",
            "trainer.device=cpu",
        ])
        .arg(format!("trainer.log_dir={}", logs.display()))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_flipped_byte_stops_training_and_names_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    assert!(load_all(&cache, true, true).unwrap() > 0);

    flip_every_frame(&cache, "rgb");
    let e = load_all(&cache, true, false).unwrap_err();
    assert!(e.contains("does not match its checksum"), "{e}");
    assert!(
        e.contains("of session `") && e.contains("(rgb, chunk"),
        "{e}"
    );
    assert!(e.contains("prep verify"), "{e}");
    // Keypoints are in their own shards: still sound.
    assert!(load_all(&cache, false, true).unwrap() > 0);

    let out = train(&[], &cache, &dir.path().join("logs"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not match its checksum"), "{stderr}");

    flip_every_frame(&cache, "kpt");
    let e = load_all(&cache, false, true).unwrap_err();
    assert!(
        e.contains("(kpt, chunk") && e.contains("prep verify"),
        "{e}"
    );
}

#[test]
fn a_cache_without_frame_checksums_still_trains_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    // Rewrite the index as a format 2 prep wrote it: records end at their body, and their
    // checksums cover the body only.
    let c = Cache::open(&cache).unwrap();
    let records: Vec<RecordRow> = c
        .records
        .iter()
        .map(|r| {
            let body = r.length - 8 * r.frame_count as u64;
            let bytes = std::fs::read(cache.join(&r.shard)).unwrap();
            let at = r.offset as usize;
            let xxh3 = mvdrive_schemas::checksum::xxh3(&bytes[at..at + body as usize]);
            RecordRow {
                length: body,
                xxh3,
                frame_xxh3: false,
                ..r.clone()
            }
        })
        .collect();
    let (s, v, g, l) = (&c.sessions, &c.views, &c.segments, &c.labels);
    let mut meta = c.meta.clone();
    meta.totals = mvdrive_schemas::meta::Totals::compute(s, v, &records, g);
    commit(&cache, meta, s, v, &records, g, l).unwrap();
    let meta = cache.join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        text.replace("\"format_version\": 3", "\"format_version\": 2"),
    )
    .unwrap();

    let report = mvdrive_schemas::verify::verify(&cache, |_| {});
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no frame checksums")),
        "{:?}",
        report.warnings
    );
    assert!(load_all(&cache, true, true).unwrap() > 0);
    let out = train(&[], &cache, &dir.path().join("logs"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("have no frame checksums"), "{stderr}");
    assert!(stderr.contains("format 2"), "{stderr}");
}
