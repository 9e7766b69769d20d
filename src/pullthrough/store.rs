//! The cache on the local filesystem: content-addressed blobs and
//! manifests, tag pointers, and least-recently-used eviction.
//!
//! Layer: adapter (filesystem I/O), below the proxy's service. Layout under
//! the cache directory:
//! - `blobs/<algorithm>/<hex>`: verified blob bytes;
//! - `manifests/<algorithm>/<hex>`: the media type, a newline, the verified bytes;
//! - `tags/<upstream>/<repository>/_tags/<tag>`: the tag's digest; the
//!   file's modification time is when the upstream last confirmed it (`_`
//!   cannot start a repository component, so no repository collides);
//! - `tmp/`: files being written. Everything enters the cache by a rename
//!   from here after its digest was checked, and `tmp/` is emptied at
//!   start, so a crash never leaves a partial file where it could be served.
//!
//! Files are small except blobs, which are written by the fill's own thread
//! (see [`super::fill`]); the calls here are plain blocking calls.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

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

struct Entry {
    size: u64,
    /// Nanoseconds since the epoch of the last use (from the file's
    /// modification time after a restart).
    last_used: u128,
    /// When the file's modification time was last brought up to date.
    touched: SystemTime,
}

#[derive(Default)]
struct Index {
    entries: HashMap<(Kind, String), Entry>,
    total: u64,
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub media_type: String,
    pub bytes: bytes::Bytes,
}

pub struct Store {
    root: PathBuf,
    max_size: u64,
    index: Mutex<Index>,
    temp_counter: AtomicU64,
}

/// Modification times are refreshed at most this often per file: they only
/// order evictions after a restart.
const TOUCH_INTERVAL: Duration = Duration::from_secs(60);

impl Store {
    /// Opens (creating) the cache at `root`, drops unfinished files and
    /// indexes what is there.
    pub fn open(root: &Path, max_size: u64) -> std::io::Result<Store> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        for dir in ["blobs", "manifests", "tags", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let store = Store {
            root: root.to_path_buf(),
            max_size,
            index: Mutex::new(Index::default()),
            temp_counter: AtomicU64::new(0),
        };
        store.scan()?;
        Ok(store)
    }

    fn scan(&self) -> std::io::Result<()> {
        let mut index = self.lock();
        for kind in [Kind::Blob, Kind::Manifest] {
            let dir = self.root.join(kind.dir());
            for algorithm in std::fs::read_dir(&dir)? {
                let algorithm = algorithm?;
                let name = algorithm.file_name().to_string_lossy().into_owned();
                for file in std::fs::read_dir(algorithm.path())? {
                    let file = file?;
                    let digest = format!("{name}:{}", file.file_name().to_string_lossy());
                    if !super::route::is_digest(&digest) {
                        continue;
                    }
                    let meta = file.metadata()?;
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    index.total += meta.len();
                    index.entries.insert(
                        (kind, digest),
                        Entry {
                            size: meta.len(),
                            last_used: nanos(modified),
                            touched: modified,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, kind: Kind, digest: &str) -> PathBuf {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.root.join(kind.dir()).join(algorithm).join(hex)
    }

    /// Size of the cache's blobs and manifests, in bytes.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// The path and size of a cached blob, marked as used.
    pub fn blob(&self, digest: &str) -> Option<(PathBuf, u64)> {
        let size = self.use_entry(Kind::Blob, digest)?;
        Some((self.path(Kind::Blob, digest), size))
    }

    /// A cached manifest, marked as used.
    pub fn manifest(&self, digest: &str) -> Option<StoredManifest> {
        self.use_entry(Kind::Manifest, digest)?;
        let raw = match std::fs::read(self.path(Kind::Manifest, digest)) {
            Ok(raw) => raw,
            Err(_) => {
                // Removed behind the index's back: forget it, fetch again.
                self.forget(Kind::Manifest, digest);
                return None;
            }
        };
        let newline = raw.iter().position(|&b| b == b'\n')?;
        let media_type = String::from_utf8(raw[..newline].to_vec()).ok()?;
        let bytes = bytes::Bytes::from(raw).slice(newline + 1..);
        Some(StoredManifest { media_type, bytes })
    }

    fn use_entry(&self, kind: Kind, digest: &str) -> Option<u64> {
        let now = SystemTime::now();
        let mut index = self.lock();
        let entry = index.entries.get_mut(&(kind, digest.to_string()))?;
        entry.last_used = nanos(now);
        let size = entry.size;
        if now.duration_since(entry.touched).unwrap_or_default() > TOUCH_INTERVAL {
            entry.touched = now;
            drop(index);
            let _ = std::fs::File::options()
                .append(true)
                .open(self.path(kind, digest))
                .and_then(|f| f.set_modified(now));
        }
        Some(size)
    }

    fn forget(&self, kind: Kind, digest: &str) {
        let mut index = self.lock();
        if let Some(entry) = index.entries.remove(&(kind, digest.to_string())) {
            index.total -= entry.size;
        }
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

    /// Moves a verified blob from `tmp/` into the cache.
    pub fn commit_blob(&self, temp: &Path, digest: &str, size: u64) -> std::io::Result<()> {
        self.commit(Kind::Blob, temp, digest, size)
    }

    /// Stores a verified manifest.
    pub fn put_manifest(
        &self,
        digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let (temp, mut file) = self.temp_file()?;
        let written = file
            .write_all(media_type.as_bytes())
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.write_all(bytes));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let size = (media_type.len() + 1 + bytes.len()) as u64;
        self.commit(Kind::Manifest, &temp, digest, size)
    }

    fn commit(&self, kind: Kind, temp: &Path, digest: &str, size: u64) -> std::io::Result<()> {
        let target = self.path(kind, digest);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if let Err(e) = std::fs::rename(temp, &target) {
            let _ = std::fs::remove_file(temp);
            return Err(e);
        }
        let now = SystemTime::now();
        let mut index = self.lock();
        let previous = index.entries.insert(
            (kind, digest.to_string()),
            Entry {
                size,
                last_used: nanos(now),
                touched: now,
            },
        );
        index.total = index.total - previous.map_or(0, |p| p.size) + size;
        Ok(())
    }

    /// Removes least recently used entries until the cache fits its limit;
    /// returns how many were removed and their bytes. A removed blob that
    /// is being sent stays readable through its open file.
    pub fn evict(&self) -> (u64, u64) {
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
            let _ = std::fs::remove_file(self.path(*kind, digest));
            bytes += size;
        }
        (victims.len() as u64, bytes)
    }

    fn tag_path(&self, upstream: &str, repository: &str, tag: &str) -> PathBuf {
        self.root
            .join("tags")
            .join(upstream)
            .join(repository)
            .join("_tags")
            .join(tag)
    }

    /// A tag's cached digest and how long ago the upstream confirmed it.
    pub fn tag(&self, upstream: &str, repository: &str, tag: &str) -> Option<(String, Duration)> {
        let path = self.tag_path(upstream, repository, tag);
        let digest = std::fs::read_to_string(&path).ok()?;
        let digest = digest.trim();
        if !super::route::is_digest(digest) {
            return None;
        }
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        Some((digest.to_string(), age))
    }

    /// Records that the upstream says `tag` is `digest`, now.
    pub fn put_tag(
        &self,
        upstream: &str,
        repository: &str,
        tag: &str,
        digest: &str,
    ) -> std::io::Result<()> {
        let path = self.tag_path(upstream, repository, tag);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (temp, mut file) = self.temp_file()?;
        if let Err(e) = file.write_all(digest.as_bytes()) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        drop(file);
        std::fs::rename(&temp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }

    /// Forgets a tag the upstream no longer has.
    pub fn remove_tag(&self, upstream: &str, repository: &str, tag: &str) {
        let _ = std::fs::remove_file(self.tag_path(upstream, repository, tag));
    }
}

fn nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}
