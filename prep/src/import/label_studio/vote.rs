//! The per-frame vote that merges several annotations of one (session, view): each
//! annotation votes once per frame for each label it gives the frame; the label with the
//! most votes wins if it has at least `--min-votes`; ties go to the annotation with the
//! smallest id, then its earliest region.

use std::collections::HashSet;

/// One labelled range of one annotation, in 0-based half-open frames.
#[derive(Debug, Clone)]
pub(crate) struct Region {
    pub label: String,
    pub start: i64,
    pub end: i64,
    /// Rank of the annotation (0 = smallest id).
    pub rank: usize,
    /// Position of the region within its annotation.
    pub order: usize,
    pub at: String,
}

/// A label's votes on one stretch of frames: (label, annotations voting, best (rank, order),
/// deciding region).
type Tally<'a> = (&'a str, HashSet<usize>, (usize, usize), usize);

/// Per-frame vote over regions; returns runs (label, start, end, at of the deciding region).
pub(crate) fn vote(regions: &[Region], min_votes: u32) -> Vec<(String, i64, i64, String)> {
    let mut bounds: Vec<i64> = regions.iter().flat_map(|r| [r.start, r.end]).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(String, i64, i64, String)> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut tally: Vec<Tally> = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            if r.start <= a && r.end >= b {
                let key = (r.rank, r.order);
                match tally.iter_mut().find(|t| t.0 == r.label) {
                    Some(t) => {
                        t.1.insert(r.rank);
                        if key < t.2 {
                            t.2 = key;
                            t.3 = i;
                        }
                    }
                    None => tally.push((&r.label, HashSet::from([r.rank]), key, i)),
                }
            }
        }
        let best = tally
            .iter()
            .max_by(|x, y| x.1.len().cmp(&y.1.len()).then_with(|| y.2.cmp(&x.2)));
        let Some((label, votes, _, idx)) = best else {
            continue;
        };
        if (votes.len() as u32) < min_votes {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.0 == *label && last.2 == a => last.2 = b,
            _ => out.push((label.to_string(), a, b, regions[*idx].at.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(label: &str, start: i64, end: i64, rank: usize, order: usize) -> Region {
        Region {
            label: label.into(),
            start,
            end,
            rank,
            order,
            at: format!("{label}@{rank}"),
        }
    }

    #[test]
    fn vote_takes_the_majority_and_breaks_ties_by_earliest_annotation() {
        // Annotation 0: a on 0..10; annotation 1: b on 5..15; annotation 2: b on 8..12.
        let regions = [
            r("a", 0, 10, 0, 0),
            r("b", 5, 15, 1, 0),
            r("b", 8, 12, 2, 0),
        ];
        let got: Vec<(String, i64, i64)> = vote(&regions, 1)
            .into_iter()
            .map(|(l, s, e, _)| (l, s, e))
            .collect();
        // 0..5 a alone; 5..8 a vs b tie -> a (rank 0); 8..12 b has 2 votes; 12..15 b.
        assert_eq!(got, vec![("a".into(), 0, 8), ("b".into(), 8, 15)]);
    }

    #[test]
    fn min_votes_leaves_weak_frames_unlabelled() {
        let regions = [r("a", 0, 10, 0, 0), r("a", 5, 15, 1, 0)];
        let got: Vec<(String, i64, i64)> = vote(&regions, 2)
            .into_iter()
            .map(|(l, s, e, _)| (l, s, e))
            .collect();
        assert_eq!(got, vec![("a".into(), 5, 10)]);
    }

    #[test]
    fn one_annotation_counts_once_per_label() {
        // Annotation 0 draws a twice over the same frames; annotation 1 and 2 say b.
        let regions = [
            r("a", 0, 4, 0, 0),
            r("a", 0, 4, 0, 1),
            r("b", 0, 4, 1, 0),
            r("b", 0, 4, 2, 0),
        ];
        assert_eq!(vote(&regions, 1)[0].0, "b");
    }
}
