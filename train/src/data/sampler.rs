//! Which segments a run sees, in which order, and which frames of each.
//!
//! Everything here is a pure function of (seed, epoch, position): a resumed run recomputes
//! exactly the batches it would have seen, without replaying the ones before.

use mvdrive_common::rng::Rng;
use mvdrive_schemas::Cache;

/// One sample: a segment of the cache and its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Index into `Cache::segments`.
    pub segment: usize,
    /// Class index.
    pub label: u32,
}

/// Which part of a cache a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Segments whose split is this.
    Split(String),
    /// Sessions of these folds (None = sessions with no fold are excluded).
    Folds { include: bool, fold: u32 },
}

/// The segments of `sel`, in cache order. Errors name what is missing and what exists.
pub fn select(cache: &Cache, sel: &Selection) -> Result<Vec<Item>, String> {
    let fold_of: std::collections::HashMap<&str, Option<u32>> = cache
        .sessions
        .iter()
        .map(|s| (s.session.as_str(), s.fold))
        .collect();
    let items: Vec<Item> = cache
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| match sel {
            Selection::Split(name) => s.split.as_deref() == Some(name.as_str()),
            Selection::Folds { include, fold } => {
                match fold_of.get(s.session.as_str()).copied().flatten() {
                    Some(f) => (f == *fold) == *include,
                    None => false,
                }
            }
        })
        .map(|(i, s)| Item {
            segment: i,
            label: s.label_id,
        })
        .collect();
    if items.is_empty() {
        let mut splits: Vec<&str> = cache
            .segments
            .iter()
            .filter_map(|s| s.split.as_deref())
            .collect();
        splits.sort_unstable();
        splits.dedup();
        let mut folds: Vec<u32> = cache.sessions.iter().filter_map(|s| s.fold).collect();
        folds.sort_unstable();
        folds.dedup();
        let what = match sel {
            Selection::Split(n) => format!("split `{n}`"),
            Selection::Folds {
                include: true,
                fold,
            } => format!("fold {fold}"),
            Selection::Folds {
                include: false,
                fold,
            } => format!("folds other than {fold}"),
        };
        return Err(format!(
            "{}: no segments in {what} (splits in this cache: {}; folds: {}); set data.train_split / data.val_split / data.fold, or add a split column to the manifest",
            cache.dir.display(),
            if splits.is_empty() { "none".to_string() } else { splits.join(", ") },
            if folds.is_empty() { "none (run `prep split`)".to_string() } else { format!("{folds:?}") },
        ));
    }
    Ok(items)
}

/// The part of each epoch one rank of a multi-process run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This rank, `0..world`.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
}

impl Shard {
    /// A single process: the whole epoch.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };
}

/// Orders items into batches, epoch by epoch.
///
/// With a [`Shard`] of `world` ranks, the epoch's order (the same on every rank) loses its
/// last `len % world` items, and each global batch of `world x batch_size` consecutive items
/// is split into `world` equal consecutive parts, part `rank` being this rank's batch: the
/// ranks' batches are disjoint, equally many and equally sized, and together they are the
/// batch a single process with `world x batch_size` would see.
#[derive(Debug, Clone)]
pub struct Sampler {
    /// The items.
    pub items: Vec<Item>,
    /// Clips per batch.
    pub batch_size: usize,
    /// Seed.
    pub seed: u64,
    /// Class-balanced drawing instead of a shuffled pass.
    pub balanced: bool,
    /// Shuffle (training) or keep cache order (evaluation).
    pub shuffle: bool,
    /// Which part of each epoch this process takes.
    pub shard: Shard,
}

impl Sampler {
    /// Batches per epoch (the last one may be smaller).
    pub fn batches(&self) -> usize {
        (self.items.len() / self.shard.world.max(1)).div_ceil(self.batch_size)
    }

    /// The items of epoch `epoch`, in order.
    pub fn epoch_order(&self, epoch: u64) -> Vec<Item> {
        if !self.shuffle {
            return self.items.clone();
        }
        if self.balanced {
            let mut by_class: std::collections::BTreeMap<u32, Vec<Item>> = Default::default();
            for it in &self.items {
                by_class.entry(it.label).or_default().push(*it);
            }
            let classes: Vec<&Vec<Item>> = by_class.values().collect();
            return (0..self.items.len())
                .map(|n| {
                    let mut r = Rng::for_item(self.seed, epoch, n as u64);
                    let c = classes[r.below(classes.len())];
                    c[r.below(c.len())]
                })
                .collect();
        }
        let mut order = self.items.clone();
        Rng::for_item(self.seed, epoch, u64::MAX).shuffle(&mut order);
        order
    }

    /// Where this rank's batch `b` lies in an epoch order of `order_len` items: (position
    /// of its first item, its size).
    fn span(&self, order_len: usize, b: usize) -> (usize, usize) {
        let Shard { rank, world } = self.shard;
        let world = world.max(1);
        let used = order_len / world * world;
        let start = (b * self.batch_size * world).min(used);
        let end = (start + self.batch_size * world).min(used);
        let part = (end - start) / world;
        (start + rank * part, part)
    }

    /// The items of batch `b` of `epoch` (of this rank's share).
    pub fn batch(&self, order: &[Item], b: usize) -> Vec<Item> {
        let (first, n) = self.span(order.len(), b);
        order[first..first + n].to_vec()
    }

    /// Position in the epoch's order of the first item of this rank's batch `b`: per-clip
    /// random draws key on it, so each rank's clips draw differently, and the same as one
    /// process with the whole global batch.
    pub fn first_position(&self, order_len: usize, b: usize) -> usize {
        self.span(order_len, b).0
    }

    /// Which of the epoch's batches this rank's batch `b` is, counting every rank's
    /// (`b x world + rank`; `b` alone): per-batch draws (mixing) key on it.
    pub fn draw_index(&self, b: usize) -> usize {
        b * self.shard.world.max(1) + self.shard.rank
    }
}

/// `t` timeline frames spread uniformly over `[start, end)`: the middle of each of `t`
/// equal parts, or with `jitter` a uniformly random position inside each part.
pub fn clip_frames(start: u64, end: u64, t: usize, jitter: Option<&mut Rng>) -> Vec<u64> {
    let mut jitter = jitter;
    frames_at(start, end, t, || match jitter.as_deref_mut() {
        Some(r) => r.unit(),
        None => 0.5,
    })
}

/// Evaluation clip `k` of `n` of `[start, end)`: `t` frames at position `(k + 0.5) / n`
/// inside each of `t` equal parts, so the `n` clips tile the segment evenly (`n = 1`: the
/// middles, as [`clip_frames`] without jitter).
pub fn eval_clip_frames(start: u64, end: u64, t: usize, k: usize, n: usize) -> Vec<u64> {
    let u = (k as f64 + 0.5) / n.max(1) as f64;
    frames_at(start, end, t, || u)
}

/// `t` frames of `[start, end)`, frame `j` at `j + u()` parts of `t` (`u` in `[0, 1)`).
fn frames_at(start: u64, end: u64, t: usize, mut u: impl FnMut() -> f64) -> Vec<u64> {
    let len = end.saturating_sub(start).max(1) as f64;
    (0..t)
        .map(|j| {
            let f = start + ((j as f64 + u()) * len / t as f64).floor() as u64;
            f.min(end.saturating_sub(1)).max(start)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_clips_tile_the_segment_and_one_clip_is_the_middles() {
        assert_eq!(
            eval_clip_frames(10, 50, 4, 0, 1),
            clip_frames(10, 50, 4, None)
        );
        // 40 frames, 4 parts of 10: clip k of 5 sits at 1, 3, 5, 7, 9 within each part.
        let clips: Vec<Vec<u64>> = (0..5).map(|k| eval_clip_frames(10, 50, 4, k, 5)).collect();
        assert_eq!(clips[0], vec![11, 21, 31, 41]);
        assert_eq!(clips[4], vec![19, 29, 39, 49]);
        for c in &clips {
            assert!(c.iter().all(|&f| (10..50).contains(&f)));
        }
        // A segment shorter than the clip repeats frames, never leaves the segment.
        assert_eq!(eval_clip_frames(7, 9, 4, 1, 2), vec![7, 7, 8, 8]);
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                segment: i,
                label: (i % 3) as u32,
            })
            .collect()
    }

    #[test]
    fn order_is_a_pure_function_of_seed_and_epoch() {
        let s = Sampler {
            items: items(10),
            batch_size: 4,
            seed: 7,
            balanced: false,
            shuffle: true,
            shard: Shard::WHOLE,
        };
        assert_eq!(s.epoch_order(3), s.epoch_order(3));
        assert_ne!(s.epoch_order(3), s.epoch_order(4));
        let mut sorted = s.epoch_order(3);
        sorted.sort_by_key(|i| i.segment);
        assert_eq!(sorted, items(10), "a pass visits every item once");
        assert_eq!(s.batches(), 3);
        assert_eq!(s.batch(&s.epoch_order(0), 2).len(), 2);
    }

    #[test]
    fn ranks_share_an_epoch_disjointly_equally_and_as_one_big_batch() {
        let one = |world: usize, rank: usize, batch_size: usize| Sampler {
            items: items(23),
            batch_size,
            seed: 5,
            balanced: false,
            shuffle: true,
            shard: Shard { rank, world },
        };
        let order = one(1, 0, 4).epoch_order(2);
        for world in [2, 3, 4] {
            let shards: Vec<Sampler> = (0..world).map(|r| one(world, r, 3)).collect();
            let n = shards[0].batches();
            assert!(
                shards.iter().all(|s| s.batches() == n),
                "equal batch counts"
            );
            assert_eq!(n, (23 / world).div_ceil(3));
            let mut seen = Vec::new();
            for b in 0..n {
                let parts: Vec<Vec<Item>> = shards.iter().map(|s| s.batch(&order, b)).collect();
                assert!(parts
                    .iter()
                    .all(|p| p.len() == parts[0].len() && !p.is_empty()));
                // Each part knows where it starts in the order (its clips' draws key on it).
                for (r, p) in parts.iter().enumerate() {
                    let first = shards[r].first_position(order.len(), b);
                    assert_eq!(order[first], p[0]);
                    assert_eq!(shards[r].draw_index(b), b * world + r);
                }
                // Together: the batch of one process with world x batch_size.
                let joined: Vec<Item> = parts.concat();
                assert_eq!(
                    joined,
                    one(1, 0, 3 * world).batch(&order[..23 / world * world], b)
                );
                seen.extend(joined);
            }
            let mut ids: Vec<usize> = seen.iter().map(|i| i.segment).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(
                ids.len(),
                23 / world * world,
                "disjoint; only the remainder is left out"
            );
        }
    }

    #[test]
    fn balanced_sampling_draws_classes_evenly() {
        let mut it = items(3);
        it.extend((10..40).map(|i| Item {
            segment: i,
            label: 0,
        }));
        let s = Sampler {
            items: it,
            batch_size: 4,
            seed: 1,
            balanced: true,
            shuffle: true,
            shard: Shard::WHOLE,
        };
        let mut counts = [0usize; 3];
        for e in 0..30 {
            for i in s.epoch_order(e) {
                counts[i.label as usize] += 1;
            }
        }
        let total: usize = counts.iter().sum();
        for c in counts {
            assert!(
                (c as f64 / total as f64 - 1.0 / 3.0).abs() < 0.05,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn clip_frames_are_uniform_and_inside_the_segment() {
        assert_eq!(clip_frames(10, 18, 4, None), vec![11, 13, 15, 17]);
        assert_eq!(
            clip_frames(5, 7, 4, None),
            vec![5, 5, 6, 6],
            "short segments repeat frames"
        );
        let mut r = Rng::new(3);
        let f = clip_frames(100, 200, 8, Some(&mut r));
        for (j, x) in f.iter().enumerate() {
            assert!(
                (100 + 12 * j as u64..=100 + 13 * (j as u64 + 1)).contains(x),
                "{f:?}"
            );
        }
    }
}
