//! Reacting to files that change under a directory, the way Kubernetes
//! changes them: a Secret or ConfigMap volume swaps its `..data` symlink
//! atomically and never writes the files in place.
//!
//! Layer: runtime. Directory events (notify) trigger a check at once; a
//! periodic check is the safety net for file systems without events. The
//! caller's check compares content, so spurious wake-ups are harmless.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A cheap change detector for small files: a hash of their bytes, or
/// `None` while any of them cannot be read (mid-swap, or missing).
pub fn fingerprint(paths: &[&Path]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        std::fs::read(path).ok()?.hash(&mut h);
    }
    Some(h.finish())
}

/// Runs `check` whenever something in `dir` changes, and every `interval`.
pub fn spawn(
    dir: PathBuf,
    interval: Duration,
    mut check: impl FnMut() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; polling only");
            None
        }
    };
    tokio::spawn(async move {
        let _keep_alive = watcher;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        // The watcher is gone; keep polling.
                        ticker.tick().await;
                    } else {
                        // Let a burst of events (a symlink swap is several) settle.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                }
                _ = ticker.tick() => {}
            }
            check();
        }
    })
}
