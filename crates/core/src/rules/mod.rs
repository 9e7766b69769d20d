//! Mirror rules: what a rule is and how one transforms a reference.
//!
//! Layer: pure core. A [`Rule`] names the registries it covers
//! ([`SourcePattern`]), how it rewrites ([`Transform`], the kinds of
//! `mirrors.md` §4), what it does with digests ([`DigestPolicy`]) and which
//! repositories it carries ([`RepoSet`] allow and skip lists). The
//! [`RuleSet`] indexes rules so that finding the most specific one costs the
//! same with ten rules or ten thousand.

pub mod decisions;
mod engine;
pub mod pattern;

pub use decisions::{Decider, Decision};
pub use engine::{
    specificity_of_bucket, Alias, BucketKind, Candidate, Decline, Explanation, Outcome, RuleIndex,
    RuleSet, Unchanged,
};
pub use pattern::{HostPattern, PatternError, RepoPrefix, RepoSet, SourcePattern};

use crate::reference::Reference;

/// How a matched reference becomes a mirror reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// T1: replace the registry, keep the path.
    /// `quay.io/coreos/etcd` → `quay.m.daocloud.io/coreos/etcd`.
    Host(String),
    /// T2: replace the matched `registry[/prefix]` with the target, keep the rest.
    /// `k8s.gcr.io/pause` → `mirror.example/google-containers/pause`.
    Prefix(RepoPrefix),
    /// T3: target + the full normalised reference, registry included.
    /// `nginx` → `m.daocloud.io/docker.io/library/nginx`.
    FullReference(RepoPrefix),
    /// T4: target + the last path component.
    /// `registry.k8s.io/coredns/coredns` → `registry.aliyuncs.com/google_containers/coredns`.
    Flatten(RepoPrefix),
    /// T5: target + `token.` + the path after the matched prefix joined by `.`.
    /// `k8s.gcr.io/ingress-nginx/controller` → `docker.io/anjia0532/google-containers.ingress-nginx.controller`.
    Join { target: RepoPrefix, token: String },
    /// T6: this exact repository becomes that repository.
    Rename(RepoPrefix),
    /// An exception: references this rule covers are left alone.
    Keep,
}

impl Transform {
    pub fn kind(&self) -> &'static str {
        match self {
            Transform::Host(_) => "host",
            Transform::Prefix(_) => "prefix",
            Transform::FullReference(_) => "full-reference",
            Transform::Flatten(_) => "flatten",
            Transform::Join { .. } => "join",
            Transform::Rename(_) => "rename",
            Transform::Keep => "keep",
        }
    }

    /// Where this transform sends images; `None` for [`Transform::Keep`].
    pub fn target(&self) -> Option<RepoPrefix> {
        match self {
            Transform::Host(domain) => Some(RepoPrefix {
                domain: domain.clone(),
                path: String::new(),
            }),
            Transform::Prefix(t)
            | Transform::FullReference(t)
            | Transform::Flatten(t)
            | Transform::Rename(t) => Some(t.clone()),
            Transform::Join { target, .. } => Some(target.clone()),
            Transform::Keep => None,
        }
    }
}

/// What a rule does with references that carry a digest (T10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DigestPolicy {
    /// Keep tag and digest as written: right for pull-through mirrors, which
    /// serve the upstream manifests byte for byte.
    #[default]
    Keep,
    /// Drop the digest and keep the tag, for re-push mirrors whose digests
    /// differ. Loses the pin; digest-only references are left alone.
    Drop,
    /// Leave references with a digest alone.
    Skip,
    /// Rewrite only references with a digest (tags move; digests do not).
    Require,
}

impl DigestPolicy {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestPolicy::Keep => "keep",
            DigestPolicy::Drop => "drop",
            DigestPolicy::Skip => "skip",
            DigestPolicy::Require => "require",
        }
    }
}

/// Where a rule came from, for explanations and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOrigin {
    Config,
    Preset(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub origin: RuleOrigin,
    pub source: SourcePattern,
    pub transform: Transform,
    pub digests: DigestPolicy,
    /// When not empty, only these repositories are rewritten (T12).
    pub allow: RepoSet,
    /// These repositories are never rewritten by this rule.
    pub skip: RepoSet,
    /// Pre-mirroring: copy on admission, and when to swap.
    pub mirror: MirrorPolicy,
}

/// When a rule's rewrite is applied (issue: pre-mirroring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Swap {
    /// Rewrite whether or not the mirror has the image.
    #[default]
    Always,
    /// Rewrite only when the mirror has the manifest (checked at admission).
    IfPresent,
}

impl Swap {
    pub fn as_str(self) -> &'static str {
        match self {
            Swap::Always => "always",
            Swap::IfPresent => "if-present",
        }
    }
}

/// A rule's pre-mirroring settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MirrorPolicy {
    /// Copy images this rule rewrites into its target after admission.
    pub premirror: bool,
    pub swap: Swap,
}

/// Why a rule that covers a reference does not rewrite it.
pub(crate) fn digest_decline(policy: DigestPolicy, r: &Reference) -> Option<Decline> {
    match (policy, r.digest(), r.tag()) {
        (DigestPolicy::Skip, Some(_), _) => Some(Decline::DigestSkipped),
        (DigestPolicy::Drop, Some(_), None) => Some(Decline::DigestOnlyWithDrop),
        (DigestPolicy::Require, None, _) => Some(Decline::DigestRequired),
        _ => None,
    }
}
