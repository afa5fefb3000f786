//! What `train bench-memory` prints: the Markdown table (memory, time and gradient
//! agreement per technique, with ratios to each backbone's reference row) and the target
//! checks.

use super::{BenchMemory, BenchRow, Technique, ACCUMULATE};
use crate::optim::precision::Precision;
use mvdrive_common::bytes::format_bytes;

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y}-{m:02}-{d:02}")
}

impl BenchMemory {
    fn reference(&self, i: usize) -> Option<&BenchRow> {
        let row = &self.rows[i];
        let want = match row.technique {
            Technique::Baseline => return None,
            Technique::Batch1Accumulate => Technique::Batch1,
            _ => Technique::Baseline,
        };
        self.rows
            .iter()
            .find(|r| r.backbone == row.backbone && r.technique == want)
    }

    fn find(&self, backbone: &str, t: Technique) -> Option<&BenchRow> {
        self.rows
            .iter()
            .find(|r| r.backbone == backbone && r.technique == t)
    }

    fn cuda(&self) -> bool {
        self.device.starts_with("Cuda")
    }

    /// The Markdown report: the table, notes and the target checks.
    pub fn markdown(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let (h, w, t, v) = self.input;
        let mut s = format!(
            "#### Memory techniques (measured {}, {}, {cpus} CPUs)\n\n",
            today(),
            if self.cuda() {
                format!("device {}", self.device)
            } else {
                "CPU".to_string()
            }
        );
        s += &format!(
            "Input {h}x{w}, T={t}, {v} view(s); baseline batch {}; {} timed optimizer steps per row after one warm-up step (half as many for the accumulation row), each row in a fresh process. Peak memory: {}. \"x ref\": ratio to the baseline (to `batch 1` for the accumulation row). Activations (est.): peak memory less the model state (weights, gradients, AdamW moments, and the bf16 copy).\n\n",
            self.batch,
            self.steps,
            if self.cuda() {
                "device memory in use above its value before the model was built (cudaMemGetInfo, sampled every ms)"
            } else {
                "resident memory (VmHWM) above the process's resident memory before the model was built"
            }
        );
        s += "| backbone | setting | peak memory | x ref | activations (est.) | s/step | x ref | gradient agreement |\n";
        s += "| --- | --- | --- | --- | --- | --- | --- | --- |\n";
        for (i, r) in self.rows.iter().enumerate() {
            let reference = self.reference(i);
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            let (mem, act, secs) = match &r.report {
                Ok(_) => (
                    r.memory().map_or("-".into(), format_bytes),
                    r.activations().map_or("-".into(), format_bytes),
                    r.seconds().map_or("-".into(), |x| format!("{x:.2}")),
                ),
                Err(e) => (
                    format!(
                        "failed: {}",
                        e.lines().next().unwrap_or("").replace('|', "/")
                    ),
                    "-".into(),
                    "-".into(),
                ),
            };
            let grad = match &r.grad {
                None => "(reference)".to_string(),
                Some(Ok(g)) if r.technique == Technique::Batch1Accumulate => {
                    format!("{g:.1e} (8x1 vs 1x8)")
                }
                Some(Ok(g)) => format!("{g:.1e}"),
                Some(Err(e)) => format!(
                    "failed: {}",
                    e.lines().next().unwrap_or("").replace('|', "/")
                ),
            };
            let grad = if r.technique == Technique::Batch1 {
                "-".into()
            } else {
                grad
            };
            let label = match (&r.report, r.technique) {
                (Ok(rep), Technique::Baseline) if rep.parameters > 0 => format!(
                    "{}, {:.2} M parameters",
                    r.technique.label(self.batch),
                    rep.parameters as f64 / 1e6
                ),
                _ => r.technique.label(self.batch),
            };
            s += &format!(
                "| {} | {label} | {mem} | {} | {act} | {secs} | {} | {grad} |\n",
                r.backbone,
                ratio(
                    r.memory().map(|x| x as f64),
                    reference.and_then(|x| x.memory()).map(|x| x as f64)
                ),
                ratio(r.seconds(), reference.and_then(|x| x.seconds())),
            );
        }
        s += "\nGradient agreement: `max |grad_on - grad_off| / max |grad_off|` over all parameters, one batch, same initialisation and dropout seeds. Checkpointing recomputes the same float operations, so it agrees to float32 rounding; mixed precision shows its rounding error. Accumulation (one batch of 8 clips against 8 micro-batches of 1 of the same clips, dropout off) agrees to rounding only for models without BatchNorm: with BatchNorm each micro-batch is normalised with its own statistics.\n\n";
        s += "Targets:\n\n";
        for line in self.targets() {
            s += &format!("- {line}\n");
        }
        s
    }

    /// The target checks, one `PASS`/`FAIL`/`SKIP`/`info` line each.
    pub fn targets(&self) -> Vec<String> {
        let mut out = Vec::new();
        let backbones: Vec<&str> = {
            let mut b: Vec<&str> = Vec::new();
            for r in &self.rows {
                if !b.contains(&r.backbone.as_str()) {
                    b.push(&r.backbone);
                }
            }
            b
        };
        let pair = |b: &str, t: Technique, reference: Technique| {
            let on = self.find(b, t)?;
            let off = self.find(b, reference)?;
            Some((
                on.memory()? as f64 / off.memory()?.max(1) as f64,
                on.seconds()? / off.seconds()?,
            ))
        };
        // Checkpointing: >= 40% less memory on the transformer at <= 35% more time.
        let ckpt = |b: &str| pair(b, Technique::Checkpointing, Technique::Baseline);
        match ckpt("transformer") {
            Some((m, t)) => out.push(format!(
                "{}: checkpointing on the transformer: {:+.0}% peak training memory (target <= -40%), {:+.0}% step time (target <= +35%)",
                if m <= 0.60 && t <= 1.35 { "PASS" } else { "FAIL" },
                (m - 1.0) * 100.0,
                (t - 1.0) * 100.0
            )),
            None => out.push(format!(
                "SKIP: checkpointing target (transformer): the transformer was not measured (measured: {})",
                backbones.join(", ")
            )),
        }
        for b in &backbones {
            if *b == "transformer" {
                continue;
            }
            if let Some((m, t)) = ckpt(b) {
                out.push(format!(
                    "info: checkpointing on {b}: {:+.0}% peak training memory, {:+.0}% step time",
                    (m - 1.0) * 100.0,
                    (t - 1.0) * 100.0
                ));
            }
        }
        // Accumulation: batch 1 x 8 peaks within 10% of batch 1.
        for b in &backbones {
            if let Some((m, _)) = pair(b, Technique::Batch1Accumulate, Technique::Batch1) {
                out.push(format!(
                    "{}: {b}: batch 1 x accumulate {ACCUMULATE} peaks at {:.2}x of batch 1 (target within 10%)",
                    if (m - 1.0).abs() <= 0.10 { "PASS" } else { "FAIL" },
                    m
                ));
            }
        }
        // Mixed precision halves activation memory (CUDA).
        for b in &backbones {
            let base = self
                .find(b, Technique::Baseline)
                .and_then(BenchRow::activations);
            for p in [Precision::Fp16Mixed, Precision::Bf16Mixed] {
                let Some(r) = self
                    .find(b, Technique::Precision(p))
                    .and_then(BenchRow::activations)
                else {
                    continue;
                };
                let Some(base) = base else { continue };
                let ratio = r as f64 / base.max(1) as f64;
                if self.cuda() {
                    out.push(format!(
                        "{}: {b}: {} activations (est.) {:.2}x of fp32 (target <= 0.55x, i.e. halved)",
                        if ratio <= 0.55 { "PASS" } else { "FAIL" },
                        p.name(),
                        ratio
                    ));
                } else {
                    out.push(format!(
                        "SKIP: {b}: {} halving activation memory is a CUDA target; on this CPU run, activations (est.) {:.2}x of fp32",
                        p.name(),
                        ratio
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
