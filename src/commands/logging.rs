//! Log lines of every command: text on a terminal, JSON for `serve` and
//! `proxy` when asked, written off the request path.
//!
//! Layer: runtime wiring (the subscriber is the process's, so the binary
//! installs it; the formatter and writer live in detour-serve).

use detour_serve::{log_format, log_writer};

use crate::cli::LogFormat;

/// Installs the process's log subscriber; the guard flushes at exit.
pub fn init(format: LogFormat) -> log_writer::FlushGuard {
    use tracing_subscriber::EnvFilter;
    // kube's client logs each failed request as an error of its own; detour
    // reports the failure itself, once.
    let filter = EnvFilter::try_from_env("DETOUR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off"));
    // Lines are formatted here and written in batches by a thread of their
    // own (log_writer): under load many lines share one write(2), and logging
    // wakes no other thread per line.
    let (writer, guard) = log_writer::batched(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // The stock JSON formatter's lines, written faster (log_format).
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(log_format::JsonLines::default())
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
