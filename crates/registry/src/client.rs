//! A Distribution API client: the requests a copy needs, with
//! authentication, timeouts and retries.
//!
//! Layer: adapter (network I/O). Written on reqwest rather than oci-client
//! because a copy needs what oci-client does not expose: cross-repository
//! mounts answered with 202 (continue with the returned upload session),
//! manifests pushed byte for byte under their own media type, and blob
//! bodies streamed from one registry's response into another's upload.
//!
//! Authentication: a request goes out with the cached `Authorization` for
//! its (registry, scope); on a 401 the challenge is answered (Basic with the
//! configured credentials, or a Bearer token fetched from the realm) and the
//! request is sent once more. Credentials and tokens appear only in
//! headers, never in URLs, errors, logs or metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use rustls_pki_types::CertificateDer;

use super::auth::{parse_challenge, Challenge, CredentialStore};
use super::digest::digest_of;
use super::referrers::Descriptor;
use super::safety::{AddressPolicy, GuardedResolver};
use super::MirrorError;

/// Every manifest type detour copies, best first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are small; a bound keeps a hostile registry from exhausting memory.
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Pages of a paginated list followed at most.
pub const MAX_PAGES: usize = 100;
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Registry hosts (`host[:port]`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
    /// Extra trusted CA certificates, beside the Mozilla roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    pub credentials: CredentialStore,
    pub policy: AddressPolicy,
    /// Whole-request limit for everything but blob bodies; also the limit
    /// between two reads of a blob body.
    pub request_timeout: Duration,
    /// Retries after connection errors, 5xx and 429.
    pub retries: u32,
    /// Forward proxies, and which registries bypass them.
    pub proxy: super::proxy::ProxySettings,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            plain_http: vec![],
            extra_roots: vec![],
            credentials: CredentialStore::default(),
            policy: AddressPolicy::default(),
            request_timeout: Duration::from_secs(30),
            retries: 4,
            proxy: Default::default(),
        }
    }
}

/// A repository on a registry: `host` as in image references.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    pub host: String,
    pub path: String,
}

impl Repo {
    pub fn of(reference: &detour_core::reference::Reference) -> Repo {
        Repo {
            host: reference.domain_lower(),
            path: reference.path().to_string(),
        }
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

/// What a request needs permission for (the token scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Access {
    repo: Repo,
    push: bool,
    mount_from: Option<String>,
}

impl Access {
    fn pull(repo: &Repo) -> Access {
        Access {
            repo: repo.clone(),
            push: false,
            mount_from: None,
        }
    }

    fn push(repo: &Repo) -> Access {
        Access {
            push: true,
            ..Access::pull(repo)
        }
    }

    fn scopes(&self) -> Vec<String> {
        let actions = if self.push { "pull,push" } else { "pull" };
        let mut out = vec![format!("repository:{}:{actions}", self.repo.path)];
        if let Some(from) = &self.mount_from {
            out.push(format!("repository:{from}:pull"));
        }
        out
    }
}

/// A manifest as the registry stores it.
#[derive(Debug, Clone)]
pub struct ManifestBytes {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

/// The answer to starting an upload.
pub enum UploadStart {
    /// The blob was mounted from another repository: nothing to send.
    Mounted,
    /// Send the blob to this upload session.
    Session(Url),
}

#[derive(Clone)]
struct CachedAuth {
    header: HeaderValue,
    expires: Option<Instant>,
}

pub struct RegistryClient {
    http: reqwest::Client,
    settings: ClientSettings,
    auth: Mutex<HashMap<(String, Vec<String>), CachedAuth>>,
    /// One challenge answered at a time, so parallel blob uploads that all
    /// meet their first 401 together fetch one token, not one each.
    challenge_lock: tokio::sync::Mutex<()>,
}

impl RegistryClient {
    pub fn new(settings: ClientSettings) -> Result<Arc<Self>, MirrorError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for cert in &settings.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| MirrorError::Invalid(format!("CA certificate: {e}")))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| MirrorError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let policy = settings.policy;
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            // Names are checked at resolution; IP literals here. reqwest
            // drops Authorization on a redirect to another host.
            let host = attempt.url().host_str().unwrap_or_default().to_string();
            if attempt.previous().len() >= 5 {
                attempt.error("too many redirects")
            } else if let Err(why) = policy.check_host(&host) {
                attempt.error(format!("redirect refused: {why}"))
            } else {
                attempt.follow()
            }
        });
        // Proxies from the settings only (which read the environment once,
        // in one place), so that the guard knows which requests go through one.
        let mut builder = reqwest::Client::builder().no_proxy();
        if !settings.proxy.is_empty() {
            let routes = settings.proxy.clone();
            let mut proxy = reqwest::Proxy::custom(move |url| routes.proxy_for(url).cloned());
            if let Some((user, password)) = &settings.proxy.auth {
                proxy = proxy.basic_auth(user, password);
            }
            builder = builder.proxy(proxy);
        }
        let http = builder
            .use_preconfigured_tls(tls)
            .dns_resolver(GuardedResolver::shared(
                settings.policy,
                settings.proxy.proxy_hosts(),
            ))
            .redirect(redirects)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .read_timeout(settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("detour/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MirrorError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Arc::new(RegistryClient {
            http,
            settings,
            auth: Mutex::new(HashMap::new()),
            challenge_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `https://host/v2/` (or `http://` for plain-HTTP registries).
    fn base(&self, host: &str) -> Result<Url, MirrorError> {
        let plain = self
            .settings
            .plain_http
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host));
        let api_host = if host == detour_core::reference::DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            host
        };
        let scheme = if plain { "http" } else { "https" };
        let url = Url::parse(&format!("{scheme}://{api_host}/v2/"))
            .map_err(|e| MirrorError::Invalid(format!("registry {host:?}: {e}")))?;
        self.settings
            .policy
            .check_host(url.host_str().unwrap_or_default())
            .map_err(|why| MirrorError::Refused(format!("registry {host}: {why}")))?;
        Ok(url)
    }

    fn url(&self, repo: &Repo, tail: &str) -> Result<Url, MirrorError> {
        let base = self.base(&repo.host)?;
        base.join(&format!("{}/{tail}", repo.path))
            .map_err(|e| MirrorError::Invalid(format!("{repo}: {e}")))
    }

    /// A request that a proxy will carry is checked here, since the proxy,
    /// not detour's guarded resolver, resolves its host.
    async fn guard_proxied(&self, url: &Url) -> Result<(), MirrorError> {
        if self.settings.proxy.proxy_for(url).is_none() {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let port = url.port_or_known_default().unwrap_or(443);
        self.settings
            .policy
            .check_proxied_target(host, port)
            .await
            .map_err(|why| MirrorError::Refused(format!("{host} (through the proxy): {why}")))
    }

    /// Adds the cached `Authorization` to a request sent without [`Self::send`].
    fn with_cached_auth(&self, request: RequestBuilder, access: &Access) -> RequestBuilder {
        match self.cached_auth(access) {
            Some(header) => request.header(AUTHORIZATION, header),
            None => request,
        }
    }

    fn cached_auth(&self, access: &Access) -> Option<HeaderValue> {
        let key = (access.repo.host.clone(), access.scopes());
        let cache = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(&key)?;
        match entry.expires {
            Some(t) if t <= Instant::now() => None,
            _ => Some(entry.header.clone()),
        }
    }

    /// Sends a request built by `make`, answering one auth challenge and
    /// retrying connection errors, 5xx and 429 with backoff.
    async fn send(
        &self,
        access: &Access,
        op: &str,
        total_timeout: bool,
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, MirrorError> {
        let mut attempt = 0;
        let mut answered_challenge = false;
        loop {
            let mut request = make(&self.http);
            if total_timeout {
                request = request.timeout(self.settings.request_timeout);
            }
            // Kept to tell, after a 401, whether another request has since
            // fetched a new token.
            let sent = self.cached_auth(access);
            if let Some(header) = &sent {
                request = request.header(AUTHORIZATION, header.clone());
            }
            let request = request.build().map_err(|e| MirrorError::transport(op, e))?;
            self.guard_proxied(request.url()).await?;
            let proxy = self.settings.proxy.proxy_for(request.url()).cloned();
            let delay = match self.http.execute(request).await {
                Err(e) => {
                    if attempt >= self.settings.retries || !transient_transport(&e) {
                        return Err(MirrorError::transport_via(op, e, proxy.as_ref()));
                    }
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && !answered_challenge {
                        answered_challenge = true;
                        let _one_at_a_time = self.challenge_lock.lock().await;
                        // Another request may have fetched what this one needs.
                        let fresh = self.cached_auth(access);
                        if fresh.is_none() || fresh == sent {
                            self.answer_challenge(access, response.headers()).await?;
                        }
                        continue;
                    }
                    if !retryable_status(status) || attempt >= self.settings.retries {
                        return Ok(response);
                    }
                    retry_after(response.headers()).unwrap_or_else(|| backoff(attempt))
                }
            };
            attempt += 1;
            tracing::debug!(op, attempt, ?delay, "retrying registry request");
            tokio::time::sleep(delay).await;
        }
    }

    async fn answer_challenge(
        &self,
        access: &Access,
        headers: &HeaderMap,
    ) -> Result<(), MirrorError> {
        let host = &access.repo.host;
        let unauthorized = |reason: String| MirrorError::Unauthorized {
            host: host.clone(),
            reason,
        };
        let challenge = headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
            .ok_or_else(|| unauthorized("401 without a Basic or Bearer challenge".into()))?;
        let credentials = self.settings.credentials.get(host);
        let cached = match challenge {
            Challenge::Basic => {
                let credentials = credentials
                    .ok_or_else(|| unauthorized("credentials required, none configured".into()))?;
                CachedAuth {
                    header: sensitive(&credentials.basic_header())?,
                    expires: None,
                }
            }
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut url = Url::parse(&realm)
                    .map_err(|_| unauthorized("token realm is not a URL".into()))?;
                let plain_ok = self
                    .settings
                    .plain_http
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(host));
                if url.scheme() != "https" && !(plain_ok && url.scheme() == "http") {
                    return Err(unauthorized(format!(
                        "token realm uses {}, not https",
                        url.scheme()
                    )));
                }
                self.settings
                    .policy
                    .check_host(url.host_str().unwrap_or_default())
                    .map_err(|why| MirrorError::Refused(format!("token realm: {why}")))?;
                self.guard_proxied(&url).await?;
                let mut scopes = access.scopes();
                if let Some(s) = scope {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = &service {
                        query.append_pair("service", service);
                    }
                    for s in &scopes {
                        query.append_pair("scope", s);
                    }
                }
                let mut request = self.http.get(url).timeout(self.settings.request_timeout);
                if let Some(c) = credentials {
                    request = request.header(AUTHORIZATION, sensitive(&c.basic_header())?);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| MirrorError::transport("token request", e))?;
                if !response.status().is_success() {
                    return Err(unauthorized(format!(
                        "token service answered {}",
                        response.status().as_u16()
                    )));
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                    expires_in: Option<u64>,
                }
                let body = read_limited(response, 64 * 1024, "token response").await?;
                let parsed: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|_| unauthorized("token response is not JSON".into()))?;
                let token = parsed
                    .token
                    .or(parsed.access_token)
                    .ok_or_else(|| unauthorized("token response has no token".into()))?;
                let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(60).max(20) - 10);
                CachedAuth {
                    header: sensitive(&format!("Bearer {token}"))?,
                    expires: Some(Instant::now() + lifetime),
                }
            }
        };
        let key = (host.clone(), access.scopes());
        self.auth
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, cached);
        Ok(())
    }

    /// The digest of `reference` in `repo`, or `None` when it is absent.
    pub async fn manifest_digest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<Option<String>, MirrorError> {
        let url = self.url(repo, &format!("manifests/{reference}"))?;
        let access = Access::pull(repo);
        let op = format!("HEAD {repo}:{reference}");
        let response = self
            .send(&access, &op, true, |h| {
                h.request(Method::HEAD, url.clone())
                    .header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let digest = response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match digest {
                    Some(d) => Ok(Some(d)),
                    // Some registries omit the header on HEAD: fetch and hash.
                    None => Ok(Some(self.get_manifest(repo, reference).await?.digest)),
                }
            }
            _ => Err(MirrorError::status(&op, response).await),
        }
    }

    /// Fetches a manifest and checks it against `reference` when that is a digest.
    pub async fn get_manifest(
        &self,
        repo: &Repo,
        reference: &str,
    ) -> Result<ManifestBytes, MirrorError> {
        let url = self.url(repo, &format!("manifests/{reference}"))?;
        let access = Access::pull(repo);
        let op = format!("GET manifest {repo}:{reference}");
        let response = self
            .send(&access, &op, true, |h| {
                h.get(url.clone()).header(ACCEPT, MANIFEST_ACCEPT)
            })
            .await?;
        if !response.status().is_success() {
            return Err(MirrorError::status(&op, response).await);
        }
        let header_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let bytes = read_limited(response, MAX_MANIFEST_BYTES, &op).await?;
        let pinned = reference.contains(':').then_some(reference);
        let digest = digest_of(&bytes, pinned)?;
        if let Some(expected) = pinned {
            if digest != expected {
                return Err(MirrorError::DigestMismatch {
                    what: op,
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        let media_type = super::manifest::media_type(&bytes, header_type.as_deref())?;
        Ok(ManifestBytes {
            media_type,
            digest,
            bytes,
        })
    }

    /// Pushes a manifest byte for byte under `reference` (a tag or its digest).
    pub async fn put_manifest(
        &self,
        repo: &Repo,
        reference: &str,
        manifest: &ManifestBytes,
    ) -> Result<(), MirrorError> {
        let url = self.url(repo, &format!("manifests/{reference}"))?;
        let access = Access::push(repo);
        let op = format!("PUT manifest {repo}:{reference}");
        let response = self
            .send(&access, &op, true, |h| {
                h.put(url.clone())
                    .header(CONTENT_TYPE, manifest.media_type.as_str())
                    .body(manifest.bytes.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(MirrorError::status(&op, response).await);
        }
        Ok(())
    }

    pub async fn blob_exists(&self, repo: &Repo, digest: &str) -> Result<bool, MirrorError> {
        let url = self.url(repo, &format!("blobs/{digest}"))?;
        let access = Access::push(repo);
        let op = format!("HEAD blob {repo}@{digest}");
        let response = self
            .send(&access, &op, true, |h| h.head(url.clone()))
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            _ => Err(MirrorError::status(&op, response).await),
        }
    }

    /// The size of a blob, `None` when absent: a HEAD with pull access
    /// (what a pulling client asks a proxy).
    pub async fn blob_size(&self, repo: &Repo, digest: &str) -> Result<Option<u64>, MirrorError> {
        let url = self.url(repo, &format!("blobs/{digest}"))?;
        let op = format!("HEAD blob {repo}@{digest}");
        let response = self
            .send(&Access::pull(repo), &op, true, |h| h.head(url.clone()))
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            // The header: reqwest's content_length() is the body's, 0 for HEAD.
            s if s.is_success() => header_length(response.headers())
                .map(Some)
                .ok_or_else(|| MirrorError::Invalid(format!("{op}: no Content-Length"))),
            _ => Err(MirrorError::status(&op, response).await),
        }
    }

    /// A page of the repository's tag list (`query`: the client's `n` and
    /// `last`), as the registry wrote it.
    pub async fn tag_list(&self, repo: &Repo, query: Option<&str>) -> Result<Bytes, MirrorError> {
        let mut url = self.url(repo, "tags/list")?;
        url.set_query(query);
        let op = format!("GET tags {repo}");
        let response = self
            .send(&Access::pull(repo), &op, true, |h| h.get(url.clone()))
            .await?;
        if !response.status().is_success() {
            return Err(MirrorError::status(&op, response).await);
        }
        read_limited(response, MAX_MANIFEST_BYTES, &op).await
    }

    /// Every tag of the repository, across the registry's pages (at most
    /// [`MAX_PAGES`] of them). `None` when the registry will not list them
    /// (401, 403, 404: the repository's tags are not this client's to read).
    pub async fn all_tags(&self, repo: &Repo) -> Result<Option<Vec<String>>, MirrorError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let url = self.url(repo, "tags/list")?;
        let op = format!("GET tags {repo}");
        self.all_pages(repo, url, &op, None, unreadable, |body| {
            let page: TagList = serde_json::from_slice(body)
                .map_err(|e| MirrorError::Invalid(format!("{op}: {e}")))?;
            Ok(page.tags.unwrap_or_default())
        })
        .await
    }

    /// The referrers of `digest` through the OCI 1.1 referrers API, across
    /// its pages. `None` when the registry has no such API (404, as the
    /// distribution spec has it, or 405), or will not answer it (400, 401,
    /// 403): the caller then reads the fallback tag.
    pub async fn referrers(
        &self,
        repo: &Repo,
        digest: &str,
    ) -> Result<Option<Vec<Descriptor>>, MirrorError> {
        let url = self.url(repo, &format!("referrers/{digest}"))?;
        let op = format!("GET referrers {repo}@{digest}");
        let no_api = |status| {
            unreadable(status)
                || status == StatusCode::METHOD_NOT_ALLOWED
                || status == StatusCode::BAD_REQUEST
        };
        let accept = Some(super::manifest::OCI_INDEX);
        self.all_pages(
            repo,
            url,
            &op,
            accept,
            no_api,
            super::referrers::descriptors,
        )
        .await
    }

    /// The items of a list the registry pages with `Link` headers, from
    /// `url` on (at most [`MAX_PAGES`] pages), each page's body read by
    /// `parse`; `None` when the first answer's status is one `absent` takes.
    async fn all_pages<T>(
        &self,
        repo: &Repo,
        mut url: Url,
        op: &str,
        accept: Option<&str>,
        absent: impl Fn(StatusCode) -> bool,
        parse: impl Fn(&[u8]) -> Result<Vec<T>, MirrorError>,
    ) -> Result<Option<Vec<T>>, MirrorError> {
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self
                .send(&Access::pull(repo), op, true, |h| {
                    let request = h.get(url.clone());
                    match accept {
                        Some(accept) => request.header(ACCEPT, accept),
                        None => request,
                    }
                })
                .await?;
            if absent(response.status()) {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(MirrorError::status(op, response).await);
            }
            let next = next_page(&response, &url);
            let body = read_limited(response, MAX_MANIFEST_BYTES, op).await?;
            items.extend(parse(&body)?);
            match next {
                Some(next) => url = next,
                None => return Ok(Some(items)),
            }
        }
        Err(MirrorError::Invalid(format!(
            "{op}: more than {MAX_PAGES} pages"
        )))
    }

    /// Starts fetching a blob; the caller streams the body.
    pub async fn get_blob(&self, repo: &Repo, digest: &str) -> Result<Response, MirrorError> {
        let url = self.url(repo, &format!("blobs/{digest}"))?;
        let access = Access::pull(repo);
        let op = format!("GET blob {repo}@{digest}");
        let response = self
            .send(&access, &op, false, |h| h.get(url.clone()))
            .await?;
        if !response.status().is_success() {
            return Err(MirrorError::status(&op, response).await);
        }
        Ok(response)
    }

    /// Opens an upload, first trying to mount `mount = (digest, from_path)`
    /// from another repository of the same registry. A registry that cannot
    /// mount answers 202 with an ordinary upload session, which is used.
    pub async fn start_upload(
        &self,
        repo: &Repo,
        mount: Option<(&str, &str)>,
    ) -> Result<UploadStart, MirrorError> {
        let mut url = self.url(repo, "blobs/uploads/")?;
        if let Some((digest, from)) = mount {
            url.query_pairs_mut()
                .append_pair("mount", digest)
                .append_pair("from", from);
        }
        let access = Access {
            mount_from: mount.map(|(_, from)| from.to_string()),
            ..Access::push(repo)
        };
        let op = format!("POST upload {repo}");
        let response = self
            .send(&access, &op, true, |h| h.post(url.clone()))
            .await?;
        match response.status() {
            StatusCode::CREATED if mount.is_some() => Ok(UploadStart::Mounted),
            StatusCode::ACCEPTED => Ok(UploadStart::Session(location(&response, &op)?)),
            _ => Err(MirrorError::status(&op, response).await),
        }
    }

    /// Streams `body` into an upload session (one PATCH); returns the
    /// session's next location. Not retried here: a body cannot be replayed,
    /// so the caller retries the whole blob.
    pub async fn upload_stream(
        &self,
        repo: &Repo,
        session: Url,
        body: reqwest::Body,
    ) -> Result<Url, MirrorError> {
        let op = format!("PATCH upload {repo}");
        self.guard_proxied(&session).await?;
        let request = self.http.patch(session);
        let response = self
            .with_cached_auth(request, &Access::push(repo))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| MirrorError::transport(&op, e))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(MirrorError::status(&op, response).await);
        }
        location(&response, &op)
    }

    /// Completes an upload: the registry checks the digest and stores the blob.
    pub async fn finish_upload(
        &self,
        repo: &Repo,
        mut session: Url,
        digest: &str,
    ) -> Result<(), MirrorError> {
        session.query_pairs_mut().append_pair("digest", digest);
        let access = Access::push(repo);
        let op = format!("PUT upload {repo}@{digest}");
        let response = self
            .send(&access, &op, true, |h| {
                h.put(session.clone())
                    .header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(MirrorError::status(&op, response).await);
        }
        Ok(())
    }

    /// Abandons an upload session (best effort: registries expire them anyway).
    pub async fn cancel_upload(&self, repo: &Repo, session: Url) {
        let request = self
            .http
            .delete(session)
            .timeout(self.settings.request_timeout);
        let _ = self
            .with_cached_auth(request, &Access::push(repo))
            .send()
            .await;
    }
}

/// The next page a `Link` header names, on the registry that sent it (a
/// link to another host is not followed: credentials are the registry's).
fn next_page(response: &Response, current: &Url) -> Option<Url> {
    let header = response
        .headers()
        .get(reqwest::header::LINK)?
        .to_str()
        .ok()?;
    let next = current.join(super::referrers::next_link(header)?).ok()?;
    (next.origin() == current.origin()).then_some(next)
}

/// Answers that mean "not this client's to read", not a failure.
fn unreadable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    )
}

/// `Content-Length` as sent (for HEAD answers, whose body is empty).
pub fn header_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn sensitive(value: &str) -> Result<HeaderValue, MirrorError> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| MirrorError::Credentials("credential contains invalid characters".into()))?;
    header.set_sensitive(true);
    Ok(header)
}

fn location(response: &Response, op: &str) -> Result<Url, MirrorError> {
    let value = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| MirrorError::Invalid(format!("{op}: upload answer has no Location")))?;
    response
        .url()
        .join(value)
        .map_err(|e| MirrorError::Invalid(format!("{op}: bad Location: {e}")))
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
async fn read_limited(
    mut response: Response,
    limit: usize,
    op: &str,
) -> Result<Bytes, MirrorError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(MirrorError::Invalid(format!(
            "{op}: body larger than {limit} bytes"
        )));
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MirrorError::transport(op, e))?
    {
        if out.len() + chunk.len() > limit {
            return Err(MirrorError::Invalid(format!(
                "{op}: body larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn transient_transport(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
}

/// 0.2 s, 0.4 s, 0.8 s … capped at 10 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(10))
}

/// `Retry-After` in seconds (the HTTP-date form is rare for registries), capped at 60 s.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_and_capped_and_backoff_grows_to_a_cap() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            HeaderValue::from_static("86400"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(60)));
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_secs(10));
        assert!(retryable_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable_status(StatusCode::BAD_GATEWAY));
        assert!(!retryable_status(StatusCode::NOT_FOUND));
        assert!(!retryable_status(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn docker_hub_goes_to_its_api_host_and_literal_addresses_are_checked() {
        let client = RegistryClient::new(ClientSettings {
            plain_http: vec!["mirror.local:5000".into()],
            ..ClientSettings::default()
        })
        .unwrap();
        assert_eq!(
            client.base("docker.io").unwrap().as_str(),
            "https://registry-1.docker.io/v2/"
        );
        assert_eq!(
            client.base("mirror.local:5000").unwrap().as_str(),
            "http://mirror.local:5000/v2/"
        );
        let refused = client.base("169.254.169.254").unwrap_err().to_string();
        assert!(refused.contains("metadata"), "{refused}");
        assert!(client.base("[::1]:5000").is_err());
    }
}
