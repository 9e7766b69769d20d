//! What the webhook and the proxy serve alike: the runtime, HTTPS with
//! rustls, the shutdown signal, and `--dev` certificates.
//!
//! Layer: runtime plumbing. The load benchmark's ceiling server serves
//! through [`serve_tls`] too, so that it differs from detour only in what
//! the handler does.

use std::net::SocketAddr;

use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::certs;

/// The runtime `detour serve` runs on (and the load benchmark's ceiling).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // One worker per core, tokio's defaults: measured against one worker and
    // against other event and queue intervals, none was faster (README).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Serves `router` over TLS on `listener` as the webhook is served: rustls,
/// TCP_NODELAY, HTTP/1.1 and HTTP/2. The load benchmark's ceiling server
/// (`bench/ceiling.rs`) serves through this too, so that the two differ only
/// in what the handler does.
pub fn serve_tls(
    listener: std::net::TcpListener,
    tls_config: RustlsConfig,
    router: Router,
    handle: axum_server::Handle<SocketAddr>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    // TCP_NODELAY: a response of several segments must not wait for the
    // client's delayed ACK (Nagle), which showed as 40 ms tail latency.
    let acceptor = RustlsAcceptor::new(tls_config).acceptor(NoDelayAcceptor::new());
    Ok(axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle)
        // Peer addresses for handlers that limit per client (the proxy).
        .serve(router.into_make_service_with_connect_info::<SocketAddr>()))
}

/// SIGTERM or Ctrl-C, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `--dev`: a throwaway CA and certificate for 127.0.0.1 unless present.
pub fn prepare_dev_certificates(dir: &std::path::Path) -> Result<(), certs::CertError> {
    if certs::pair_exists(dir) {
        return Ok(());
    }
    let request = certs::CertRequest {
        service: None,
        namespace: String::new(),
        dns: vec!["localhost".into()],
        ips: vec![
            "127.0.0.1".parse().expect("literal"),
            "::1".parse().expect("literal"),
        ],
        days: 30,
    };
    certs::write(&certs::generate(&request)?, dir)?;
    tracing::info!(dir = %dir.display(), "generated development certificates (valid 30 days)");
    Ok(())
}
