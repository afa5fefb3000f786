//! `train score`: temporal localisation metrics of a predicted segments file against a
//! true one (see [`crate::report::localisation`] for the definitions).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::error::{IoAt, Result, TrainError};
use crate::report::localisation::{score, LocalisationReport};
use crate::report::segments::read_segments;

/// Score predicted segments against true ones: mAP, precision, recall and F1 at each
/// tIoU (ActivityNet style), and AI City Track 3's activity overlap score. Both files are
/// `session,start_s,end_s,label[,score]` CSVs (what `train predict` writes, what `prep
/// build` reads).
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Predicted segments (a `score` column ranks them; without one every row scores 1).
    #[arg(long)]
    pub pred: PathBuf,
    /// True segments.
    #[arg(long)]
    pub truth: PathBuf,
    /// tIoU thresholds, comma-separated, each in (0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7")]
    pub iou: Vec<f64>,
    /// The classes, one per line (e.g. the labels.txt next to the segments file the cache
    /// was built from): a label of either file outside them is an error instead of a
    /// class of its own.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Also write the figures, per class included, as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Read both files and score them.
pub fn run_score(a: &ScoreArgs) -> Result<LocalisationReport> {
    if let Some(bad) = a.iou.iter().find(|&&v| !(v > 0.0 && v <= 1.0)) {
        return Err(TrainError::Other(format!(
            "--iou {bad} is not a tIoU threshold in (0, 1] (e.g. --iou 0.3,0.5,0.7)"
        )));
    }
    let labels = match &a.labels {
        Some(p) => {
            let text = std::fs::read_to_string(p).at(p)?;
            let set: BTreeSet<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if set.is_empty() {
                return Err(TrainError::Other(format!(
                    "{}: no classes (one label per line)",
                    p.display()
                )));
            }
            Some(set)
        }
        None => None,
    };
    let pred = read_segments(&a.pred, labels.as_ref())?;
    let truth = read_segments(&a.truth, labels.as_ref())?;
    Ok(score(&pred, &truth, &a.iou))
}

/// The report as a table.
pub fn table(r: &LocalisationReport) -> String {
    let mut s = format!(
        "{} predicted, {} true segments\n tIoU    mAP  precision  recall     F1\n",
        r.predictions, r.truths
    );
    for a in &r.at_iou {
        s.push_str(&format!(
            "{:5.2} {:6.3} {:10.3} {:7.3} {:6.3}\n",
            a.iou, a.map, a.precision, a.recall, a.f1
        ));
    }
    s.push_str(&format!("average mAP {:.3}\n", r.average_map));
    if let Some(first) = r.at_iou.first() {
        s.push_str(&format!("AP per class at tIoU {:.2}:", first.iou));
        for (c, ap) in &first.ap {
            s.push_str(&format!(" {c} {ap:.3}"));
        }
        s.push('\n');
    }
    let c = &r.aicity;
    s.push_str(&format!(
        "AI City activity overlap score {:.4} ({} matched, {} unmatched predictions, {} unmatched truths)\n",
        c.score, c.matched, c.unmatched_pred, c.unmatched_truth
    ));
    s
}

/// `train score`: print the table, and write JSON with `--out`.
pub fn run(a: &ScoreArgs) -> Result<()> {
    let r = run_score(a)?;
    print!("{}", table(&r));
    if let Some(out) = &a.out {
        crate::report::write_whole(out, serde_json::to_string_pretty(&r)?.as_bytes())?;
    }
    Ok(())
}
