//! `detour proxy`: wiring the pull-through proxy to its listeners.
//!
//! Layer: runtime wiring. Readiness starts false and turns true once the
//! cache is open and the listener bound; on SIGTERM it turns false, the
//! proxy keeps serving for the drain delay, then lets in-flight pulls
//! finish within the grace period. The serving certificate is reloaded when
//! its files change, as `detour serve` does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;

use super::clients::{ClientLimit, Htpasswd};
use super::config::{ProxyConfig, S3Cache};
use super::http::{router, ProxyApp};
use super::metrics::ProxyMetrics;
use super::s3::{S3Client, S3Settings};
use super::service::{Proxy, ProxySettings};
use super::store::{Backend, Store};
use detour_serve::tls::TlsSource;

#[derive(Debug, thiserror::Error)]
pub enum ProxyRunError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cache {0}: {1}")]
    Cache(String, super::store::StoreError),
    #[error(transparent)]
    Server(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub config: ProxyConfig,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// `None`: plain HTTP, for a TLS-terminating load balancer in front.
    pub tls: Option<TlsSource>,
    pub dev: bool,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
}

/// How often a shared cache's index is brought up to date with the bucket.
const RESCAN_INTERVAL: Duration = Duration::from_secs(60);

/// The proxy's request handler and state, built from the config.
pub async fn build(config: &ProxyConfig) -> Result<Arc<ProxyApp>, ProxyRunError> {
    let client = detour_registry::client_for(&config.registry)
        .map_err(|e| ProxyRunError::Setup(format!("upstream client: {e}")))?;
    let cache = &config.cache;
    let backend = match &cache.s3 {
        Some(s3) => s3_backend(s3, config)?,
        None => Backend::Local,
    };
    let store = Arc::new(
        Store::open(&cache.directory, cache.max_size.0, backend)
            .await
            .map_err(|e| ProxyRunError::Cache(cache.directory.display().to_string(), e))?,
    );
    if store.is_shared() {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESCAN_INTERVAL).await;
                if let Err(e) = store.rescan().await {
                    tracing::warn!(error = %e, "cannot list the shared cache");
                }
            }
        });
    }
    let routes = config.router();
    let htpasswd = match &config.clients.htpasswd {
        Some(path) => Some(Htpasswd::load(path).map_err(ProxyRunError::Setup)?),
        None => None,
    };
    let proxy = Proxy::new(
        routes,
        client,
        store,
        ProxySettings {
            tag_ttl: cache.tag_ttl.0,
            serve_stale: cache.serve_stale.0,
        },
        Arc::new(ProxyMetrics::new()),
    );
    Ok(Arc::new(ProxyApp {
        proxy,
        htpasswd,
        limit: ClientLimit::new(config.clients.max_requests_per_client),
    }))
}

/// The S3 client of a shared cache; credentials from the environment.
fn s3_backend(s3: &S3Cache, config: &ProxyConfig) -> Result<Backend, ProxyRunError> {
    let setup = |m: String| ProxyRunError::Setup(format!("cache.s3: {m}"));
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| setup(format!("{name} is not set")))
    };
    let endpoint = reqwest::Url::parse(&s3.endpoint).map_err(|e| setup(e.to_string()))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in detour_registry::load_ca_files(&config.registry.ca_files)
        .map_err(|e| setup(e.to_string()))?
    {
        roots.add(cert).map_err(|e| setup(e.to_string()))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| setup(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(config.registry.request_timeout.0)
        .build()
        .map_err(|e| setup(e.to_string()))?;
    let settings = S3Settings {
        endpoint,
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        virtual_host: s3.virtual_host,
        access_key: env("AWS_ACCESS_KEY_ID")?,
        secret_key: env("AWS_SECRET_ACCESS_KEY")?,
    };
    Ok(Backend::S3 {
        client: Box::new(S3Client::new(settings, http)),
        prefix: s3.prefix.clone(),
    })
}

pub async fn run(opts: ProxyOptions) -> Result<(), ProxyRunError> {
    match (opts.dev, &opts.tls) {
        (true, Some(tls)) => detour_serve::https::prepare_dev_certificates(&tls.cert_dir)
            .map_err(|e| ProxyRunError::Setup(e.to_string()))?,
        (false, Some(tls)) if !detour_serve::certs::pair_exists(&tls.cert_dir) => {
            return Err(ProxyRunError::Setup(format!(
                "no serving certificate in {} (tls.crt, tls.key): point --cert-dir at one (`detour certs` \
                 makes one), serve plain HTTP behind a TLS-terminating balancer with --plain-http, \
                 or try it with --dev",
                tls.cert_dir.display()
            )))
        }
        _ => {}
    }
    let app = build(&opts.config).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let admin = tokio::net::TcpListener::bind(opts.admin_listen)
        .await
        .map_err(|e| ProxyRunError::Listen(opts.admin_listen, e))?;
    let admin_addr = admin.local_addr().map_err(ProxyRunError::Server)?;
    let admin_router = admin_router(ready.clone(), app.proxy.metrics.clone());
    let admin_task = tokio::spawn(async move { axum::serve(admin, admin_router).await });

    let listener = std::net::TcpListener::bind(opts.listen)
        .map_err(|e| ProxyRunError::Listen(opts.listen, e))?;
    listener
        .set_nonblocking(true)
        .map_err(ProxyRunError::Server)?;
    let addr = listener.local_addr().map_err(ProxyRunError::Server)?;
    let handle = axum_server::Handle::new();
    let routes = router(app.clone());
    let (server_task, _tls_watch) = match &opts.tls {
        Some(source) => {
            let loaded = source
                .load()
                .map_err(|e| ProxyRunError::Setup(e.to_string()))?;
            let tls_config = RustlsConfig::from_config(loaded.config);
            let watch =
                spawn_tls_reloader(source.clone(), opts.reload_interval, tls_config.clone());
            let server =
                detour_serve::https::serve_tls(listener, tls_config, routes, handle.clone())
                    .map_err(ProxyRunError::Server)?;
            (tokio::spawn(server), Some(watch))
        }
        None => {
            let server = axum_server::from_tcp(listener)
                .map_err(ProxyRunError::Server)?
                .handle(handle.clone())
                .serve(routes.into_make_service_with_connect_info::<SocketAddr>());
            (tokio::spawn(server), None)
        }
    };
    ready.store(true, Ordering::Release);
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        proxy = %format!("{scheme}://{addr}"),
        admin = %admin_addr,
        upstreams = opts.config.upstreams.len(),
        cache = %opts.config.cache.directory.display(),
        "detour proxy is serving"
    );
    if opts.dev {
        print_dev_instructions(&opts, addr);
    }

    detour_serve::https::shutdown_signal().await;
    ready.store(false, Ordering::Release);
    tracing::info!(delay = ?opts.shutdown_delay, "shutting down: not ready; draining");
    tokio::time::sleep(opts.shutdown_delay).await;
    handle.graceful_shutdown(Some(opts.shutdown_grace));
    let served = server_task.await;
    admin_task.abort();
    tracing::info!("stopped");
    match served {
        Ok(result) => result.map_err(ProxyRunError::Server),
        Err(e) => Err(ProxyRunError::Server(std::io::Error::other(e))),
    }
}

fn admin_router(ready: Arc<AtomicBool>, metrics: Arc<ProxyMetrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }),
        )
}

fn spawn_tls_reloader(
    source: TlsSource,
    interval: Duration,
    tls_config: RustlsConfig,
) -> tokio::task::JoinHandle<()> {
    let mut last = source.fingerprint();
    detour_serve::watch::spawn(source.cert_dir.clone(), interval, move || {
        let current = source.fingerprint();
        if current.is_none() || current == last {
            return;
        }
        last = current;
        match source.load() {
            Ok(loaded) => {
                tls_config.reload_from_config(loaded.config);
                tracing::info!(not_after = loaded.not_after, "serving certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "new serving certificate refused; the current one stays in use")
            }
        }
    })
}

/// `--dev`: where the cache is and how to pull through the proxy.
fn print_dev_instructions(opts: &ProxyOptions, addr: SocketAddr) {
    let port = addr.port();
    let ca: Option<PathBuf> = opts
        .tls
        .as_ref()
        .map(|t| t.cert_dir.join(detour_serve::certs::CA_FILE));
    let (scheme, tls_flag, curl_ca) = match &ca {
        Some(ca) => (
            "https",
            String::new(),
            format!(" --cacert {}", ca.display()),
        ),
        None => ("http", " --tls-verify=false".to_string(), String::new()),
    };
    // skopeo's --cert-dir takes *.key files for client keys: the CA alone.
    let skopeo_ca = match &ca {
        Some(ca) => {
            let trust = ca.with_file_name("trust");
            match std::fs::create_dir_all(&trust)
                .and_then(|_| std::fs::copy(ca, trust.join(detour_serve::certs::CA_FILE)))
            {
                Ok(_) => format!(" --cert-dir {}", trust.display()),
                Err(_) => " --tls-verify=false".to_string(),
            }
        }
        None => tls_flag,
    };
    println!(
        "\ndetour proxy is ready; cache in {cache}. Pull through it:\n\n  skopeo inspect{skopeo_ca} docker://127.0.0.1:{port}/registry.k8s.io/pause:3.10\n  curl -s{curl_ca} {scheme}://127.0.0.1:{port}/v2/docker.io/library/busybox/tags/list\n",
        cache = opts.config.cache.directory.display(),
    );
}
