//! Filling the cache with one blob while streaming it to every client that
//! asks for it meanwhile.
//!
//! Layer: adapter (upstream and filesystem I/O). A fill is a task of its own,
//! not a client's request, so a client that disconnects does not abort it.
//! It hashes the upstream's bytes as they arrive and writes them to a file
//! under `tmp/` on a blocking thread, which publishes how much is written and
//! keeps the last chunks in memory; each client follows at its own pace
//! with a [`Follower`], from those chunks when it keeps up and from the file
//! otherwise. The last
//! byte is released only once the digest has been checked, so a corrupt
//! upstream blob never reaches a client whole, and it is never stored: the
//! fill ends in a rename into the cache or in deleting the file.
//!
//! Concurrent requests for a missing blob find its fill in [`Fills`] and
//! follow it, so the upstream sends it once. A follower opens the file while
//! the fill is registered, and the fill is unregistered (under the same
//! lock) before its file is renamed or deleted, so every follower holds an
//! open file.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::sync::watch;

use super::error::ProxyError;

/// Published after this many new bytes (and at the end), not after every
/// chunk: fifty followers need not wake for every 16 KiB.
const PUBLISH_EVERY: u64 = 256 * 1024;
/// What a follower reads at once.
const READ_CHUNK: u64 = 512 * 1024;
/// Chunks a fill keeps in memory for its followers (a follower further
/// behind reads the file).
const CHUNKS_IN_MEMORY: usize = 8;

/// How far a fill is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for the upstream's answer.
    Starting,
    /// Writing: bytes on disk, and the size the upstream announced.
    Running { written: u64, total: Option<u64> },
    /// Verified (stored into the cache just after).
    Done { size: u64 },
    /// Failed; nothing was stored.
    Failed(ProxyError),
}

pub struct Fill {
    path: PathBuf,
    progress: watch::Receiver<Progress>,
    /// The chunks just written, for followers that keep up: they take them
    /// from memory instead of reading the file back.
    chunks: broadcast::Sender<(u64, Bytes)>,
}

impl Fill {
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    pub fn chunks(&self) -> broadcast::Receiver<(u64, Bytes)> {
        self.chunks.subscribe()
    }
}

/// The fills in progress, by digest.
#[derive(Default)]
pub struct Fills {
    running: Mutex<HashMap<String, Arc<Fill>>>,
}

/// What a fill's task is given.
pub struct FillTask {
    pub digest: String,
    pub path: PathBuf,
    pub file: std::fs::File,
    pub progress: Arc<watch::Sender<Progress>>,
    pub chunks: broadcast::Sender<(u64, Bytes)>,
}

impl Fills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Fill>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the fill of `digest`, starting one with `start` when none
    /// runs. `cached` is checked under the lock: a fill that just finished
    /// has already put its blob in the cache, and `None` is returned.
    pub fn follow(
        &self,
        digest: &str,
        cached: impl Fn() -> bool,
        new_file: impl FnOnce() -> std::io::Result<(PathBuf, std::fs::File)>,
        start: impl FnOnce(FillTask),
    ) -> std::io::Result<Option<(Arc<Fill>, std::fs::File)>> {
        let mut running = self.lock();
        if let Some(fill) = running.get(digest) {
            let file = std::fs::File::open(&fill.path)?;
            return Ok(Some((fill.clone(), file)));
        }
        if cached() {
            return Ok(None);
        }
        let (path, file) = new_file()?;
        let reader = std::fs::File::open(&path)?;
        let (sender, receiver) = watch::channel(Progress::Starting);
        let (chunks, _) = broadcast::channel(CHUNKS_IN_MEMORY);
        let fill = Arc::new(Fill {
            path: path.clone(),
            progress: receiver,
            chunks: chunks.clone(),
        });
        running.insert(digest.to_string(), fill.clone());
        drop(running);
        start(FillTask {
            digest: digest.to_string(),
            path,
            file,
            progress: Arc::new(sender),
            chunks,
        });
        Ok(Some((fill, reader)))
    }

    /// Unregisters a fill; `then` (rename or delete its file) runs under
    /// the lock so that no follower opens the file after it moved.
    pub fn finish<T>(&self, digest: &str, then: impl FnOnce() -> T) -> T {
        let mut running = self.lock();
        running.remove(digest);
        then()
    }
}

/// What the writer thread reports: bytes written, and the file (synced to
/// disk by the caller after the digest check: clients need not wait for
/// the disk).
pub type Written = tokio::task::JoinHandle<(std::io::Result<u64>, std::fs::File)>;

/// Writes chunks to the fill's file on a blocking thread and publishes
/// progress. Dropping the sender ends the file. The caller hashes the
/// chunks meanwhile (on its own thread: the two run side by side).
pub fn spawn_writer(
    mut file: std::fs::File,
    total: Option<u64>,
    progress: Arc<watch::Sender<Progress>>,
    chunks_out: broadcast::Sender<(u64, Bytes)>,
) -> (tokio::sync::mpsc::Sender<Bytes>, Written) {
    let (sender, mut chunks) = tokio::sync::mpsc::channel::<Bytes>(8);
    let handle = tokio::task::spawn_blocking(move || {
        let mut written = 0u64;
        let mut published = 0u64;
        let mut result = Ok(());
        while let Some(chunk) = chunks.blocking_recv() {
            if let Err(e) = file.write_all(&chunk) {
                result = Err(e);
                break;
            }
            let offset = written;
            written += chunk.len() as u64;
            // After the write: a chunk in memory is on disk too. No
            // follower listening is not an error.
            let _ = chunks_out.send((offset, chunk));
            if written - published >= PUBLISH_EVERY {
                published = written;
                progress.send_replace(Progress::Running { written, total });
            }
        }
        progress.send_replace(Progress::Running { written, total });
        (result.map(|_| written), file)
    });
    (sender, handle)
}

/// One client's view of a blob being filled (or already cached): the bytes
/// of `start..end` as they become available and verified.
pub struct Follower {
    /// Taken by the blocking read in flight.
    file: Option<std::fs::File>,
    /// Chunks of a running fill, as written (none for a cached blob).
    chunks: Option<broadcast::Receiver<(u64, Bytes)>>,
    /// A chunk received while waiting, not yet looked at.
    pending: Option<(u64, Bytes)>,
    progress: watch::Receiver<Progress>,
    position: u64,
    end: Option<u64>,
}

impl Follower {
    /// `end` is exclusive; `None` reads to the end of the blob. Each read
    /// seeks to the follower's position, so the file's offset does not matter.
    pub fn new(
        file: std::fs::File,
        progress: watch::Receiver<Progress>,
        chunks: Option<broadcast::Receiver<(u64, Bytes)>>,
        start: u64,
        end: Option<u64>,
    ) -> Follower {
        Follower {
            file: Some(file),
            chunks,
            pending: None,
            progress,
            position: start,
            end,
        }
    }

    /// The bytes at the follower's position from the chunks in memory, if
    /// they are there. The blob's last byte waits for the digest check.
    fn take_from_memory(&mut self, done: bool, total: Option<u64>) -> Option<Bytes> {
        loop {
            let (offset, bytes) = match self.pending.take() {
                Some(chunk) => chunk,
                None => match self.chunks.as_mut()?.try_recv() {
                    Ok(chunk) => chunk,
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Closed) => {
                        // The writer is done: the rest is in the file.
                        self.chunks = None;
                        return None;
                    }
                },
            };
            let chunk_end = offset + bytes.len() as u64;
            if chunk_end <= self.position {
                continue;
            }
            if offset > self.position {
                // Behind the chunks in memory: the file has these bytes.
                return None;
            }
            let mut end = chunk_end;
            if !done && total.is_none_or(|t| chunk_end >= t) {
                end -= 1;
            }
            if let Some(limit) = self.end {
                end = end.min(limit);
            }
            if end <= self.position {
                return None;
            }
            let slice = bytes.slice((self.position - offset) as usize..(end - offset) as usize);
            self.position = end;
            return Some(slice);
        }
    }

    /// The next chunk, `None` at the end, an error when the fill failed.
    pub async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            // What the file holds that may be sent (the last byte waits for
            // the digest check), and what the chunks in memory are part of.
            let (readable, done, total) = match &*self.progress.borrow_and_update() {
                Progress::Starting => (0, false, None),
                Progress::Running { written, total } => (written.saturating_sub(1), false, *total),
                Progress::Done { size } => (*size, true, Some(*size)),
                Progress::Failed(error) => return Some(Err(std::io::Error::other(error.clone()))),
            };
            if done && self.position >= self.end.unwrap_or(readable).min(readable) {
                return None;
            }
            if let Some(bytes) = self.take_from_memory(done, total) {
                return Some(Ok(bytes));
            }
            let limit = self.end.map_or(readable, |end| end.min(readable));
            if self.position < limit {
                let want = (limit - self.position).min(READ_CHUNK);
                let Some(mut file) = self.file.take() else {
                    return Some(Err(std::io::Error::other("blob file lost")));
                };
                // One copy, from the page cache into the chunk sent on, and
                // no zeroing of the buffer first.
                // Allocated here, on a runtime thread, where hyper frees it
                // once sent: the allocator reuses it instead of caching it
                // per blocking thread.
                let mut buffer = Vec::with_capacity(want as usize);
                let position = self.position;
                let read = tokio::task::spawn_blocking(move || {
                    // At the follower's position: chunks taken from memory
                    // moved it past the file's offset.
                    let read = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(position))
                        .and_then(|_| {
                            std::io::Read::read_to_end(
                                &mut std::io::Read::take(&mut file, want),
                                &mut buffer,
                            )
                        });
                    (file, buffer, read)
                })
                .await;
                let (file, buffer, read) = match read {
                    Ok(done) => done,
                    Err(e) => return Some(Err(std::io::Error::other(e))),
                };
                self.file = Some(file);
                if let Err(e) = read {
                    return Some(Err(e));
                }
                if buffer.is_empty() {
                    return Some(Err(std::io::Error::other(
                        "cached blob is shorter than recorded",
                    )));
                }
                self.position += buffer.len() as u64;
                return Some(Ok(Bytes::from(buffer)));
            }
            let changed = match self.chunks.as_mut() {
                Some(chunks) => tokio::select! {
                    changed = self.progress.changed() => changed.is_ok(),
                    chunk = chunks.recv() => {
                        match chunk {
                            Ok(chunk) => self.pending = Some(chunk),
                            Err(broadcast::error::RecvError::Closed) => self.chunks = None,
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                        }
                        true
                    }
                },
                None => self.progress.changed().await.is_ok(),
            };
            if !changed {
                // The fill ended without a final word: only possible if
                // its task panicked.
                if !matches!(*self.progress.borrow(), Progress::Done { .. }) {
                    return Some(Err(std::io::Error::other("blob fill stopped")));
                }
            }
        }
    }
}

/// A blob's bytes on their way to a client: a local file (being filled or
/// cached), or a download from the shared cache.
pub enum BlobBody {
    Local(Follower),
    Remote(reqwest::Response),
}

impl BlobBody {
    pub async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        match self {
            BlobBody::Local(follower) => follower.next_chunk().await,
            BlobBody::Remote(response) => match response.chunk().await {
                Ok(Some(bytes)) => Some(Ok(bytes)),
                Ok(None) => None,
                Err(e) => Some(Err(std::io::Error::other(e.without_url()))),
            },
        }
    }
}

/// A follower for a blob already in the cache.
pub fn cached(
    path: &std::path::Path,
    size: u64,
    start: u64,
    end: Option<u64>,
) -> std::io::Result<Follower> {
    let file = std::fs::File::open(path)?;
    // The sender is dropped at once: a finished fill never changes.
    let (_, progress) = watch::channel(Progress::Done { size });
    Ok(Follower::new(file, progress, None, start, end))
}
