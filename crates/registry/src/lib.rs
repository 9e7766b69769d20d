//! detour-registry: talking to registries, and copying images between
//! them and OCI layouts and archives.
//!
//! Used by `detour mirror`, the webhook's pre-mirroring (detour-webhook) and
//! the pull-through proxy (detour-proxy). [`client`] speaks the Distribution
//! API (auth, retries, timeouts, forward proxies through [`proxy`]) behind
//! the address checks of [`safety`]; [`auth`] reads credentials; [`copy`]
//! copies one image in an order that never publishes a tag before its
//! content; [`manifest`] reads what manifests refer to; [`layout`] reads and
//! writes OCI layouts and archives; [`digest`] checks content as it streams.
//!
//! May depend on: detour-core (references, the `mirror:` settings), tokio,
//! reqwest over rustls, oci-spec, tar. Never on Kubernetes, axum or another
//! detour crate.

pub mod auth;
pub mod client;
pub mod copy;
pub mod digest;
pub mod layout;
pub mod manifest;
pub mod proxy;
pub mod referrers;
pub mod safety;

pub use auth::{CredentialStore, Credentials};
pub use client::{ClientSettings, RegistryClient, Repo};
pub use copy::{Copier, CopyOptions, CopyReport, Observer, Quiet};
pub use detour_core::mirror_settings::PlatformFilter;

/// Why a registry operation failed. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("{host}: authentication failed: {reason}")]
    Unauthorized { host: String, reason: String },
    #[error("{op}: {message}")]
    Transport { op: String, message: String },
    #[error("{op}: registry answered {status}{detail}")]
    Status {
        op: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

impl MirrorError {
    /// Connection problems, 5xx, 429 and 408 may succeed on a later try.
    pub fn is_retryable(&self) -> bool {
        match self {
            MirrorError::Transport { .. } => true,
            MirrorError::Status { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            _ => false,
        }
    }

    /// A transport error of a request sent through the forward proxy
    /// `proxy` (if any): a connection that failed is the proxy's, and the
    /// message says so, with the proxy's address (its URL holds no
    /// credentials).
    pub fn transport_via(op: &str, e: reqwest::Error, proxy: Option<&reqwest::Url>) -> Self {
        let connect = e.is_connect();
        let error = Self::transport(op, e);
        match (proxy, error) {
            (Some(proxy), MirrorError::Transport { op, message }) => {
                let at = format!(
                    "{}:{}",
                    proxy.host_str().unwrap_or_default(),
                    proxy.port_or_known_default().unwrap_or_default()
                );
                let message = if connect {
                    format!("cannot go through the forward proxy {at}: {message}")
                } else {
                    format!("{message} (through the forward proxy {at})")
                };
                MirrorError::Transport { op, message }
            }
            (_, error) => error,
        }
    }

    pub fn transport(op: &str, e: reqwest::Error) -> Self {
        // Without the URL: upload URLs carry long session state.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        MirrorError::Transport {
            op: op.to_string(),
            message,
        }
    }

    /// A non-success answer, with the registry's first error code if any.
    pub(crate) async fn status(op: &str, response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let detail = match response.bytes().await {
            Ok(body) => registry_error(&body),
            Err(_) => String::new(),
        };
        MirrorError::Status {
            op: op.to_string(),
            status,
            detail,
        }
    }
}

/// `: CODE: message` from a Distribution error body, at most 200 characters.
fn registry_error(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return String::new();
    };
    let Some(first) = parsed.errors.into_iter().next() else {
        return String::new();
    };
    let text = format!(
        ": {}: {}",
        first.code.unwrap_or_default(),
        first.message.unwrap_or_default()
    );
    text.chars().take(200).collect()
}

/// A registry client configured by the `mirror:` settings: reads the
/// credential and CA files they name.
pub fn client_for(
    settings: &detour_core::config::MirrorSettings,
) -> Result<std::sync::Arc<RegistryClient>, MirrorError> {
    let extra_roots = load_ca_files(&settings.ca_files)?;
    RegistryClient::new(ClientSettings {
        plain_http: settings.plain_http.clone(),
        extra_roots,
        credentials: CredentialStore::load(&settings.credentials)?,
        policy: safety::AddressPolicy {
            allow_loopback: settings.allow_loopback,
            loopback_setting: settings.allow_loopback_setting,
        },
        request_timeout: settings.request_timeout.0,
        retries: settings.retries,
        proxy: proxy_settings(settings).map_err(MirrorError::Invalid)?,
    })
}

/// The certificates of PEM files of extra CAs.
pub fn load_ca_files(
    paths: &[std::path::PathBuf],
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, MirrorError> {
    let mut roots = Vec::new();
    for path in paths {
        let pem = std::fs::read(path)
            .map_err(|e| MirrorError::Invalid(format!("{}: cannot read: {e}", path.display())))?;
        let certs: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| MirrorError::Invalid(format!("{}: {e:?}", path.display())))?;
        if certs.is_empty() {
            return Err(MirrorError::Invalid(format!(
                "{}: no PEM certificate",
                path.display()
            )));
        }
        roots.extend(certs);
    }
    Ok(roots)
}

/// `mirror.proxy` when set, else the environment's proxies.
fn proxy_settings(
    settings: &detour_core::config::MirrorSettings,
) -> Result<proxy::ProxySettings, String> {
    match &settings.proxy {
        Some(url) => proxy::ProxySettings::configured(
            url,
            &settings.no_proxy,
            settings.proxy_credentials.as_deref(),
        ),
        None => {
            let mut from_env = proxy::ProxySettings::from_env()?;
            from_env.no_proxy.extend(settings.no_proxy.iter().cloned());
            Ok(from_env)
        }
    }
}

/// Copy options from the `mirror:` settings.
pub fn copy_options(settings: &detour_core::config::MirrorSettings) -> CopyOptions {
    CopyOptions {
        blob_concurrency: settings.blob_concurrency,
        platforms: settings.platforms.clone(),
        retries: settings.retries,
        attached: settings.attached_artifacts,
    }
}
