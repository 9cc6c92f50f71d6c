//! The progress line of `scimsync pull` on a terminal: pages, groups, users, waits.

use super::{Idp, PullStats};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

/// A running progress display; does nothing when stderr is not a terminal (a pipe,
/// a log file, a test), so scripts see only the final summary.
pub struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn spawn_on_terminal(idp: &Idp) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self { task: None };
        }
        let stats = idp.connector.stats();
        let name = idp.name.clone();
        let task = tokio::spawn(async move {
            loop {
                draw(&name, &stats);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self { task: Some(task) }
    }

    /// Stops the display and clears its line.
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

fn draw(name: &str, stats: &Arc<PullStats>) {
    let g = PullStats::get;
    let waited = g(&stats.waited_ms);
    let mut line = format!(
        "{name}: {} pages, {} groups, {} users",
        g(&stats.pages),
        g(&stats.groups),
        g(&stats.users)
    );
    if g(&stats.retries) > 0 {
        line.push_str(&format!(", {} retries", g(&stats.retries)));
    }
    if waited > 0 {
        line.push_str(&format!(
            ", waited {:.1}s for rate limits",
            waited as f64 / 1000.0
        ));
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "\r\x1b[2K{line}");
    let _ = err.flush();
}
