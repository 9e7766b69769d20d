//! The ceiling for `bench/webhook-load.sh`: a webhook that does no work.
//!
//! It serves through detour's own TLS listener ([`detour_serve::https::serve_tls`]:
//! rustls, TCP_NODELAY, the same hyper and axum), on the same runtime and
//! allocator, and reads each body as detour does ([`detour_webhook::server::read_body`],
//! 7 MiB limit), then answers one constant AdmissionReview. detour's
//! requests/s divided by this server's, measured in the same run, is the share
//! of the transport's limit that detour reaches.
//!
//!   cargo run --release --example ceiling -- CERT_DIR 127.0.0.1:18444 [ANSWER_FILE]
//!
//! With ANSWER_FILE it answers those bytes instead (detour's own answer to a
//! body, say), which separates the cost of a larger answer from detour's work.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use detour_serve::https::serve_tls;
use detour_serve::tls::TlsSource;
use detour_webhook::server::read_body;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An allowed answer, as detour writes it for a request it leaves alone.
const ANSWER: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"3e1f5b2e-8446-4b87-a3f3-7efe6676d98a","allowed":true,"status":{}}}"#;

async fn answer(answer: Bytes, request: Request) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    match read_body(request).await {
        Ok(_) => (StatusCode::OK, json, answer).into_response(),
        Err(refused) => (refused.status, json, refused.message).into_response(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(cert_dir), Some(listen)) = (args.next(), args.next()) else {
        return Err("usage: ceiling CERT_DIR LISTEN_ADDR [ANSWER_FILE]".into());
    };
    let constant = match args.next() {
        Some(file) => Bytes::from(std::fs::read(file)?),
        None => Bytes::from_static(ANSWER),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = TlsSource {
        cert_dir: cert_dir.into(),
        client_ca: None,
    }
    .load()?;
    let runtime = detour_serve::https::runtime()?;
    runtime.block_on(async {
        let listener = std::net::TcpListener::bind(&listen)?;
        listener.set_nonblocking(true)?;
        let router = Router::new().route(
            "/mutate",
            post(move |request: Request| answer(constant.clone(), request)),
        );
        let config = axum_server::tls_rustls::RustlsConfig::from_config(tls.config);
        serve_tls(listener, config, router, axum_server::Handle::new())?.await
    })?;
    Ok(())
}
