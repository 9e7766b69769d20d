//! detour-serve: the plumbing that `detour serve` and `detour proxy` share.
//!
//! [`https`] builds the runtime, serves a router over rustls and waits for
//! the shutdown signal; [`tls`] loads the serving certificate and swaps it
//! when [`watch`] sees its files change; [`certs`] generates CAs and
//! serving certificates (`detour certs`, `--dev`, self-managed
//! certificates); [`log_writer`] and [`log_format`] write log lines off the
//! request path; [`json_scan`] finds the bytes JSON escapes, for the log
//! formatter and the webhook's admission reader and encoder.
//!
//! May depend on: axum and axum-server, rustls, rcgen, notify, tokio,
//! tracing-subscriber. Never on detour-core's rules, a registry client or
//! Kubernetes: it knows nothing of images.

pub mod certs;
pub mod https;
pub mod json_scan;
pub mod log_format;
pub mod log_writer;
pub mod tls;
pub mod watch;
