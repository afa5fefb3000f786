//! Data-parallel training on libtorch's c10d with gloo, two ranks on 127.0.0.1. Each rank
//! is a separate process under a timeout: either this test binary started again (the
//! `MVD_DIST_RANK` variable says which rank it is) or the `train` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mvdrive_dist::{Backend, Launch, ProcessGroup, Store};
use mvdrive_train::model::backbones::BackboneKind;
use mvdrive_train::model::{ClipShape, FusionMode, Input, ModelConfig};
use mvdrive_train::optim::precision::Precision;
use mvdrive_train::run::eval::{eval, EvalArgs};
use mvdrive_train::run::trainer::Trainer;
use tch::{Device, Kind, Tensor};

mod common;
use common::tiny_cache;

const LIMIT: Duration = Duration::from_secs(240);

/// Waits for `child`, killing it after `limit`.
fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("a rank did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `world` rank processes of `cmd(rank)`, with torchrun's environment: as its agent does,
/// this process serves the rendezvous store (on a port the kernel picks, so tests running
/// side by side never race for one) and every rank joins it. Keep the store until the
/// ranks are done. Rank 0 serving the store itself (Slurm, torchrun without an agent
/// store) is tested in `dist/tests/two_ranks.rs`.
fn spawn_ranks(world: usize, cmd: impl Fn(usize) -> Command) -> (Store, Vec<Child>) {
    let store = Store::serve(0, LIMIT).unwrap();
    let port = store.port().to_string();
    let children = (0..world)
        .map(|r| {
            let mut c = cmd(r);
            c.env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("TORCHELASTIC_USE_AGENT_STORE", "True")
                .env("GLOO_SOCKET_IFNAME", "lo")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    (store, children)
}

fn model_config(backbone: BackboneKind) -> ModelConfig {
    let mut c = ModelConfig {
        backbone,
        fusion: FusionMode::LogitMean,
        num_classes: 3,
        num_views: 2,
        ..Default::default()
    };
    c.clip = ClipShape::new(4, 16, 16);
    c.settings.transformer.dim = 32;
    c.settings.transformer.heads = 2;
    c.settings.transformer.ff_dim = 64;
    c.settings.transformer.layers = 2;
    // Dropout masks depend on the batch's size: none, so B + B and 2B see the same network.
    c.settings.transformer.dropout = 0.0;
    c.settings.mamba.dim = 32;
    c.settings.mamba.layers = 2;
    c.settings.mamba.dropout = 0.0;
    c
}

/// 3 optimizer steps of batch `x[lo..lo + n]`: the gradients of each step
/// (`g<step>.<name>`), then the weights (`w.<name>`).
fn three_steps(
    kind: BackboneKind,
    group: Option<Arc<ProcessGroup>>,
    part: (i64, i64),
) -> BTreeMap<String, Tensor> {
    tch::manual_seed(11);
    let mut tr = Trainer::new(
        &model_config(kind),
        Device::Cpu,
        Precision::Fp32,
        false,
        0.05,
    )
    .unwrap();
    tr.dist = group;
    let mut out = BTreeMap::new();
    for step in 0..3 {
        tch::manual_seed(100 + step);
        let x = Tensor::randn([4, 2, 3, 4, 16, 16], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 2, 1, 2]);
        let (lo, n) = part;
        let (x, y) = (Input::rgb(x.narrow(0, lo, n)), y.narrow(0, lo, n));
        tr.micro_batch(&x, &y, 0.1, 1, step).unwrap();
        tr.sync_gradients().unwrap();
        let names = tr.opt.params.iter().map(|(name, _)| name);
        out.extend(
            names
                .zip(tr.gradients())
                .filter(|(_, g)| g.defined())
                .map(|(name, g)| (format!("g{step}.{name}"), g)),
        );
        let o = tr.step(1e-2, 1.0);
        assert!(o.applied);
    }
    out.extend(
        tr.vs
            .variables()
            .into_iter()
            .map(|(n, t)| (format!("w.{n}"), t.detach().copy())),
    );
    out
}

#[test]
fn two_ranks_of_batch_b_equal_one_process_of_batch_2b() {
    let kinds = [BackboneKind::Transformer, BackboneKind::Mamba];
    if let Ok(rank) = std::env::var("MVD_DIST_RANK") {
        let rank: i64 = rank.parse().unwrap();
        let launch = Launch::from_env().unwrap().unwrap();
        let pg = Arc::new(
            ProcessGroup::connect(&launch, Backend::Gloo, Duration::from_secs(60)).unwrap(),
        );
        for kind in kinds {
            let ts = three_steps(kind, Some(pg.clone()), (rank * 2, 2));
            if rank == 0 {
                let out = PathBuf::from(std::env::var("MVD_DIST_OUT").unwrap());
                let ts: Vec<_> = ts.iter().collect();
                Tensor::write_safetensors(&ts, out.join(format!("{kind}.safetensors"))).unwrap();
            }
        }
        pg.barrier().unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let (_store, children) = spawn_ranks(2, |r| {
        let mut c = Command::new(&exe);
        c.args([
            "two_ranks_of_batch_b_equal_one_process_of_batch_2b",
            "--exact",
            "--nocapture",
        ])
        .env("MVD_DIST_RANK", r.to_string())
        .env("MVD_DIST_OUT", dir.path());
        c
    });
    for c in children {
        let o = wait(c, LIMIT);
        assert!(
            o.status.success(),
            "a rank failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    for kind in kinds {
        let single = three_steps(kind, None, (0, 4));
        let two: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(dir.path().join(format!("{kind}.safetensors")))
                .unwrap()
                .into_iter()
                .collect();
        assert!(single.keys().eq(two.keys()), "{kind}: other tensors");
        let grads = single
            .iter()
            .filter(|(name, _)| name.starts_with('g'))
            .map(|(name, a)| (a - &two[name]).abs().max().double_value(&[]))
            .fold(0f64, f64::max);
        // Adam divides each gradient by its own running size, so its step is as exact as the
        // gradient is relative to itself: where a gradient is at rounding level (a key bias,
        // which softmax ignores; a weight whose terms cancel) the weight moves by a
        // rounding-driven amount of up to lr. The weights are compared where every step's
        // gradients agree to 1e-3 of their own size, which bounds Adam's step difference by
        // about lr x 1e-3 = 1e-5; those elsewhere must be few (on an AVX-512 Xeon: 0.6% of
        // the transformer's weights, 4% of Mamba's).
        let (mut weights, mut skipped, mut total) = (0f64, 0i64, 0i64);
        for (name, a) in &single {
            let Some(param) = name.strip_prefix("w.") else {
                continue;
            };
            let mut compared = Tensor::ones_like(a).to_kind(Kind::Bool);
            for step in 0..3 {
                let key = format!("g{step}.{param}");
                if let (Some(ga), Some(gb)) = (single.get(&key), two.get(&key)) {
                    let agree = (ga - gb).abs().le_tensor(&(ga.abs() * 1e-3));
                    compared = compared.logical_and(&agree);
                }
            }
            let diff = (a - &two[name]).abs().masked_select(&compared);
            total += a.numel() as i64;
            skipped += a.numel() as i64 - diff.numel() as i64;
            if diff.numel() > 0 {
                weights = weights.max(diff.max().double_value(&[]));
            }
        }
        assert!(
            (skipped as f64) < 0.1 * total as f64,
            "{kind}: the gradients of {skipped} of {total} weights disagree by over 1e-3 of their size"
        );
        assert!(
            grads <= 1e-5,
            "{kind}: 2 ranks x B vs 1 x 2B: gradients differ by {grads}"
        );
        assert!(
            weights <= 1e-5,
            "{kind}: 2 ranks x B vs 1 x 2B: weights after 3 steps differ by {weights}"
        );
    }
}

/// A small transformer run on `cache`, logging under `dir`.
fn fit_settings(cache: &Path, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "fit",
        "--cache",
        cache.to_str().unwrap(),
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=1",
        "train.view=single",
        "trainer.device=cpu",
        "trainer.dist_timeout_s=60",
        "model.backbone=transformer",
        "model.transformer_dim=32",
        "model.transformer_layers=1",
        "model.transformer_heads=2",
        "model.transformer_ff_dim=64",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("trainer.log_dir={}", dir.join("logs").display()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn train(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train"));
    c.arg("--quiet")
        .args(args)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE");
    c
}

fn run_ok(mut c: Command) -> String {
    let o = wait(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        LIMIT,
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "train failed:\n{text}");
    text
}

fn versions(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("logs/default"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn last_row(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let line = text.lines().last().unwrap();
    line.split(',').map(|v| v.parse().unwrap()).collect()
}

#[test]
fn a_two_rank_fit_writes_one_run_whose_validation_equals_a_single_eval() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let args = fit_settings(&cache, dir.path(), &["train.max_epochs=2", "--nproc", "2"]);
    run_ok(train(&args));
    let runs = versions(dir.path());
    assert_eq!(runs.len(), 1, "one run folder for both ranks: {runs:?}");
    let ckpt = runs[0].join("checkpoints/last.safetensors");
    let ev = eval(&EvalArgs {
        ckpt: ckpt.clone(),
        cache: cache.clone(),
        split: "val".into(),
        out: Some(dir.path().join("eval")),
        device: "cpu".into(),
        clips: None,
        crops: None,
    })
    .unwrap();
    // epoch,step,train_loss,val_loss,top1,mean_class_acc,macro_f1,lr,seconds
    let row = last_row(&runs[0]);
    assert_eq!(
        (row[4], row[6]),
        (ev.top1, ev.macro_f1),
        "validation summed over ranks = one eval"
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ev.metrics).unwrap()).unwrap();
    let loss = m["loss"].as_f64().unwrap();
    assert!(
        (row[3] - loss).abs() < 1e-6 * loss.max(1.0),
        "val loss {} vs {loss}",
        row[3]
    );
    assert_eq!(row[5], m["mean_class_acc"].as_f64().unwrap());

    // `train eval` under a launcher would have every rank write the same files: refused.
    let out = dir.path().join("eval-as-rank");
    let o = train(&[
        "eval".into(),
        "--ckpt".into(),
        ckpt.display().to_string(),
        "--cache".into(),
        cache.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ])
    .env("RANK", "1")
    .env("WORLD_SIZE", "2")
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "eval ran as rank 1 of 2");
    assert!(
        err.contains("rank 1 of 2") && err.contains("only `train fit` is distributed"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn resume_on_two_ranks_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let extra = [
        "train.max_epochs=2",
        "train.checkpoint_every_n_steps=2",
        "--nproc",
        "2",
    ];
    run_ok(train(&fit_settings(&cache, dir.path(), &extra)));
    let whole = versions(dir.path())[0].clone();
    // 3 steps per epoch: step 2 is a mid-epoch checkpoint.
    let mid = whole.join("checkpoints/epoch=0-step=2.safetensors");
    assert!(
        mid.exists(),
        "no mid-epoch checkpoint in {}",
        whole.display()
    );
    let mut resumed = fit_settings(&cache, dir.path(), &extra);
    resumed.extend(["--resume".to_string(), mid.display().to_string()]);
    run_ok(train(&resumed));
    let again = versions(dir.path())[1].clone();
    let end = "checkpoints/last.safetensors";
    let read = |p: PathBuf| {
        let mut v = Tensor::read_safetensors(p).unwrap();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let (a, b) = (read(whole.join(end)), read(again.join(end)));
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(ta.equal(tb), "{na} differs after resuming on 2 ranks");
    }
    // Same validation rows for the epoch the resumed run finished.
    let (ra, rb) = (last_row(&whole), last_row(&again));
    assert_eq!(ra[..7], rb[..7], "the resumed run's last epoch differs");
}

#[test]
fn a_killed_rank_stops_the_other_with_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let args = fit_settings(&cache, dir.path(), &["train.max_epochs=500"]);
    let (_store, mut ranks) = spawn_ranks(2, |_| train(&args));
    // Wait until training is under way (rank 0 wrote its first epoch), then kill rank 1.
    let start = Instant::now();
    let logs = dir.path().join("logs/default");
    while !logs.exists()
        || versions(dir.path())
            .iter()
            .all(|v| !v.join("checkpoints/last.json").exists())
    {
        assert!(start.elapsed() < LIMIT, "training never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut one = ranks.pop().unwrap();
    one.kill().unwrap();
    let _ = one.wait();
    let killed_at = Instant::now();
    let zero = wait(ranks.pop().unwrap(), Duration::from_secs(90));
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(!zero.status.success(), "rank 0 went on without rank 1");
    // A signal (SIGPIPE from a write to the dead peer) would end it without a word.
    assert!(
        zero.status.code().is_some(),
        "rank 0: {}\n{err}",
        zero.status
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(75),
        "rank 0 took {:?}",
        killed_at.elapsed()
    );
    assert!(
        err.contains("rank 0:") && err.contains("another rank has probably stopped"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn ranks_started_with_different_settings_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    let (_store, ranks) = spawn_ranks(2, |r| {
        let lr = format!("train.lr={}", if r == 0 { "0.001" } else { "0.002" });
        train(&fit_settings(
            &cache,
            dir.path(),
            &["train.max_epochs=1", &lr],
        ))
    });
    let outs: Vec<Output> = ranks.into_iter().map(|c| wait(c, LIMIT)).collect();
    assert!(
        outs.iter().all(|o| !o.status.success()),
        "both ranks must refuse"
    );
    let one = String::from_utf8_lossy(&outs[1].stderr);
    assert!(
        one.contains("rank 1 was started with train.lr=0.002, rank 0 with train.lr=0.001"),
        "{one}"
    );
    let zero = String::from_utf8_lossy(&outs[0].stderr);
    assert!(
        zero.contains("1 rank(s) were started with settings different"),
        "{zero}"
    );
    assert!(!dir.path().join("logs").exists(), "nothing written");
}
