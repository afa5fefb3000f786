//! The cells and names of an AI City user CSV: times, class labels, camera views, user
//! ids and blocks in file names, the `--labels-map` file, and the video file of a row.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `H:MM:SS`, `MM:SS` or seconds (fractions allowed) -> seconds.
pub(crate) fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    let whole = |p: &str| -> Option<f64> {
        (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            .then(|| p.parse::<f64>().ok())
            .flatten()
    };
    let secs = |p: &str| -> Option<f64> {
        let ok = !p.is_empty()
            && p.chars().all(|c| c.is_ascii_digit() || c == '.')
            && p.chars().filter(|c| *c == '.').count() <= 1
            && !p.starts_with('.');
        ok.then(|| p.parse::<f64>().ok()).flatten()
    };
    let t = match parts.as_slice() {
        [s] => secs(s)?,
        [m, s] => {
            let s = secs(s).filter(|s| *s < 60.0)?;
            whole(m)? * 60.0 + s
        }
        [h, m, s] => {
            let s = secs(s).filter(|s| *s < 60.0)?;
            let m = whole(m).filter(|m| *m < 60.0)?;
            whole(h)? * 3600.0 + m * 60.0 + s
        }
        _ => return None,
    };
    t.is_finite().then_some(t)
}

/// `Class 3` / `class_3` / `3` -> Some(3); `NA` -> None; anything else is an error.
pub(crate) fn parse_label(s: &str) -> Result<Option<u32>, ()> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("na") || t.eq_ignore_ascii_case("n/a") {
        return Ok(None);
    }
    let lower = t.to_ascii_lowercase();
    let rest = lower.strip_prefix("class").unwrap_or(&lower);
    let rest = rest.trim().trim_start_matches(['_', '-', ' ']);
    rest.parse::<u32>().map(Some).map_err(|_| ())
}

/// A camera view name in our form: lower case, `_` between words, known spellings merged.
pub(crate) fn normalize_view(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    match out.as_str() {
        "rearview" | "rear" | "rear_view_mirror" => "rear_view".into(),
        "rightside_window" | "right_side" | "rightside" | "right" | "right_window" => {
            "right_side_window".into()
        }
        "dash" | "dashboard_camera" => "dashboard".into(),
        _ => out,
    }
}

/// The digits that follow `user_id_` (any case) in `s`.
pub(crate) fn user_id_in(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    let i = lower
        .find("user_id_")
        .map(|i| i + "user_id_".len())
        .or_else(|| lower.find("userid_").map(|i| i + "userid_".len()))?;
    let digits: String = lower[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// The number that ends a file name (`..._NoAudio_3` -> 3), extension ignored.
pub(crate) fn block_of(filename: &str) -> Option<String> {
    let stem = match filename.rsplit_once('.') {
        Some((s, ext)) if ext.chars().all(char::is_alphanumeric) && ext.len() <= 4 => s,
        _ => filename,
    };
    let (_, last) = stem.rsplit_once('_')?;
    (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit())).then(|| last.to_string())
}

/// The view a file name starts with (`Rear_view_user_id_1_NoAudio_0` -> `rear_view`).
pub(crate) fn view_from_filename(filename: &str) -> Option<String> {
    let lower = filename.to_ascii_lowercase();
    let i = lower.find("_user")?;
    let v = normalize_view(&filename[..i]);
    (!v.is_empty()).then_some(v)
}

/// `--labels-map`: `N,name` (or `Class N,name`) lines, or one name per line from class 0.
pub(crate) fn read_labels_map(path: &Path) -> Result<HashMap<u32, String>, Vec<String>> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{shown}: cannot be read: {e}")])?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().trim_start_matches('\u{feff}')))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let keyed = lines.iter().any(|(_, l)| l.contains(','));
    let mut map = HashMap::new();
    let mut problems = Vec::new();
    for (k, (n, l)) in lines.iter().enumerate() {
        let (class, name) = if keyed {
            let Some((key, name)) = l.split_once(',') else {
                problems.push(format!(
                    "{shown} line {n}: expected `N,name` like the other lines"
                ));
                continue;
            };
            match parse_label(key) {
                Ok(Some(c)) => (c, name.trim()),
                _ => {
                    // A header line such as `id,name` is skipped.
                    if k == 0 {
                        continue;
                    }
                    problems.push(format!(
                        "{shown} line {n}: `{}` is not a class number (write `3,texting_right` or `Class 3,texting_right`)",
                        key.trim()
                    ));
                    continue;
                }
            }
        } else {
            (k as u32, *l)
        };
        if name.is_empty() {
            problems.push(format!("{shown} line {n}: the class name is empty"));
            continue;
        }
        if map.insert(class, name.to_string()).is_some() {
            problems.push(format!("{shown} line {n}: class {class} is named twice"));
        }
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

/// The video file of `filename` in `dir`: `filename + ext`; when absent, a file of the
/// folder with that name in another letter case, or with `_NoAudio` before the block
/// number (`Dashboard_user_id_1_0` -> `Dashboard_user_id_1_NoAudio_0`).
pub(crate) fn video_file(dir: &Path, filename: &str, ext: &str) -> PathBuf {
    let lower = filename.to_ascii_lowercase();
    let stem = if lower.ends_with(&ext.to_ascii_lowercase()) {
        &filename[..filename.len() - ext.len()]
    } else {
        filename
    };
    let name = format!("{stem}{ext}");
    let exact = dir.join(&name);
    if exact.is_file() {
        return exact;
    }
    let mut wanted = vec![name.clone()];
    if let Some((head, block)) = stem.rsplit_once('_') {
        if !head.to_ascii_lowercase().ends_with("_noaudio") {
            wanted.push(format!("{head}_NoAudio_{block}{ext}"));
        }
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for w in &wanted {
            for p in &files {
                let n = p.file_name().map(|n| n.to_string_lossy().into_owned());
                if n.is_some_and(|n| n.eq_ignore_ascii_case(w)) && p.is_file() {
                    return p.clone();
                }
            }
        }
    }
    exact
}

/// The file name of `p` (lossy UTF-8; empty when it has none).
pub(crate) fn name_string(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        assert_eq!(parse_time("0:01:05"), Some(65.0));
        assert_eq!(parse_time(" 1:00:00 "), Some(3600.0));
        assert_eq!(parse_time("02:07"), Some(127.0));
        assert_eq!(parse_time("7.5"), Some(7.5));
        assert_eq!(parse_time("0:00:07.25"), Some(7.25));
        for bad in [
            "", "1:2:3:4", "0:61:00", "0:00:60", "a:00", "-3", "1e3", "0:0x:01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_parse() {
        assert_eq!(parse_label("Class 3"), Ok(Some(3)));
        assert_eq!(parse_label("class_12"), Ok(Some(12)));
        assert_eq!(parse_label(" 0 "), Ok(Some(0)));
        assert_eq!(parse_label("NA"), Ok(None));
        assert_eq!(parse_label("Class X"), Err(()));
    }

    #[test]
    fn views_normalise() {
        assert_eq!(normalize_view("Dashboard"), "dashboard");
        assert_eq!(normalize_view("Rear_view"), "rear_view");
        assert_eq!(normalize_view("Rearview"), "rear_view");
        assert_eq!(normalize_view(" Right side window "), "right_side_window");
        assert_eq!(normalize_view("Rightside_window"), "right_side_window");
    }

    #[test]
    fn file_names_give_user_block_and_view() {
        let f = "Dashboard_User_id_24026_NoAudio_3";
        assert_eq!(user_id_in(f).as_deref(), Some("24026"));
        assert_eq!(block_of(f).as_deref(), Some("3"));
        assert_eq!(
            block_of("Rear_view_user_id_1_NoAudio_5.MP4").as_deref(),
            Some("5")
        );
        assert_eq!(
            view_from_filename("Rear_view_user_id_1_NoAudio_5").as_deref(),
            Some("rear_view")
        );
    }
}
