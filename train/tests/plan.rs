//! Measured memory: the probe in a child process, `train plan` (table, recommendation,
//! budgets too small, bad sizes) and `train bench-memory`, on a tiny cache built by `prep`
//! from `prep synth` data, with the cheapest backbone (a small transformer at 16x16, T=2).

use std::path::Path;
use std::process::{Command, Output};

use mvdrive_train::measure::probe::{probe_in_child, ProbeOutcome};

const TRAIN: &str = env!("CARGO_BIN_EXE_train");
const MIB: u64 = 1 << 20;

mod common;
use common::tiny_cache;

/// The settings of every run here: tiny input, one view, CPU, the small transformer.
fn settings(extra: &[&str]) -> Vec<String> {
    [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.num_workers=0",
        "train.view=single",
        "trainer.device=cpu",
        "model.backbone=transformer",
        "model.transformer_dim=48",
        "model.transformer_heads=2",
        "model.transformer_ff_dim=96",
        "model.transformer_layers=2",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

fn train(args: &[&str], settings: &[String]) -> Output {
    Command::new(TRAIN)
        .args(args)
        .args(settings)
        .output()
        .unwrap()
}

#[test]
fn a_probe_in_a_child_reports_its_peak_memory_and_step_time_or_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let o = settings(&["data.batch_size=2", "train.accumulate_grad_batches=2"]);
    let out = probe_in_child(Path::new(TRAIN), &cache, &o, 2, None).unwrap();
    let ProbeOutcome::Measured {
        report,
        polled_peak_rss,
    } = &out
    else {
        panic!("not measured: {out:?}");
    };
    let peak = out.peak_rss();
    assert!(peak > 100 * MIB && peak < 8192 * MIB, "peak {peak}");
    assert!(*polled_peak_rss <= report.peak_rss_bytes + 16 * MIB);
    assert!(report.baseline_rss_bytes > 0 && report.baseline_rss_bytes < report.peak_rss_bytes);
    assert!(report.seconds_per_step > 0.0 && report.seconds_per_step.is_finite());
    assert!(report.loss.is_finite());
    assert_eq!(
        (
            report.batch_size,
            report.accumulate_grad_batches,
            report.steps
        ),
        (2, 2, 2)
    );
    assert_eq!((report.img_size, report.frames), ((16, 16), 2));
    assert_eq!(report.backbone, "transformer");

    // Under a limit it cannot meet, the child is stopped once it passes it.
    let out = probe_in_child(Path::new(TRAIN), &cache, &o, 2, Some(40 * MIB)).unwrap();
    match out {
        ProbeOutcome::OverBudget { seen_bytes } => assert!(seen_bytes > 40 * MIB),
        other => panic!("expected OverBudget, got {other:?}"),
    }

    // A bad setting is an error with the child's message, not "does not fit".
    let bad = settings(&["data.batch_size=0"]);
    let e = probe_in_child(Path::new(TRAIN), &cache, &bad, 1, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.batch_size"), "{e}");
}

#[test]
fn plan_prints_a_table_and_recommends_a_setting_with_the_same_effective_batch() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let s = settings(&["data.batch_size=2", "train.accumulate_grad_batches=2"]);
    let out = train(
        &[
            "plan",
            "-q",
            "--cache",
            cache.to_str().unwrap(),
            "--budget-ram",
            "8G",
            "--steps",
            "1",
        ],
        &s,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("batch_size") && stdout.contains("peak RAM"),
        "{stdout}"
    );
    assert!(stdout.contains("s/step"), "{stdout}");
    // 3 batch sizes (1, 2, 4) x 2 precisions x checkpointing off/on, all fitting 8 GiB;
    // bf16-mixed only where the CPU has fast bf16 kernels (AVX-512).
    let precisions = if mvdrive_train::optim::precision::cpu_has_bf16_kernels() {
        2
    } else {
        1
    };
    let rows = stdout.lines().filter(|l| l.contains("yes")).count();
    assert_eq!(rows, 3 * precisions * 2, "{stdout}");
    assert_eq!(stdout.contains("bf16-mixed"), precisions == 2, "{stdout}");
    assert!(stdout.contains("<- recommended"), "{stdout}");
    assert!(stdout.contains("recommended (fastest that fits, effective batch 4"));
    let keys = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("data.batch_size="))
        .unwrap_or_else(|| panic!("no override line: {stdout}"));
    let value = |k: &str| -> usize {
        keys.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("data.batch_size") * value("train.accumulate_grad_batches"),
        4,
        "{keys}"
    );
    assert!(
        keys.contains("trainer.precision=") && keys.contains("model.use_gradient_checkpointing=")
    );
    assert!(stdout.contains("train fit --cache"), "{stdout}");
}

#[test]
fn a_budget_too_small_for_any_setting_says_what_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let s = settings(&["data.batch_size=2"]);
    let out = train(
        &[
            "plan",
            "-q",
            "--cache",
            cache.to_str().unwrap(),
            "--budget-ram",
            "50M",
            "--steps",
            "1",
        ],
        &s,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no setting fits --budget-ram 50.0 MiB"),
        "{stderr}"
    );
    // The needed amount is measured, and larger than the budget.
    let needed: f64 = stderr
        .split("raise the budget to at least ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no needed amount: {stderr}"));
    assert!(needed > 50.0, "{stderr}");
    assert!(stderr.contains("batch_size=1"), "{stderr}");
    assert!(stderr.contains("data.img_size"), "{stderr}");
}

#[test]
fn bad_sizes_and_missing_budgets_are_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(&[]);
    let out = train(
        &[
            "plan",
            "--cache",
            dir.path().to_str().unwrap(),
            "--budget-ram",
            "8Q",
        ],
        &s,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--budget-ram") && stderr.contains("`8Q`"),
        "{stderr}"
    );
    let out = train(&["plan", "--cache", dir.path().to_str().unwrap()], &s);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--budget-ram"), "{stderr}");
}

#[test]
fn bench_memory_writes_a_table_with_each_technique_and_the_target_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let md = dir.path().join("memory.md");
    let s = settings(&["data.batch_size=2"]);
    let out = train(
        &[
            "bench-memory",
            "-q",
            "--cache",
            cache.to_str().unwrap(),
            "--backbones",
            "transformer",
            "--steps",
            "1",
            "--out",
            md.to_str().unwrap(),
        ],
        &s,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&md).unwrap();
    assert_eq!(text, stdout);
    for row in [
        "| transformer | baseline (fp32, batch 2), 0.13 M parameters |",
        "| transformer | + checkpointing |",
        "| transformer | + bf16-mixed |",
        "| transformer | batch 1 |",
        "| transformer | batch 1 x accumulate 8 |",
    ] {
        assert!(text.contains(row), "{row}: {text}");
    }
    assert!(!text.contains("failed"), "{text}");
    // Checkpointing recomputes the same operations: gradients agree to rounding.
    let ckpt = text
        .lines()
        .find(|l| l.contains("+ checkpointing"))
        .unwrap();
    let agreement: f64 = ckpt
        .trim_end_matches('|')
        .rsplit('|')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(agreement < 1e-4, "{ckpt}");
    assert!(text.contains("checkpointing on the transformer"), "{text}");
    assert!(text.contains("batch 1 x accumulate 8 peaks at"), "{text}");
}
