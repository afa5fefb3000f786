//! `prep split`: assign sessions to K cross-validation folds, grouped so that no subject
//! (or session) is in two folds, and write the manifest with a `fold` column.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{io, PrepError};
use crate::table::TextTable;
use mvdrive_common::rng::Rng;

/// What `split` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// Subjects: no driver appears in two folds.
    Subject,
    /// Sessions.
    Session,
}

/// The folds written.
#[derive(Debug, Clone)]
pub struct SplitSummary {
    /// Output manifest.
    pub out: PathBuf,
    /// Per fold: (groups, sessions).
    pub folds: Vec<(Vec<String>, usize)>,
}

/// Assign `groups` (group id -> number of sessions) to `k` folds: groups in a seeded random
/// order, each to the fold with the fewest sessions so far (lowest index on ties).
pub fn assign(groups: &BTreeMap<String, usize>, k: usize, seed: u64) -> HashMap<String, usize> {
    let mut order: Vec<(&String, &usize)> = groups.iter().collect();
    Rng::new(seed).shuffle(&mut order);
    let mut load = vec![0usize; k];
    let mut out = HashMap::new();
    for (g, n) in order {
        let f = (0..k).min_by_key(|&f| (load[f], f)).unwrap_or(0);
        load[f] += n;
        out.insert(g.clone(), f);
    }
    out
}

/// Read `manifest`, assign folds and write it with a `fold` column to `out`.
pub fn split(
    manifest: &Path,
    out: &Path,
    folds: usize,
    by: GroupBy,
    seed: u64,
) -> Result<SplitSummary, PrepError> {
    let t = TextTable::read(manifest).map_err(|e| PrepError::Invalid(vec![e]))?;
    let shown = manifest.display();
    let key = match by {
        GroupBy::Subject => "subject",
        GroupBy::Session => "session",
    };
    let (Some(si), Some(ki)) = (t.col("session"), t.col(key)) else {
        return Err(PrepError::Invalid(vec![format!(
            "{shown}: needs columns `session` and `{key}`"
        )]));
    };
    // Sessions per group, and one group per session.
    let mut group_of: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut problems = Vec::new();
    for (line, row) in &t.rows {
        let (s, g) = (row[si].trim().to_string(), row[ki].trim().to_string());
        if s.is_empty() || g.is_empty() {
            problems.push(format!("{shown} line {line}: empty session or {key}"));
            continue;
        }
        match group_of.get(&s) {
            Some((g0, l0)) if *g0 != g => problems.push(format!(
                "{shown} line {line}: session `{s}` has {key} `{g}` here but `{g0}` on line {l0}"
            )),
            Some(_) => {}
            None => {
                group_of.insert(s, (g, *line));
            }
        }
    }
    if !problems.is_empty() {
        return Err(PrepError::Invalid(problems));
    }
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for (g, _) in group_of.values() {
        *groups.entry(g.clone()).or_default() += 1;
    }
    if folds < 2 || folds > groups.len() {
        return Err(PrepError::Other(format!(
            "--folds {folds}: need between 2 and the number of {key}s ({}) in {shown}",
            groups.len()
        )));
    }
    let fold_of = assign(&groups, folds, seed);
    let mut headers = t.headers.clone();
    let fi = match headers.iter().position(|h| h == "fold") {
        Some(i) => i,
        None => {
            headers.push("fold".into());
            headers.len() - 1
        }
    };
    let tmp = out.with_extension("csv.tmp");
    {
        let mut w = csv::Writer::from_path(&tmp)
            .map_err(|e| PrepError::Other(format!("{}: {e}", tmp.display())))?;
        let err = |e: csv::Error| PrepError::Other(format!("{}: {e}", tmp.display()));
        w.write_record(&headers).map_err(err)?;
        for (_, row) in &t.rows {
            let mut r = row.clone();
            r.resize(headers.len(), String::new());
            let g = &group_of[row[si].trim()].0;
            r[fi] = fold_of[g].to_string();
            w.write_record(&r).map_err(err)?;
        }
        w.flush().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, out).map_err(io(out))?;
    let mut summary = SplitSummary {
        out: out.to_path_buf(),
        folds: vec![(Vec::new(), 0); folds],
    };
    for (g, n) in &groups {
        let f = fold_of[g];
        summary.folds[f].0.push(g.clone());
        summary.folds[f].1 += n;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_balanced_deterministic_and_keep_groups_whole() {
        let groups: BTreeMap<String, usize> =
            (0..7).map(|i| (format!("p{i}"), 1 + i % 3)).collect();
        let a = assign(&groups, 3, 5);
        assert_eq!(a, assign(&groups, 3, 5));
        let mut load = [0usize; 3];
        for (g, f) in &a {
            load[*f] += groups[g];
        }
        let total: usize = groups.values().sum();
        assert_eq!(load.iter().sum::<usize>(), total);
        assert!(
            load.iter().max().unwrap() - load.iter().min().unwrap() <= 3,
            "{load:?}"
        );
    }
}
