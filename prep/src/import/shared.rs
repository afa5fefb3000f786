//! What the format readers share: the rows they produce ([`Imported`]), the run's
//! settings ([`Ctx`]), and helpers for paths, numbers, lists and file patterns.

use std::path::{Component, Path, PathBuf};

/// One manifest row: a view of a session.
#[derive(Debug, Clone)]
pub(crate) struct ViewRow {
    pub session: String,
    pub subject: String,
    pub view: String,
    /// Relative to the data root, `/`-separated.
    pub video: String,
    pub offset_s: Option<f64>,
    pub split: Option<String>,
    /// Where it came from, for messages (`file line N`, `file: [i].data`).
    pub at: String,
}

/// A segment's time span.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Span {
    /// Source frames of `view`, half-open.
    Frames { start: i64, end: i64, view: String },
    /// Seconds on the session clock, half-open.
    Seconds { start: f64, end: f64 },
}

impl Span {
    pub(crate) fn bounds(&self) -> (f64, f64) {
        match self {
            Span::Frames { start, end, .. } => (*start as f64, *end as f64),
            Span::Seconds { start, end } => (*start, *end),
        }
    }
    /// Frames of which view, or None for seconds: spans are comparable when equal.
    pub(crate) fn unit(&self) -> Option<&str> {
        match self {
            Span::Frames { view, .. } => Some(view),
            Span::Seconds { .. } => None,
        }
    }
    pub(crate) fn show(&self) -> String {
        match self {
            Span::Frames { start, end, view } => format!("frames {start}-{end} of `{view}`"),
            Span::Seconds { start, end } => format!("{}-{} s", num(*start), num(*end)),
        }
    }
}

/// One labelled segment.
#[derive(Debug, Clone)]
pub(crate) struct Seg {
    pub session: String,
    pub label: String,
    pub span: Span,
    /// Where it came from, for messages.
    pub at: String,
    /// Segments of one group may not overlap within a session (one label at a time).
    pub group: String,
}

/// What an importer read.
#[derive(Debug, Default)]
pub(crate) struct Imported {
    pub views: Vec<ViewRow>,
    pub segs: Vec<Seg>,
    pub warnings: Vec<String>,
    /// Annotation files read.
    pub files: usize,
}

/// Shared settings of a run, resolved from [`ImportArgs`].
pub(crate) struct Ctx {
    /// Absolute, normalised data root.
    pub root: PathBuf,
    /// `--views` filter.
    pub keep: Option<Vec<String>>,
}

impl Ctx {
    /// Is view `name` imported?
    pub fn keep_view(&self, name: &str) -> bool {
        self.keep
            .as_ref()
            .is_none_or(|k| k.iter().any(|v| v == name))
    }

    /// `video` (a file path) relative to the data root, `/`-separated.
    pub fn video_rel(&self, video: &Path) -> Result<String, String> {
        let v = absolute(video);
        if let Ok(r) = v.strip_prefix(&self.root) {
            return Ok(slash(r));
        }
        // Symbolic links (e.g. /tmp -> /private/tmp): compare canonical forms too.
        let canon_root = self.root.canonicalize().ok();
        let canon_v = v.canonicalize().ok().or_else(|| {
            let parent = v.parent()?.canonicalize().ok()?;
            Some(parent.join(v.file_name()?))
        });
        for r in [Some(&self.root), canon_root.as_ref()]
            .into_iter()
            .flatten()
        {
            for p in [Some(&v), canon_v.as_ref()].into_iter().flatten() {
                if let Ok(rel) = p.strip_prefix(r) {
                    return Ok(slash(rel));
                }
            }
        }
        Err(format!(
            "video {} is not inside the data root {}",
            v.display(),
            self.root.display()
        ))
    }
}

/// `p` made absolute (against the current folder) and lexically normalised.
pub(crate) fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn slash(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// A number for CSV and messages: integers without a fraction, else up to 6 decimals.
pub(crate) fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    }
}

/// Parse `a=b,c=d` into ordered pairs.
pub(crate) fn parse_view_map(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((a, b)) = part.split_once('=') else {
            return Err(format!(
                "--view-map: `{part}` is not SOURCE=NAME; write e.g. --view-map kinect_color=front,inner_mirror=mirror"
            ));
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() || b.is_empty() {
            return Err(format!("--view-map: `{part}` has an empty side"));
        }
        if out.iter().any(|(x, _): &(String, String)| x == a) {
            return Err(format!("--view-map: `{a}` is mapped twice"));
        }
        out.push((a.to_string(), b.to_string()));
    }
    Ok(out)
}

/// A comma-separated list.
pub(crate) fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Files to read: every file given, and in each folder given the files `want` accepts
/// (recursively when `deep`), sorted.
pub(crate) fn collect_files(
    sources: &[PathBuf],
    deep: bool,
    want: &dyn Fn(&Path) -> bool,
) -> Result<Vec<(PathBuf, bool)>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for src in sources {
        if src.is_file() {
            out.push((src.clone(), true));
        } else if src.is_dir() {
            let mut found = Vec::new();
            walk(src, deep, want, &mut found);
            found.sort();
            if found.is_empty() {
                problems.push(format!(
                    "{}: no annotation files found in this folder; give the files or the right folder",
                    src.display()
                ));
            }
            out.extend(found.into_iter().map(|f| (f, false)));
        } else {
            problems.push(format!("{}: not found", src.display()));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn walk(dir: &Path, deep: bool, want: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if deep {
                walk(&p, deep, want, out);
            }
        } else if want(&p) {
            out.push(p);
        }
    }
}

/// Fill a `{name}` pattern; unknown placeholders are an error.
pub(crate) fn fill_pattern(pattern: &str, values: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(format!("--video-pattern `{pattern}`: a `{{` is not closed"));
        };
        let key = &after[..j];
        match values.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => out.push_str(v),
            None => {
                return Err(format!(
                    "--video-pattern `{pattern}`: unknown placeholder {{{key}}}; use {}",
                    values
                        .iter()
                        .map(|(k, _)| format!("{{{k}}}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The deepest folder that holds all `paths` (for a `--data-root` suggestion).
pub(crate) fn common_folder(paths: &[PathBuf]) -> Option<PathBuf> {
    let mut it = paths.iter();
    let first = absolute(it.next()?);
    let mut common: PathBuf = first.parent()?.to_path_buf();
    for p in it {
        let p = absolute(p);
        while !p.starts_with(&common) {
            if !common.pop() {
                return None;
            }
        }
    }
    Some(common)
}

/// One error for all videos outside the data root (`(at, error)` each), suggesting a
/// --data-root that holds `all_videos`.
pub(crate) fn outside_root_problem(
    outside: &[(String, String)],
    all_videos: &[PathBuf],
) -> Option<String> {
    let (at, err) = outside.first()?;
    let hint = common_folder(all_videos)
        .map(|c| format!("--data-root {}", c.display()))
        .unwrap_or_else(|| "--data-root DIR".into());
    let more = match outside.len() {
        1 => String::new(),
        n => format!(" (and {} more video(s))", n - 1),
    };
    Some(format!(
        "{at}: {err}{more}; pass {hint} (a folder holding all videos; give prep build the same --data-root), or put --out there"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_short() {
        assert_eq!(num(7.0), "7");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(1.0 / 29.76), "0.033602");
        assert_eq!(num(-0.0000001), "0");
    }

    #[test]
    fn view_maps_parse_in_order() {
        let m = parse_view_map("kinect_color=front, inner_mirror=mirror").unwrap();
        assert_eq!(
            m,
            vec![
                ("kinect_color".to_string(), "front".to_string()),
                ("inner_mirror".to_string(), "mirror".to_string())
            ]
        );
        assert!(parse_view_map("a").unwrap_err().contains("SOURCE=NAME"));
        assert!(parse_view_map("a=b,a=c").unwrap_err().contains("twice"));
    }

    #[test]
    fn patterns_fill_and_reject_unknown_placeholders() {
        let v = [
            ("view", "kinect_color"),
            ("file_id", "vp1/run1.kinect_color"),
        ];
        assert_eq!(
            fill_pattern("{view}/{file_id}.mp4", &v).unwrap(),
            "kinect_color/vp1/run1.kinect_color.mp4"
        );
        assert!(fill_pattern("{nope}.mp4", &v)
            .unwrap_err()
            .contains("unknown placeholder {nope}"));
        assert!(fill_pattern("{view.mp4", &v)
            .unwrap_err()
            .contains("not closed"));
    }

    #[test]
    fn video_paths_are_relative_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx {
            root: absolute(dir.path()),
            keep: None,
        };
        assert_eq!(
            ctx.video_rel(&dir.path().join("a/../b/c.mp4")).unwrap(),
            "b/c.mp4"
        );
        assert!(ctx
            .video_rel(Path::new("/elsewhere/c.mp4"))
            .unwrap_err()
            .contains("not inside the data root"));
    }

    #[test]
    fn common_folder_of_paths() {
        let c = common_folder(&[PathBuf::from("/d/a/x.mp4"), PathBuf::from("/d/b/y.mp4")]);
        assert_eq!(c, Some(PathBuf::from("/d")));
    }
}
