//! Progress bars (indicatif) with rate and ETA; hidden with `--quiet` or when stderr is
//! not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` units named `unit` (e.g. "frames").
pub fn bar(total: u64, unit: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let template = format!(
        "{{spinner}} {{msg}} [{{elapsed_precise}}] [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}
