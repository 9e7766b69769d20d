//! Does the mirror have this image? A cached, shared, time-boxed answer.
//!
//! Layer: adapter. `swap: if-present` asks this during an admission. Hits
//! are believed for minutes and misses for seconds (a copy may land at any
//! moment, and a pruned mirror must not be trusted for long). Concurrent
//! lookups of one reference share one HEAD request, which runs in its own
//! task: when an admission's budget runs out the request still finishes and
//! fills the cache for the next Pod.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::metrics::Metrics;
use detour_core::reference::Reference;
use detour_registry::client::{RegistryClient, Repo};

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Present,
    Absent,
    /// The registry did not answer in time or answered with an error.
    Unknown,
}

type Pending = Shared<BoxFuture<'static, Presence>>;

pub struct PresenceCache {
    client: Arc<RegistryClient>,
    metrics: Arc<Metrics>,
    present_ttl: Duration,
    absent_ttl: Duration,
    answers: Mutex<HashMap<String, (Presence, Instant)>>,
    pending: Mutex<HashMap<String, Pending>>,
}

/// Entries kept at most; beyond it expired ones are swept, then all.
const MAX_ENTRIES: usize = 50_000;

impl PresenceCache {
    pub fn new(
        client: Arc<RegistryClient>,
        metrics: Arc<Metrics>,
        present_ttl: Duration,
        absent_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(PresenceCache {
            client,
            metrics,
            present_ttl,
            absent_ttl,
            answers: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Records an answer (a finished copy is a hit).
    pub fn remember(&self, reference: &str, presence: Presence) {
        let ttl = match presence {
            Presence::Present => self.present_ttl,
            Presence::Absent => self.absent_ttl,
            Presence::Unknown => return,
        };
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= MAX_ENTRIES {
            let now = Instant::now();
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= MAX_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(reference.to_string(), (presence, Instant::now() + ttl));
    }

    fn cached(&self, reference: &str) -> Option<Presence> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        match answers.get(reference) {
            Some((presence, until)) if *until > Instant::now() => Some(*presence),
            _ => None,
        }
    }

    /// Looks up every reference at once; whatever is not answered within
    /// `budget` is [`Presence::Unknown`].
    pub async fn lookup_all(
        self: &Arc<Self>,
        references: &[&str],
        budget: Duration,
    ) -> HashMap<String, Presence> {
        let lookups = references.iter().map(|r| {
            let this = self.clone();
            let r = r.to_string();
            async move {
                let presence = tokio::time::timeout(budget, this.lookup(&r))
                    .await
                    .unwrap_or(Presence::Unknown);
                (r, presence)
            }
        });
        futures_util::future::join_all(lookups)
            .await
            .into_iter()
            .collect()
    }

    /// One reference: from the cache, or joined to the request in flight,
    /// or a new request.
    pub async fn lookup(self: &Arc<Self>, reference: &str) -> Presence {
        if let Some(p) = self.cached(reference) {
            self.metrics
                .lookups
                .get_or_create(&crate::metrics::LookupLabels {
                    source: "cache",
                    result: presence_label(p),
                })
                .inc();
            return p;
        }
        let (shared, joined) = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match pending.get(reference) {
                Some(s) => (s.clone(), true),
                None => {
                    let this = self.clone();
                    let key = reference.to_string();
                    let task = tokio::spawn(async move {
                        let presence = this.ask_registry(&key).await;
                        this.remember(&key, presence);
                        this.pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                        presence
                    });
                    let shared = task
                        .map(|joined| joined.unwrap_or(Presence::Unknown))
                        .boxed()
                        .shared();
                    pending.insert(reference.to_string(), shared.clone());
                    (shared, false)
                }
            }
        };
        let presence = shared.await;
        if joined {
            self.metrics
                .lookups
                .get_or_create(&crate::metrics::LookupLabels {
                    source: "shared",
                    result: presence_label(presence),
                })
                .inc();
        }
        presence
    }

    async fn ask_registry(&self, reference: &str) -> Presence {
        let started = Instant::now();
        let presence = match Reference::parse(reference) {
            Err(_) => Presence::Unknown,
            Ok(r) => {
                let repo = Repo::of(&r);
                let target = r.digest().or(r.tag()).unwrap_or("latest");
                match self.client.manifest_digest(&repo, target).await {
                    Ok(Some(_)) => Presence::Present,
                    Ok(None) => Presence::Absent,
                    Err(e) => {
                        tracing::warn!(reference, error = %e, "mirror lookup failed");
                        Presence::Unknown
                    }
                }
            }
        };
        self.metrics
            .lookup_latency
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .lookups
            .get_or_create(&crate::metrics::LookupLabels {
                source: "registry",
                result: presence_label(presence),
            })
            .inc();
        presence
    }
}

fn presence_label(p: Presence) -> &'static str {
    match p {
        Presence::Present => "present",
        Presence::Absent => "absent",
        Presence::Unknown => "unknown",
    }
}
