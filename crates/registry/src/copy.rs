//! Copying one image (every platform, byte for byte) between registries.
//!
//! Layer: adapter, on [`RegistryClient`]. The order is what keeps a
//! half-finished copy invisible: all blobs, then the child manifests (by
//! digest), then the top manifest by digest, and only then the tag. A copy
//! interrupted at any point leaves no tag pointing at missing content, and
//! running it again finishes the job, skipping what already arrived.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};

use super::client::{backoff, ManifestBytes, RegistryClient, Repo, UploadStart};
use super::digest::Hasher;
use super::layout::OciLayout;
use super::manifest::{self, ManifestKind, Target};
use super::MirrorError;
use detour_core::mirror_settings::PlatformFilter;
use detour_core::reference::Reference;

mod attached;
pub use attached::AttachedReport;

#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs in flight at once.
    pub blob_concurrency: usize,
    /// Copy only these platforms of an index (the copied index then has
    /// another digest). Empty: every platform, same digest.
    pub platforms: Vec<PlatformFilter>,
    /// Whole-blob retries after a connection error or 5xx mid-transfer.
    pub retries: u32,
    /// Copy the signatures, attestations, SBOMs and other referrers
    /// attached to each image too ([`attached`]).
    pub attached: bool,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            blob_concurrency: 6,
            platforms: vec![],
            retries: 4,
            attached: true,
        }
    }
}

/// Progress callbacks (the CLI's progress bar, the webhook's byte counter).
pub trait Observer: Send + Sync {
    /// Bytes of a blob that will be sent.
    fn planned(&self, _bytes: u64) {}
    /// Bytes that passed through (streamed to the destination).
    fn transferred(&self, _bytes: u64) {}
}

/// An observer that ignores everything.
pub struct Quiet;
impl Observer for Quiet {}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    pub source: String,
    pub destination: String,
    /// The digest of the copied top manifest.
    pub digest: String,
    pub manifests_copied: u64,
    pub manifests_skipped: u64,
    pub blobs_copied: u64,
    pub blobs_skipped: u64,
    pub blobs_mounted: u64,
    pub bytes_copied: u64,
    /// Index entries left out by the platform filter.
    pub platforms_dropped: u64,
    /// What was attached to the image and travelled with it (counted in
    /// the figures above).
    pub attached: Vec<AttachedReport>,
}

impl CopyReport {
    pub fn add(&mut self, other: &CopyReport) {
        self.manifests_copied += other.manifests_copied;
        self.manifests_skipped += other.manifests_skipped;
        self.blobs_copied += other.blobs_copied;
        self.blobs_skipped += other.blobs_skipped;
        self.blobs_mounted += other.blobs_mounted;
        self.bytes_copied += other.bytes_copied;
        self.platforms_dropped += other.platforms_dropped;
    }
}

enum BlobOutcome {
    Copied(u64),
    Skipped,
    Mounted,
}

impl CopyReport {
    fn count(&mut self, outcomes: Vec<BlobOutcome>) {
        for outcome in outcomes {
            match outcome {
                BlobOutcome::Copied(n) => {
                    self.blobs_copied += 1;
                    self.bytes_copied += n;
                }
                BlobOutcome::Skipped => self.blobs_skipped += 1,
                BlobOutcome::Mounted => self.blobs_mounted += 1,
            }
        }
    }
}

type BlobStream = futures_util::stream::BoxStream<
    'static,
    Result<bytes::Bytes, Box<dyn std::error::Error + Send + Sync>>,
>;

/// Where an image is copied from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Registry(&'a Repo),
    Layout(&'a OciLayout),
}

impl Source<'_> {
    fn label(&self) -> String {
        match self {
            Source::Registry(repo) => repo.to_string(),
            Source::Layout(layout) => layout.to_string(),
        }
    }

    /// A manifest by tag or digest (a layout has them by digest only, and
    /// needs the media type its descriptor gives).
    async fn manifest(
        &self,
        client: &RegistryClient,
        reference: &str,
        media_type: Option<&str>,
    ) -> Result<ManifestBytes, MirrorError> {
        match self {
            Source::Registry(repo) => client.get_manifest(repo, reference).await,
            Source::Layout(layout) => layout.read_manifest(reference, media_type.unwrap_or("")),
        }
    }

    async fn blob(&self, client: &RegistryClient, digest: &str) -> Result<BlobStream, MirrorError> {
        match self {
            Source::Registry(repo) => {
                let response = client.get_blob(repo, digest).await?;
                Ok(response
                    .bytes_stream()
                    .map(|c| c.map_err(Into::into))
                    .boxed())
            }
            Source::Layout(layout) => Ok(layout
                .blob_stream(digest)
                .await?
                .map(|c| c.map_err(Into::into))
                .boxed()),
        }
    }
}

/// How `index.json` lists a manifest copied into a layout.
enum LayoutEntry {
    /// An image or a cosign tag, by `org.opencontainers.image.ref.name`.
    Named(String),
    /// A referrer, found by its subject (as oras lays them out).
    Unnamed(crate::referrers::Descriptor),
}

impl std::fmt::Display for LayoutEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutEntry::Named(name) => f.write_str(name),
            LayoutEntry::Unnamed(d) => f.write_str(&d.digest),
        }
    }
}

/// What `copy_image` copies.
struct From<'a> {
    source: Source<'a>,
    /// For reports and errors.
    label: String,
    /// Tag or digest of the top manifest.
    reference: &'a str,
    /// The top manifest's media type, when the source needs it.
    media_type: Option<&'a str>,
    /// The tag when the destination names none.
    default_tag: Option<&'a str>,
    /// Apply the platform filter (not to attached artifacts, whose
    /// digests must not change).
    filter_platforms: bool,
}

/// An image as copied: its report, and its digests (the top manifest's,
/// then its children's), which artifacts may be attached to.
struct Copied {
    report: CopyReport,
    digests: Vec<String>,
}

fn digests_of(top: &ManifestBytes, children: &[Target]) -> Vec<String> {
    std::iter::once(top.digest.clone())
        .chain(children.iter().map(|c| c.digest.clone()))
        .collect()
}

pub struct Copier {
    client: Arc<RegistryClient>,
    options: CopyOptions,
    /// Registries (by host) known to answer the referrers API, or not.
    referrers_api: Mutex<HashMap<String, bool>>,
}

impl Copier {
    pub fn new(client: Arc<RegistryClient>, options: CopyOptions) -> Self {
        Copier {
            client,
            options,
            referrers_api: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self) -> &Arc<RegistryClient> {
        &self.client
    }

    /// Copies `source` to `destination`. The destination tag is its own tag,
    /// else the source's tag; a `name:tag@digest` source copies that digest
    /// and points the tag at it. A digest on the destination must be what
    /// the copy produces.
    pub async fn copy(
        &self,
        source: &Reference,
        destination: &Reference,
        observer: Arc<dyn Observer>,
    ) -> Result<CopyReport, MirrorError> {
        let src = Repo::of(source);
        let src_ref = source.digest().or(source.tag()).unwrap_or("latest");
        let default_tag = source.tag().or(if source.digest().is_none() {
            Some("latest")
        } else {
            None
        });
        let from = From {
            source: Source::Registry(&src),
            label: source.to_string(),
            reference: src_ref,
            media_type: None,
            default_tag,
            filter_platforms: true,
        };
        let copied = self.copy_image(from, destination, observer.clone()).await?;
        let beside = attached::Beside::Registry(destination);
        self.with_attached(copied, Source::Registry(&src), beside, observer)
            .await
    }

    /// Copies image `name` of an OCI layout to `destination` (its tag, else
    /// the name's tag, else `latest`), with the same order and checks as a
    /// copy between registries.
    pub async fn copy_from_layout(
        &self,
        layout: &OciLayout,
        name: &str,
        destination: &Reference,
        observer: Arc<dyn Observer>,
    ) -> Result<CopyReport, MirrorError> {
        let top = layout.named(name)?;
        let name_tag = Reference::parse(name)
            .ok()
            .and_then(|r| r.tag().map(str::to_string));
        let from = From {
            source: Source::Layout(layout),
            label: name.to_string(),
            reference: &top.digest,
            media_type: Some(&top.media_type),
            default_tag: Some(name_tag.as_deref().unwrap_or("latest")),
            filter_platforms: true,
        };
        let copied = self.copy_image(from, destination, observer.clone()).await?;
        let beside = attached::Beside::Registry(destination);
        self.with_attached(copied, Source::Layout(layout), beside, observer)
            .await
    }

    /// Copies one image (not what is attached to it).
    async fn copy_image(
        &self,
        from: From<'_>,
        destination: &Reference,
        observer: Arc<dyn Observer>,
    ) -> Result<Copied, MirrorError> {
        let dst = Repo::of(destination);
        let tag = destination.tag().or(from.default_tag).map(str::to_string);
        let mut report = CopyReport {
            source: from.label.clone(),
            destination: destination.to_string(),
            ..CopyReport::default()
        };
        let (top, children, dropped) = self
            .fetch_top(
                from.source,
                from.reference,
                from.media_type,
                from.filter_platforms,
            )
            .await?;
        report.platforms_dropped = dropped;
        let digests = digests_of(&top, &children);
        if let Some(expected) = destination.digest() {
            if expected != top.digest {
                return Err(MirrorError::Invalid(format!(
                    "{destination}: the copy has digest {} (platform filter: {}), not the digest the destination names",
                    top.digest,
                    if report.platforms_dropped > 0 { "dropped some platforms" } else { "none" }
                )));
            }
        }
        report.digest = top.digest.clone();

        // Already complete at the destination: at most the tag moves.
        if self
            .client
            .manifest_digest(&dst, &top.digest)
            .await?
            .is_some()
        {
            report.manifests_skipped += 1 + children.len() as u64;
            self.tag(&dst, tag.as_deref(), &top).await?;
            return Ok(Copied { report, digests });
        }

        // Child manifests and the blobs they need.
        let mut child_manifests = Vec::new();
        let mut blobs: Vec<Target> = Vec::new();
        let mut seen = HashSet::new();
        let mut push_blobs = |list: Vec<Target>, blobs: &mut Vec<Target>| {
            for b in list {
                if seen.insert(b.digest.clone()) {
                    blobs.push(b);
                }
            }
        };
        if children.is_empty() {
            push_blobs(manifest::blobs(&top.bytes)?, &mut blobs);
        }
        for child in &children {
            if self
                .client
                .manifest_digest(&dst, &child.digest)
                .await?
                .is_some()
            {
                report.manifests_skipped += 1;
                continue;
            }
            let m = self.image_manifest(&from.label, from.source, child).await?;
            push_blobs(manifest::blobs(&m.bytes)?, &mut blobs);
            child_manifests.push(m);
        }

        let concurrency = self.options.blob_concurrency.max(1);
        // Futures collected first: a closure in the stream would make the
        // copy future's Send bound higher-ranked, which spawn cannot prove.
        let copies: Vec<_> = blobs
            .iter()
            .map(|blob| self.copy_blob(from.source, &dst, blob, observer.clone()))
            .collect();
        let outcomes: Vec<BlobOutcome> = futures_util::stream::iter(copies)
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        report.count(outcomes);
        for m in &child_manifests {
            self.client.put_manifest(&dst, &m.digest, m).await?;
            report.manifests_copied += 1;
        }
        self.client.put_manifest(&dst, &top.digest, &top).await?;
        report.manifests_copied += 1;
        self.tag(&dst, tag.as_deref(), &top).await?;
        Ok(Copied { report, digests })
    }

    /// A child manifest of an index; nested indexes are not supported.
    async fn image_manifest(
        &self,
        label: &str,
        source: Source<'_>,
        child: &Target,
    ) -> Result<ManifestBytes, MirrorError> {
        let m = source
            .manifest(&self.client, &child.digest, Some(&child.media_type))
            .await?;
        if manifest::kind(&m.media_type) != Some(ManifestKind::Image) {
            return Err(MirrorError::Unsupported(format!(
                "{label}: nested index {} is not supported",
                child.digest
            )));
        }
        Ok(m)
    }

    /// The top manifest (an index filtered by the platforms, if any) and
    /// its child entries; how many platforms the filter left out.
    async fn fetch_top(
        &self,
        source: Source<'_>,
        reference: &str,
        media_type: Option<&str>,
        filter_platforms: bool,
    ) -> Result<(ManifestBytes, Vec<Target>, u64), MirrorError> {
        let platforms: &[PlatformFilter] = if filter_platforms {
            &self.options.platforms
        } else {
            &[]
        };
        let mut top = source.manifest(&self.client, reference, media_type).await?;
        let mut children: Vec<Target> = Vec::new();
        let mut dropped = 0;
        if manifest::kind(&top.media_type) == Some(ManifestKind::Index) {
            children = manifest::children(&top.bytes)?;
            if let Some(manifest::FilteredIndex { bytes, kept }) =
                manifest::filter_index(&top.bytes, &children, platforms)?
            {
                dropped = (children.len() - kept.len()) as u64;
                children = kept;
                top = ManifestBytes {
                    digest: super::digest::digest_of(&bytes, None)?,
                    media_type: top.media_type,
                    bytes: bytes.into(),
                };
            }
        }
        Ok((top, children, dropped))
    }

    /// Copies `source` into an OCI image layout under `name` (its
    /// `org.opencontainers.image.ref.name`): blobs, then child manifests,
    /// then the top manifest, then the name in `index.json`, so an
    /// interrupted copy names nothing incomplete.
    pub async fn copy_to_layout(
        &self,
        source: &Reference,
        layout: &OciLayout,
        name: &str,
        observer: Arc<dyn Observer>,
    ) -> Result<CopyReport, MirrorError> {
        let src = Repo::of(source);
        let src_ref = source.digest().or(source.tag()).unwrap_or("latest");
        let entry = LayoutEntry::Named(name.to_string());
        let copied = self
            .image_to_layout(&src, src_ref, layout, entry, true, observer.clone())
            .await?;
        let mut copied = copied;
        copied.report.source = source.to_string();
        let beside = attached::Beside::Layout {
            layout,
            src: &src,
            name,
        };
        self.with_attached(copied, Source::Registry(&src), beside, observer)
            .await
    }

    /// Copies one image of `src` (by tag or digest) into the layout, under
    /// `entry` in `index.json`.
    async fn image_to_layout(
        &self,
        src: &Repo,
        src_ref: &str,
        layout: &OciLayout,
        entry: LayoutEntry,
        filter_platforms: bool,
        observer: Arc<dyn Observer>,
    ) -> Result<Copied, MirrorError> {
        let (top, children, dropped) = self
            .fetch_top(Source::Registry(src), src_ref, None, filter_platforms)
            .await?;
        // As an image reference: `repo:tag` or `repo@digest`.
        let at = if src_ref.contains(':') { '@' } else { ':' };
        let label = format!("{src}{at}{src_ref}");
        let mut report = CopyReport {
            source: label.clone(),
            destination: entry.to_string(),
            digest: top.digest.clone(),
            platforms_dropped: dropped,
            ..CopyReport::default()
        };
        let digests = digests_of(&top, &children);
        let mut child_manifests = Vec::new();
        let mut blobs: Vec<Target> = Vec::new();
        let mut seen = HashSet::new();
        if children.is_empty() {
            blobs.extend(manifest::blobs(&top.bytes)?);
        }
        for child in &children {
            // A stored manifest was written after all of its blobs.
            if layout.has_blob(&child.digest)? {
                report.manifests_skipped += 1;
                continue;
            }
            let m = self
                .image_manifest(&label, Source::Registry(src), child)
                .await?;
            blobs.extend(manifest::blobs(&m.bytes)?);
            child_manifests.push(m);
        }
        blobs.retain(|b| seen.insert(b.digest.clone()));
        let copies: Vec<_> = blobs
            .iter()
            .map(|blob| self.blob_to_layout(src, layout, blob, observer.clone()))
            .collect();
        let outcomes: Vec<BlobOutcome> = futures_util::stream::iter(copies)
            .buffer_unordered(self.options.blob_concurrency.max(1))
            .try_collect()
            .await?;
        report.count(outcomes);
        for m in child_manifests.iter().chain([&top]) {
            if layout.has_blob(&m.digest)? {
                report.manifests_skipped += 1;
            } else {
                layout.write_manifest(m)?;
                report.manifests_copied += 1;
            }
        }
        match entry {
            LayoutEntry::Named(name) => layout.name(&name, &top)?,
            LayoutEntry::Unnamed(descriptor) => layout.add_unnamed(&descriptor)?,
        }
        Ok(Copied { report, digests })
    }

    async fn blob_to_layout(
        &self,
        src: &Repo,
        layout: &OciLayout,
        blob: &Target,
        observer: Arc<dyn Observer>,
    ) -> Result<BlobOutcome, MirrorError> {
        if layout.has_blob(&blob.digest)? {
            return Ok(BlobOutcome::Skipped);
        }
        observer.planned(blob.size);
        self.retrying(&blob.digest, || async {
            let stream = Source::Registry(src)
                .blob(&self.client, &blob.digest)
                .await?;
            let n = layout
                .write_blob(&blob.digest, blob.size, stream, |n| observer.transferred(n))
                .await?;
            Ok(BlobOutcome::Copied(n))
        })
        .await
    }

    /// Runs `attempt` again after a retryable failure (a connection error or
    /// 5xx mid-transfer), up to the configured retries, with backoff.
    async fn retrying<F, Fut>(&self, what: &str, mut attempt: F) -> Result<BlobOutcome, MirrorError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<BlobOutcome, MirrorError>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Err(e) if e.is_retryable() && tries < self.options.retries => {
                    tracing::debug!(blob = %what, attempt = tries, error = %e, "retrying blob");
                    tokio::time::sleep(backoff(tries)).await;
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn tag(
        &self,
        dst: &Repo,
        tag: Option<&str>,
        top: &ManifestBytes,
    ) -> Result<(), MirrorError> {
        let Some(tag) = tag else { return Ok(()) };
        if self.client.manifest_digest(dst, tag).await?.as_deref() == Some(top.digest.as_str()) {
            return Ok(());
        }
        self.client.put_manifest(dst, tag, top).await
    }

    async fn copy_blob(
        &self,
        src: Source<'_>,
        dst: &Repo,
        blob: &Target,
        observer: Arc<dyn Observer>,
    ) -> Result<BlobOutcome, MirrorError> {
        self.retrying(&blob.digest, || {
            self.copy_blob_once(src, dst, blob, observer.clone())
        })
        .await
    }

    async fn copy_blob_once(
        &self,
        src: Source<'_>,
        dst: &Repo,
        blob: &Target,
        observer: Arc<dyn Observer>,
    ) -> Result<BlobOutcome, MirrorError> {
        match self.client.blob_exists(dst, &blob.digest).await {
            Ok(true) => return Ok(BlobOutcome::Skipped),
            Ok(false) => {}
            // A registry that cannot say whether it holds a blob (a 5xx after
            // the retries; distribution answers 500 for a blob whose link
            // survived a crash but whose data did not) gets it uploaded:
            // content is addressed by digest, so an upload is never wrong,
            // and it repairs such a blob.
            Err(MirrorError::Status { status, .. }) if status >= 500 => {
                tracing::debug!(digest = %blob.digest, status, "blob existence unknown; uploading it");
            }
            Err(e) => return Err(e),
        }
        let mount = match src {
            Source::Registry(src) => (src.host == dst.host && src.path != dst.path)
                .then_some((blob.digest.as_str(), src.path.as_str())),
            Source::Layout(_) => None,
        };
        let session = match self.client.start_upload(dst, mount).await? {
            UploadStart::Mounted => return Ok(BlobOutcome::Mounted),
            UploadStart::Session(url) => url,
        };
        observer.planned(blob.size);
        let stream = match src.blob(&self.client, &blob.digest).await {
            Ok(s) => s,
            Err(e) => {
                self.client.cancel_upload(dst, session).await;
                return Err(e);
            }
        };
        let state = Arc::new(Mutex::new(Hasher::for_digest(&blob.digest)?));
        let count = Arc::new(AtomicU64::new(0));
        let expected = blob.size;
        let body = {
            let state = state.clone();
            let count = count.clone();
            stream.map(move |chunk| {
                let chunk = chunk?;
                let total =
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                if total > expected {
                    // Stop a source that sends more than the manifest says.
                    return Err(std::io::Error::other("blob is larger than its descriptor").into());
                }
                state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .update(&chunk);
                observer.transferred(chunk.len() as u64);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(chunk)
            })
        };
        let session = match self
            .client
            .upload_stream(dst, session.clone(), reqwest::Body::wrap_stream(body))
            .await
        {
            Ok(next) => next,
            Err(e) => {
                self.client.cancel_upload(dst, session).await;
                return Err(e);
            }
        };
        let sent = count.load(Ordering::Relaxed);
        let hasher = match Arc::try_unwrap(state) {
            Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
            Err(_) => return Err(MirrorError::Invalid("blob stream still in use".into())),
        };
        let actual = hasher.finish();
        if actual != blob.digest || sent != expected {
            self.client.cancel_upload(dst, session).await;
            return Err(MirrorError::DigestMismatch {
                what: format!("blob {}@{}", src.label(), blob.digest),
                expected: format!("{} ({expected} bytes)", blob.digest),
                actual: format!("{actual} ({sent} bytes)"),
            });
        }
        self.client
            .finish_upload(dst, session, &blob.digest)
            .await?;
        Ok(BlobOutcome::Copied(sent))
    }
}
