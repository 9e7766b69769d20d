//! The webhook's copy queue: copies run after the admission is answered.
//!
//! Layer: adapter/runtime. An admission only calls [`CopyQueue::enqueue`],
//! which never waits: a copy already running or finished recently is not
//! queued again, and when the queue is full the copy is dropped and counted
//! (the next Pod that needs it queues it again). Copies run in their own
//! tasks, a bounded number at a time per destination registry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::presence::{Presence, PresenceCache};
use crate::metrics::{Metrics, OutcomeLabels};
use detour_core::reference::Reference;
use detour_registry::copy::{Copier, Observer};

/// What [`CopyQueue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Running, or finished within the dedupe window.
    Duplicate,
    /// The queue is full: dropped and counted.
    Full,
}

enum Entry {
    InFlight,
    Finished { until: Instant },
}

pub struct CopyQueue {
    copier: Arc<Copier>,
    presence: Arc<PresenceCache>,
    metrics: Arc<Metrics>,
    limit: usize,
    per_registry: usize,
    recent_ttl: Duration,
    failure_ttl: Duration,
    waiting: AtomicUsize,
    entries: Mutex<HashMap<String, Entry>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

struct ByteCounter(Arc<Metrics>);

impl Observer for ByteCounter {
    fn transferred(&self, bytes: u64) {
        self.0.copied_bytes.inc_by(bytes);
    }
}

impl CopyQueue {
    pub fn new(
        copier: Arc<Copier>,
        presence: Arc<PresenceCache>,
        metrics: Arc<Metrics>,
        limit: usize,
        per_registry: usize,
        recent_ttl: Duration,
        failure_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(CopyQueue {
            copier,
            presence,
            metrics,
            limit,
            per_registry,
            recent_ttl,
            failure_ttl,
            waiting: AtomicUsize::new(0),
            entries: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
        })
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .copies
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Queues a copy of `source` to `destination`; returns at once.
    /// Must be called inside the Tokio runtime.
    pub fn enqueue(self: &Arc<Self>, source: Reference, destination: Reference) -> Enqueued {
        let key = format!("{source} -> {destination}");
        {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            match entries.get(&key) {
                Some(Entry::InFlight) => {
                    self.count("duplicate");
                    return Enqueued::Duplicate;
                }
                Some(Entry::Finished { until }) if *until > now => {
                    self.count("duplicate");
                    return Enqueued::Duplicate;
                }
                _ => {}
            }
            if self.waiting.load(Ordering::Relaxed) >= self.limit {
                self.count("dropped_queue_full");
                return Enqueued::Full;
            }
            if entries.len() > self.limit * 64 {
                entries.retain(|_, e| match e {
                    Entry::InFlight => true,
                    Entry::Finished { until } => *until > now,
                });
            }
            entries.insert(key.clone(), Entry::InFlight);
            let depth = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
            self.metrics.copy_queue_depth.set(depth as i64);
        }
        self.count("queued");
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots
                .entry(destination.domain_lower())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_registry)))
                .clone()
        };
        let this = self.clone();
        tokio::spawn(async move {
            let permit = slot.acquire_owned().await;
            let depth = this.waiting.fetch_sub(1, Ordering::Relaxed) - 1;
            this.metrics.copy_queue_depth.set(depth as i64);
            let started = Instant::now();
            let observer: Arc<dyn Observer> = Arc::new(ByteCounter(this.metrics.clone()));
            let result = this.copier.copy(&source, &destination, observer).await;
            drop(permit);
            let ttl = match &result {
                Ok(report) => {
                    let outcome = if report.manifests_copied == 0 {
                        "already_present"
                    } else {
                        "copied"
                    };
                    this.count(outcome);
                    this.presence
                        .remember(&destination.to_string(), Presence::Present);
                    tracing::info!(
                        source = %source, destination = %destination, outcome,
                        digest = %report.digest, bytes = report.bytes_copied,
                        blobs_copied = report.blobs_copied, blobs_skipped = report.blobs_skipped,
                        blobs_mounted = report.blobs_mounted,
                        seconds = started.elapsed().as_secs_f64(), "premirror copy"
                    );
                    this.recent_ttl
                }
                Err(e) => {
                    this.count("failed");
                    tracing::warn!(source = %source, destination = %destination, error = %e, "premirror copy failed");
                    this.failure_ttl
                }
            };
            this.entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    key,
                    Entry::Finished {
                        until: Instant::now() + ttl,
                    },
                );
        });
        Enqueued::Queued
    }
}
