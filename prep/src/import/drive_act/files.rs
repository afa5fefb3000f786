//! Finding Drive&Act's annotation CSVs: the files given, or the `{level}.*.csv` files of
//! view folders (unsplit ones, else the parts of split `--split-index`).

use std::path::{Path, PathBuf};

use super::super::absolute;

/// One CSV to read.
pub(super) struct Input {
    /// The folder holding `activities_3s` (video patterns are relative to it).
    pub root: PathBuf,
    /// Drive&Act view (the folder name).
    pub view_src: String,
    /// The CSV.
    pub file: PathBuf,
    /// The split part the file holds (`train`, ...), for split files.
    pub split: Option<String>,
}

/// The CSVs of `sources` for `level` and split `k`; views without one are warnings.
pub(super) fn find_inputs(
    sources: &[PathBuf],
    level: &str,
    k: u32,
    warnings: &mut Vec<String>,
) -> Result<Vec<Input>, Vec<String>> {
    let mut problems = Vec::new();
    let mut inputs: Vec<Input> = Vec::new();
    for src in sources {
        let abs = absolute(src);
        if src.is_file() {
            let view_dir = parent(&abs);
            let name = name_of(src);
            inputs.push(Input {
                root: parent(&parent(&view_dir)),
                view_src: name_of(&view_dir),
                split: split_of(&name).map(|(_, p)| p),
                file: src.clone(),
            });
        } else if src.is_dir() {
            let (dirs, root) = if has_csv(src) {
                (vec![abs.clone()], parent(&parent(&abs)))
            } else {
                let mut subs: Vec<PathBuf> = std::fs::read_dir(src)
                    .map(|rd| {
                        rd.flatten()
                            .map(|e| e.path())
                            .filter(|p| p.is_dir())
                            .collect()
                    })
                    .unwrap_or_default();
                subs.sort();
                (subs, parent(&abs))
            };
            let mut found = 0;
            for d in &dirs {
                let files = select(d, level, k);
                if files.is_empty() {
                    warnings.push(format!(
                        "{}: no `{level}.*.csv` file (unsplit or split_{k}); view `{}` skipped",
                        d.display(),
                        name_of(d)
                    ));
                }
                for (file, split) in files {
                    found += 1;
                    inputs.push(Input {
                        root: root.clone(),
                        view_src: name_of(d),
                        file,
                        split,
                    });
                }
            }
            if found == 0 {
                problems.push(format!(
                    "{}: no `{level}.*.csv` annotation files in it or its view folders; give the activities_3s folder, a view folder or CSV files (and --level / --split-index)",
                    src.display()
                ));
            }
        } else {
            problems.push(format!("{}: not found", src.display()));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(inputs)
}

/// (split index, split name) of `midlevel.chunks_90.split_0.train.csv`.
fn split_of(name: &str) -> Option<(u32, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let i = parts.iter().position(|p| p.starts_with("split_"))?;
    let k = parts[i].strip_prefix("split_")?.parse().ok()?;
    let part = parts.get(i + 1).filter(|p| **p != "csv")?;
    Some((k, part.to_string()))
}

/// The CSVs of one view folder for `level`: the unsplit ones if any, else split K's parts.
fn select(dir: &Path, level: &str, k: u32) -> Vec<(PathBuf, Option<String>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<(PathBuf, String)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.to_string();
            (n.starts_with(&format!("{level}.")) && n.to_ascii_lowercase().ends_with(".csv"))
                .then_some((p, n))
        })
        .collect();
    names.sort();
    let unsplit: Vec<(PathBuf, Option<String>)> = names
        .iter()
        .filter(|(_, n)| split_of(n).is_none() && !n.contains(".split_"))
        .map(|(p, _)| (p.clone(), None))
        .collect();
    if !unsplit.is_empty() {
        return unsplit;
    }
    names
        .iter()
        .filter_map(|(p, n)| {
            let (i, part) = split_of(n)?;
            (i == k).then(|| (p.clone(), Some(part)))
        })
        .collect()
}

/// Does `dir` hold a CSV file?
fn has_csv(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.path().is_file()
                && e.path()
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("csv"))
        })
    })
}

/// The last component of `p`.
pub(super) fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The parent of `p` (empty at the root).
fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_files_are_recognised() {
        assert_eq!(
            split_of("midlevel.chunks_90.split_0.train.csv"),
            Some((0, "train".to_string()))
        );
        assert_eq!(split_of("midlevel.chunks_90.csv"), None);
    }
}
