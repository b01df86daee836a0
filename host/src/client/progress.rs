//! Progress bars for long commands (`publish`, `plugins replay`,
//! `plugins rebuild --follow`).

/// A progress bar on stderr, drawn only when it is a terminal (so scripts
/// and logs get the final line alone).
pub fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} ({{eta}} left) {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
