//! The one progress-bar style of the workspace (indicatif): elapsed time, a wide bar
//! drawn with `=> `, position, rate and ETA. Bars are hidden with `--quiet`, and indicatif
//! draws nothing when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// The template of `train fit`'s per-epoch bar: set the epoch (`3/10`) with
/// [`ProgressBar::set_prefix`] and a running loss with [`ProgressBar::set_message`].
pub const EPOCH_TEMPLATE: &str =
    "epoch {prefix} [{elapsed_precise}] [{wide_bar}] {pos}/{len} ({per_sec}, ETA {eta}) {msg}";

/// The template of [`bar`] for items named `unit` (e.g. "frames").
pub fn unit_template(unit: &str) -> String {
    format!(
        "{{spinner}} {{msg}} [{{elapsed_precise}}] [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"
    )
}

/// The workspace style with an indicatif `template`; indicatif's default style if the
/// template does not parse.
pub fn style(template: &str) -> ProgressStyle {
    match ProgressStyle::with_template(template) {
        Ok(style) => style.progress_chars("=> "),
        Err(_) => ProgressStyle::default_bar(),
    }
}

/// A bar over `total` steps drawn with `template` (see [`style`]); hidden when `quiet`.
pub fn bar_with(total: u64, template: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total).with_style(style(template))
}

/// A bar over `total` units named `unit` (e.g. "frames"), with rate and ETA; hidden when
/// `quiet`.
pub fn bar(total: u64, unit: &str, quiet: bool) -> ProgressBar {
    bar_with(total, &unit_template(unit), quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert!(ProgressStyle::with_template(EPOCH_TEMPLATE).is_ok());
        assert!(ProgressStyle::with_template(&unit_template("frames")).is_ok());
        assert!(bar(10, "frames", true).is_hidden());
    }
}
