//! `scripts/gpu_check.sh` on the CPU: the GPU check's plumbing (train info, the
//! device-generic trainer tests, fits, bench-memory, the peer, the summary and gpu.md)
//! runs end to end, and the CUDA-only parts say they were skipped. This keeps the script
//! from rotting between the rare runs on a GPU machine.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::synth_cache;

/// The trainer-tests binary cargo built next to this one, if any (`cargo test` builds every
/// test target; `cargo test --test gpu_check` alone does not): the newest that runs here
/// (`make gpu-check` leaves a `--features cuda` build beside it, which needs CUDA's
/// libraries).
fn memory_techniques_binary() -> Option<PathBuf> {
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(deps)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("memory_techniques-") && !n.contains('.'))
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.into_iter().rev().map(|(_, p)| p).find(|p| {
        Command::new(p)
            .arg("--list")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The trainer test the script runs (`--test-filter`).
const TRAINER_TEST: &str = "checkpointing_gives_the_same_gradients";

#[test]
fn the_gpu_check_script_runs_on_cpu_and_reports_the_cuda_parts_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = synth_cache(
        &dir.path().join("c"),
        4,
        5,
        &["data.img_size=32", "prep.fps=2", "data.max_video_frames=8"],
    );
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    let have_tests = match memory_techniques_binary() {
        Some(bin) => {
            std::os::unix::fs::symlink(bin, tests.join("memory_techniques")).unwrap();
            true
        }
        None => false,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = dir.path().join("out");
    let run = Command::new("bash")
        .arg(root.join("scripts/gpu_check.sh"))
        .args(["--device", "cpu", "--quick", "--img", "32"])
        // float32 fits (16-mixed reports skipped on CPU) and one trainer test keep the
        // plumbing test short: CPU bfloat16 is slow without AVX-512. bf16 fits are in
        // learning.rs, and the trainer tests run whole as their own test binary.
        .args(["--precisions", "32 16-mixed", "--test-filter", TRAINER_TEST])
        .arg("--train")
        .arg(env!("CARGO_BIN_EXE_train"))
        .arg("--tests")
        .arg(&tests)
        .arg("--cache112")
        .arg(&cache)
        .arg("--cache224")
        .arg(&cache)
        .arg("--peer")
        .arg(root.join("bench/torch_peer.py"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "gpu_check.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.tsv")).unwrap();
    let result = |part: &str| -> String {
        summary
            .lines()
            .find(|l| l.starts_with(part))
            .and_then(|l| l.split('\t').nth(1))
            .unwrap_or_else(|| panic!("no `{part}` row in:\n{summary}"))
            .to_string()
    };
    assert_eq!(result("train info"), "ok");
    assert_eq!(
        result("trainer tests on cpu"),
        if have_tests { "ok" } else { "skipped" }
    );
    for ck in ["false", "true"] {
        assert_eq!(result(&format!("fit r3d_18 32 ck={ck}")), "ok", "{ck}");
    }
    assert_eq!(result("fit r3d_18 16-mixed ck=false"), "skipped");
    assert!(
        !summary.contains("bf16-mixed"),
        "only the precisions asked for:\n{summary}"
    );
    if have_tests {
        let log = std::fs::read_to_string(out.join("unit-tests.log")).unwrap();
        assert!(
            log.contains(TRAINER_TEST) && log.contains("1 passed"),
            "only the filtered trainer test ran:\n{log}"
        );
    }
    assert_eq!(result("GPU busy"), "skipped");
    assert_eq!(result("bench-memory 32^2 on cpu"), "ok");
    assert!(["ok", "skipped"].contains(&result("PyTorch peer").as_str()));
    // The fits really trained: each left a metrics.csv with one epoch.
    let fits: Vec<PathBuf> = std::fs::read_dir(out.join("fits"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(fits.len(), 2, "one run folder per fit");
    for f in &fits {
        let csv = std::fs::read_to_string(f.join("version_0/metrics.csv")).unwrap();
        assert_eq!(
            csv.lines().count(),
            2,
            "{}: header and one epoch",
            f.display()
        );
    }
    let md = std::fs::read_to_string(out.join("gpu.md")).unwrap();
    assert!(md.contains("| fit r3d_18 32 ck=false | ok |"), "{md}");
    assert!(md.contains("## bench-memory, 32^2") && md.contains("+ checkpointing"));
    assert!(stdout.contains("every part ran"), "{stdout}");
}
