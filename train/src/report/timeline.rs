//! A session's action timeline (`train predict`): sliding windows over its frames, window
//! probabilities spread to the frames they cover (averaged where windows overlap), then
//! smoothing and segments.
//!
//! Segments: in single-label mode each frame takes its argmax class; in multi-label mode
//! (`predict.threshold`) every class at or above the threshold. Runs of a class form
//! segments; runs of one class separated by less than `predict.min_gap_s` are joined,
//! then segments shorter than `predict.min_len_s` are dropped; the background class gets
//! none. A segment's score is its class's mean score over its frames.

use std::io::Write as _;
use std::path::Path;

use crate::error::{IoAt, Result};

/// Window start frames over `frames` timeline frames: every `stride` from 0, plus one
/// ending at the last frame, so every frame is covered; one window from 0 when the
/// session is no longer than a window.
pub fn window_starts(frames: u64, len: u64, stride: u64) -> Vec<u64> {
    if frames <= len {
        return vec![0];
    }
    let last = frames - len;
    let mut starts: Vec<u64> = (0..=last).step_by(stride.max(1) as usize).collect();
    if starts.last() != Some(&last) {
        starts.push(last);
    }
    starts
}

/// Per-frame class scores of one session, `[frames, classes]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Timeline frames.
    pub frames: usize,
    /// Classes.
    pub classes: usize,
    /// The scores.
    pub values: Vec<f32>,
}

/// Sums window probabilities over the frames they cover.
#[derive(Debug, Clone)]
pub struct Accumulator {
    classes: usize,
    sums: Vec<f64>,
    counts: Vec<u32>,
}

impl Accumulator {
    /// For `frames` frames of `classes` classes.
    pub fn new(frames: usize, classes: usize) -> Self {
        Accumulator {
            classes,
            sums: vec![0.0; frames * classes],
            counts: vec![0; frames],
        }
    }

    /// Window `[start, end)` scored `probs`.
    pub fn add(&mut self, start: usize, end: usize, probs: &[f64]) {
        let end = end.min(self.counts.len());
        for f in start..end {
            self.counts[f] += 1;
            let row = &mut self.sums[f * self.classes..(f + 1) * self.classes];
            row.iter_mut().zip(probs).for_each(|(a, p)| *a += p);
        }
    }

    /// The averages (frames no window covered score 0).
    pub fn finish(self) -> Scores {
        let c = self.classes;
        let values = self
            .sums
            .chunks_exact(c.max(1))
            .zip(&self.counts)
            .flat_map(|(row, &n)| row.iter().map(move |v| (v / n.max(1) as f64) as f32))
            .collect();
        Scores {
            frames: self.counts.len(),
            classes: c,
            values,
        }
    }
}

impl Scores {
    /// Score of class `c` at frame `f`.
    pub fn at(&self, f: usize, c: usize) -> f32 {
        self.values[f * self.classes + c]
    }

    /// A centred moving average over `k` frames (shorter at the ends; `k <= 1`: a copy).
    pub fn smoothed(&self, k: usize) -> Scores {
        let (n, c) = (self.frames, self.classes);
        if k <= 1 || n == 0 {
            return self.clone();
        }
        let half = k / 2;
        let mut values = vec![0f32; n * c];
        for class in 0..c {
            // Prefix sums of this class's column.
            let mut prefix = vec![0f64; n + 1];
            for f in 0..n {
                prefix[f + 1] = prefix[f] + self.at(f, class) as f64;
            }
            for f in 0..n {
                let (a, b) = (f.saturating_sub(half), (f + half + 1).min(n));
                values[f * c + class] = ((prefix[b] - prefix[a]) / (b - a) as f64) as f32;
            }
        }
        Scores {
            frames: n,
            classes: c,
            values,
        }
    }

    /// Write as a NumPy `.npy` file: float32, shape `(frames, classes)`, C order.
    pub fn write_npy(&self, path: &Path) -> Result<()> {
        let dict = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            self.frames, self.classes
        );
        // Magic (6) + version (2) + length (2) + header, padded to 64 bytes with a newline.
        let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
        let header = format!("{dict}{}\n", " ".repeat(pad));
        let mut bytes = Vec::with_capacity(10 + header.len() + self.values.len() * 4);
        bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for v in &self.values {
            bytes.write_all(&v.to_le_bytes()).at(path)?;
        }
        super::write_whole(path, &bytes)
    }
}

/// How per-frame scores become segments (frames, at the timeline's rate).
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRules {
    /// Runs of a class closer than this are joined.
    pub min_gap: usize,
    /// Shorter segments are dropped.
    pub min_len: usize,
    /// The class that gets no segments.
    pub background: Option<usize>,
    /// Multi-label threshold (`None`: the argmax class per frame).
    pub threshold: Option<f32>,
}

/// A predicted segment in frames: (class, start, end exclusive, score).
pub type FrameSegment = (usize, usize, usize, f64);

/// The segments of `scores` (see the module documentation), ordered by start.
pub fn segments(scores: &Scores, rules: &SegmentRules) -> Vec<FrameSegment> {
    let (n, c) = (scores.frames, scores.classes);
    let on = |f: usize, class: usize| -> bool {
        match rules.threshold {
            Some(t) => scores.at(f, class) >= t,
            None => {
                (0..c).max_by(|&a, &b| scores.at(f, a).total_cmp(&scores.at(f, b)).then(b.cmp(&a)))
                    == Some(class)
            }
        }
    };
    let mut out = Vec::new();
    for class in (0..c).filter(|&k| Some(k) != rules.background) {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut f = 0;
        while f < n {
            if !on(f, class) {
                f += 1;
                continue;
            }
            let start = f;
            while f < n && on(f, class) {
                f += 1;
            }
            match runs.last_mut() {
                Some(last) if start - last.1 < rules.min_gap => last.1 = f,
                _ => runs.push((start, f)),
            }
        }
        for (a, b) in runs
            .into_iter()
            .filter(|(a, b)| b - a >= rules.min_len.max(1))
        {
            let sum: f64 = (a..b).map(|f| scores.at(f, class) as f64).sum();
            out.push((class, a, b, sum / (b - a) as f64));
        }
    }
    out.sort_by_key(|s| (s.1, s.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(rows: &[[f32; 3]]) -> Scores {
        Scores {
            frames: rows.len(),
            classes: 3,
            values: rows.iter().flatten().copied().collect(),
        }
    }

    #[test]
    fn windows_cover_every_frame_and_end_at_the_last() {
        assert_eq!(window_starts(10, 4, 2), vec![0, 2, 4, 6]);
        assert_eq!(window_starts(11, 4, 3), vec![0, 3, 6, 7]);
        assert_eq!(window_starts(3, 4, 2), vec![0]);
    }

    #[test]
    fn overlapping_windows_average() {
        let mut acc = Accumulator::new(4, 2);
        acc.add(0, 3, &[1.0, 0.0]);
        acc.add(1, 4, &[0.0, 1.0]);
        let s = acc.finish();
        assert_eq!(s.values, vec![1.0, 0.0, 0.5, 0.5, 0.5, 0.5, 0.0, 1.0]);
        // A 3-frame moving average of class 0: 0.75, 2/3, 1/3, 0.25.
        let m = s.smoothed(3);
        let col: Vec<f32> = (0..4).map(|f| m.at(f, 0)).collect();
        let want = [0.75, 2.0 / 3.0, 1.0 / 3.0, 0.25];
        assert!(
            col.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{col:?}"
        );
    }

    #[test]
    fn runs_join_over_short_gaps_short_ones_drop_and_background_gets_none() {
        let (a, b, bg) = ([0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]);
        // a a bg a a a b bg bg bg
        let s = scores(&[a, a, bg, a, a, a, b, bg, bg, bg]);
        let rules = SegmentRules {
            min_gap: 2,
            min_len: 2,
            background: Some(2),
            threshold: None,
        };
        let segs = segments(&s, &rules);
        let spans: Vec<(usize, usize, usize)> = segs.iter().map(|s| (s.0, s.1, s.2)).collect();
        // Class a: [0, 2) and [3, 6) joined over the 1-frame gap; class b (1 frame) dropped.
        assert_eq!(spans, vec![(0, 0, 6)]);
        // Its score: the mean of a's score over those 6 frames.
        assert!((segs[0].3 - (0.8 * 5.0 + 0.1) / 6.0).abs() < 1e-6);
        let multi = SegmentRules {
            min_gap: 0,
            min_len: 1,
            background: None,
            threshold: Some(0.05),
        };
        // Every class is above 0.05 everywhere: one segment per class over all frames.
        assert_eq!(segments(&s, &multi).len(), 3);
    }

    #[test]
    fn npy_files_have_numpys_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.npy");
        scores(&[[0.5, 0.25, 0.25]]).write_npy(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (1, 3)") && header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + len + 12);
        assert_eq!(&bytes[10 + len..10 + len + 4], &0.5f32.to_le_bytes());
    }
}
