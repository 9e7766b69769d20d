//! The cache: content-addressed blobs and manifests, tag pointers, and
//! least-recently-used eviction, on the local filesystem or in an
//! S3-compatible bucket that several proxies share.
//!
//! Layer: adapter (filesystem and object-store I/O), below the proxy's
//! service. Keys, the same in both backends:
//! - `blobs/<algorithm>/<hex>`: verified blob bytes;
//! - `manifests/<algorithm>/<hex>`: the media type, a newline, the verified bytes;
//! - `tags/<upstream>/<repository>/_tags/<tag>`: the tag's digest, last
//!   modified when the upstream last confirmed it (`_` cannot start a
//!   repository component, so no repository collides).
//!
//! Blobs are filled into local files under `tmp/` (emptied at start) and
//! enter the cache only after their digest was checked: by a rename on the
//! filesystem, by an upload in S3. So a crash never leaves a partial blob
//! where it could be served. An in-memory index of sizes and last uses
//! orders evictions; with S3 it is filled by listing the bucket, at start
//! and every minute (what other replicas stored or evicted), and an object
//! the index does not know is looked up in the bucket before a fill.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::fill::{self, BlobBody};
use super::s3::{ObjectInfo, S3Client, S3Error};

/// What the index tracks: blobs and manifests, by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Blob,
    Manifest,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Blob => "blobs",
            Kind::Manifest => "manifests",
        }
    }
}

fn key(kind: Kind, digest: &str) -> String {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("{}/{algorithm}/{hex}", kind.dir())
}

fn tag_key(upstream: &str, repository: &str, tag: &str) -> String {
    format!("tags/{upstream}/{repository}/_tags/{tag}")
}

struct Entry {
    size: u64,
    /// Nanoseconds since the epoch of the last use (the modification time
    /// for entries found by a scan).
    last_used: u128,
    /// When the file's modification time was last brought up to date
    /// (local backend: it orders evictions after a restart).
    touched: SystemTime,
}

#[derive(Default)]
struct Index {
    entries: HashMap<(Kind, String), Entry>,
    total: u64,
}

impl Index {
    fn insert(&mut self, kind: Kind, digest: String, size: u64, used: SystemTime) {
        let entry = Entry {
            size,
            last_used: nanos(used),
            touched: used,
        };
        let previous = self.entries.insert((kind, digest), entry);
        self.total = self.total - previous.map_or(0, |p| p.size) + size;
    }

    fn remove(&mut self, kind: Kind, digest: &str) {
        if let Some(entry) = self.entries.remove(&(kind, digest.to_string())) {
            self.total -= entry.size;
        }
    }
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// Where cached objects live.
pub enum Backend {
    /// Under the cache directory.
    Local,
    /// In a bucket, under a key prefix.
    S3 {
        client: Box<S3Client>,
        prefix: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    S3(#[from] S3Error),
}

pub struct Store {
    /// Local directory: `tmp/` always, and the objects with [`Backend::Local`].
    root: PathBuf,
    backend: Backend,
    max_size: u64,
    index: Mutex<Index>,
    temp_counter: AtomicU64,
}

/// Modification times are refreshed at most this often per file: they only
/// order evictions after a restart.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);
/// Manifests and tag files are small; more is refused as corrupt.
const SMALL_LIMIT: usize = detour_registry::client::MAX_MANIFEST_BYTES + 1024;

impl Store {
    /// Opens the cache at `root` (creating it), dropping unfinished files,
    /// and indexes what is stored.
    pub async fn open(root: &Path, max_size: u64, backend: Backend) -> Result<Store, StoreError> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        if let Backend::Local = backend {
            for dir in ["blobs", "manifests", "tags"] {
                std::fs::create_dir_all(root.join(dir))?;
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            backend,
            max_size,
            index: Mutex::new(Index::default()),
            temp_counter: AtomicU64::new(0),
        };
        store.rescan().await?;
        Ok(store)
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::S3 { .. })
    }

    /// Brings the index in line with what is stored: new objects are added
    /// (last used: their modification time), vanished ones dropped, known
    /// ones keep their last use.
    pub async fn rescan(&self) -> Result<(), StoreError> {
        let mut found = Vec::new();
        for kind in [Kind::Blob, Kind::Manifest] {
            for object in self.list(kind.dir()).await? {
                let Some(rest) = object.key.strip_prefix(kind.dir()) else {
                    continue;
                };
                let digest = rest.trim_start_matches('/').replacen('/', ":", 1);
                if super::route::is_digest(&digest) {
                    found.push((kind, digest, object.size, object.modified));
                }
            }
        }
        let mut index = self.lock();
        let mut fresh = Index::default();
        for (kind, digest, size, modified) in found {
            match index.entries.remove(&(kind, digest.clone())) {
                Some(known) => {
                    fresh.total += size;
                    fresh
                        .entries
                        .insert((kind, digest), Entry { size, ..known });
                }
                None => fresh.insert(kind, digest, size, modified),
            }
        }
        *index = fresh;
        Ok(())
    }

    async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        match &self.backend {
            Backend::S3 { client, prefix } => {
                let full = format!("{prefix}{dir}/");
                let mut objects = client.list(&full).await?;
                for o in &mut objects {
                    o.key = o.key[prefix.len()..].to_string();
                }
                Ok(objects)
            }
            Backend::Local => {
                let mut out = Vec::new();
                for algorithm in std::fs::read_dir(self.root.join(dir))? {
                    let algorithm = algorithm?;
                    let name = algorithm.file_name().to_string_lossy().into_owned();
                    for file in std::fs::read_dir(algorithm.path())? {
                        let file = file?;
                        let meta = file.metadata()?;
                        out.push(ObjectInfo {
                            key: format!("{dir}/{name}/{}", file.file_name().to_string_lossy()),
                            size: meta.len(),
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        });
                    }
                }
                Ok(out)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local_path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn s3_key(prefix: &str, key: &str) -> String {
        format!("{prefix}{key}")
    }

    /// Size of the cache's blobs and manifests, in bytes.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    /// Whether a blob is cached (its size), marked as used.
    pub async fn blob(&self, digest: &str) -> Option<u64> {
        if let Some(size) = self.use_entry(Kind::Blob, digest) {
            return Some(size);
        }
        // Another replica may have stored it since the last listing.
        let Backend::S3 { client, prefix } = &self.backend else {
            return None;
        };
        let info = client
            .head(&Self::s3_key(prefix, &key(Kind::Blob, digest)))
            .await
            .inspect_err(
                |e| tracing::warn!(error = %e, "cannot look up a blob in the shared cache"),
            )
            .ok()??;
        self.lock()
            .insert(Kind::Blob, digest.to_string(), info.size, SystemTime::now());
        Some(info.size)
    }

    /// Whether a blob is cached, without marking it used or asking S3.
    pub fn knows_blob(&self, digest: &str) -> bool {
        self.lock()
            .entries
            .contains_key(&(Kind::Blob, digest.to_string()))
    }

    /// The bytes `start..end` of a cached blob of `size`.
    pub async fn open_blob(
        &self,
        digest: &str,
        size: u64,
        start: u64,
        end: Option<u64>,
    ) -> Result<BlobBody, StoreError> {
        let key = key(Kind::Blob, digest);
        match &self.backend {
            Backend::Local => {
                let follower = fill::cached(&self.local_path(&key), size, start, end);
                if follower.is_err() {
                    // Removed behind the index's back: forget it.
                    self.lock().remove(Kind::Blob, digest);
                }
                Ok(BlobBody::Local(follower?))
            }
            Backend::S3 { client, prefix } => {
                let range = (start > 0 || end.is_some_and(|e| e < size))
                    .then(|| (start, end.unwrap_or(size)));
                match client.get(&Self::s3_key(prefix, &key), range).await? {
                    Some(response) => Ok(BlobBody::Remote(response)),
                    None => {
                        self.lock().remove(Kind::Blob, digest);
                        Err(StoreError::Io(std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "blob evicted from the shared cache",
                        )))
                    }
                }
            }
        }
    }

    /// A cached manifest, marked as used.
    pub async fn manifest(&self, digest: &str) -> Option<StoredManifest> {
        let known = self.use_entry(Kind::Manifest, digest).is_some();
        let key = key(Kind::Manifest, digest);
        let raw = match &self.backend {
            Backend::Local if !known => return None,
            Backend::Local => match std::fs::read(self.local_path(&key)) {
                Ok(raw) => Bytes::from(raw),
                Err(_) => {
                    self.lock().remove(Kind::Manifest, digest);
                    return None;
                }
            },
            Backend::S3 { client, prefix } => {
                match client
                    .get_small(&Self::s3_key(prefix, &key), SMALL_LIMIT)
                    .await
                {
                    Ok(Some((raw, _))) => {
                        if !known {
                            self.lock().insert(
                                Kind::Manifest,
                                digest.to_string(),
                                raw.len() as u64,
                                SystemTime::now(),
                            );
                        }
                        raw
                    }
                    Ok(None) => {
                        self.lock().remove(Kind::Manifest, digest);
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read a manifest from the shared cache");
                        return None;
                    }
                }
            }
        };
        let newline = raw.iter().position(|&b| b == b'\n')?;
        let media_type = std::str::from_utf8(&raw[..newline]).ok()?.to_string();
        Some(StoredManifest {
            media_type,
            bytes: raw.slice(newline + 1..),
        })
    }

    fn use_entry(&self, kind: Kind, digest: &str) -> Option<u64> {
        let now = SystemTime::now();
        let mut index = self.lock();
        let entry = index.entries.get_mut(&(kind, digest.to_string()))?;
        entry.last_used = nanos(now);
        let size = entry.size;
        let stale_mtime = now.duration_since(entry.touched).unwrap_or_default() > TOUCH_INTERVAL;
        if stale_mtime && matches!(self.backend, Backend::Local) {
            entry.touched = now;
            drop(index);
            let _ = std::fs::File::options()
                .append(true)
                .open(self.local_path(&key(kind, digest)))
                .and_then(|f| f.set_modified(now));
        }
        Some(size)
    }

    /// A new file under `tmp/`.
    pub fn temp_file(&self) -> std::io::Result<(PathBuf, std::fs::File)> {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()));
        let file = std::fs::File::create(&path)?;
        Ok((path, file))
    }

    /// First step of storing a verified blob: with S3, the upload (the fill
    /// stays registered meanwhile, so its clients keep reading the local
    /// file). Nothing to do locally.
    pub async fn upload_blob(
        &self,
        temp: &Path,
        digest: &str,
        size: u64,
    ) -> Result<(), StoreError> {
        let Backend::S3 { client, prefix } = &self.backend else {
            return Ok(());
        };
        let file = tokio::fs::File::open(temp).await?;
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::unfold(file, |mut file| async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = vec![0; 256 * 1024];
                match file.read(&mut buffer).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buffer.truncate(n);
                        Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), file))
                    }
                    Err(e) => Some((Err(e), file)),
                }
            }));
        client
            .put(&Self::s3_key(prefix, &key(Kind::Blob, digest)), body, size)
            .await?;
        Ok(())
    }

    /// Last step, run while no client can start following the fill: the
    /// rename into the cache (local), or dropping the uploaded file (S3).
    pub fn settle_blob(&self, temp: &Path, digest: &str, size: u64) -> std::io::Result<()> {
        match &self.backend {
            Backend::Local => self.rename_into(temp, &key(Kind::Blob, digest))?,
            Backend::S3 { .. } => {
                let _ = std::fs::remove_file(temp);
            }
        }
        self.lock()
            .insert(Kind::Blob, digest.to_string(), size, SystemTime::now());
        Ok(())
    }

    fn rename_into(&self, temp: &Path, key: &str) -> std::io::Result<()> {
        let target = self.local_path(key);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(temp, &target).inspect_err(|_| {
            let _ = std::fs::remove_file(temp);
        })
    }

    /// Writes a small object (local: through `tmp/` and a rename).
    async fn put_small(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Local => {
                let (temp, mut file) = self.temp_file()?;
                let written = file.write_all(&bytes).and_then(|_| file.sync_data());
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e.into());
                }
                Ok(self.rename_into(&temp, key)?)
            }
            Backend::S3 { client, prefix } => {
                let length = bytes.len() as u64;
                Ok(client
                    .put(
                        &Self::s3_key(prefix, key),
                        reqwest::Body::from(bytes),
                        length,
                    )
                    .await?)
            }
        }
    }

    /// Stores a verified manifest.
    pub async fn put_manifest(
        &self,
        digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut raw = Vec::with_capacity(media_type.len() + 1 + bytes.len());
        raw.extend_from_slice(media_type.as_bytes());
        raw.push(b'\n');
        raw.extend_from_slice(bytes);
        let size = raw.len() as u64;
        self.put_small(&key(Kind::Manifest, digest), raw.into())
            .await?;
        self.lock()
            .insert(Kind::Manifest, digest.to_string(), size, SystemTime::now());
        Ok(())
    }

    /// A tag's cached digest and how long ago the upstream confirmed it.
    pub async fn tag(
        &self,
        upstream: &str,
        repository: &str,
        tag: &str,
    ) -> Option<(String, Duration)> {
        let key = tag_key(upstream, repository, tag);
        let (raw, modified) = match &self.backend {
            Backend::Local => {
                let path = self.local_path(&key);
                let raw = std::fs::read(&path).ok()?;
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                (Bytes::from(raw), modified)
            }
            Backend::S3 { client, prefix } => client
                .get_small(&Self::s3_key(prefix, &key), SMALL_LIMIT)
                .await
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot read a tag from the shared cache"),
                )
                .ok()??,
        };
        let digest = std::str::from_utf8(&raw).ok()?.trim();
        if !super::route::is_digest(digest) {
            return None;
        }
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        Some((digest.to_string(), age))
    }

    /// Records that the upstream says `tag` is `digest`, now.
    pub async fn put_tag(
        &self,
        upstream: &str,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> Result<(), StoreError> {
        let key = tag_key(upstream, repository, tag);
        self.put_small(&key, Bytes::copy_from_slice(digest.as_bytes()))
            .await
    }

    /// Forgets a tag the upstream no longer has.
    pub async fn remove_tag(&self, upstream: &str, repository: &str, tag: &str) {
        let key = tag_key(upstream, repository, tag);
        match &self.backend {
            Backend::Local => {
                let _ = std::fs::remove_file(self.local_path(&key));
            }
            Backend::S3 { client, prefix } => {
                let _ = client.delete(&Self::s3_key(prefix, &key)).await;
            }
        }
    }

    /// Removes least recently used entries until the cache fits its limit;
    /// returns how many were removed and their bytes. A removed blob that
    /// is being sent stays readable through its open file (local) or its
    /// started download (S3).
    pub async fn evict(&self) -> (u64, u64) {
        let victims = {
            let mut index = self.lock();
            if index.total <= self.max_size {
                return (0, 0);
            }
            let mut by_age: Vec<_> = index
                .entries
                .iter()
                .map(|(key, e)| (e.last_used, key.clone(), e.size))
                .collect();
            by_age.sort_unstable_by_key(|(used, _, _)| *used);
            let mut victims = Vec::new();
            let mut total = index.total;
            for (_, key, size) in by_age {
                if total <= self.max_size {
                    break;
                }
                total -= size;
                index.entries.remove(&key);
                victims.push((key, size));
            }
            index.total = total;
            victims
        };
        let mut bytes = 0;
        for ((kind, digest), size) in &victims {
            let key = key(*kind, digest);
            match &self.backend {
                Backend::Local => {
                    let _ = std::fs::remove_file(self.local_path(&key));
                }
                Backend::S3 { client, prefix } => {
                    if let Err(e) = client.delete(&Self::s3_key(prefix, &key)).await {
                        tracing::warn!(error = %e, "cannot evict from the shared cache");
                    }
                }
            }
            bytes += size;
        }
        (victims.len() as u64, bytes)
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}
