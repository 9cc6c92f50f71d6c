//! The progress line of `scimsync pull` on a terminal: pages, groups, users, waits.

use super::{Idp, PullStats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// A running progress display. indicatif draws it only when stderr is a terminal (a
/// pipe, a log file or a test sees nothing), so scripts read only the final summary.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn spawn_on_terminal(idp: &Idp) -> Self {
        let stats = idp.connector.stats();
        let name = idp.name.clone();
        // The counters live in the connector; the line reads them at each redraw, so
        // the pull never has to report to the display.
        let line = move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = out.write_str(&summary(&name, &stats));
        };
        let style = ProgressStyle::with_template("{spinner} {line}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("line", line);
        let bar =
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style);
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Self { bar }
    }

    /// Stops the display and clears its line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

fn summary(name: &str, stats: &Arc<PullStats>) -> String {
    let g = PullStats::get;
    let waited = g(&stats.waited_ms);
    let mut line = format!(
        "{name}: {} pages, {} groups, {} users",
        g(&stats.pages),
        g(&stats.groups),
        g(&stats.users)
    );
    if g(&stats.retries) > 0 {
        let _ = write!(line, ", {} retries", g(&stats.retries));
    }
    if waited > 0 {
        let _ = write!(
            line,
            ", waited {:.1}s for rate limits",
            waited as f64 / 1000.0
        );
    }
    line
}
