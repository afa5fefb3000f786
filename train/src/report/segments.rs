//! Segment files: the canonical `session,start_s,end_s,label[,score]` table that `prep
//! build` reads as labels, `train predict` writes, and `train score` compares. Times are
//! seconds on the session timeline, half-open `[start_s, end_s)`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Result, TrainError};

/// One labelled (or predicted) time segment of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Session id.
    pub session: String,
    /// Start, seconds on the session timeline.
    pub start: f64,
    /// End (exclusive), seconds.
    pub end: f64,
    /// Class name.
    pub label: String,
    /// Confidence (1 when the file has no `score` column).
    pub score: f64,
}

impl Segment {
    /// Length in seconds.
    pub fn len(&self) -> f64 {
        self.end - self.start
    }

    /// Whether the segment covers no time.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Temporal intersection over union of `[a0, a1)` and `[b0, b1)`.
pub fn tiou(a: (f64, f64), b: (f64, f64)) -> f64 {
    let inter = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    let union = (a.1 - a.0) + (b.1 - b.0) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Read a segments file. Errors name the file, the row (1 = the header) and what to fix;
/// with `labels`, a label outside them is an error too.
pub fn read_segments(path: &Path, labels: Option<&BTreeSet<String>>) -> Result<Vec<Segment>> {
    let shown = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| TrainError::Other(format!("{shown}: {e}")))?;
    let header = reader
        .headers()
        .map_err(|e| TrainError::Other(format!("{shown}: {e}")))?
        .clone();
    let column = |name: &str| header.iter().position(|h| h == name);
    let [Some(session), Some(start), Some(end), Some(label)] =
        ["session", "start_s", "end_s", "label"].map(column)
    else {
        return Err(TrainError::Other(format!(
            "{shown}: the header must name session,start_s,end_s,label (and optionally score); it is `{}`",
            header.iter().collect::<Vec<_>>().join(",")
        )));
    };
    let score = column("score");
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let row = i + 2;
        let record = record.map_err(|e| TrainError::Other(format!("{shown}: row {row}: {e}")))?;
        let field = |c: usize| record.get(c).unwrap_or("");
        let number = |c: usize, name: &str| -> Result<f64> {
            field(c)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    TrainError::Other(format!(
                        "{shown}: row {row}: {name} `{}` is not a number of seconds",
                        field(c)
                    ))
                })
        };
        let seg = Segment {
            session: field(session).to_string(),
            start: number(start, "start_s")?,
            end: number(end, "end_s")?,
            label: field(label).to_string(),
            score: match score {
                Some(c) => number(c, "score")?,
                None => 1.0,
            },
        };
        if seg.session.is_empty() || seg.label.is_empty() {
            return Err(TrainError::Other(format!(
                "{shown}: row {row}: empty session or label"
            )));
        }
        if seg.is_empty() {
            return Err(TrainError::Other(format!(
                "{shown}: row {row}: end_s {} is not after start_s {}",
                seg.end, seg.start
            )));
        }
        if let Some(known) = labels {
            if !known.contains(&seg.label) {
                return Err(TrainError::Other(format!(
                    "{shown}: row {row}: label `{}` is not one of the classes ({}); fix the label or the class list",
                    seg.label,
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        out.push(seg);
    }
    Ok(out)
}

/// Write `segments` with a `score` column (written whole to a temporary file, then renamed).
pub fn write_segments(path: &Path, segments: &[Segment]) -> Result<()> {
    let mut text = String::from("session,start_s,end_s,label,score\n");
    for s in segments {
        text.push_str(&format!(
            "{},{:.3},{:.3},{},{:.4}\n",
            s.session, s.start, s.end, s.label, s.score
        ));
    }
    super::write_whole(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiou_of_overlapping_nested_and_disjoint_segments() {
        assert_eq!(tiou((0.0, 4.0), (1.0, 5.0)), 3.0 / 5.0);
        assert_eq!(tiou((0.0, 10.0), (2.0, 4.0)), 0.2);
        assert_eq!(tiou((0.0, 1.0), (2.0, 3.0)), 0.0);
    }

    #[test]
    fn files_round_trip_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg.csv");
        let segs = vec![Segment {
            session: "s1".into(),
            start: 0.5,
            end: 2.0,
            label: "texting".into(),
            score: 0.75,
        }];
        write_segments(&p, &segs).unwrap();
        assert_eq!(read_segments(&p, None).unwrap(), segs);
        let known: BTreeSet<String> = ["drinking".to_string()].into();
        let e = read_segments(&p, Some(&known)).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("texting"), "{e}");
        for (text, want) in [
            ("session,start,end_s,label\n", "header"),
            (
                "session,start_s,end_s,label\ns1,1,x,a\n",
                "row 2: end_s `x`",
            ),
            (
                "session,start_s,end_s,label\ns1,2,1,a\n",
                "row 2: end_s 1 is not after",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read_segments(&p, None).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("seg.csv"), "{e}");
        }
    }
}
