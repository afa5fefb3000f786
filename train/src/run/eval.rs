//! Evaluation: the validation pass of `train fit`, and `train eval` (a checkpoint's model on
//! a split of a cache, written as predictions.csv, metrics.json and confusion.png).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::TrainConfig;
use crate::data::loader::{ClipPick, Loader, Prefetch};
use crate::data::sampler::{Sampler, Selection};
use crate::error::{IoAt, Result, TrainError};
use crate::model::MultiViewModel;
use crate::report::metrics::ConfusionMatrix;
use crate::report::plot;
use crate::run::checkpoint;
use crate::run::session::Session;

/// Result of evaluating a model on a split.
pub struct Evaluation {
    /// Confusion matrix.
    pub confusion: ConfusionMatrix,
    /// Mean cross-entropy of the averaged probabilities.
    pub loss: f64,
    /// (segment id, target, prediction, averaged probabilities) per segment.
    pub predictions: Vec<(u64, usize, usize, Vec<f64>)>,
    /// Top-5 accuracy, when there are more than 5 classes.
    pub top5: Option<f64>,
    /// Clips and crops averaged per segment.
    pub views: (usize, usize),
}

/// Evaluates every item of `sampler`, deterministically: `eval.clips` clips spread over
/// each segment x `eval.crops` crops of each clip, their class probabilities averaged
/// (1 x 1: the centred clip of whole frames).
pub fn evaluate(
    model: &MultiViewModel,
    loader: &Arc<Loader>,
    sampler: &Arc<Sampler>,
    s: &Session,
) -> Result<Evaluation> {
    let classes = s.classes.len();
    let clips = s.config.eval.clips;
    let windows = s.eval_windows()?;
    let workers = s.config.data.num_workers;
    // Per segment, in the sampler's (fixed) order: id, target and summed probabilities.
    let mut rows: Vec<(u64, usize, Vec<f64>)> = Vec::new();
    for k in 0..clips {
        let pick = ClipPick::Fixed { k, n: clips };
        let mut at = 0;
        for batch in Prefetch::start(loader.clone(), sampler.clone(), 0, 0, pick, workers) {
            let batch = batch?;
            let mut sum = Tensor::zeros(
                [batch.size as i64, classes as i64],
                (Kind::Double, Device::Cpu),
            );
            for w in &windows {
                let x = s.input_window(&batch, *w)?;
                let scores = tch::no_grad(|| model.forward_t(&x, false));
                sum += scores.softmax(-1, Kind::Double).to_device(Device::Cpu);
            }
            let sum: Vec<f64> = Vec::try_from(sum.flatten(0, -1))?;
            for (i, p) in sum.chunks_exact(classes).enumerate() {
                let (seg, target) = (batch.segments[i], batch.labels[i] as usize);
                match rows.get_mut(at + i) {
                    Some(row) if row.0 == seg => row.2.iter_mut().zip(p).for_each(|(a, b)| *a += b),
                    Some(_) => return Err("evaluation clips came in different orders".into()),
                    None => rows.push((seg, target, p.to_vec())),
                }
            }
            at += batch.size;
        }
    }
    let views = (clips * windows.len()) as f64;
    let mut cm = ConfusionMatrix::new(classes);
    let (mut loss, mut in_top5) = (0.0, 0usize);
    let mut predictions = Vec::with_capacity(rows.len());
    for (seg, target, mut probs) in rows {
        probs.iter_mut().for_each(|p| *p /= views);
        let mut ranked: Vec<usize> = (0..classes).collect();
        ranked.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let pred = ranked.first().copied().unwrap_or(0);
        in_top5 += ranked.iter().take(5).any(|&c| c == target) as usize;
        loss -= probs.get(target).copied().unwrap_or(0.0).max(1e-12).ln();
        cm.add(target, pred)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        predictions.push((seg, target, pred, probs));
    }
    let n = predictions.len().max(1) as f64;
    Ok(Evaluation {
        confusion: cm,
        loss: loss / n,
        top5: (classes > 5).then(|| in_top5 as f64 / n),
        predictions,
        views: (clips, windows.len()),
    })
}

/// Evaluate a checkpoint on a split: writes predictions.csv, metrics.json and confusion.png.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Checkpoint (`.safetensors`).
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Cache folder.
    #[arg(long)]
    pub cache: PathBuf,
    /// Split to evaluate.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Output folder (default: eval-<split> next to the checkpoint).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// auto | cpu | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Clips per segment, spread uniformly over it; their probabilities are averaged
    /// (default: the checkpoint's eval.clips, 1 unless set).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub clips: Option<u32>,
    /// Spatial crops per clip: 1 = the whole frame; 3 = left, centre and right squares
    /// along the long side (default: the checkpoint's eval.crops).
    #[arg(long, value_parser = ["1", "3"])]
    pub crops: Option<String>,
}

/// What `train eval` wrote.
pub struct EvalSummary {
    /// predictions.csv.
    pub predictions: PathBuf,
    /// metrics.json.
    pub metrics: PathBuf,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Macro-F1.
    pub macro_f1: f64,
    /// Top-5 accuracy, when there are more than 5 classes.
    pub top5: Option<f64>,
    /// Clips and crops averaged per segment.
    pub views: (usize, usize),
    /// Segments evaluated.
    pub segments: usize,
}

/// Runs `train eval` and prints where its outputs went.
pub fn run(args: &EvalArgs) -> Result<()> {
    let s = eval(args)?;
    let top5 = s.top5.map(|t| format!(", top5 {t:.3}")).unwrap_or_default();
    println!(
        "train eval: {} segments of split `{}` ({} clip(s) x {} crop(s) each): top1 {:.3}{top5}, macro-F1 {:.3} -> {}, {}",
        s.segments,
        args.split,
        s.views.0,
        s.views.1,
        s.top1,
        s.macro_f1,
        s.predictions.display(),
        s.metrics.display()
    );
    Ok(())
}

/// Evaluates a checkpoint (`train eval`): the checkpoint's model on a split of a cache.
pub fn eval(args: &EvalArgs) -> Result<EvalSummary> {
    let (ckpt, cache_dir, split) = (&args.ckpt, &args.cache, args.split.as_str());
    let (st, mut settings) = checkpoint::load_with_settings(ckpt)?;
    settings.set("trainer.device", &args.device, false)?;
    if let Some(k) = args.clips {
        settings.set("eval.clips", &k.to_string(), false)?;
    }
    if let Some(c) = &args.crops {
        settings.set("eval.crops", c, false)?;
    }
    let s = Session::open(cache_dir, TrainConfig::new(&settings)?)?;
    if s.classes != st.classes {
        return Err(format!(
            "{}: the checkpoint has {} classes ({}) but the cache {} has {} ({}); evaluate on a cache built from the same labels",
            ckpt.display(),
            st.classes.len(),
            st.classes.join(", "),
            cache_dir.display(),
            s.classes.len(),
            s.classes.join(", ")
        )
        .into());
    }
    if s.views != st.views {
        return Err(format!(
            "{}: trained on views {:?} but the cache gives {:?}",
            ckpt.display(),
            st.views,
            s.views
        )
        .into());
    }
    let mut vs = VarStore::new(s.device);
    let model = MultiViewModel::new(&vs.root(), s.model.clone())?;
    checkpoint::load_weights(ckpt, &mut vs)?;
    let items = s
        .items(&Selection::Split(split.to_string()))
        .map_err(|e| format!("{e} (for `train eval`, pass the split with --split)"))?;
    let ev = evaluate(&model, &s.loader()?, &s.eval_sampler(items), &s)?;
    let out = args.out.clone().unwrap_or_else(|| {
        ckpt.parent()
            .unwrap_or(Path::new("."))
            .join(format!("eval-{split}"))
    });
    std::fs::create_dir_all(&out).at(&out)?;
    let pred_path = out.join("predictions.csv");
    std::fs::write(&pred_path, predictions_csv(&s, &ev)).at(&pred_path)?;
    let metrics_path = out.join("metrics.json");
    let json = metrics_json(&s, &ev, args);
    std::fs::write(&metrics_path, serde_json::to_string_pretty(&json)?).at(&metrics_path)?;
    let cm = &ev.confusion;
    plot::plot_confusion(cm, &s.classes, &out.join("confusion.png"))?;
    Ok(EvalSummary {
        predictions: pred_path,
        metrics: metrics_path,
        top1: cm.accuracy(),
        macro_f1: cm.macro_f1(),
        top5: ev.top5,
        views: ev.views,
        segments: ev.predictions.len(),
    })
}

/// One row per segment: where it is, its label, the prediction and every probability.
fn predictions_csv(s: &Session, ev: &Evaluation) -> String {
    let mut csv = String::from("segment_id,session,start_s,end_s,label,pred,correct");
    for c in &s.classes {
        csv += &format!(",p_{c}");
    }
    csv.push('\n');
    for (seg_id, target, pred, probs) in &ev.predictions {
        let seg = &s.cache.segments[*seg_id as usize];
        csv += &format!(
            "{seg_id},{},{},{},{},{},{}",
            seg.session,
            seg.start_s,
            seg.end_s,
            s.classes[*target],
            s.classes[*pred],
            target == pred
        );
        for p in probs {
            csv += &format!(",{p:.6}");
        }
        csv.push('\n');
    }
    csv
}

/// metrics.json: the summary metrics, per-class figures and the confusion matrix.
fn metrics_json(s: &Session, ev: &Evaluation, args: &EvalArgs) -> serde_json::Value {
    let cm = &ev.confusion;
    let per_class: Vec<serde_json::Value> = cm
        .per_class()
        .iter()
        .zip(&s.classes)
        .map(|(m, c)| serde_json::json!({"class": c, "support": m.support, "accuracy": m.recall, "precision": m.precision, "recall": m.recall, "f1": m.f1}))
        .collect();
    let confusion: Vec<Vec<u64>> = (0..s.classes.len()).map(|r| cm.row(r).to_vec()).collect();
    serde_json::json!({
        "checkpoint": args.ckpt.display().to_string(),
        "cache": args.cache.display().to_string(),
        "split": args.split,
        "segments": ev.predictions.len(),
        "clips": ev.views.0,
        "crops": ev.views.1,
        "loss": ev.loss,
        "top1": cm.accuracy(),
        "top5": ev.top5,
        "mean_class_acc": cm.mean_class_accuracy(),
        "macro_f1": cm.macro_f1(),
        "classes": s.classes,
        "per_class": per_class,
        "confusion": confusion,
    })
}
