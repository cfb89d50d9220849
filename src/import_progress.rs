//! The `import customers` command's terminal side: a progress bar on stderr and the report
//! on stdout.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use referdesk::domain::imports::{Progress, Report};

/// One bar, restarted for each step of the import. Drawn on stderr, and only when stderr
/// is a terminal (indicatif hides it otherwise), so logs and scripts see no bar.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        Bar(bar)
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn step(&self, label: &str, total: u64) {
        let style = if total > 0 {
            ProgressStyle::with_template("{msg:<48} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
        } else {
            ProgressStyle::with_template("{msg:<48} {spinner} {elapsed}")
        };
        if let Ok(style) = style {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.reset();
        self.0.set_length(total);
        self.0.set_position(0);
        self.0.set_message(label.to_string());
        self.0.enable_steady_tick(std::time::Duration::from_millis(200));
    }

    fn done(&self, done: u64) {
        if self.0.length().is_some_and(|length| done > length) {
            self.0.set_length(done);
        }
        self.0.set_position(done);
    }
}

/// The report as printed: a summary line, then one line per refusal
/// (`line N, COLUMN: MESSAGE`), in line order.
pub fn describe_report(report: &Report) -> String {
    let outcome = if report.dry_run {
        "dry run, nothing written".to_string()
    } else if report.written {
        if report.complete() {
            "imported".to_string()
        } else {
            "the valid rows imported".to_string()
        }
    } else if report.complete() {
        "nothing to write".to_string()
    } else {
        "nothing written (all or nothing)".to_string()
    };
    let mut text = format!(
        "{} rows: {} created, {} updated, {} refused; {outcome}.\n",
        report.rows,
        report.created,
        report.updated,
        report.refusals.rows()
    );
    for (line, column, message) in report.refusals.iter() {
        text.push_str(&format!("line {line}, {column}: {message}\n"));
    }
    text
}
