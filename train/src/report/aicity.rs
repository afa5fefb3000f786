//! AI City Track 3 submissions: `video_id activity_id start end` lines (whole seconds),
//! with the ids from a `kind,name,id` CSV (`--aicity-ids`): `session,NAME,VIDEO_ID` and
//! `class,NAME,ACTIVITY_ID` lines, an optional `kind,name,id` header first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{IoAt, Result, TrainError};
use crate::report::segments::Segment;

/// The ids of a `--aicity-ids` file.
#[derive(Debug, Clone)]
pub struct AiCityIds {
    file: PathBuf,
    sessions: BTreeMap<String, String>,
    classes: BTreeMap<String, String>,
}

impl AiCityIds {
    /// Read `path`; errors name the file and line.
    pub fn read(path: &Path) -> Result<AiCityIds> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut ids = AiCityIds {
            file: path.to_path_buf(),
            sessions: BTreeMap::new(),
            classes: BTreeMap::new(),
        };
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        for (n, (i, line)) in lines.enumerate() {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            match f.as_slice() {
                ["kind", ..] if n == 0 => {}
                ["session", name, id] => {
                    drop(ids.sessions.insert(name.to_string(), id.to_string()))
                }
                ["class", name, id] => drop(ids.classes.insert(name.to_string(), id.to_string())),
                _ => {
                    return Err(TrainError::Other(format!(
                        "{}: line {}: `{line}` is not `session,NAME,ID` or `class,NAME,ID`",
                        path.display(),
                        i + 1
                    )))
                }
            }
        }
        Ok(ids)
    }

    /// Check that every session and class has an id, before any work is done.
    pub fn check<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a str>,
        classes: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        for (what, have, names) in [
            (
                "session",
                &self.sessions,
                sessions.into_iter().collect::<Vec<_>>(),
            ),
            ("class", &self.classes, classes.into_iter().collect()),
        ] {
            if let Some(name) = names.iter().find(|n| !have.contains_key(**n)) {
                return Err(TrainError::Other(format!(
                    "{}: no {what} `{name}`; add a line `{what},{name},ID`",
                    self.file.display()
                )));
            }
        }
        Ok(())
    }

    /// The submission lines of `segs` (ids checked by [`AiCityIds::check`]).
    pub fn lines(&self, segs: &[Segment]) -> String {
        let mut out = String::new();
        for g in segs {
            let (Some(video), Some(activity)) =
                (self.sessions.get(&g.session), self.classes.get(&g.label))
            else {
                continue;
            };
            out += &format!(
                "{video} {activity} {} {}\n",
                g.start.round() as i64,
                g.end.round() as i64
            );
        }
        out
    }
}
