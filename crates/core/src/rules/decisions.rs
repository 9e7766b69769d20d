//! Per-image decisions for the admission hot path, remembered.
//!
//! Layer: pure core (no I/O). A decision depends only on the image string and
//! the rule set, so the cache lives in the [`RuleSet`]: a reloaded config is a
//! new rule set with an empty cache, and nothing can serve a stale answer. A
//! cluster runs few distinct images many times (a Deployment's replicas, the
//! same sidecar in every Pod), so most admissions find every image here.
//!
//! The cache is bounded: when it holds [`MAX_CACHED_DECISIONS`] images it is
//! emptied before the next insert, so a stream of distinct images costs the
//! uncached time, never memory. One read lock is taken per Pod, not per image,
//! and new decisions are inserted under one write lock when the Pod is done.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use super::{Outcome, RuleSet};

/// How many image strings are remembered per rule set.
pub const MAX_CACHED_DECISIONS: usize = 4096;

/// What the rule set does with one image string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Rewritten to `to` by the rule at index `rule` of [`RuleSet::rules`].
    Rewrite { to: Arc<str>, rule: usize },
    /// Left as it is (no rule, declined, already on a mirror, placeholder...).
    Keep,
    /// Not a valid reference; the text says why.
    Invalid(Arc<str>),
}

impl Decision {
    fn of(rules: &RuleSet, image: &str) -> Decision {
        match rules.rewrite(image) {
            Outcome::Rewritten { to, rule, .. } => Decision::Rewrite {
                to: to.to_string().into(),
                rule: rules.index_of(rule),
            },
            Outcome::Invalid(e) => Decision::Invalid(e.to_string().into()),
            Outcome::Unchanged(..) | Outcome::Placeholder => Decision::Keep,
        }
    }
}

type Map = HashMap<Box<str>, Decision, foldhash::fast::RandomState>;

#[derive(Default)]
pub struct DecisionCache {
    map: RwLock<Map>,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("len", &self.len())
            .finish()
    }
}

impl DecisionCache {
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic elsewhere cannot leave a half-written entry (entries are
    // inserted whole), so a poisoned lock still holds good decisions.
    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, new: Vec<(Box<str>, Decision)>) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        for (image, decision) in new {
            if map.len() >= MAX_CACHED_DECISIONS {
                map.clear();
            }
            map.insert(image, decision);
        }
    }
}

/// Decides the images of one Pod: cached decisions under one read lock,
/// the rest computed and remembered when the `Decider` is dropped.
pub struct Decider<'r> {
    rules: &'r RuleSet,
    cached: Option<RwLockReadGuard<'r, Map>>,
    new: Vec<(Box<str>, Decision)>,
}

impl<'r> Decider<'r> {
    pub(super) fn new(rules: &'r RuleSet) -> Self {
        Decider {
            rules,
            cached: Some(rules.decisions.read()),
            new: Vec::new(),
        }
    }

    pub fn decide(&mut self, image: &str) -> Decision {
        if let Some(found) = self.cached.as_ref().and_then(|map| map.get(image)) {
            return found.clone();
        }
        if let Some((_, found)) = self.new.iter().find(|(i, _)| &**i == image) {
            return found.clone();
        }
        let decision = Decision::of(self.rules, image);
        self.new.push((image.into(), decision.clone()));
        decision
    }
}

impl Drop for Decider<'_> {
    fn drop(&mut self) {
        // The read lock goes first: the write below would wait on it forever.
        drop(self.cached.take());
        if !self.new.is_empty() {
            self.rules.decisions.insert(std::mem::take(&mut self.new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules() -> RuleSet {
        Config::from_yaml(
            "rules: [{source: registry.k8s.io, kind: full-reference, target: m.daocloud.io}]",
            "test",
        )
        .unwrap()
        .rules
    }

    #[test]
    fn cached_decisions_equal_the_uncached_ones() {
        let rules = rules();
        let images = [
            "registry.k8s.io/pause:3.9",
            "nginx",
            "m.daocloud.io/registry.k8s.io/pause:3.9",
            "no spaces/allowed here",
            "registry.k8s.io/pause:3.9",
        ];
        for round in 0..2 {
            let mut decider = rules.decider();
            for image in images {
                assert_eq!(
                    decider.decide(image),
                    Decision::of(&rules, image),
                    "{round} {image}"
                );
            }
            drop(decider);
            assert_eq!(rules.decisions.len(), 4, "distinct images remembered");
        }
        let mut decider = rules.decider();
        match decider.decide("registry.k8s.io/pause:3.9") {
            Decision::Rewrite { to, rule } => {
                assert_eq!(&*to, "m.daocloud.io/registry.k8s.io/pause:3.9");
                assert_eq!(rules.rules()[rule].source.to_string(), "registry.k8s.io");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decider.decide("no spaces/allowed here"),
            Decision::Invalid(_)
        ));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let rules = rules();
        for chunk in 0..3 {
            let mut decider = rules.decider();
            for i in 0..MAX_CACHED_DECISIONS {
                decider.decide(&format!("registry.k8s.io/image-{chunk}-{i}:1"));
            }
        }
        assert!(rules.decisions.len() <= MAX_CACHED_DECISIONS);
        assert!(!rules.decisions.is_empty());
    }
}
