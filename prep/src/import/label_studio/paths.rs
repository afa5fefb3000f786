//! Label Studio media URLs (local files, uploads, cloud storage, http) made into video
//! paths.

use std::path::{Path, PathBuf};

/// Where a task's video lives.
#[derive(Debug, PartialEq)]
pub(crate) enum VideoPath {
    /// Relative to the data root.
    Rel(String),
    /// An absolute file path (not a Label Studio URL).
    Abs(PathBuf),
}

/// A Label Studio media URL made into a path: `/data/local-files/?d=P` -> P,
/// `/data/upload/N/F` -> F, `s3://bucket/K` (gs, azure-blob) -> K, `http(s)://host/P` -> P;
/// percent-escapes decoded; an absolute file path stays absolute.
pub(crate) fn clean_ls_path(raw: &str) -> Result<VideoPath, String> {
    let trimmed = raw.trim();
    let mut s = trimmed.to_string();
    let mut url = false;
    for scheme in ["http://", "https://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest
                .find('/')
                .map(|i| rest[i..].to_string())
                .unwrap_or_default();
            url = true;
        }
    }
    for scheme in ["s3://", "gs://", "azure-blob://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest
                .split_once('/')
                .map(|(_, k)| k.to_string())
                .unwrap_or_default();
            url = true;
        }
    }
    if let Some(rest) = s.strip_prefix("file://") {
        s = rest.to_string();
    }
    if let Some(i) = s.find("/data/local-files/") {
        let rest = &s[i + "/data/local-files/".len()..];
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or(rest);
        match query.split('&').find_map(|kv| kv.strip_prefix("d=")) {
            Some(d) => s = d.to_string(),
            None => return Err(format!("`{raw}` is a local-files URL without `?d=PATH`")),
        }
        url = true;
    } else if let Some(rest) = s.strip_prefix("/data/upload/") {
        s = match rest.split_once('/') {
            Some((project, file)) if project.chars().all(|c| c.is_ascii_digit()) => {
                file.to_string()
            }
            _ => rest.to_string(),
        };
        url = true;
    }
    let s = percent_decode(&s).ok_or_else(|| format!("`{raw}` has a broken %-escape"))?;
    if !url && Path::new(&s).is_absolute() {
        return Ok(VideoPath::Abs(PathBuf::from(s)));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("`{raw}` leaves the data root (`..`)"));
                }
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return Err(format!("`{raw}` names no file"));
    }
    Ok(VideoPath::Rel(parts.join("/")))
}

/// Decode `%XX` escapes; `None` when one is broken or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_studio_urls_become_relative_paths() {
        let rel = |s: &str| match clean_ls_path(s).unwrap() {
            VideoPath::Rel(r) => r,
            VideoPath::Abs(p) => panic!("absolute {p:?}"),
        };
        assert_eq!(
            rel("/data/local-files/?d=videos/s1%20a.mp4"),
            "videos/s1 a.mp4"
        );
        assert_eq!(
            rel("http://localhost:8080/data/local-files/?d=cams/front/x.mp4"),
            "cams/front/x.mp4"
        );
        assert_eq!(rel("/data/upload/3/9f8e7d6c-clip.mp4"), "9f8e7d6c-clip.mp4");
        assert_eq!(rel("s3://bucket/raw/v.mp4"), "raw/v.mp4");
        assert_eq!(rel("videos/./a/../b.mp4"), "videos/b.mp4");
        assert_eq!(
            clean_ls_path("/abs/v.mp4").unwrap(),
            VideoPath::Abs(PathBuf::from("/abs/v.mp4"))
        );
        assert!(clean_ls_path("../v.mp4").unwrap_err().contains("leaves"));
        assert!(clean_ls_path("/data/local-files/?x=1")
            .unwrap_err()
            .contains("?d="));
    }
}
