//! The one progress bar every long loop shows (scoring, frozen-state encoding, training steps,
//! labelling): one look, drawn on stderr, hidden on request (`--quiet`, `--json`).

use indicatif::ProgressStyle;

/// Re-exported so callers name the bar's type without depending on indicatif themselves.
pub use indicatif::ProgressBar;

/// A bar of `len` steps labelled `label` (e.g. "scoring"), or a hidden one when `visible` is
/// false. indicatif also hides it when stderr is not a terminal, so logs stay clean. The trailing
/// `{msg}` shows what a caller sets with `set_message` (e.g. the running loss).
pub fn bar(len: u64, label: &str, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template = format!("{label} {{bar:30}} {{pos}}/{{len}} [{{elapsed}}<{{eta}}] {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_not_visible_and_sized_when_visible() {
        assert!(bar(10, "scoring", false).is_hidden());
        let shown = bar(10, "a {label} with braces", true);
        assert_eq!(shown.length(), Some(10));
        shown.inc(3);
        assert_eq!(shown.position(), 3);
    }
}
