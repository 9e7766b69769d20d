//! What the proxy answers, independent of HTTP: manifests by tag (with TTL
//! and stale serving) and by digest, blobs from the cache or from a fill,
//! tag lists passed through.
//!
//! Layer: the proxy's domain, on top of the upstream client
//! ([`detour_registry::RegistryClient`]), the [`Store`] and the [`Fills`];
//! [`super::http`] translates its answers into the Distribution API.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::ProxyError;
use super::fill::{self, BlobBody, FillTask, Fills, Follower, Progress};
use super::metrics::{CacheLabels, FetchLabels, ProxyMetrics};
use super::route::{Reference, Router};
use super::store::{Store, StoredManifest};
use detour_registry::manifest::OCI_INDEX;
use detour_registry::referrers;
use detour_registry::{MirrorError, RegistryClient, Repo};

/// Bytes from the upstream handed to the writer at once.
const GATHER: usize = 256 * 1024;

/// A manifest to send.
#[derive(Debug, Clone)]
pub struct ManifestAnswer {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
    /// Served past its TTL because the upstream could not be reached.
    pub stale: bool,
}

impl ManifestAnswer {
    fn stored(stored: StoredManifest, digest: String, stale: bool) -> ManifestAnswer {
        ManifestAnswer {
            media_type: stored.media_type,
            digest,
            bytes: stored.bytes,
            stale,
        }
    }
}

/// A referrers list to send.
#[derive(Debug, Clone)]
pub struct ReferrersAnswer {
    /// The list, an OCI index (`stale` when served past its TTL).
    pub index: ManifestAnswer,
    /// Only the entries of the artifact type asked for.
    pub filtered: bool,
}

/// A blob (or a range of it) to send.
pub struct BlobAnswer {
    /// The blob's whole size, when known (the upstream may not announce it).
    pub size: Option<u64>,
    /// The byte range sent (`start..end`), when a range was asked for and
    /// the size is known.
    pub range: Option<(u64, u64)>,
    pub body: BlobBody,
}

/// A requested byte range: `start..end` (exclusive), or the last `n` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    From { start: u64, end: Option<u64> },
    Suffix(u64),
}

impl ByteRange {
    /// `start..end` within a blob of `size`, `None` when unsatisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (start, end) = match self {
            ByteRange::From { start, end } => (start, end.unwrap_or(size).min(size)),
            ByteRange::Suffix(n) => (size.saturating_sub(n), size),
        };
        (start < end).then_some((start, end))
    }
}

pub struct ProxySettings {
    pub tag_ttl: Duration,
    pub serve_stale: Duration,
}

pub struct Proxy {
    pub router: Router,
    pub metrics: Arc<ProxyMetrics>,
    client: Arc<RegistryClient>,
    store: Arc<Store>,
    fills: Fills,
    settings: ProxySettings,
    /// One upstream manifest lookup at a time per (upstream, repository,
    /// reference); the others wait and then find it cached.
    manifest_lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Proxy {
    pub fn new(
        router: Router,
        client: Arc<RegistryClient>,
        store: Arc<Store>,
        settings: ProxySettings,
        metrics: Arc<ProxyMetrics>,
    ) -> Arc<Proxy> {
        metrics.cache_bytes.set(store.size() as i64);
        Arc::new(Proxy {
            router,
            metrics,
            client,
            store,
            fills: Fills::default(),
            settings,
            manifest_lookups: Mutex::new(HashMap::new()),
        })
    }

    fn repo(&self, upstream: usize, repository: &str) -> Repo {
        Repo {
            host: self.router.host(upstream).to_string(),
            path: repository.to_string(),
        }
    }

    fn count(&self, upstream: usize, kind: &'static str, result: &'static str) {
        self.metrics
            .requests
            .get_or_create(&CacheLabels {
                upstream: self.router.host(upstream).to_string(),
                kind,
                result,
            })
            .inc();
    }

    fn count_fetch(&self, upstream: usize, kind: &'static str) {
        self.metrics
            .upstream_fetches
            .get_or_create(&FetchLabels {
                upstream: self.router.host(upstream).to_string(),
                kind,
            })
            .inc();
    }

    fn count_error(&self, upstream: usize, e: &MirrorError) {
        if !matches!(e, MirrorError::Status { status: 404, .. }) {
            self.metrics
                .upstream_errors
                .get_or_create(&ProxyMetrics::upstream(self.router.host(upstream)))
                .inc();
        }
    }

    /// A manifest by tag or digest.
    pub async fn manifest(
        &self,
        upstream: usize,
        repository: &str,
        reference: &Reference,
    ) -> Result<ManifestAnswer, ProxyError> {
        if let Some(answer) = self
            .cached_manifest(upstream, repository, reference, false)
            .await
        {
            self.count(upstream, "manifest", "hit");
            return Ok(answer);
        }
        let key = format!(
            "{}/{repository}:{}",
            self.router.host(upstream),
            reference.as_str()
        );
        let lookup = {
            let mut lookups = self
                .manifest_lookups
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            lookups.entry(key.clone()).or_default().clone()
        };
        let answer = {
            let _one_at_a_time = lookup.lock().await;
            match self
                .cached_manifest(upstream, repository, reference, false)
                .await
            {
                Some(answer) => {
                    self.count(upstream, "manifest", "hit");
                    Ok(answer)
                }
                None => self.fetch_manifest(upstream, repository, reference).await,
            }
        };
        let mut lookups = self
            .manifest_lookups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lookup) == 2 {
            lookups.remove(&key);
        }
        answer
    }

    /// From the cache: by digest always; by tag while the tag is fresh (or
    /// `stale_ok` and within the stale window).
    async fn cached_manifest(
        &self,
        upstream: usize,
        repository: &str,
        reference: &Reference,
        stale_ok: bool,
    ) -> Option<ManifestAnswer> {
        let (digest, stale) = match reference {
            Reference::Digest(d) => (d.clone(), false),
            Reference::Tag(tag) => {
                let (digest, age) = self
                    .store
                    .tag(self.router.host(upstream), repository, tag)
                    .await?;
                let ttl = self.settings.tag_ttl;
                if age <= ttl {
                    (digest, false)
                } else if stale_ok && age <= ttl + self.settings.serve_stale {
                    (digest, true)
                } else {
                    return None;
                }
            }
        };
        let stored = self.store.manifest(&digest).await?;
        Some(ManifestAnswer::stored(stored, digest, stale))
    }

    /// After `error` fetching what a tag names (`kind`: a manifest, a
    /// referrers list): the cached answer past its TTL when the upstream
    /// could not be reached and the stale window allows, counted and
    /// logged; else the error.
    async fn stale(
        &self,
        upstream: usize,
        repository: &str,
        tag: &Reference,
        kind: &'static str,
        error: ProxyError,
    ) -> Result<ManifestAnswer, ProxyError> {
        if !matches!(error, ProxyError::Unavailable(_)) {
            return Err(error);
        }
        let Some(answer) = self.cached_manifest(upstream, repository, tag, true).await else {
            return Err(error);
        };
        let host = self.router.host(upstream);
        self.count(upstream, kind, "stale");
        self.metrics
            .stale_served
            .get_or_create(&ProxyMetrics::upstream(host))
            .inc();
        tracing::warn!(upstream = host, repository, tag = tag.as_str(), kind, error = %error, "upstream unreachable: serving the cached answer past its TTL");
        Ok(answer)
    }

    async fn fetch_manifest(
        &self,
        upstream: usize,
        repository: &str,
        reference: &Reference,
    ) -> Result<ManifestAnswer, ProxyError> {
        let repo = self.repo(upstream, repository);
        let host = self.router.host(upstream);
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => {
                self.count_fetch(upstream, "tag");
                match self.client.manifest_digest(&repo, tag).await {
                    Ok(Some(digest)) if super::route::is_digest(&digest) => digest,
                    Ok(Some(digest)) => {
                        return Err(ProxyError::Upstream(format!(
                            "{repo}:{tag}: upstream digest {digest:?} is not one detour can verify"
                        )))
                    }
                    Ok(None) => {
                        self.store.remove_tag(host, repository, tag).await;
                        self.count(upstream, "manifest", "miss");
                        return Err(ProxyError::NotFound(format!(
                            "{repo}:{tag}: no such manifest"
                        )));
                    }
                    Err(e) => {
                        self.count_error(upstream, &e);
                        let error = ProxyError::from(e);
                        return self
                            .stale(upstream, repository, reference, "manifest", error)
                            .await;
                    }
                }
            }
        };
        let answer = match self.store.manifest(&digest).await {
            Some(stored) => {
                self.count(upstream, "manifest", "hit");
                ManifestAnswer::stored(stored, digest.clone(), false)
            }
            None => {
                self.count(upstream, "manifest", "miss");
                self.count_fetch(upstream, "manifest");
                let started = Instant::now();
                let fetched = self
                    .client
                    .get_manifest(&repo, &digest)
                    .await
                    .inspect_err(|e| self.count_error(upstream, e))?;
                tracing::info!(
                    upstream = host,
                    repository,
                    digest,
                    bytes = fetched.bytes.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "manifest fetched"
                );
                if let Err(e) = self
                    .store
                    .put_manifest(&digest, &fetched.media_type, &fetched.bytes)
                    .await
                {
                    tracing::error!(error = %e, digest, "cannot store a manifest; serving it uncached");
                }
                self.after_store().await;
                ManifestAnswer {
                    media_type: fetched.media_type,
                    digest: digest.clone(),
                    bytes: fetched.bytes,
                    stale: false,
                }
            }
        };
        if let Reference::Tag(tag) = reference {
            if let Err(e) = self.store.put_tag(host, repository, tag, &digest).await {
                tracing::error!(error = %e, tag, "cannot store a tag");
            }
        }
        Ok(answer)
    }

    /// The size of a blob, from the cache or the upstream (HEAD).
    pub async fn blob_size(
        &self,
        upstream: usize,
        repository: &str,
        digest: &str,
    ) -> Result<u64, ProxyError> {
        if let Some(size) = self.store.blob(digest).await {
            self.count(upstream, "blob", "hit");
            return Ok(size);
        }
        let repo = self.repo(upstream, repository);
        self.count_fetch(upstream, "blob-head");
        match self.client.blob_size(&repo, digest).await {
            Ok(Some(size)) => Ok(size),
            Ok(None) => Err(ProxyError::NotFound(format!(
                "{repo}@{digest}: no such blob"
            ))),
            Err(e) => {
                self.count_error(upstream, &e);
                Err(e.into())
            }
        }
    }

    /// A blob, or a range of it, from the cache or from a fill (started
    /// here unless one runs).
    pub async fn blob(
        self: &Arc<Self>,
        upstream: usize,
        repository: &str,
        digest: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobAnswer, ProxyError> {
        let cache_error = |e: std::io::Error| ProxyError::Cache(e.to_string());
        if let Some(size) = self.store.blob(digest).await {
            self.count(upstream, "blob", "hit");
            return self.cached_blob(digest, size, range).await;
        }
        let repo = self.repo(upstream, repository);
        let followed = self
            .fills
            .follow(
                digest,
                || self.store.knows_blob(digest),
                || self.store.temp_file(),
                |task| {
                    let proxy = self.clone();
                    tokio::spawn(async move { proxy.run_fill(upstream, repo, task).await });
                },
            )
            .map_err(cache_error)?;
        let Some((fill, file)) = followed else {
            // Finished between the two looks.
            let size = self
                .store
                .blob(digest)
                .await
                .ok_or_else(|| ProxyError::Cache("blob evicted as it was stored".into()))?;
            self.count(upstream, "blob", "hit");
            return self.cached_blob(digest, size, range).await;
        };
        self.count(upstream, "blob", "miss");
        // Wait for the upstream's answer: an error before any byte is the
        // client's answer too.
        let mut progress = fill.progress();
        let size = loop {
            match &*progress.borrow_and_update() {
                Progress::Starting => {}
                Progress::Running { total, .. } => break *total,
                Progress::Done { size } => break Some(*size),
                Progress::Failed(error) => return Err(error.clone()),
            }
            if progress.changed().await.is_err() {
                return Err(ProxyError::Cache("blob fill stopped".into()));
            }
        };
        // Unknown size: the whole blob (a server may ignore Range).
        let range = match size {
            Some(size) => resolve(range, size)?,
            None => None,
        };
        let (start, end) = range.map_or((0, None), |(s, e)| (s, Some(e)));
        let body = Follower::new(file, fill.progress(), Some(fill.chunks()), start, end);
        Ok(BlobAnswer {
            size,
            range,
            body: BlobBody::Local(body),
        })
    }

    async fn cached_blob(
        &self,
        digest: &str,
        size: u64,
        range: Option<ByteRange>,
    ) -> Result<BlobAnswer, ProxyError> {
        let range = resolve(range, size)?;
        let (start, end) = range.map_or((0, None), |(s, e)| (s, Some(e)));
        let body = self
            .store
            .open_blob(digest, size, start, end)
            .await
            .map_err(|e| ProxyError::Cache(e.to_string()))?;
        Ok(BlobAnswer {
            size: Some(size),
            range,
            body,
        })
    }

    /// Fetches a blob into the cache; runs to the end whatever its clients do.
    async fn run_fill(self: Arc<Self>, upstream: usize, repo: Repo, task: FillTask) {
        let FillTask {
            digest,
            path,
            file,
            progress,
            chunks,
        } = task;
        let host = self.router.host(upstream).to_string();
        let started = Instant::now();
        self.count_fetch(upstream, "blob");
        let result = self
            .fetch_blob(&host, &repo, &digest, file, progress.clone(), chunks)
            .await;
        // Unregistered, and its file deleted: nothing of it is stored.
        let abandon = || {
            self.fills.finish(&digest, || {
                let _ = std::fs::remove_file(&path);
            })
        };
        match result {
            Ok((size, file)) => {
                // Verified: clients get their last bytes now.
                progress.send_replace(Progress::Done { size });
                // On disk before it is renamed or uploaded into the cache: a
                // crash must not leave a cached name with missing bytes.
                let synced = tokio::task::spawn_blocking(move || file.sync_data()).await;
                if let Ok(Err(e)) | Err(e) = synced.map_err(std::io::Error::other) {
                    tracing::error!(error = %e, digest, "cannot sync a fetched blob; not caching it");
                    abandon();
                    return;
                }
                // Uploaded (shared cache) while the fill is still followed,
                // then moved into place (local) as it stops being followed.
                let stored = match self.store.upload_blob(&path, &digest, size).await {
                    Ok(()) => self
                        .fills
                        .finish(&digest, || self.store.settle_blob(&path, &digest, size))
                        .map_err(|e| e.to_string()),
                    Err(e) => {
                        abandon();
                        Err(e.to_string())
                    }
                };
                if let Err(e) = &stored {
                    tracing::error!(error = %e, digest, "cannot store a verified blob; it was served uncached");
                }
                tracing::info!(
                    upstream = host,
                    repository = repo.path,
                    digest,
                    bytes = size,
                    ms = started.elapsed().as_millis() as u64,
                    "blob fetched"
                );
                self.after_store().await;
            }
            Err(e) => {
                self.count_error(upstream, &e);
                abandon();
                tracing::warn!(
                    upstream = host,
                    repository = repo.path,
                    digest,
                    error = %e,
                    "blob fetch failed; nothing was cached"
                );
                progress.send_replace(Progress::Failed(e.into()));
            }
        }
    }

    async fn fetch_blob(
        &self,
        host: &str,
        repo: &Repo,
        digest: &str,
        file: std::fs::File,
        progress: Arc<tokio::sync::watch::Sender<Progress>>,
        chunks_out: tokio::sync::broadcast::Sender<(u64, Bytes)>,
    ) -> Result<(u64, std::fs::File), MirrorError> {
        let mut response = self.client.get_blob(repo, digest).await?;
        let total = response.content_length();
        let mut hasher = detour_registry::digest::Hasher::for_digest(digest)?;
        let (chunks, writer) = fill::spawn_writer(file, total, progress, chunks_out);
        let bytes_in = self
            .metrics
            .upstream_bytes
            .get_or_create(&ProxyMetrics::upstream(host))
            .clone();
        let op = format!("GET blob {repo}@{digest}");
        // The network's chunks are small (often 16 KiB); gathered into
        // larger ones, the writer thread and the followers wake up once
        // per 256 KiB instead of once per chunk.
        let mut gathered = bytes::BytesMut::new();
        let streamed = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    bytes_in.inc_by(chunk.len() as u64);
                    hasher.update(&chunk);
                    gathered.extend_from_slice(&chunk);
                    if gathered.len() >= GATHER
                        && chunks.send(gathered.split().freeze()).await.is_err()
                    {
                        break Ok(()); // the writer stopped: its error follows
                    }
                }
                Ok(None) => {
                    if !gathered.is_empty() {
                        let _ = chunks.send(gathered.split().freeze()).await;
                    }
                    break Ok(());
                }
                Err(e) => break Err(MirrorError::transport(&op, e)),
            }
        };
        drop(chunks);
        let actual = hasher.finish();
        let (written, file) = writer
            .await
            .map_err(|e| MirrorError::Invalid(format!("{op}: writer: {e}")))?;
        streamed?;
        let written =
            written.map_err(|e| MirrorError::Invalid(format!("{op}: cache write: {e}")))?;
        if let Some(total) = total.filter(|t| *t != written) {
            return Err(MirrorError::Invalid(format!(
                "{op}: upstream announced {total} bytes and sent {written}"
            )));
        }
        if actual != digest {
            return Err(MirrorError::DigestMismatch {
                what: op,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok((written, file))
    }

    /// Evicts beyond the size limit and updates the size metrics.
    async fn after_store(&self) {
        let (entries, bytes) = self.store.evict().await;
        if entries > 0 {
            self.metrics.evictions.inc_by(entries);
            self.metrics.evicted_bytes.inc_by(bytes);
            tracing::info!(entries, bytes, "evicted least recently used cache entries");
        }
        self.metrics.cache_bytes.set(self.store.size() as i64);
    }

    /// The referrers of `digest` (the OCI 1.1 referrers API), for every
    /// client whatever its upstream answers: the upstream's referrers API
    /// when it has one, else its fallback tag's index (`sha256-<hex>`), else
    /// an empty list. Cached like a tag (fresh for the tag TTL, served
    /// stale when the upstream cannot be reached), under a name no tag can
    /// have; filtered by artifact type here, so one cached list answers
    /// every filter.
    pub async fn referrers(
        &self,
        upstream: usize,
        repository: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersAnswer, ProxyError> {
        let Some(stem) = referrers::tag_stem(digest) else {
            return Err(ProxyError::NotFound(format!("{digest}: not a digest")));
        };
        let cached_as = Reference::Tag(format!("-referrers-{stem}"));
        let index = match self
            .cached_manifest(upstream, repository, &cached_as, false)
            .await
        {
            Some(answer) => {
                self.count(upstream, "referrers", "hit");
                answer
            }
            None => {
                self.count(upstream, "referrers", "miss");
                match self
                    .fetch_referrers(upstream, repository, digest, &stem)
                    .await
                {
                    Ok(entries) => {
                        self.store_referrers(upstream, repository, &cached_as, &entries)
                            .await
                    }
                    Err(e) => {
                        self.stale(upstream, repository, &cached_as, "referrers", e)
                            .await?
                    }
                }
            }
        };
        let Some(wanted) = artifact_type else {
            return Ok(ReferrersAnswer {
                index,
                filtered: false,
            });
        };
        let entries =
            referrers::descriptors(&index.bytes).map_err(|e| ProxyError::Cache(e.to_string()))?;
        let bytes = Bytes::from(referrers::index_of(&referrers::filtered(entries, wanted)));
        Ok(ReferrersAnswer {
            index: ManifestAnswer {
                digest: detour_registry::digest::digest_of(&bytes, None)
                    .map_err(|e| ProxyError::Cache(e.to_string()))?,
                bytes,
                ..index
            },
            filtered: true,
        })
    }

    /// The upstream's referrers of `digest`: through its referrers API, or
    /// from its fallback tag `stem`.
    async fn fetch_referrers(
        &self,
        upstream: usize,
        repository: &str,
        digest: &str,
        stem: &str,
    ) -> Result<Vec<referrers::Descriptor>, ProxyError> {
        let repo = self.repo(upstream, repository);
        self.count_fetch(upstream, "referrers");
        match self.client.referrers(&repo, digest).await {
            Ok(Some(entries)) => Ok(entries),
            Ok(None) => {
                let fallback = Reference::Tag(stem.to_string());
                match self.manifest(upstream, repository, &fallback).await {
                    Ok(index) => referrers::descriptors(&index.bytes)
                        .map_err(|e| ProxyError::Upstream(format!("{repo}:{stem}: {e}"))),
                    Err(ProxyError::NotFound(_)) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => {
                self.count_error(upstream, &e);
                Err(e.into())
            }
        }
    }

    /// Keeps a referrers list as a manifest, named by `cached_as`.
    async fn store_referrers(
        &self,
        upstream: usize,
        repository: &str,
        cached_as: &Reference,
        entries: &[referrers::Descriptor],
    ) -> ManifestAnswer {
        let bytes = Bytes::from(referrers::index_of(entries));
        let digest = detour_registry::digest::digest_of(&bytes, None).unwrap_or_default();
        let stored = async {
            self.store.put_manifest(&digest, OCI_INDEX, &bytes).await?;
            self.store
                .put_tag(
                    self.router.host(upstream),
                    repository,
                    cached_as.as_str(),
                    &digest,
                )
                .await
        };
        if let Err(e) = stored.await {
            tracing::error!(error = %e, "cannot store a referrers list; serving it uncached");
        }
        self.after_store().await;
        ManifestAnswer {
            media_type: OCI_INDEX.to_string(),
            digest,
            bytes,
            stale: false,
        }
    }

    /// A page of an upstream repository's tags, not cached.
    pub async fn tag_list(
        &self,
        upstream: usize,
        repository: &str,
        query: Option<&str>,
    ) -> Result<Bytes, ProxyError> {
        let repo = self.repo(upstream, repository);
        self.count_fetch(upstream, "tags");
        self.client.tag_list(&repo, query).await.map_err(|e| {
            self.count_error(upstream, &e);
            e.into()
        })
    }
}

/// The byte range to send of a blob of `size`, if one was asked for.
fn resolve(range: Option<ByteRange>, size: u64) -> Result<Option<(u64, u64)>, ProxyError> {
    range
        .map(|r| r.resolve(size).ok_or(ProxyError::RangeNotSatisfiable))
        .transpose()
}
