//! Temporal localisation metrics of predicted segments against true ones (`train score`):
//!
//! - **Average precision at a tIoU**, ActivityNet style: per class, predictions in order of
//!   score; each is a true positive when a true segment of its session and class, not yet
//!   taken, overlaps it by at least the tIoU (the best-overlapping such segment is taken);
//!   AP is the area under the interpolated precision-recall curve (precision made
//!   monotone from the right). The mean is over the classes that have true segments.
//! - **Precision, recall and F1 at a tIoU** with the same matching, over all classes.
//! - **AI City's activity overlap score** (Track 3): a prediction matches a true segment of
//!   its session and class whose start and end are each within ±10 s of its own (highest
//!   score first, each true segment at most once, the candidate of highest tIoU taken); a
//!   matched pair scores its tIoU; the score is the sum over matched pairs divided by the
//!   number of matched pairs, unmatched predictions and unmatched true segments. (The
//!   official scorer matches each true segment to its best prediction; the two differ
//!   only when candidates compete for one segment.)

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::report::segments::{tiou, Segment};

/// AI City's tolerance on start and end, seconds.
pub const AICITY_TOLERANCE_S: f64 = 10.0;

/// Predictions in order of decreasing score (ties: file order).
fn by_score<'a>(pred: impl Iterator<Item = &'a Segment>) -> Vec<&'a Segment> {
    let mut v: Vec<&Segment> = pred.collect();
    v.sort_by(|a, b| b.score.total_cmp(&a.score));
    v
}

/// For each prediction (in `by_score` order), whether it matched a true segment at `iou`.
/// `pred` and `truth` are of one class.
fn matches(pred: &[&Segment], truth: &[&Segment], iou: f64) -> Vec<bool> {
    let mut taken = vec![false; truth.len()];
    pred.iter()
        .map(|p| {
            let best = truth
                .iter()
                .enumerate()
                .filter(|(j, t)| !taken[*j] && t.session == p.session)
                .map(|(j, t)| (j, tiou((p.start, p.end), (t.start, t.end))))
                .filter(|&(_, o)| o >= iou)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((j, _)) = best {
                taken[j] = true;
            }
            best.is_some()
        })
        .collect()
}

/// ActivityNet's interpolated average precision of hits `tp` (in score order) against
/// `n_truth` true segments.
fn average_precision(tp: &[bool], n_truth: usize) -> f64 {
    if n_truth == 0 {
        return 0.0;
    }
    let (mut hits, mut prec, mut rec) = (0usize, vec![0.0], vec![0.0]);
    for (i, &t) in tp.iter().enumerate() {
        hits += t as usize;
        prec.push(hits as f64 / (i + 1) as f64);
        rec.push(hits as f64 / n_truth as f64);
    }
    prec.push(0.0);
    rec.push(1.0);
    for i in (0..prec.len() - 1).rev() {
        prec[i] = prec[i].max(prec[i + 1]);
    }
    (1..rec.len())
        .filter(|&i| rec[i] != rec[i - 1])
        .map(|i| (rec[i] - rec[i - 1]) * prec[i])
        .sum()
}

/// The figures at one tIoU threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtIou {
    /// The threshold.
    pub iou: f64,
    /// Mean AP over the classes with true segments.
    pub map: f64,
    /// AP per class (classes with true segments or predictions).
    pub ap: BTreeMap<String, f64>,
    /// Matched predictions / predictions (0 without predictions).
    pub precision: f64,
    /// Matched true segments / true segments.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

/// AI City's activity overlap score and its parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AiCityScore {
    /// Sum of matched tIoUs / (matched + unmatched predictions + unmatched truths).
    pub score: f64,
    /// Matched pairs.
    pub matched: usize,
    /// Predictions without a match.
    pub unmatched_pred: usize,
    /// True segments without a match.
    pub unmatched_truth: usize,
}

/// Everything `train score` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalisationReport {
    /// Predicted segments.
    pub predictions: usize,
    /// True segments.
    pub truths: usize,
    /// One entry per tIoU threshold.
    pub at_iou: Vec<AtIou>,
    /// Mean of the mAPs over the thresholds.
    pub average_map: f64,
    /// AI City's score.
    pub aicity: AiCityScore,
}

/// The segments of `set` of class `c`.
fn of<'a>(set: &'a [Segment], c: &str) -> Vec<&'a Segment> {
    set.iter().filter(|s| s.label == c).collect()
}

/// Score `pred` against `truth` at each of `ious`.
pub fn score(pred: &[Segment], truth: &[Segment], ious: &[f64]) -> LocalisationReport {
    let classes: BTreeSet<&str> = pred.iter().chain(truth).map(|s| s.label.as_str()).collect();
    let at_iou: Vec<AtIou> = ious
        .iter()
        .map(|&iou| {
            let (mut ap, mut hits) = (BTreeMap::new(), 0usize);
            for &c in &classes {
                let (p, t) = (by_score(of(pred, c).into_iter()), of(truth, c));
                let tp = matches(&p, &t, iou);
                hits += tp.iter().filter(|&&m| m).count();
                ap.insert(c.to_string(), average_precision(&tp, t.len()));
            }
            let with_truth: Vec<f64> = classes
                .iter()
                .filter(|c| truth.iter().any(|t| t.label == **c))
                .map(|c| ap[*c])
                .collect();
            let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { 0.0 };
            let (precision, recall) = (ratio(hits, pred.len()), ratio(hits, truth.len()));
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            AtIou {
                iou,
                map: mean(&with_truth),
                ap,
                precision,
                recall,
                f1,
            }
        })
        .collect();
    let maps: Vec<f64> = at_iou.iter().map(|a| a.map).collect();
    LocalisationReport {
        predictions: pred.len(),
        truths: truth.len(),
        average_map: mean(&maps),
        at_iou,
        aicity: aicity_score(pred, truth),
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// AI City's activity overlap score (see the module documentation).
pub fn aicity_score(pred: &[Segment], truth: &[Segment]) -> AiCityScore {
    let mut taken = vec![false; truth.len()];
    let (mut sum, mut matched) = (0.0, 0usize);
    for p in by_score(pred.iter()) {
        let best = truth
            .iter()
            .enumerate()
            .filter(|(j, t)| {
                !taken[*j]
                    && t.session == p.session
                    && t.label == p.label
                    && (t.start - p.start).abs() <= AICITY_TOLERANCE_S
                    && (t.end - p.end).abs() <= AICITY_TOLERANCE_S
            })
            .map(|(j, t)| (j, tiou((p.start, p.end), (t.start, t.end))))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, o)) = best {
            taken[j] = true;
            sum += o;
            matched += 1;
        }
    }
    let unmatched_pred = pred.len() - matched;
    let unmatched_truth = truth.len() - matched;
    let n = matched + unmatched_pred + unmatched_truth;
    AiCityScore {
        score: if n > 0 { sum / n as f64 } else { 0.0 },
        matched,
        unmatched_pred,
        unmatched_truth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: f64, end: f64, label: &str, score: f64) -> Segment {
        Segment {
            session: "s1".into(),
            start,
            end,
            label: label.into(),
            score,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// (iou -> (mAP, precision, recall, F1)), AI City score.
    fn check(pred: &[Segment], truth: &[Segment], want: &[(f64, [f64; 4])], aicity: f64) {
        let ious: Vec<f64> = want.iter().map(|w| w.0).collect();
        let r = score(pred, truth, &ious);
        for (a, (iou, w)) in r.at_iou.iter().zip(want) {
            let got = [a.map, a.precision, a.recall, a.f1];
            assert!(
                got.iter().zip(w).all(|(g, w)| close(*g, *w)),
                "tIoU {iou}: got {got:?}, want {w:?}"
            );
        }
        assert!(
            close(r.aicity.score, aicity),
            "AI City {:?}, want {aicity}",
            r.aicity
        );
    }

    #[test]
    fn exact_matches_score_one() {
        let truth = [seg(0.0, 4.0, "a", 1.0), seg(5.0, 9.0, "b", 1.0)];
        check(&truth, &truth, &[(0.5, [1.0; 4]), (0.95, [1.0; 4])], 1.0);
    }

    #[test]
    fn a_shifted_prediction_matches_below_its_tiou_only() {
        // [1, 5) against [0, 4): 3 s shared of 5 s, tIoU 0.6.
        let (truth, pred) = ([seg(0.0, 4.0, "a", 1.0)], [seg(1.0, 5.0, "a", 0.9)]);
        check(
            &pred,
            &truth,
            &[(0.5, [1.0, 1.0, 1.0, 1.0]), (0.7, [0.0; 4])],
            0.6,
        );
    }

    #[test]
    fn a_split_prediction_matches_once() {
        // Two halves of [0, 10): each tIoU 0.5. At 0.5 the first (by score) matches and
        // the second is a false positive: precision 1/2, recall 1, AP 1 (the hit comes
        // first). AI City: 0.5 for the pair, 0 for the extra prediction: 0.5 / 2.
        let truth = [seg(0.0, 10.0, "a", 1.0)];
        let pred = [seg(5.0, 10.0, "a", 0.8), seg(0.0, 5.0, "a", 0.9)];
        let f1 = 2.0 * 0.5 / 1.5;
        check(
            &pred,
            &truth,
            &[(0.5, [1.0, 0.5, 1.0, f1]), (0.7, [0.0; 4])],
            0.25,
        );
    }

    #[test]
    fn a_merged_prediction_matches_one_of_two() {
        // [0, 10) against [0, 4) and [6, 10): tIoU 0.4 each. At 0.3: one hit, precision
        // 1, recall 1/2, AP 1/2. AI City: 0.4 / (1 matched + 1 unmatched truth).
        let truth = [seg(0.0, 4.0, "a", 1.0), seg(6.0, 10.0, "a", 1.0)];
        let pred = [seg(0.0, 10.0, "a", 0.7)];
        let f1 = 2.0 * 0.5 / 1.5;
        check(
            &pred,
            &truth,
            &[(0.3, [0.5, 1.0, 0.5, f1]), (0.5, [0.0; 4])],
            0.2,
        );
    }

    #[test]
    fn a_wrong_class_and_an_empty_prediction_score_zero() {
        let truth = [seg(0.0, 4.0, "a", 1.0)];
        check(&[seg(0.0, 4.0, "b", 1.0)], &truth, &[(0.5, [0.0; 4])], 0.0);
        let r = score(&[seg(0.0, 4.0, "b", 1.0)], &truth, &[0.5]);
        // Class b has no true segment: it is left out of the mean.
        assert_eq!(r.at_iou[0].ap.len(), 2);
        check(&[], &truth, &[(0.5, [0.0; 4])], 0.0);
        assert_eq!(aicity_score(&[], &truth).unmatched_truth, 1);
    }

    #[test]
    fn ap_ranks_by_score_and_sessions_do_not_mix() {
        // A false positive ranked above a hit: precision 1/2 at recall 1, AP 1/2.
        let truth = [seg(0.0, 4.0, "a", 1.0)];
        let mut other = seg(0.0, 4.0, "a", 0.9);
        other.session = "s2".into();
        let pred = [other, seg(0.0, 4.0, "a", 0.5)];
        check(&pred, &truth, &[(0.5, [0.5, 0.5, 1.0, 2.0 / 3.0])], 0.5);
        // AI City tolerance: 10 s on each end.
        let far = [seg(0.0, 30.0, "a", 1.0)];
        assert_eq!(aicity_score(&far, &[seg(0.0, 19.0, "a", 1.0)]).matched, 0);
        assert_eq!(aicity_score(&far, &[seg(0.0, 20.0, "a", 1.0)]).matched, 1);
    }
}
