//! The rule index and the rewrite decision. Pure and deterministic.
//!
//! Order of decisions for one image string:
//! 1. placeholders (`auto`) are left alone before parsing;
//! 2. a reference that fails the grammar is reported, never guessed at;
//! 3. a reference already under any rule's target is left alone, which makes
//!    `rewrite(rewrite(x)) == rewrite(x)` hold for every rule set;
//! 4. the global skip list;
//! 5. the most specific covering rule that accepts the reference wins:
//!    exact renames, then exact hosts by longest path prefix, then `*.suffix`
//!    hosts by longest suffix and path, then `*`. A rule that covers the
//!    reference but declines it (allow-list, skip list, digest policy) lets
//!    the next one try. Source aliases (`k8s.gcr.io` ≡ `gcr.io/google-containers`)
//!    are tried too, and the more specific of the two matches wins.
//!
//! Each step is a handful of hash lookups over the image's own path
//! components, so the cost does not grow with the number of rules.

// foldhash: these maps are read for every image of every Pod, and SipHash
// showed in profiles; the seed is still random per map.
use foldhash::{HashMap, HashSet};

use super::decisions::{Decider, DecisionCache};
use super::pattern::{
    component_prefixes, host_as_path_component, HostPattern, RepoPrefix, RepoSet, SourcePattern,
};
use super::{digest_decline, DigestPolicy, Rule, Transform};
use crate::reference::{Reference, ReferenceError};

/// `from` (a registry and optional path) is another name for `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub from: SourcePattern,
    pub to: RepoPrefix,
}

/// Why a covering rule did not rewrite a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decline {
    NotAllowed,
    Skipped,
    DigestSkipped,
    DigestOnlyWithDrop,
    DigestRequired,
    HostNotRepresentable,
    InvalidResult(String),
}

impl std::fmt::Display for Decline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decline::NotAllowed => f.write_str("repository is not on the rule's allow-list"),
            Decline::Skipped => f.write_str("repository is on the rule's skip list"),
            Decline::DigestSkipped => {
                f.write_str("reference has a digest and the rule skips digests")
            }
            Decline::DigestOnlyWithDrop => f.write_str(
                "reference has only a digest and the rule drops digests (no tag would remain)",
            ),
            Decline::DigestRequired => {
                f.write_str("reference has no digest and the rule requires one")
            }
            Decline::HostNotRepresentable => f.write_str(
                "registry host cannot be written as a path component (port, IPv6 or uppercase)",
            ),
            Decline::InvalidResult(e) => write!(f, "result would not be a valid reference: {e}"),
        }
    }
}

/// Why an image is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unchanged {
    Placeholder,
    AlreadyOnMirror(String),
    GlobalSkip,
    NoRule,
    /// Rules covered it, but each one declined.
    Declined,
    /// An exception rule (`kind: keep`) covers it.
    Kept(String),
}

impl std::fmt::Display for Unchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unchanged::Placeholder => {
                f.write_str("placeholder image that another webhook replaces")
            }
            Unchanged::AlreadyOnMirror(t) => write!(f, "already on the mirror {t}"),
            Unchanged::GlobalSkip => f.write_str("on the global skip list"),
            Unchanged::NoRule => f.write_str("no rule covers this registry"),
            Unchanged::Declined => f.write_str("every rule that covers it declined"),
            Unchanged::Kept(rule) => write!(f, "exception rule {rule} keeps it"),
        }
    }
}

/// The decision for one image string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    Invalid(ReferenceError),
    Unchanged(Reference, Unchanged),
    /// The placeholder case: nothing was parsed.
    Placeholder,
    Rewritten {
        from: Reference,
        to: Reference,
        rule: &'a Rule,
        alias: Option<&'a Alias>,
    },
}

impl Outcome<'_> {
    /// The new image string, if the image is rewritten.
    pub fn rewritten(&self) -> Option<String> {
        match self {
            Outcome::Rewritten { to, .. } => Some(to.to_string()),
            _ => None,
        }
    }
}

/// One rule that covered the reference, in the order tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub rule: String,
    pub source: String,
    pub via_alias: bool,
    pub declined: Option<Decline>,
}

/// An [`Outcome`] with the rules considered on the way.
#[derive(Debug, Clone)]
pub struct Explanation<'a> {
    pub outcome: Outcome<'a>,
    pub candidates: Vec<Candidate>,
}

/// Ranks matches: tier (rename > exact > subdomain > any), path depth, suffix labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Specificity(u8, usize, usize);

struct Found<'a> {
    rule: &'a Rule,
    spec: Specificity,
    result: Option<Reference>,
}

/// A view of a [`RuleSet`]'s lookup tables (see [`RuleSet::index`]). Bucket
/// values are indexes into [`RuleSet::rules`], in the order they are tried.
pub struct RuleIndex<'a> {
    /// Exact repositories (`host/path`) of rename rules.
    pub renames: &'a HashMap<String, Vec<usize>>,
    /// `host[/path]` of rules with an exact host.
    pub exact: &'a HashMap<String, Vec<usize>>,
    /// `suffix[/path]` (without `*.`) of rules for every subdomain.
    pub subdomains: &'a HashMap<String, Vec<usize>>,
    /// Rules for every registry (`*`).
    pub any: &'a [usize],
    /// `host[/path]` → index into [`RuleSet::aliases`]; the first alias of a key.
    pub aliases: &'a HashMap<String, usize>,
    /// The `host[/path]` of every rule's target.
    pub mirrors: &'a HashSet<String>,
}

/// Ranks a covering rule: tier (rename 4 > exact host 3 > subdomain 2 >
/// any 1), then path depth or suffix labels, then path depth. The ranks
/// [`RuleSet::rewrite`] compares, for compilers that must compare the same.
pub fn specificity_of_bucket(bucket: BucketKind, key: &str) -> (u8, usize, usize) {
    let host_len = key.find('/').unwrap_or(key.len());
    match bucket {
        BucketKind::Rename => (TIER_RENAME, usize::MAX, 0),
        BucketKind::Exact => (TIER_EXACT, depth(key, host_len), 0),
        BucketKind::Subdomain => {
            let hostname = &key[..key[..host_len].find(':').unwrap_or(host_len)];
            (
                TIER_SUBDOMAIN,
                hostname.split('.').count(),
                depth(key, host_len),
            )
        }
        BucketKind::Any => (TIER_ANY, 0, 0),
    }
}

/// Which table of a [`RuleIndex`] a bucket is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    Rename,
    Exact,
    Subdomain,
    Any,
}

#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    renames: HashMap<String, Vec<usize>>,
    exact: HashMap<String, Vec<usize>>,
    subdomains: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
    aliases: HashMap<String, usize>,
    alias_list: Vec<Alias>,
    mirrors: HashSet<String>,
    skip: RepoSet,
    placeholders: HashSet<String>,
    pub(super) decisions: DecisionCache,
}

impl RuleSet {
    /// Indexes `rules` in precedence order: among rules with the same source,
    /// the earlier one is tried first.
    pub fn new(
        rules: Vec<Rule>,
        aliases: Vec<Alias>,
        skip: RepoSet,
        placeholders: Vec<String>,
    ) -> Self {
        let mut set = RuleSet {
            skip,
            placeholders: placeholders.into_iter().collect(),
            ..Default::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            let key = rule.source.key();
            let bucket = match (&rule.transform, &rule.source.host) {
                (Transform::Rename(_), _) => set.renames.entry(key).or_default(),
                (_, HostPattern::Exact(_)) => set.exact.entry(key).or_default(),
                (_, HostPattern::Subdomains(_)) => set
                    .subdomains
                    .entry(key.trim_start_matches("*.").to_string())
                    .or_default(),
                (_, HostPattern::Any) => &mut set.any,
            };
            bucket.push(i);
            if let Some(target) = rule.transform.target() {
                set.mirrors.insert(target.key());
            }
        }
        for (i, alias) in aliases.iter().enumerate() {
            set.aliases.entry(alias.from.key()).or_insert(i);
        }
        set.rules = rules;
        set.alias_list = aliases;
        set
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The position in [`RuleSet::rules`] of a rule this set returned.
    pub fn index_of(&self, rule: &Rule) -> usize {
        // Rules returned by this set live in `self.rules`: the address
        // difference is the index (checked, with a search as the fallback).
        let offset = (rule as *const Rule as usize).wrapping_sub(self.rules.as_ptr() as usize);
        let index = offset / std::mem::size_of::<Rule>().max(1);
        match self.rules.get(index) {
            Some(found) if std::ptr::eq(found, rule) => index,
            _ => self
                .rules
                .iter()
                .position(|r| std::ptr::eq(r, rule))
                .unwrap_or(index),
        }
    }

    /// Decides the images of one Pod with the decisions this rule set has
    /// already made (the admission hot path); see [`super::decisions`].
    pub fn decider(&self) -> Decider<'_> {
        Decider::new(self)
    }

    /// The lookup tables behind [`RuleSet::rewrite`], for compilers of the
    /// rule set into another language (`crate::native`): what is indexed
    /// where is decided here once.
    pub fn index(&self) -> RuleIndex<'_> {
        RuleIndex {
            renames: &self.renames,
            exact: &self.exact,
            subdomains: &self.subdomains,
            any: &self.any,
            aliases: &self.aliases,
            mirrors: &self.mirrors,
        }
    }

    pub fn aliases(&self) -> &[Alias] {
        &self.alias_list
    }

    pub fn skip(&self) -> &RepoSet {
        &self.skip
    }

    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.placeholders.iter().map(String::as_str)
    }

    /// Decides what to do with one image string.
    pub fn rewrite(&self, image: &str) -> Outcome<'_> {
        self.evaluate(image, &mut None)
    }

    /// Like [`RuleSet::rewrite`], and lists every covering rule tried.
    pub fn explain(&self, image: &str) -> Explanation<'_> {
        let mut trace = Some(Vec::new());
        let outcome = self.evaluate(image, &mut trace);
        Explanation {
            outcome,
            candidates: trace.unwrap_or_default(),
        }
    }

    fn evaluate(&self, image: &str, trace: &mut Option<Vec<Candidate>>) -> Outcome<'_> {
        if self.placeholders.contains(image) {
            return Outcome::Placeholder;
        }
        let reference = match Reference::parse(image) {
            Ok(r) => r,
            Err(e) => return Outcome::Invalid(e),
        };
        let host = reference.domain_lower();
        let key = repo_key(&host, reference.path());
        if let Some(mirror) =
            component_prefixes(&key, host.len()).find(|k| self.mirrors.contains(*k))
        {
            let mirror = mirror.to_string();
            return Outcome::Unchanged(reference, Unchanged::AlreadyOnMirror(mirror));
        }
        if self.skip.contains(&host, reference.path()) {
            return Outcome::Unchanged(reference, Unchanged::GlobalSkip);
        }
        let mut covered = false;
        let direct = self.search(&reference, &host, &key, false, trace, &mut covered);
        let mut chosen = direct.map(|f| (f, None));
        let direct_tier = chosen.as_ref().map(|(f, _)| f.spec);
        if direct_tier.is_none_or(|s| s.0 < TIER_EXACT) {
            if let Some((alias, aliased)) = self.alias_for(&reference, &key, host.len()) {
                let alias_host = aliased.domain_lower();
                let alias_key = repo_key(&alias_host, aliased.path());
                if let Some(found) =
                    self.search(&aliased, &alias_host, &alias_key, true, trace, &mut covered)
                {
                    if direct_tier.is_none_or(|s| found.spec > s) {
                        chosen = Some((found, Some(alias)));
                    }
                }
            }
        }
        match chosen {
            Some((
                Found {
                    result: Some(to),
                    rule,
                    ..
                },
                alias,
            )) => {
                if to == reference {
                    Outcome::Unchanged(reference, Unchanged::AlreadyOnMirror(to.repository()))
                } else {
                    Outcome::Rewritten {
                        from: reference,
                        to,
                        rule,
                        alias,
                    }
                }
            }
            Some((
                Found {
                    result: None, rule, ..
                },
                _,
            )) => Outcome::Unchanged(reference, Unchanged::Kept(rule.name.clone())),
            None if covered => Outcome::Unchanged(reference, Unchanged::Declined),
            None => Outcome::Unchanged(reference, Unchanged::NoRule),
        }
    }

    /// The most specific rule that accepts `r`, or `None`.
    fn search<'a>(
        &'a self,
        r: &Reference,
        host: &str,
        key: &str,
        via_alias: bool,
        trace: &mut Option<Vec<Candidate>>,
        covered: &mut bool,
    ) -> Option<Found<'a>> {
        let mut try_bucket = |ids: &[usize], spec: Specificity| -> Option<Found<'a>> {
            for &id in ids {
                let rule = &self.rules[id];
                *covered = true;
                let attempt = accept(rule, host, r);
                if let Some(t) = trace.as_mut() {
                    t.push(Candidate {
                        rule: rule.name.clone(),
                        source: rule.source.key(),
                        via_alias,
                        declined: attempt.as_ref().err().cloned(),
                    });
                }
                if let Ok(result) = attempt {
                    return Some(Found { rule, spec, result });
                }
            }
            None
        };
        if let Some(ids) = self.renames.get(key) {
            if let Some(found) = try_bucket(ids, Specificity(TIER_RENAME, usize::MAX, 0)) {
                return Some(found);
            }
        }
        for prefix in component_prefixes(key, host.len()) {
            if let Some(ids) = self.exact.get(prefix) {
                if let Some(found) =
                    try_bucket(ids, Specificity(TIER_EXACT, depth(prefix, host.len()), 0))
                {
                    return Some(found);
                }
            }
        }
        if !self.subdomains.is_empty() && !host.starts_with('[') {
            // Subdomain rules are keyed by their bare suffix (`gcr.io[:port][/path]`),
            // so each candidate is a slice of `key`: no allocation per label.
            let hostname_len = host.find(':').unwrap_or(host.len());
            let mut labels = host[..hostname_len].split('.').count();
            let mut start = 0;
            while let Some(dot) = key[start..hostname_len].find('.') {
                start += dot + 1;
                labels -= 1;
                let suffix_key = &key[start..];
                for prefix in component_prefixes(suffix_key, host.len() - start) {
                    if let Some(ids) = self.subdomains.get(prefix) {
                        let spec =
                            Specificity(TIER_SUBDOMAIN, labels, depth(prefix, host.len() - start));
                        if let Some(found) = try_bucket(ids, spec) {
                            return Some(found);
                        }
                    }
                }
            }
        }
        try_bucket(&self.any, Specificity(TIER_ANY, 0, 0))
    }

    /// The alias that covers `key`, longest first, and the reference it maps to.
    fn alias_for(&self, r: &Reference, key: &str, host_len: usize) -> Option<(&Alias, Reference)> {
        if self.aliases.is_empty() {
            return None;
        }
        let (prefix, &idx) =
            component_prefixes(key, host_len).find_map(|k| self.aliases.get(k).map(|i| (k, i)))?;
        let alias = &self.alias_list[idx];
        let rest = key[prefix.len()..].trim_start_matches('/');
        let path = alias.to.join_path(rest);
        let aliased = Reference::parse(&format!("{}/{}", alias.to.domain, path)).ok()?;
        Some((
            alias,
            aliased
                .with_tag_and_digest(r.tag().map(str::to_string), r.digest().map(str::to_string)),
        ))
    }
}

const TIER_ANY: u8 = 1;
const TIER_SUBDOMAIN: u8 = 2;
const TIER_EXACT: u8 = 3;
const TIER_RENAME: u8 = 4;

fn repo_key(host: &str, path: &str) -> String {
    let mut key = String::with_capacity(host.len() + 1 + path.len());
    key.push_str(host);
    key.push('/');
    key.push_str(path);
    key
}

fn depth(prefix: &str, host_len: usize) -> usize {
    prefix[host_len..].matches('/').count()
}

/// Checks a covering rule's lists and digest policy, then applies it.
/// `Ok(None)` means an exception rule keeps the reference.
fn accept(rule: &Rule, host: &str, r: &Reference) -> Result<Option<Reference>, Decline> {
    if !rule.allow.is_empty() && !rule.allow.contains(host, r.path()) {
        return Err(Decline::NotAllowed);
    }
    if rule.skip.contains(host, r.path()) {
        return Err(Decline::Skipped);
    }
    if let Transform::Keep = rule.transform {
        return Ok(None);
    }
    if let Some(decline) = digest_decline(rule.digests, r) {
        return Err(decline);
    }
    apply(rule, host, r).map(Some)
}

/// Applies the transform. Every part is valid by construction (validated
/// targets and tokens, components of a parsed reference, a host checked as
/// a path component), so only the length limit and Docker Hub's `library/`
/// remain to check; the property tests re-parse every result.
fn apply(rule: &Rule, host: &str, r: &Reference) -> Result<Reference, Decline> {
    let rest = strip_path_prefix(r.path(), &rule.source.path);
    let (domain, path) = match &rule.transform {
        Transform::Host(domain) => (domain.as_str(), r.path().to_string()),
        Transform::Prefix(t) => (t.domain.as_str(), t.join_path(rest)),
        Transform::FullReference(t) => {
            if !host_as_path_component(host) {
                return Err(Decline::HostNotRepresentable);
            }
            (
                t.domain.as_str(),
                t.join_path(&format!("{host}/{}", r.path())),
            )
        }
        Transform::Flatten(t) => {
            let last = r.path().rsplit('/').next().unwrap_or_default();
            (t.domain.as_str(), t.join_path(last))
        }
        Transform::Join { target, token } => {
            let mut joined = token.clone();
            for component in rest.split('/').filter(|c| !c.is_empty()) {
                if !joined.is_empty() {
                    joined.push('.');
                }
                joined.push_str(component);
            }
            (target.domain.as_str(), target.join_path(&joined))
        }
        Transform::Rename(t) => (t.domain.as_str(), t.path.clone()),
        // `accept` answers for keep rules before calling apply.
        Transform::Keep => {
            return Err(Decline::InvalidResult(
                "an exception rule does not rewrite".into(),
            ))
        }
    };
    let digest = match rule.digests {
        DigestPolicy::Drop => None,
        _ => r.digest(),
    };
    Reference::from_valid_parts(domain, path, r.tag(), digest)
        .map_err(|e| Decline::InvalidResult(e.to_string()))
}

fn strip_path_prefix<'p>(path: &'p str, prefix: &str) -> &'p str {
    if prefix.is_empty() {
        return path;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.trim_start_matches('/'),
        None => path,
    }
}

#[cfg(test)]
mod tests;
