//! Logging. Human-readable on a terminal (and in journald), JSON for log shippers.

use crate::config::LogFormat;
use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// Lets a configuration reload change the log level of the running process.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter_for(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))
}

/// Installs the global subscriber. `RUST_LOG` wins over the configured level.
/// Logs go to stderr: stdout is reserved for what commands print (a new token, a plan).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| filter_for(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // A second init (tests calling into the library) keeps the first subscriber.
    if result.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Checks that a level is a valid filter, without applying it.
pub fn validate_level(level: &str) -> Result<(), String> {
    filter_for(level).map(|_| ())
}

/// Applies a new configured level, unless `RUST_LOG` pins it.
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let Some(handle) = FILTER.get() else {
        return Ok(());
    };
    let filter = filter_for(level)?;
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log level: {e}"))
}
