//! The model summary printed at the start of `train fit`: parameters per top-level block,
//! in the style of PyTorch Lightning.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use tch::nn;

/// Lightning's `get_human_readable_count`: `28.2 K`, `221 K`, `33.4 M`.
fn human_count(n: i64) -> String {
    const LABELS: [&str; 5] = ["", "K", "M", "B", "T"];
    if n <= 0 {
        return format!("{n}");
    }
    let digits = (n as f64).log10().floor() as i32 + 1;
    let groups = (((digits + 2) / 3) as usize).min(LABELS.len());
    let index = groups - 1;
    let x = n as f64 / 10f64.powi(3 * index as i32);
    if index < 1 {
        format!("{n}")
    } else if x >= 100.0 {
        format!("{} {}", x as i64, LABELS[index])
    } else {
        format!("{x:.1} {}", LABELS[index])
    }
}

fn top_level_rank(name: &str) -> (u32, String) {
    let rank = match name {
        "stem" => 0,
        "fc" => 1000,
        n => n
            .strip_prefix("layer")
            .and_then(|k| k.parse::<u32>().ok())
            .map_or(500, |k| 1 + k),
    };
    (rank, name.to_string())
}

/// A PyTorch-Lightning-style model summary of a VarStore: one row per top-level block
/// (first component of the variable names: `stem`, `layer1`..`layer4`, `fc`) with its
/// parameter count and size in MB (f32, 1 MB = 10^6 bytes, as Lightning), then totals.
/// Parameters are the VarStore's trainable variables (frozen ones count as
/// non-trainable); BatchNorm running statistics are buffers and, as in Lightning, are not
/// counted as parameters (their number is shown on a separate line).
pub fn summary(vs: &nn::VarStore) -> String {
    let params: HashSet<usize> = vs
        .trainable_variables()
        .iter()
        .map(|t| t.data_ptr() as usize)
        .collect();
    // name -> (params, trainable params, buffer elements)
    let mut rows: BTreeMap<(u32, String), (i64, i64, i64)> = BTreeMap::new();
    for (name, t) in vs.variables() {
        let top = name.split('.').next().unwrap_or(&name).to_string();
        let entry = rows.entry(top_level_rank(&top)).or_default();
        let n = t.numel() as i64;
        if params.contains(&(t.data_ptr() as usize)) {
            entry.0 += n;
            if t.requires_grad() {
                entry.1 += n;
            }
        } else {
            entry.2 += n;
        }
    }
    let mb = |n: i64| n as f64 * 4.0 / 1e6;
    let name_w = rows.keys().map(|(_, n)| n.len()).max().unwrap_or(4).max(4);
    let idx_w = rows.len().saturating_sub(1).to_string().len();
    let header = format!(
        "{:>idx_w$} | {:<name_w$} | {:>8} | {:>9}",
        "", "Name", "Params", "Size (MB)"
    );
    let rule = "-".repeat(header.len());
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{rule}");
    let (mut total, mut trainable, mut buffers) = (0i64, 0i64, 0i64);
    for (i, ((_, name), (p, tr, buf))) in rows.iter().enumerate() {
        let _ = writeln!(
            out,
            "{i:>idx_w$} | {name:<name_w$} | {:>8} | {:>9.3}",
            human_count(*p),
            mb(*p)
        );
        total += p;
        trainable += tr;
        buffers += buf;
    }
    let _ = writeln!(out, "{rule}");
    let line = |n: i64, what: &str| format!("{:<10}{what} ({n})\n", human_count(n));
    out.push_str(&line(trainable, "Trainable params"));
    out.push_str(&line(total - trainable, "Non-trainable params"));
    out.push_str(&line(total, "Total params"));
    let _ = writeln!(
        out,
        "{:<10.3}Total estimated model params size (MB)",
        mb(total)
    );
    let _ = writeln!(
        out,
        "{:<10}Buffer elements (BatchNorm running stats) ({buffers})",
        human_count(buffers)
    );
    out
}
