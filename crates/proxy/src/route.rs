//! Which upstream repository a Distribution API request names.
//!
//! Layer: pure (no I/O): the domain of the pull-through proxy. Three ways of naming
//! the upstream, tried in this order:
//! - by host name: the request's `Host` is one an upstream is served as
//!   (`k8s.mirror.example.com` → `registry.k8s.io`), the path is the upstream
//!   repository, as with one reverse proxy per upstream;
//! - by `?ns=<upstream>`: what containerd sends to a mirror configured in
//!   `hosts.toml`, with the upstream repository as the path;
//! - by path: `/v2/<upstream host>/<repository>/…`, the layout that the
//!   `self-hosted=MIRROR` preset rewrites images to.
//!
//! Only allow-listed upstreams are ever named: anything else is refused
//! here, before any network I/O.

use detour_core::reference::{is_path_component, DOCKER_HUB, REPOSITORY_NAME_LENGTH_MAX};

/// Names by which Docker Hub is written in image references and configs.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// What the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/manifests/<tag or digest>`
    Manifest(Reference),
    /// `/blobs/<digest>`
    Blob(String),
    /// `/tags/list`
    TagList,
    /// `/referrers/<digest>`: the OCI 1.1 referrers API.
    Referrers(String),
    /// `/blobs/uploads/…`: pushing, which a pull-through proxy refuses.
    Upload,
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) | Reference::Digest(t) => t,
        }
    }
}

/// A routed request: upstream index, repository on it, target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub upstream: usize,
    pub repository: String,
    pub target: Target,
}

/// Why a request cannot be routed (answered 404 `NAME_UNKNOWN` or 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("not a Distribution API path")]
    NotApi,
    #[error("{0:?} is not an upstream this proxy serves")]
    UnknownUpstream(String),
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
    #[error("invalid tag or digest {0:?}")]
    InvalidReference(String),
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
}

impl RouteError {
    /// The Distribution API error code for the answer.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NotApi => "UNSUPPORTED",
            RouteError::UnknownUpstream(_) | RouteError::InvalidName(_) => "NAME_INVALID",
            RouteError::InvalidReference(_) => "MANIFEST_INVALID",
            RouteError::InvalidDigest(_) => "DIGEST_INVALID",
        }
    }
}

/// How one upstream is named by clients.
pub struct UpstreamNames<'a> {
    /// `registry.k8s.io`, `docker.io`, `host:port`.
    pub host: &'a str,
    /// Another first path component for it (a host with a port is not one).
    pub name: Option<&'a str>,
    /// Host names this proxy answers as this upstream.
    pub host_names: &'a [String],
}

/// The upstreams, as routing sees them.
#[derive(Debug, Clone, Default)]
pub struct Router {
    /// Upstream registry hosts (`registry.k8s.io`, `docker.io`, `host:port`), lower case.
    hosts: Vec<String>,
    /// `(path name, upstream index)`: configured names besides the hosts.
    names: Vec<(String, usize)>,
    /// `(served-as host name, upstream index)`, lower case, without port.
    host_names: Vec<(String, usize)>,
}

impl Router {
    pub fn new<'a>(upstreams: impl IntoIterator<Item = UpstreamNames<'a>>) -> Router {
        let mut router = Router::default();
        for (i, upstream) in upstreams.into_iter().enumerate() {
            router.hosts.push(canonical_host(upstream.host));
            if let Some(name) = upstream.name {
                router.names.push((name.to_string(), i));
            }
            for name in upstream.host_names {
                router.host_names.push((name.to_ascii_lowercase(), i));
            }
        }
        router
    }

    /// The upstream written as `host` (`index.docker.io` is Docker Hub) or
    /// by its configured name.
    pub fn upstream(&self, host: &str) -> Option<usize> {
        let host = canonical_host(host);
        self.hosts
            .iter()
            .position(|h| *h == host)
            .or_else(|| self.names.iter().find(|(n, _)| *n == host).map(|(_, i)| *i))
    }

    pub fn host(&self, upstream: usize) -> &str {
        &self.hosts[upstream]
    }

    /// Routes `path` (below the origin) of a request to `host_header`,
    /// with the `ns` query parameter if any.
    pub fn route(
        &self,
        host_header: Option<&str>,
        path: &str,
        ns: Option<&str>,
    ) -> Result<Route, RouteError> {
        let rest = path.strip_prefix("/v2/").ok_or(RouteError::NotApi)?;
        let (name, target) = split_target(rest)?;
        let by_host = host_header
            .map(strip_port)
            .and_then(|h| {
                self.host_names
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(h))
            })
            .map(|(_, i)| *i);
        let (upstream, repository) = match (by_host, ns) {
            (Some(i), _) => (i, name),
            (None, Some(ns)) => (
                self.upstream(ns)
                    .ok_or_else(|| RouteError::UnknownUpstream(ns.to_string()))?,
                name,
            ),
            (None, None) => {
                let (first, repository) = name
                    .split_once('/')
                    .ok_or_else(|| RouteError::UnknownUpstream(name.to_string()))?;
                let i = self
                    .upstream(first)
                    .ok_or_else(|| RouteError::UnknownUpstream(first.to_string()))?;
                (i, repository)
            }
        };
        let repository = self.repository(upstream, repository)?;
        Ok(Route {
            upstream,
            repository,
            target,
        })
    }

    /// Checks the repository grammar; Docker Hub's official images get
    /// `library/`, as the Docker client adds it.
    fn repository(&self, upstream: usize, name: &str) -> Result<String, RouteError> {
        let invalid = || RouteError::InvalidName(name.to_string());
        if name.is_empty()
            || name.len() > REPOSITORY_NAME_LENGTH_MAX
            || !name.split('/').all(is_path_component)
        {
            return Err(invalid());
        }
        if self.hosts[upstream] == DOCKER_HUB && !name.contains('/') {
            return Ok(format!("library/{name}"));
        }
        Ok(name.to_string())
    }
}

/// Splits `<name>/manifests/<ref>` and the like into name and target.
fn split_target(rest: &str) -> Result<(&str, Target), RouteError> {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok((name, Target::TagList));
    }
    if let Some(i) = rest.find("/blobs/uploads") {
        let after = &rest[i + "/blobs/uploads".len()..];
        if after.is_empty() || after.starts_with('/') {
            return Ok((&rest[..i], Target::Upload));
        }
    }
    let (name, kind, reference) = match rest.rsplit_once('/') {
        Some((head, reference)) => match head.rsplit_once('/') {
            Some((name, kind)) => (name, kind, reference),
            None => return Err(RouteError::NotApi),
        },
        None => return Err(RouteError::NotApi),
    };
    match kind {
        "manifests" => Ok((name, Target::Manifest(parse_reference(reference)?))),
        "blobs" | "referrers" => {
            if !is_digest(reference) {
                return Err(RouteError::InvalidDigest(reference.to_string()));
            }
            let digest = reference.to_string();
            let target = if kind == "blobs" {
                Target::Blob(digest)
            } else {
                Target::Referrers(digest)
            };
            Ok((name, target))
        }
        _ => Err(RouteError::NotApi),
    }
}

fn parse_reference(text: &str) -> Result<Reference, RouteError> {
    if text.contains(':') {
        if is_digest(text) {
            return Ok(Reference::Digest(text.to_string()));
        }
        return Err(RouteError::InvalidDigest(text.to_string()));
    }
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let valid = !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-');
    if valid {
        Ok(Reference::Tag(text.to_string()))
    } else {
        Err(RouteError::InvalidReference(text.to_string()))
    }
}

/// `sha256:<64 hex>` or `sha512:<128 hex>`, lower case: the digests that
/// detour can verify (and so may store under their name).
pub fn is_digest(text: &str) -> bool {
    let hex_of = |len: usize, hex: &str| {
        hex.len() == len
            && hex
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    match text.split_once(':') {
        Some(("sha256", hex)) => hex_of(64, hex),
        Some(("sha512", hex)) => hex_of(128, hex),
        _ => false,
    }
}

fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        host
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..=h.len()])
            .unwrap_or(host);
    }
    host.split_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// The `ns` query parameter, decoded as a query is (containerd is written
/// in Go, whose `url.Values` sends `ns=127.0.0.1%3A5000` for an upstream
/// with a port). `None` when absent or empty.
pub fn ns_param(query: &str) -> Option<String> {
    query_param(query, "ns")
}

/// A query parameter, decoded; `None` when absent or empty.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests;
