//! `detour serve`: the HTTPS webhook and the plain-HTTP admin server.
//!
//! Layer: runtime wiring. The HTTP handlers are thin: read a bounded body,
//! [`admission::prepare`] it, ask the mirror about `swap: if-present`
//! images (within the lookup budget), [`admission::Prepared::finish`], log
//! and count, and queue pre-mirror copies after the answer is built. Readiness starts false and
//! turns true only once config and TLS are loaded and the listener is bound;
//! on SIGTERM it turns false, the server keeps answering for the drain delay
//! (while endpoints stop routing here), then finishes in-flight requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::admission::pod::{ContainerSkipKind, ImageChange};
use crate::admission::{self, Disposition, Mode, Summary};
use crate::metrics::{AdmissionLabels, Metrics, ReasonLabels, RewriteLabels};
use crate::premirror::presence::Presence;
use crate::premirror::MirrorRuntime;
use detour_core::config::{Config, ConfigError, ConfigSource};
use detour_registry::MirrorError;
use detour_serve::https::{prepare_dev_certificates, serve_tls, shutdown_signal};
use detour_serve::tls::{TlsError, TlsSource};
use detour_serve::{certs, watch};

/// Largest body accepted: the apiserver limits objects to 3 MiB, and an
/// UPDATE review carries `object` and `oldObject`, plus the envelope.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    #[error("no serving certificate in {0} (tls.crt, tls.key): create one with `detour certs`, or run with --dev")]
    NoCertificate(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Server(std::io::Error),
    #[error("mirror settings: {0}")]
    Mirror(#[from] MirrorError),
    #[error("managed certificates: {0}")]
    Managed(String),
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ArcSwap<Config>>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Present when a rule uses `premirror` or `swap: if-present`.
    pub mirror: Arc<ArcSwapOption<MirrorRuntime>>,
}

impl AppState {
    pub fn new(config: Config) -> Self {
        AppState {
            config: Arc::new(ArcSwap::from_pointee(config)),
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            mirror: Arc::new(ArcSwapOption::empty()),
        }
    }

    /// The mirror runtime `config` needs: the current one when its
    /// settings are unchanged, a new one, or none.
    pub fn mirror_for(&self, config: &Config) -> Result<Option<Arc<MirrorRuntime>>, MirrorError> {
        if !MirrorRuntime::wanted(config) {
            return Ok(None);
        }
        match self.mirror.load_full() {
            Some(current) if *current.settings() == config.mirror => Ok(Some(current)),
            _ => MirrorRuntime::build(&config.mirror, self.metrics.clone()).map(Some),
        }
    }
}

/// The webhook routes: `/mutate` enforces, `/audit` only reports.
pub fn webhook_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/mutate",
            post(|s: State<AppState>, r: Request| admit(s, Mode::Enforce, r)),
        )
        .route(
            "/audit",
            post(|s: State<AppState>, r: Request| admit(s, Mode::Audit, r)),
        )
        .with_state(state)
}

/// The admin routes: `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    s.metrics.encode(),
                )
            }),
        )
        .with_state(state)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn admit(State(state): State<AppState>, mode: Mode, request: Request) -> Response {
    let started = Instant::now();
    let reject = |reason: &'static str, status: StatusCode, message: &str| {
        state
            .metrics
            .rejected_requests
            .get_or_create(&ReasonLabels { reason })
            .inc();
        tracing::warn!(status = status.as_u16(), reason, "{message}");
        json_response(status, admission::error_body(message))
    };
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(refused) => return reject(refused.reason, refused.status, &refused.message),
    };
    let config = state.config.load();
    let prepared = match admission::prepare(&body, mode, &config) {
        Ok(prepared) => prepared,
        Err(e) => return reject("malformed", StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mirror = state.mirror.load_full();
    let presence = match &mirror {
        Some(runtime) => {
            let lookups = prepared.lookups();
            if lookups.is_empty() {
                Default::default()
            } else {
                runtime.presence(&lookups).await
            }
        }
        None => Default::default(),
    };
    let reviewed = prepared.finish(&|to| presence.get(to) == Some(&Presence::Present));
    record(&state.metrics, &reviewed.summary);
    // Copies have side effects: never for audit or for a server-side dry run.
    if let Some(runtime) = &mirror {
        if reviewed.summary.mode == Mode::Enforce && !reviewed.summary.dry_run {
            runtime.enqueue_copies(&reviewed.summary);
        }
    }
    let response = json_response(StatusCode::OK, reviewed.body);
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Why a request body was not read.
#[derive(Debug)]
pub struct BodyRefused {
    /// The `reason` label of `detour_rejected_requests_total`.
    pub reason: &'static str,
    pub status: StatusCode,
    pub message: String,
}

/// Reads a webhook request body of at most [`MAX_BODY_BYTES`]: refused at
/// once when its declared length is larger, and while reading otherwise.
pub async fn read_body(request: Request) -> Result<Bytes, BodyRefused> {
    let too_large = || BodyRefused {
        reason: "too_large",
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: "request body is larger than 7 MiB".into(),
    };
    if declared_length(request.headers()).is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(BodyRefused {
            reason: "unreadable",
            status: StatusCode::BAD_REQUEST,
            message: format!("cannot read request body: {e}"),
        }),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Logs and counts one answered admission. One line per admission that
/// changed or would change something; unchanged requests only at debug.
fn record(metrics: &Metrics, s: &Summary) {
    let mode = s.mode.as_str();
    metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            mode,
            outcome: s.disposition.label(),
        })
        .inc();
    // One counter update per rule, not per image: a Pod's images mostly
    // share a rule or two.
    let mut per_rule: Vec<(&str, u64)> = Vec::new();
    for c in &s.changes {
        match per_rule.iter_mut().find(|(rule, _)| *rule == c.rule) {
            Some((_, n)) => *n += 1,
            None => per_rule.push((c.rule, 1)),
        }
    }
    for (rule, n) in per_rule {
        metrics
            .rewrites
            .get_or_create(&RewriteLabels {
                mode,
                rule: rule.to_string(),
            })
            .inc_by(n);
    }
    for c in &s.deferred {
        tracing::info!(uid = %s.uid, namespace = %s.namespace, name = %s.name, container = %c.container, image = %c.from, mirror = %c.to, rule = %c.rule, "mirror lacks the image; original kept");
    }
    for skip in &s.skipped {
        if skip.kind == ContainerSkipKind::InvalidReference {
            tracing::warn!(uid = %s.uid, namespace = %s.namespace, name = %s.name, container = %skip.container, image = %skip.image, reason = %skip.reason, "container skipped");
        } else {
            tracing::debug!(uid = %s.uid, namespace = %s.namespace, name = %s.name, container = %skip.container, reason = %skip.reason, "container skipped");
        }
    }
    match &s.disposition {
        Disposition::Patched | Disposition::WouldPatch => {
            // Strings recorded as strings, not through Display: a JSON line
            // then escapes each once, without a formatting adapter.
            let changes = change_list(&s.changes);
            tracing::info!(
                uid = &*s.uid,
                namespace = &*s.namespace,
                name = &*s.name,
                mode,
                dry_run = s.dry_run,
                outcome = s.disposition.label(),
                changes = changes.as_str(),
                "admission"
            );
        }
        Disposition::Skipped(skip) => {
            tracing::debug!(uid = %s.uid, namespace = %s.namespace, name = %s.name, reason = skip.reason(), "pod skipped");
        }
        Disposition::FailedOpen(why) => {
            tracing::error!(uid = %s.uid, namespace = %s.namespace, name = %s.name, error = %why, "internal error; allowed unchanged");
        }
        Disposition::Unchanged | Disposition::NotHandled => {
            tracing::debug!(uid = %s.uid, namespace = %s.namespace, name = %s.name, outcome = s.disposition.label(), "admission");
        }
    }
}

/// `[container: from -> to (rule), ...]` for the log line, built with one
/// allocation (a 60-container Pod's list is kilobytes; `fmt` machinery per
/// piece showed in profiles). Container names are DNS labels and references
/// are valid ones, so there is nothing to quote.
fn change_list(changes: &[ImageChange]) -> String {
    let len: usize = changes
        .iter()
        .map(|c| c.container.len() + c.from.len() + c.to.len() + c.rule.len() + 11)
        .sum();
    let mut out = String::with_capacity(len + 2);
    out.push('[');
    for (n, c) in changes.iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        for piece in [
            &*c.container,
            ": ",
            &*c.from,
            " -> ",
            &*c.to,
            " (",
            c.rule,
            ")",
        ] {
            out.push_str(piece);
        }
    }
    out.push(']');
    out
}

/// How `detour serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub tls: TlsSource,
    pub dev: bool,
    pub rules: ConfigSource,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub reload_interval: Duration,
    /// `--manage-certs`: certificates from the Kubernetes API, not files.
    pub managed: Option<ManagedSetup>,
}

/// Self-managed certificates: where the cluster is, and what to manage.
#[derive(Debug, Clone)]
pub struct ManagedSetup {
    pub kubeconfig: Option<PathBuf>,
    pub options: crate::managed_certs::ManagedOptions,
}

pub async fn run(opts: ServeOptions) -> Result<(), ServeError> {
    if opts.managed.is_some() {
        // The certificate comes from the cluster below.
    } else if opts.dev {
        prepare_dev_certificates(&opts.tls.cert_dir)?;
    } else if !certs::pair_exists(&opts.tls.cert_dir) {
        return Err(ServeError::NoCertificate(
            opts.tls.cert_dir.display().to_string(),
        ));
    }
    let config = opts.rules.load()?;
    tracing::info!(origin = %config.origin, rules = config.rules.rules().len(), "config loaded");
    let state = AppState::new(config);
    let runtime = state.mirror_for(&state.config.load())?;
    state.mirror.store(runtime);
    state.metrics.config_last_reload_ok.set(1);
    let admin = tokio::net::TcpListener::bind(opts.admin_listen)
        .await
        .map_err(|e| ServeError::Listen(opts.admin_listen, e))?;
    let admin_addr = admin.local_addr().map_err(ServeError::Server)?;
    let admin_stop = Arc::new(tokio::sync::Notify::new());
    let admin_task = {
        let stop = admin_stop.clone();
        let router = admin_router(state.clone());
        tokio::spawn(async move {
            axum::serve(admin, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
        })
    };

    // With --manage-certs the first sync must succeed before serving; the
    // admin server answers (not ready) meanwhile.
    let managed = match &opts.managed {
        Some(setup) => {
            let client = detour_cluster::kubeconfig::connect(setup.kubeconfig.as_deref(), None)
                .await
                .map_err(|e| ServeError::Managed(e.to_string()))?;
            let manager = crate::managed_certs::ManagedCerts::new(client, setup.options.clone());
            let synced = tokio::select! {
                synced = manager.first_sync() => synced,
                // Asked to stop before there was a certificate to serve.
                _ = shutdown_signal() => {
                    admin_stop.notify_one();
                    let _ = admin_task.await;
                    return Ok(());
                }
            };
            Some((manager, synced.serving))
        }
        None => None,
    };
    let loaded = match &managed {
        Some((_, serving)) => managed_tls(&opts.tls, serving)?,
        None => opts.tls.load()?,
    };
    state.metrics.cert_expiry.set(loaded.not_after);
    let tls_config = RustlsConfig::from_config(loaded.config);

    let _tls_watch = match managed {
        Some((manager, serving)) => {
            spawn_managed_reloader(manager, serving, &opts, &state, tls_config.clone())
        }
        None => spawn_tls_reloader(&opts, &state, tls_config.clone()),
    };
    let _config_watch = spawn_config_reloader(&opts, &state);

    let listener =
        std::net::TcpListener::bind(opts.listen).map_err(|e| ServeError::Listen(opts.listen, e))?;
    listener.set_nonblocking(true).map_err(ServeError::Server)?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    let handle = axum_server::Handle::new();
    let server = serve_tls(
        listener,
        tls_config,
        webhook_router(state.clone()),
        handle.clone(),
    )
    .map_err(ServeError::Server)?;
    let server_task = tokio::spawn(server);

    state.ready.store(true, Ordering::Release);
    tracing::info!(webhook = %addr, admin = %admin_addr, "detour is serving");
    if opts.dev {
        print_dev_instructions(&opts.tls.cert_dir, addr, admin_addr);
    }

    shutdown_signal().await;
    state.ready.store(false, Ordering::Release);
    tracing::info!(delay = ?opts.shutdown_delay, "shutting down: not ready; draining");
    tokio::time::sleep(opts.shutdown_delay).await;
    handle.graceful_shutdown(Some(opts.shutdown_grace));
    let served = server_task.await;
    admin_stop.notify_one();
    let _ = admin_task.await;
    tracing::info!("stopped");
    match served {
        Ok(result) => result.map_err(ServeError::Server),
        Err(e) => Err(ServeError::Server(std::io::Error::other(e))),
    }
}

fn managed_tls(
    source: &TlsSource,
    serving: &crate::managed_certs::plan::Pair,
) -> Result<detour_serve::tls::LoadedTls, TlsError> {
    source.from_pem(
        serving.cert.as_bytes(),
        serving.key.as_bytes(),
        "managed tls.crt",
        "managed tls.key",
    )
}

/// Each serving certificate the manager finds in the Secret is checked like
/// a file pair and swapped in; a bad one leaves the current one in use.
fn spawn_managed_reloader(
    manager: crate::managed_certs::ManagedCerts,
    serving: crate::managed_certs::plan::Pair,
    opts: &ServeOptions,
    state: &AppState,
    tls_config: RustlsConfig,
) -> tokio::task::JoinHandle<()> {
    let source = opts.tls.clone();
    let metrics = state.metrics.clone();
    manager.spawn(serving, move |pair| {
        swap_certificate(&tls_config, &metrics, managed_tls(&source, pair));
    })
}

/// Serves a new certificate to new connections, or keeps the current one
/// when the new one was refused; counted and logged either way.
fn swap_certificate(
    tls_config: &RustlsConfig,
    metrics: &Metrics,
    new: Result<detour_serve::tls::LoadedTls, TlsError>,
) {
    match new {
        Ok(loaded) => {
            tls_config.reload_from_config(loaded.config);
            metrics.cert_expiry.set(loaded.not_after);
            Metrics::count_reload(&metrics.tls_reloads, true);
            tracing::info!(not_after = loaded.not_after, "serving certificate reloaded");
        }
        Err(e) => {
            Metrics::count_reload(&metrics.tls_reloads, false);
            tracing::error!(error = %e, "new serving certificate refused; the current one stays in use");
        }
    }
}

fn spawn_tls_reloader(
    opts: &ServeOptions,
    state: &AppState,
    tls_config: RustlsConfig,
) -> tokio::task::JoinHandle<()> {
    let source = opts.tls.clone();
    let metrics = state.metrics.clone();
    let mut last = source.fingerprint();
    watch::spawn(source.cert_dir.clone(), opts.reload_interval, move || {
        let current = source.fingerprint();
        if current.is_none() || current == last {
            return;
        }
        last = current;
        swap_certificate(&tls_config, &metrics, source.load());
    })
}

fn spawn_config_reloader(
    opts: &ServeOptions,
    state: &AppState,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = opts.rules.config.clone()?;
    let dir = path
        .parent()
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let rules = opts.rules.clone();
    let state = state.clone();
    let fingerprint = move || watch::fingerprint(&[path.as_path()]);
    let mut last = fingerprint();
    Some(watch::spawn(dir, opts.reload_interval, move || {
        let current = fingerprint();
        if current.is_none() || current == last {
            return;
        }
        last = current;
        let metrics = &state.metrics;
        let loaded = rules.load().map_err(|e| e.to_string()).and_then(|config| {
            let runtime = state
                .mirror_for(&config)
                .map_err(|e| format!("mirror: {e}"))?;
            Ok((config, runtime))
        });
        match loaded {
            Ok((config, runtime)) => {
                tracing::info!(origin = %config.origin, rules = config.rules.rules().len(), "config reloaded");
                state.config.store(Arc::new(config));
                state.mirror.store(runtime);
                Metrics::count_reload(&metrics.config_reloads, true);
                metrics.config_last_reload_ok.set(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "config refused; the last good config stays in force");
                Metrics::count_reload(&metrics.config_reloads, false);
                metrics.config_last_reload_ok.set(0);
            }
        }
    }))
}

/// A sample AdmissionReview and the command that posts it.
fn print_dev_instructions(cert_dir: &std::path::Path, addr: SocketAddr, admin: SocketAddr) {
    let sample = cert_dir.join("sample-review.json");
    let _ = std::fs::write(&sample, SAMPLE_REVIEW);
    let port = addr.port();
    println!(
        "\ndetour is ready. Post a sample AdmissionReview and decode the patch:\n\n  curl -s --cacert {ca} -H 'Content-Type: application/json' --data-binary @{sample} https://127.0.0.1:{port}/mutate | python3 -c 'import sys,json,base64; r=json.load(sys.stdin)[\"response\"]; print(json.dumps(json.loads(base64.b64decode(r[\"patch\"])), indent=2))'\n\nMetrics: curl -s http://{admin}/metrics | grep detour_\n",
        ca = cert_dir.join(certs::CA_FILE).display(),
        sample = sample.display(),
    );
}

const SAMPLE_REVIEW: &str = include_str!("sample-review.json");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::pod::ContainerList;
    use detour_core::rules::{MirrorPolicy, Swap};

    #[test]
    fn the_change_list_names_each_change_once() {
        let change = |container: &'static str, from: &'static str, to: &str, rule| ImageChange {
            list: ContainerList::Containers,
            index: 0,
            container: container.into(),
            from: from.into(),
            to: to.into(),
            rule,
            mirror: MirrorPolicy {
                premirror: false,
                swap: Swap::Always,
            },
        };
        assert_eq!(change_list(&[]), "[]");
        assert_eq!(
            change_list(&[
                change("app", "nginx:1.25", "m.example/library/nginx:1.25", "hub"),
                change(
                    "init",
                    "registry.k8s.io/pause:3.9",
                    "r.example/pause:3.9",
                    "k8s"
                ),
            ]),
            "[app: nginx:1.25 -> m.example/library/nginx:1.25 (hub), \
             init: registry.k8s.io/pause:3.9 -> r.example/pause:3.9 (k8s)]"
        );
    }
}
