//! Evaluation: the validation pass of `train fit`, and `train eval` (a checkpoint's model on
//! a split of a cache, written as predictions.csv, metrics.json and confusion.png).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::{Settings, TrainConfig};
use crate::data::loader::{Loader, Prefetch};
use crate::data::sampler::{Sampler, Selection};
use crate::error::{IoAt, Result, TrainError};
use crate::model::MultiViewModel;
use crate::report::metrics::ConfusionMatrix;
use crate::report::plot;
use crate::run::checkpoint;
use crate::run::session::Session;
use crate::run::trainer::loss_of;

/// Result of evaluating a model on a split.
pub struct Evaluation {
    /// Confusion matrix.
    pub confusion: ConfusionMatrix,
    /// Mean loss.
    pub loss: f64,
    /// (segment id, target, prediction, probabilities) per segment.
    pub predictions: Vec<(u64, usize, usize, Vec<f64>)>,
}

/// Evaluates deterministically (centre frames, no jitter) over every item of `sampler`.
pub fn evaluate(
    model: &MultiViewModel,
    loader: &Arc<Loader>,
    sampler: &Arc<Sampler>,
    s: &Session,
) -> Result<Evaluation> {
    let mut cm = ConfusionMatrix::new(s.classes.len());
    let (mut loss, mut n) = (0.0, 0usize);
    let mut predictions = Vec::new();
    let workers = s.config.data.num_workers;
    for batch in Prefetch::start(loader.clone(), sampler.clone(), 0, 0, false, workers) {
        let batch = batch?;
        let x = s.input(&batch)?;
        let y = Tensor::from_slice(&batch.labels).to_device(s.device);
        let scores = tch::no_grad(|| model.forward_t(&x, false));
        loss += loss_of(&scores, &y, 0.0).double_value(&[]) * batch.size as f64;
        n += batch.size;
        let probs = scores.softmax(-1, Kind::Double).to_device(Device::Cpu);
        let pred: Vec<i64> = Vec::try_from(probs.argmax(-1, false))?;
        for (i, (&target, &p)) in batch.labels.iter().zip(&pred).enumerate() {
            cm.add(target as usize, p as usize)
                .map_err(|e| TrainError::Other(e.to_string()))?;
            let row: Vec<f64> = Vec::try_from(probs.get(i as i64))?;
            predictions.push((batch.segments[i], target as usize, p as usize, row));
        }
    }
    Ok(Evaluation {
        confusion: cm,
        loss: loss / n.max(1) as f64,
        predictions,
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
    /// Segments evaluated.
    pub segments: usize,
}

/// Runs `train eval` and prints where its outputs went.
pub fn run(args: &EvalArgs) -> Result<()> {
    let s = eval(args)?;
    println!(
        "train eval: {} segments of split `{}`: top1 {:.3}, macro-F1 {:.3} -> {}, {}",
        s.segments,
        args.split,
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
    let st = checkpoint::load_state(ckpt)?;
    let mut settings = Settings::default();
    settings
        .apply_yaml(&st.config_yaml)
        .map_err(|e| format!("{}: its saved configuration: {e}", ckpt.display()))?;
    settings.set("trainer.device", &args.device, false)?;
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
        .map(|(m, c)| serde_json::json!({"class": c, "support": m.support, "precision": m.precision, "recall": m.recall, "f1": m.f1}))
        .collect();
    let confusion: Vec<Vec<u64>> = (0..s.classes.len()).map(|r| cm.row(r).to_vec()).collect();
    serde_json::json!({
        "checkpoint": args.ckpt.display().to_string(),
        "cache": args.cache.display().to_string(),
        "split": args.split,
        "segments": ev.predictions.len(),
        "loss": ev.loss,
        "top1": cm.accuracy(),
        "mean_class_acc": cm.mean_class_accuracy(),
        "macro_f1": cm.macro_f1(),
        "classes": s.classes,
        "per_class": per_class,
        "confusion": confusion,
    })
}
