//! What `train plan` prints: the table of measured settings, the recommendation as
//! `train fit` overrides, and the error when nothing fits.

use std::path::Path;

use super::{Plan, Verdict};
use mvdrive_common::bytes::format_bytes;

use crate::optim::recompute::CheckpointSegments;

const SHRINK: &str = "lower data.img_size / data.uniform_temporal_subsample_num";

impl Plan {
    /// The table of every candidate run (plain text, one row per setting).
    pub fn table(&self) -> String {
        let mut lines = vec![{
            let mut h = vec![
                "batch_size".to_string(),
                "accum".into(),
                "precision".into(),
                "ckpt".into(),
                "img_size".into(),
                "T".into(),
                "peak RAM".into(),
            ];
            if self.cuda {
                h.push("peak VRAM".into());
            }
            h.push("s/step".into());
            h.push("fits".into());
            h
        }];
        for (i, r) in self.rows.iter().enumerate() {
            let c = &r.candidate;
            let ram = match (r.peak_ram, r.complete) {
                (Some(b), true) => format_bytes(b),
                (Some(b), false) => format!("> {}", format_bytes(b)),
                (None, _) => "-".into(),
            };
            let mut cells = vec![
                c.batch_size.to_string(),
                c.accumulate.to_string(),
                c.precision.name().to_string(),
                match (c.checkpointing, c.segments) {
                    (false, _) => "false".to_string(),
                    (true, CheckpointSegments::All) => "true".to_string(),
                    (true, seg) => seg.to_string(),
                },
                c.img_size.clone(),
                c.frames.to_string(),
                ram,
            ];
            if self.cuda {
                cells.push(r.peak_vram.map_or("-".into(), format_bytes));
            }
            cells.push(r.seconds_per_step.map_or("-".into(), |s| format!("{s:.3}")));
            let verdict = match &r.verdict {
                Verdict::Fits if Some(i) == self.recommended => "yes  <- recommended".into(),
                Verdict::Fits => "yes".to_string(),
                Verdict::OverRam if r.complete => "no: over --budget-ram".into(),
                Verdict::OverRam => "no: over --budget-ram (stopped)".into(),
                Verdict::OverVram => "no: over --budget-vram".into(),
                Verdict::OutOfMemory(why) => format!("no: out of memory ({why})"),
                Verdict::Failed(e) => format!("error: {}", e.lines().next().unwrap_or("")),
            };
            cells.push(verdict);
            lines.push(cells);
        }
        let n = lines[0].len();
        let widths: Vec<usize> = (0..n)
            .map(|j| {
                lines
                    .iter()
                    .map(|l| l[j].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (k, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    if j + 1 == n {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[j])
                    }
                })
                .collect();
            out += cells.join("  ").trim_end();
            out.push('\n');
            if k == 0 {
                let w = widths[..n - 1].iter().sum::<usize>() + 2 * (n - 1) + "fits".len();
                out += &"-".repeat(w);
                out.push('\n');
            }
        }
        out
    }

    /// The recommendation, ready to paste (or `None` when nothing fits).
    pub fn recommendation(&self, cache: &Path, user_overrides: &[String]) -> Option<String> {
        let r = &self.rows[self.recommended?];
        let c = &r.candidate;
        let mut keys = c.memory_overrides();
        if (c.img_size.clone(), c.frames) != self.configured {
            keys.push(format!("data.img_size={}", c.img_size));
            keys.push(format!("data.uniform_temporal_subsample_num={}", c.frames));
        }
        let mut s = format!(
            "recommended (fastest that fits, effective batch {} = {} x {}): {:.3} s/step, peak RAM {}{}\n",
            self.effective_batch,
            c.batch_size,
            c.accumulate,
            r.seconds_per_step.unwrap_or(f64::NAN),
            r.peak_ram.map_or("-".into(), format_bytes),
            r.peak_vram
                .map_or(String::new(), |v| format!(", peak VRAM {}", format_bytes(v)))
        );
        if let Some(n) = &self.note {
            s += &format!("note: {n}\n");
        }
        s += &format!("  {}\n", keys.join(" "));
        let mut cmd = vec![format!("train fit --cache {}", cache.display())];
        // The user's own settings, without the ones the plan decides.
        let decided: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.split_once('=').map(|(k, _)| k))
            .collect();
        cmd.extend(
            user_overrides
                .iter()
                .filter(|o| {
                    !o.split_once('=')
                        .is_some_and(|(k, _)| decided.contains(&k.trim()))
                })
                .cloned(),
        );
        cmd.extend(keys);
        s += &format!("  {}\n", cmd.join(" "));
        Some(s)
    }

    /// When nothing fits: the error, naming the budget and what is needed.
    pub fn no_fit_error(&self) -> Option<String> {
        if self.recommended.is_some() {
            return None;
        }
        let over_vram = self.rows.iter().any(|r| r.verdict == Verdict::OverVram);
        if over_vram {
            if let (Some(b), Some(r)) = (
                self.budget_vram,
                self.rows
                    .iter()
                    .filter(|r| r.peak_vram.is_some())
                    .min_by_key(|r| r.peak_vram),
            ) {
                let need = r.peak_vram.unwrap_or(0);
                return Some(format!(
                    "no setting fits --budget-vram {}: the smallest measured device peak was {} ({}); raise the budget to at least {}, or {SHRINK}",
                    format_bytes(b),
                    format_bytes(need),
                    r.candidate.memory_overrides().join(" "),
                    format_bytes(need)
                ));
            }
        }
        let budget = self.budget_ram.map_or("the budget".to_string(), |b| {
            format!("--budget-ram {}", format_bytes(b))
        });
        let complete = self
            .rows
            .iter()
            .chain(self.needed.as_ref().map(|(r, _)| r))
            .filter(|r| r.complete)
            .min_by_key(|r| r.peak_ram);
        if let Some(r) = complete {
            let need = r.peak_ram.unwrap_or(0);
            return Some(format!(
                "no setting fits {budget}: the smallest measured peak was {} ({}{}); raise the budget to at least {}, or {SHRINK}",
                format_bytes(need),
                r.candidate.memory_overrides().join(" "),
                if (r.candidate.img_size.clone(), r.candidate.frames) != self.configured {
                    format!(
                        " data.img_size={} data.uniform_temporal_subsample_num={}",
                        r.candidate.img_size, r.candidate.frames
                    )
                } else {
                    String::new()
                },
                format_bytes(need)
            ));
        }
        let seen = self
            .rows
            .iter()
            .chain(self.needed.as_ref().map(|(r, _)| r))
            .filter_map(|r| r.peak_ram)
            .max()
            .unwrap_or(0);
        if let Some(r) = self
            .rows
            .iter()
            .find(|r| matches!(r.verdict, Verdict::OutOfMemory(_)))
        {
            if let Verdict::OutOfMemory(why) = &r.verdict {
                return Some(format!(
                    "no setting fits {budget}: every setting ran out of memory (e.g. {}: {why}); {SHRINK}",
                    r.candidate.memory_overrides().join(" ")
                ));
            }
        }
        Some(format!(
            "no setting fits {budget}: even the leanest setting needs more than {} (more than this machine has available); {SHRINK}",
            format_bytes(seen)
        ))
    }
}
