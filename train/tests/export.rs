//! `train export`: the TorchScript module of a checkpoint gives the probabilities mvdrive's
//! own evaluation path gives, on a real clip of the cache (u8 bytes in, normalisation
//! inside), for a CNN and the transformer; keypoint models are refused with a message.
//! Where `$MVDRIVE_PYTHON` imports torch, Python's `torch.jit.load` runs it too.

use std::path::{Path, PathBuf};

use mvdrive_train::config::{Settings, TrainConfig};
use mvdrive_train::data::sampler::Selection;
use mvdrive_train::run::export::{checkpoint_model, export, ExportArgs};
use mvdrive_train::run::fit::{fit, FitArgs};
use mvdrive_train::run::session::Session;
use tch::{CModule, Kind, Tensor};

mod common;
use common::tiny_cache;

fn trained(cache: &Path, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let mut o: Vec<String> = [
        "data.img_size=16",
        "data.uniform_temporal_subsample_num=2",
        "data.batch_size=2",
        "data.num_workers=1",
        "train.max_epochs=1",
        "trainer.device=cpu",
        "train.view=multi",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("trainer.log_dir={}", dir.join("logs").display()));
    o.push(format!("trainer.experiment={name}"));
    o.extend(extra.iter().map(|s| s.to_string()));
    let args = FitArgs {
        cache: cache.to_path_buf(),
        config: None,
        resume: None,
        nproc: None,
        overrides: o,
    };
    fit(&args, true)
        .unwrap()
        .run_dir
        .join("checkpoints/last.safetensors")
}

/// The probabilities of mvdrive's evaluation path for the first validation clip, and that
/// clip's bytes as `[V, T, H, W, 3]`.
fn reference(ckpt: &Path, cache: &Path) -> (Tensor, Tensor) {
    let st = mvdrive_train::run::checkpoint::load_state(ckpt).unwrap();
    let mut settings = Settings::default();
    settings.apply_yaml(&st.config_yaml).unwrap();
    let s = Session::open(cache, TrainConfig::new(&settings).unwrap()).unwrap();
    let items = s.items(&Selection::Split("val".into())).unwrap();
    let sampler = s.eval_sampler(items[..1].to_vec());
    let loader = s.loader().unwrap();
    let frames = loader.frames_for(
        &sampler,
        &sampler.items,
        0,
        0,
        mvdrive_train::data::loader::ClipPick::Fixed { k: 0, n: 1 },
    );
    let batch = loader.load(0, &sampler.items, &frames).unwrap();
    let (_vs, model, _) = checkpoint_model(ckpt).unwrap();
    let probs = tch::no_grad(|| model.forward_t(&s.input(&batch).unwrap(), false))
        .softmax(-1, Kind::Float)
        .squeeze_dim(0);
    let c = s.clip();
    let clip = Tensor::from_slice(batch.rgb.as_ref().unwrap()).view([
        s.views.len() as i64,
        c.t,
        c.h,
        c.w,
        3,
    ]);
    (probs, clip)
}

#[test]
fn exported_modules_give_mvdrives_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tiny_cache(dir.path());
    for (name, extra) in [
        ("x3d", &["model.backbone=x3d"][..]),
        ("transformer", &["model.backbone=transformer"][..]),
    ] {
        let ckpt = trained(&cache, dir.path(), name, extra);
        let out = dir.path().join(format!("{name}.pt"));
        let r = export(&ExportArgs {
            ckpt: ckpt.clone(),
            out: out.clone(),
        })
        .unwrap();
        assert_eq!(r.input, vec![3, 2, 16, 16, 3]);
        let (want, clip) = reference(&ckpt, &cache);
        let module = CModule::load(&out).unwrap();
        let got = tch::no_grad(|| module.forward_ts(&[&clip])).unwrap();
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "{name}: {diff}");
        assert!((got.sum(Kind::Float).double_value(&[]) - 1.0).abs() < 1e-5);
        python_check(&out, &clip, &want, name);
    }
    // A keypoint model is refused, naming why.
    let ckpt = trained(
        &cache,
        dir.path(),
        "stgcn",
        &[
            "model.backbone=stgcn",
            "model.input_type=kpt",
            "data.load_kpt=true",
            "data.load_rgb=false",
        ],
    );
    let e = export(&ExportArgs {
        ckpt,
        out: dir.path().join("stgcn.pt"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("RGB models only"), "{e}");
    assert!(!dir.path().join("stgcn.pt").exists());
}

/// `torch.jit.load` in Python on the same clip, where `$MVDRIVE_PYTHON` imports torch (the
/// project's venv holds only the libtorch libraries, so this runs on machines with a full
/// PyTorch, e.g. the GPU check's).
fn python_check(module: &Path, clip: &Tensor, want: &Tensor, name: &str) {
    let py = std::env::var("MVDRIVE_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = std::process::Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("{name}: the Python side skipped: {py} does not import torch");
        return;
    }
    let bytes: Vec<u8> = Vec::try_from(clip.flatten(0, -1)).unwrap();
    let raw = module.with_extension("clip");
    std::fs::write(&raw, &bytes).unwrap();
    let shape: Vec<String> = clip.size().iter().map(|d| d.to_string()).collect();
    let script = format!(
        "import torch\nm = torch.jit.load('{}')\nx = torch.frombuffer(bytearray(open('{}', 'rb').read()), dtype=torch.uint8).view({})\nprint(' '.join(repr(float(v)) for v in m(x)))",
        module.display(),
        raw.display(),
        shape.join(", ")
    );
    let out = std::process::Command::new(&py)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let want: Vec<f64> = Vec::try_from(want.to_kind(Kind::Double)).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-5,
            "{name} in Python: {got:?} vs {want:?}"
        );
    }
    eprintln!("{name}: Python's torch.jit.load gives the same probabilities");
}
