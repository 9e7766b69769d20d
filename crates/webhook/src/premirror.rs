//! The webhook's pre-mirroring runtime: one registry client, the presence
//! cache and the copy queue, built from the config's `mirror:` settings.
//!
//! Layer: runtime wiring. Built only when a rule uses `premirror` or
//! `swap: if-present`; rebuilt when a reload changes the settings.

pub mod presence;
pub mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::Summary;
use crate::metrics::Metrics;
use detour_core::config::{Config, MirrorSettings};
use detour_core::reference::Reference;
use detour_core::rules::Swap;
use detour_registry::{client_for, copy_options, Copier, MirrorError};
use presence::{Presence, PresenceCache};
use queue::CopyQueue;

pub struct MirrorRuntime {
    settings: MirrorSettings,
    presence: Arc<PresenceCache>,
    queue: Arc<CopyQueue>,
}

impl MirrorRuntime {
    /// Does any rule need the mirror at admission time?
    pub fn wanted(config: &Config) -> bool {
        config
            .rules
            .rules()
            .iter()
            .any(|r| r.mirror.premirror || r.mirror.swap == Swap::IfPresent)
    }

    pub fn build(
        settings: &MirrorSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, MirrorError> {
        let client = client_for(settings)?;
        let presence = PresenceCache::new(
            client.clone(),
            metrics.clone(),
            settings.present_ttl.0,
            settings.absent_ttl.0,
        );
        let copier = Arc::new(Copier::new(client, copy_options(settings)));
        let queue = CopyQueue::new(
            copier,
            presence.clone(),
            metrics,
            settings.queue_length,
            settings.copies_per_registry,
            settings.recent_ttl.0,
            settings.absent_ttl.0.max(Duration::from_secs(60)),
        );
        Ok(Arc::new(MirrorRuntime {
            settings: settings.clone(),
            presence,
            queue,
        }))
    }

    pub fn settings(&self) -> &MirrorSettings {
        &self.settings
    }

    /// Which of `references` the mirror has, within the lookup budget.
    pub async fn presence(&self, references: &[&str]) -> HashMap<String, Presence> {
        self.presence
            .lookup_all(references, self.settings.lookup_budget.0)
            .await
    }

    /// Queues copies for an answered enforce-mode admission: every change of
    /// a `premirror` rule, except if-present swaps (the mirror had those).
    pub fn enqueue_copies(&self, summary: &Summary) {
        let applied = summary
            .changes
            .iter()
            .filter(|c| c.mirror.premirror && c.mirror.swap == Swap::Always);
        let deferred = summary.deferred.iter().filter(|c| c.mirror.premirror);
        for change in applied.chain(deferred) {
            match (Reference::parse(&change.from), Reference::parse(&change.to)) {
                (Ok(from), Ok(to)) => {
                    self.queue.enqueue(from, to);
                }
                _ => {
                    tracing::warn!(from = %change.from, to = %change.to, "cannot queue copy: invalid reference")
                }
            }
        }
    }
}
