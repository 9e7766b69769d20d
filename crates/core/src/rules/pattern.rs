//! Source patterns, mirror targets and repository sets: the matching vocabulary
//! of rules. Pure; everything is validated when built, so matching cannot fail.
//!
//! Matching is always at path-component boundaries and hosts compare without
//! case: `docker.io` never matches `docker.io.evil.example`, `gcr.io/a` never
//! matches `gcr.io/ab`, `quay.io:443` is not `quay.io`.

use foldhash::HashSet;
use std::fmt;

use crate::reference::{is_path_component, validate_domain, validate_path, DOCKER_HUB};

/// Why a pattern or target string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError(msg.into()))
}

/// Lowercases a host and folds the legacy Docker Hub name.
pub(crate) fn canonical_host(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    if lower == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        lower
    }
}

/// Is `host` written as a registry host (not a Docker Hub namespace)?
fn is_registry_host(host: &str) -> bool {
    host.contains(['.', ':']) || host == "localhost" || host.starts_with('[')
}

/// Splits `host[/path]` and validates both parts; `what` names the value in errors.
fn host_and_path<'t>(text: &'t str, what: &str) -> Result<(&'t str, &'t str), PatternError> {
    let (host, path) = text.split_once('/').unwrap_or((text, ""));
    validate_domain(host).map_err(|e| PatternError(format!("{what} {text:?}: {e}")))?;
    if !is_registry_host(host) {
        return err(format!(
            "{what} {text:?}: {host:?} is not a registry host: write the registry host first (a host has a '.' or a ':' or is localhost; Docker Hub is docker.io)"
        ));
    }
    if !path.is_empty() {
        validate_path(path).map_err(|e| PatternError(format!("{what} {text:?}: {e}")))?;
    }
    Ok((host, path))
}

/// Which registries a rule covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// One host, with its port if it has one (lowercase).
    Exact(String),
    /// `*.suffix[:port]`: every subdomain of `suffix` (not `suffix` itself).
    Subdomains(String),
    /// `*`: every registry.
    Any,
}

/// `host[/path-prefix]`, `*.suffix[/path-prefix]` or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourcePattern {
    pub host: HostPattern,
    /// Path prefix at component boundaries; empty for the whole host.
    pub path: String,
}

impl SourcePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return err("source is empty: write a registry host such as quay.io, *.gcr.io, or *");
        }
        if text == "*" {
            return Ok(Self {
                host: HostPattern::Any,
                path: String::new(),
            });
        }
        if let Some(wild) = text.strip_prefix("*.") {
            // `*.suffix[/path]`: validate `suffix[/path]` as a host and path.
            let (suffix, path) = host_and_path(wild, "source")?;
            return Ok(Self {
                host: HostPattern::Subdomains(suffix.to_ascii_lowercase()),
                path: path.to_string(),
            });
        }
        if text
            .split('/')
            .next()
            .is_some_and(|host| host.contains('*'))
        {
            return err(format!("source {text:?}: a wildcard may only be a whole leading label (*.example.com) or * alone"));
        }
        let (host, path) = host_and_path(text, "source")?;
        Ok(Self {
            host: HostPattern::Exact(canonical_host(host)),
            path: path.to_string(),
        })
    }

    /// The index key: `host`, `*.suffix`, or `*`, then `/path` if any.
    pub(crate) fn key(&self) -> String {
        let mut key = match &self.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(s) => format!("*.{s}"),
            HostPattern::Any => "*".to_string(),
        };
        if !self.path.is_empty() {
            key.push('/');
            key.push_str(&self.path);
        }
        key
    }
}

impl fmt::Display for SourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Where rewritten images go: a registry and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoPrefix {
    /// As written (case kept), validated.
    pub domain: String,
    /// Possibly empty.
    pub path: String,
}

impl RepoPrefix {
    /// `host[:port][/path]`; the first component is always the host.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let text = text.trim().trim_end_matches('/');
        if text.is_empty() {
            return err("target is empty");
        }
        if text.contains('@')
            || text
                .split_once('/')
                .is_some_and(|(_, path)| path.contains(':'))
        {
            return err(format!(
                "target {text:?} must be a registry and path prefix, without tag or digest"
            ));
        }
        let (domain, path) = host_and_path(text, "target")?;
        Ok(Self {
            domain: canonical_host(domain),
            path: path.to_string(),
        })
    }

    /// `domain[/path]` with the domain lowercased: the idempotency key.
    pub(crate) fn key(&self) -> String {
        if self.path.is_empty() {
            self.domain.to_ascii_lowercase()
        } else {
            format!("{}/{}", self.domain.to_ascii_lowercase(), self.path)
        }
    }

    /// `self.path` joined with `rest` by '/'; either may be empty.
    pub(crate) fn join_path(&self, rest: &str) -> String {
        match (self.path.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_string(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}/{}", self.path, rest),
        }
    }
}

impl fmt::Display for RepoPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A set of repositories: exact `host/path`, `host/prefix/**`, or a whole
/// `host`. Lookup cost depends on the image's path depth, not the set size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoSet {
    exact: HashSet<String>,
    prefixes: HashSet<String>,
    patterns: Vec<String>,
}

impl RepoSet {
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut set = Self::default();
        for p in patterns {
            set.insert(p.as_ref())?;
        }
        Ok(set)
    }

    fn insert(&mut self, text: &str) -> Result<(), PatternError> {
        let text = text.trim();
        let (body, is_prefix) = match text.strip_suffix("/**") {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return err(format!(
                "pattern {text:?}: only an exact repository (quay.io/org/app), a prefix (quay.io/org/**) or a host (quay.io) is allowed"
            ));
        }
        let (host, path) = host_and_path(body, "pattern")?;
        let key = if path.is_empty() {
            canonical_host(host)
        } else {
            format!("{}/{}", canonical_host(host), path)
        };
        if is_prefix || path.is_empty() {
            self.prefixes.insert(key);
        } else {
            self.exact.insert(key);
        }
        self.patterns.push(text.to_string());
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// The exact repositories (`host/path`), lowercase host.
    pub fn exact_keys(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(String::as_str)
    }

    /// The prefixes (`host[/path]`, for `/**` and whole hosts), lowercase host.
    pub fn prefix_keys(&self) -> impl Iterator<Item = &str> {
        self.prefixes.iter().map(String::as_str)
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Does the repository `host_lower/path` belong to the set?
    pub fn contains(&self, host_lower: &str, path: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut key = String::with_capacity(host_lower.len() + 1 + path.len());
        key.push_str(host_lower);
        key.push('/');
        key.push_str(path);
        if self.exact.contains(&key) {
            return true;
        }
        let found = component_prefixes(&key, host_lower.len()).any(|k| self.prefixes.contains(k));
        found
    }
}

/// Prefixes of `key` (= `host/p1/p2/...`) at component boundaries, longest
/// first, ending with the bare host (`host_len` bytes).
pub(crate) fn component_prefixes(key: &str, host_len: usize) -> impl Iterator<Item = &str> {
    let mut end = Some(key.len());
    std::iter::from_fn(move || {
        let current = end?;
        end = if current <= host_len {
            None
        } else {
            key[..current].rfind('/').filter(|&i| i >= host_len)
        };
        Some(&key[..current])
    })
}

/// Can a registry host appear as one path component (full-reference prefixing)?
pub(crate) fn host_as_path_component(host_lower: &str) -> bool {
    is_path_component(host_lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_prefixes_stop_at_boundaries() {
        let key = "gcr.io/a/b";
        let got: Vec<_> = component_prefixes(key, 6).collect();
        assert_eq!(got, ["gcr.io/a/b", "gcr.io/a", "gcr.io"]);
        let host_only: Vec<_> = component_prefixes("quay.io", 7).collect();
        assert_eq!(host_only, ["quay.io"]);
    }

    #[test]
    fn source_patterns() {
        assert_eq!(
            SourcePattern::parse("Quay.IO").unwrap().host,
            HostPattern::Exact("quay.io".into())
        );
        assert_eq!(
            SourcePattern::parse("index.docker.io/library")
                .unwrap()
                .key(),
            "docker.io/library"
        );
        assert_eq!(
            SourcePattern::parse("*.gcr.io").unwrap().host,
            HostPattern::Subdomains("gcr.io".into())
        );
        assert_eq!(SourcePattern::parse("*").unwrap().host, HostPattern::Any);
        assert_eq!(
            SourcePattern::parse("quay.io:443/org").unwrap().key(),
            "quay.io:443/org"
        );
        for bad in [
            "",
            "nginx",
            "library/nginx",
            "gcr.*.io",
            "quay.io/Org",
            "quay.io//x",
            "a_b.io",
        ] {
            assert!(
                SourcePattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn targets() {
        let t = RepoPrefix::parse("registry.aliyuncs.com/google_containers/").unwrap();
        assert_eq!(
            (t.domain.as_str(), t.path.as_str()),
            ("registry.aliyuncs.com", "google_containers")
        );
        assert_eq!(
            RepoPrefix::parse("localhost:5000").unwrap().key(),
            "localhost:5000"
        );
        for bad in [
            "",
            "mirror",
            "anjia0532/x",
            "quay.io/x:tag",
            "quay.io/x@sha256:00",
            "quay.io/UP",
        ] {
            assert!(RepoPrefix::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn repo_sets_match_at_boundaries() {
        let set =
            RepoSet::parse(&["docker.io/library/nginx", "ghcr.io/org/**", "Quay.io"]).unwrap();
        assert!(set.contains("docker.io", "library/nginx"));
        assert!(!set.contains("docker.io", "library/nginx2"));
        assert!(!set.contains("docker.io", "library/nginx/sub"));
        assert!(set.contains("ghcr.io", "org/app"));
        assert!(set.contains("ghcr.io", "org/a/b"));
        assert!(!set.contains("ghcr.io", "organisation/app"));
        assert!(set.contains("quay.io", "anything/here"));
        assert!(!set.contains("quay.io.evil.example", "x"));
        for bad in ["nginx", "docker.io/lib*", "*/x", "docker.io/**/x"] {
            assert!(RepoSet::parse(&[bad]).is_err(), "{bad:?} should be refused");
        }
    }
}
