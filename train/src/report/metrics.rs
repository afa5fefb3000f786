//! Classification metrics and the per-epoch `metrics.csv` log.
//!
//! Pure Rust (no torch): the trainer turns logits into arg-max predictions and feeds
//! `(target, pred)` class indices into a [`ConfusionMatrix`]; every summary number is
//! derived from that matrix so the CSV, the logs and the plots always agree.
//!
//! Conventions (they match scikit-learn with labels inferred from the data):
//!
//! - rows are true classes, columns are predicted classes;
//! - `support(c)` = row sum (how often `c` is the target), `predicted(c)` = column sum;
//! - recall(c) = tp / support, NaN when `c` has no support;
//! - precision(c) = tp / predicted, NaN when `c` is never predicted;
//! - F1(c) = 2·tp / (support + predicted) (the harmonic mean of precision and recall).
//!   A class with support but never predicted (or predicted but without support) has
//!   F1 = 0. A class with **no support and no predictions** has F1 = NaN and is
//!   **excluded** from macro-F1: it says nothing about this evaluation set;
//! - top-1 accuracy = trace / total;
//! - mean per-class accuracy (balanced accuracy) = mean recall over the classes that
//!   appear in the targets (support > 0);
//! - macro-F1 = mean F1 over the classes that appear in the targets or the predictions.
//!
//! Any summary of an empty matrix is NaN (never a panic, never a misleading 0).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from metric accumulation and the metrics CSV.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A target or prediction index is not a class of this matrix.
    #[error(
        "{what} class index {index} is out of range: the confusion matrix has {num_classes} \
         classes (0..{num_classes}); check that the model head and labels.txt agree"
    )]
    ClassOutOfRange {
        /// `"target"` or `"predicted"`.
        what: &'static str,
        /// The offending index.
        index: usize,
        /// Classes in the matrix.
        num_classes: usize,
    },
    /// Reading or writing the metrics CSV failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An existing metrics CSV has another header, so rows cannot be appended to it.
    #[error(
        "{path} exists with header `{found}`, expected `{expected}`; move it away or write \
         this run to a new output folder"
    )]
    HeaderMismatch {
        /// The file.
        path: PathBuf,
        /// Its first line.
        found: String,
        /// [`EpochMetrics::CSV_HEADER`].
        expected: &'static str,
    },
    /// A row of a metrics CSV could not be parsed.
    #[error("{path}:{line}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Precision, recall and F1 of one class (see the module docs for NaN conventions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassMetrics {
    /// Correct predictions of this class (the diagonal cell).
    pub tp: u64,
    /// How often this class is the target (row sum).
    pub support: u64,
    /// How often this class is predicted (column sum).
    pub predicted: u64,
    /// tp / predicted; NaN when never predicted.
    pub precision: f64,
    /// tp / support; NaN without support.
    pub recall: f64,
    /// 2·tp / (support + predicted); NaN when both are 0.
    pub f1: f64,
}

/// A `num_classes x num_classes` matrix of counts: `counts[target][pred]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// Row-major: `counts[target * num_classes + pred]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// Every cell, row-major (`[target * num_classes + pred]`).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// An all-zero matrix for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Counts one sample. Out-of-range indices are an error and leave the matrix unchanged.
    pub fn add(&mut self, target: usize, pred: usize) -> Result<(), MetricsError> {
        self.add_n(target, pred, 1)
    }

    /// Counts `n` samples with the same `(target, pred)`.
    pub fn add_n(&mut self, target: usize, pred: usize, n: u64) -> Result<(), MetricsError> {
        self.check("target", target)?;
        self.check("predicted", pred)?;
        let cell = &mut self.counts[target * self.num_classes + pred];
        *cell = cell.saturating_add(n);
        Ok(())
    }

    /// Resets every count to zero.
    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
    }

    fn check(&self, what: &'static str, index: usize) -> Result<(), MetricsError> {
        if index < self.num_classes {
            Ok(())
        } else {
            Err(MetricsError::ClassOutOfRange {
                what,
                index,
                num_classes: self.num_classes,
            })
        }
    }

    /// The count at `(target, pred)`; 0 outside the matrix.
    pub fn count(&self, target: usize, pred: usize) -> u64 {
        if target < self.num_classes && pred < self.num_classes {
            self.counts[target * self.num_classes + pred]
        } else {
            0
        }
    }

    /// Row `target` (counts per predicted class); empty outside the matrix.
    pub fn row(&self, target: usize) -> &[u64] {
        if target < self.num_classes {
            let start = target * self.num_classes;
            &self.counts[start..start + self.num_classes]
        } else {
            &[]
        }
    }

    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Number of correct predictions (the trace).
    pub fn correct(&self) -> u64 {
        (0..self.num_classes).map(|c| self.count(c, c)).sum()
    }

    /// How often `class` is the target (row sum).
    pub fn support(&self, class: usize) -> u64 {
        self.row(class).iter().sum()
    }

    /// How often `class` is predicted (column sum).
    pub fn predicted(&self, class: usize) -> u64 {
        (0..self.num_classes).map(|t| self.count(t, class)).sum()
    }

    /// Precision, recall and F1 of one class.
    pub fn class_metrics(&self, class: usize) -> ClassMetrics {
        let tp = self.count(class, class);
        let support = self.support(class);
        let predicted = self.predicted(class);
        ClassMetrics {
            tp,
            support,
            predicted,
            precision: ratio(tp, predicted),
            recall: ratio(tp, support),
            // 2·tp / (support + predicted), in f64 so huge counts cannot overflow.
            f1: if support + predicted == 0 {
                f64::NAN
            } else {
                2.0 * tp as f64 / (support as f64 + predicted as f64)
            },
        }
    }

    /// [`ClassMetrics`] for every class, in class order.
    pub fn per_class(&self) -> Vec<ClassMetrics> {
        (0..self.num_classes)
            .map(|c| self.class_metrics(c))
            .collect()
    }

    /// Precision of `class`; NaN when it is never predicted.
    pub fn precision(&self, class: usize) -> f64 {
        self.class_metrics(class).precision
    }

    /// Recall of `class`; NaN when it has no support.
    pub fn recall(&self, class: usize) -> f64 {
        self.class_metrics(class).recall
    }

    /// F1 of `class`; NaN when it has no support and is never predicted.
    pub fn f1(&self, class: usize) -> f64 {
        self.class_metrics(class).f1
    }

    /// Top-1 accuracy: correct / total; NaN for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total())
    }

    /// Mean per-class accuracy: mean recall over the classes with support; NaN if none.
    pub fn mean_class_accuracy(&self) -> f64 {
        mean_finite(self.per_class().iter().map(|m| m.recall))
    }

    /// Macro-F1: mean F1 over the classes that have support or predictions (classes with
    /// neither are excluded); NaN for an empty matrix.
    pub fn macro_f1(&self) -> f64 {
        mean_finite(self.per_class().iter().map(|m| m.f1))
    }

    /// The matrix as CSV: header `true\pred,<labels...>`, then one row per true class
    /// `<label>,<counts...>`, `\n` line ends. Labels that contain `,`, `"` or a line break
    /// are quoted (RFC 4180); a missing label is written as the class index.
    pub fn to_csv(&self, labels: &[String]) -> String {
        let name = |i: usize| csv_field(labels.get(i).map_or(&*i.to_string(), |s| s));
        let mut out = String::from("true\\pred");
        for c in 0..self.num_classes {
            out.push(',');
            out.push_str(&name(c));
        }
        out.push('\n');
        for t in 0..self.num_classes {
            out.push_str(&name(t));
            for &n in self.row(t) {
                // Writing to a String cannot fail.
                let _ = write!(out, ",{n}");
            }
            out.push('\n');
        }
        out
    }
}

/// `num / den` as f64; NaN when `den == 0`.
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num as f64 / den as f64
    }
}

/// Mean of the non-NaN values; NaN when there are none.
fn mean_finite(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Quotes a CSV field when needed (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One row of `metrics.csv`: the state at the end of an epoch. Values that do not exist
/// (no validation this epoch, an empty eval set) are NaN; they are written as `NaN` in
/// the CSV and as `null` by serde_json (and `null` reads back as NaN).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch number (as the trainer counts it, usually from 1).
    pub epoch: u32,
    /// Optimizer steps taken so far.
    pub step: u64,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Mean validation loss.
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_loss: f64,
    /// Validation top-1 accuracy in [0, 1].
    #[serde(deserialize_with = "f64_or_nan")]
    pub top1: f64,
    /// Validation mean per-class accuracy in [0, 1].
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean_class_acc: f64,
    /// Validation macro-F1 in [0, 1].
    #[serde(deserialize_with = "f64_or_nan")]
    pub macro_f1: f64,
    /// Learning rate at the end of the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    /// Wall-clock seconds the epoch took (train + eval).
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
}

/// serde_json writes NaN as `null`; read `null` back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl EpochMetrics {
    /// The header of `metrics.csv`; columns are in field order.
    pub const CSV_HEADER: &'static str =
        "epoch,step,train_loss,val_loss,top1,mean_class_acc,macro_f1,lr,seconds";

    /// Fills `top1`, `mean_class_acc` and `macro_f1` from a validation confusion matrix.
    pub fn with_confusion(mut self, cm: &ConfusionMatrix) -> Self {
        self.top1 = cm.accuracy();
        self.mean_class_acc = cm.mean_class_accuracy();
        self.macro_f1 = cm.macro_f1();
        self
    }

    /// The CSV row for this epoch, without the line end. Floats use Rust's shortest
    /// round-trip form (`0.25`, `3e-7`, `NaN`, `inf`), which pandas/polars/numpy parse.
    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{:?},{:?},{:?},{:?},{:?},{:?},{:?}",
            self.epoch,
            self.step,
            self.train_loss,
            self.val_loss,
            self.top1,
            self.mean_class_acc,
            self.macro_f1,
            self.lr,
            self.seconds
        )
    }

    /// Parses one CSV row written by [`EpochMetrics::csv_row`].
    pub fn parse_csv_row(line: &str) -> Result<Self, String> {
        let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(',').collect();
        if fields.len() != 9 {
            return Err(format!("expected 9 fields, found {}", fields.len()));
        }
        let float = |i: usize, name: &str| -> Result<f64, String> {
            let s = fields[i].trim();
            if s.is_empty() {
                return Ok(f64::NAN);
            }
            s.parse::<f64>()
                .map_err(|_| format!("{name} `{s}` is not a number"))
        };
        Ok(Self {
            epoch: fields[0]
                .trim()
                .parse()
                .map_err(|_| format!("epoch `{}` is not a whole number", fields[0]))?,
            step: fields[1]
                .trim()
                .parse()
                .map_err(|_| format!("step `{}` is not a whole number", fields[1]))?,
            train_loss: float(2, "train_loss")?,
            val_loss: float(3, "val_loss")?,
            top1: float(4, "top1")?,
            mean_class_acc: float(5, "mean_class_acc")?,
            macro_f1: float(6, "macro_f1")?,
            lr: float(7, "lr")?,
            seconds: float(8, "seconds")?,
        })
    }
}

/// Appends one [`EpochMetrics`] row per epoch to a CSV file (usually `<run>/metrics.csv`).
///
/// The header is written once, when the file is new or empty; an existing file (a resumed
/// run) is appended to if its header matches, and a torn last line left by a crash during
/// a write is cut off first. Each row goes to the OS in one write and is synced to disk
/// before [`MetricsCsv::append`] returns, so a crash loses nothing already appended.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    file: File,
}

impl MetricsCsv {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MetricsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| MetricsError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut existing = String::new();
        file.read_to_string(&mut existing).map_err(io)?;
        if existing.is_empty() {
            file.write_all(format!("{}\n", EpochMetrics::CSV_HEADER).as_bytes())
                .map_err(io)?;
        } else {
            let header = existing.lines().next().unwrap_or("").trim_end_matches('\r');
            if header != EpochMetrics::CSV_HEADER {
                return Err(MetricsError::HeaderMismatch {
                    path,
                    found: header.to_string(),
                    expected: EpochMetrics::CSV_HEADER,
                });
            }
            if !existing.ends_with('\n') {
                // A crash mid-row: drop the torn tail so the next row starts a clean line.
                // The header matched, so a newline exists unless the file is the bare
                // header without its line end.
                match existing.rfind('\n') {
                    Some(last) => file.set_len(last as u64 + 1).map_err(io)?,
                    None => file.write_all(b"\n").map_err(io)?,
                }
            }
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        file.sync_data().map_err(io)?;
        Ok(Self { path, file })
    }

    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one row and syncs it to disk.
    pub fn append(&mut self, row: &EpochMetrics) -> Result<(), MetricsError> {
        let line = format!("{}\n", row.csv_row());
        let io = |source| MetricsError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Reads every row of a metrics CSV (e.g. to re-plot a resumed run). A torn last
    /// line (no line end) is ignored; any other malformed row is an error.
    pub fn read(path: impl AsRef<Path>) -> Result<Vec<EpochMetrics>, MetricsError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| MetricsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let complete = match text.rfind('\n') {
            Some(last) => &text[..=last],
            None => "",
        };
        let mut lines = complete.lines().enumerate();
        match lines.next() {
            None => return Ok(Vec::new()),
            Some((_, header)) if header.trim_end_matches('\r') == EpochMetrics::CSV_HEADER => {}
            Some((_, header)) => {
                return Err(MetricsError::HeaderMismatch {
                    path: path.to_path_buf(),
                    found: header.to_string(),
                    expected: EpochMetrics::CSV_HEADER,
                })
            }
        }
        lines
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                EpochMetrics::parse_csv_row(l).map_err(|msg| MetricsError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    msg,
                })
            })
            .collect()
    }
}
