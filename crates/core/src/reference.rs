//! Image references: parsing and normalisation, pure and allocation-light.
//!
//! Layer: pure core. Nothing here does I/O. The grammar is the one of
//! `github.com/distribution/reference` (`reference.go`, `normalize.go`), written
//! out by hand so that every rejection carries a precise reason:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6address ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" hex   (go-digest: sha256/64, sha384/96, sha512/128, lowercase hex)
//! ```
//!
//! Normalisation follows `ParseNormalizedNamed`: the first component is a
//! domain only if it contains `.` or `:`, is `localhost`, or has an uppercase
//! letter; otherwise the domain is `docker.io`. `index.docker.io` becomes
//! `docker.io`, and a single-component Docker Hub path gets `library/`.

use std::fmt;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";
const LEGACY_DOCKER_HUB: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
/// `RepositoryNameTotalLengthMax` of the grammar: the length of the
/// normalised path (`library/` included), not counting the domain. (Before
/// February 2024 the Go code counted domain + '/' + path.)
pub const REPOSITORY_NAME_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference format: cannot specify a 64-byte hexadecimal string as a repository name")]
    HexIdentifier,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format: invalid domain ({0})")]
    InvalidDomain(String),
    #[error("invalid reference format: invalid port in domain ({0})")]
    InvalidPort(String),
    #[error("invalid reference format: repository name must have at least one component")]
    EmptyPath,
    #[error("invalid reference format: invalid path component ({0})")]
    InvalidPathComponent(String),
    #[error("invalid reference format: repository name must not be more than {REPOSITORY_NAME_LENGTH_MAX} characters (got {0})")]
    NameTooLong(usize),
    #[error("invalid reference format: invalid tag ({0})")]
    InvalidTag(String),
    #[error("invalid digest format ({0})")]
    InvalidDigestFormat(String),
    #[error("unsupported digest algorithm ({0})")]
    UnsupportedDigestAlgorithm(String),
    #[error(
        "invalid checksum digest length: {algorithm} needs {expected} hex characters, got {got}"
    )]
    InvalidDigestLength {
        algorithm: String,
        expected: usize,
        got: usize,
    },
    #[error("invalid checksum digest format: digest hex must be lowercase [a-f0-9]")]
    InvalidDigestHex,
}

/// A parsed, normalised image reference. `domain` keeps the case it was
/// written in (the grammar allows `Registry.K8s.io`); compare hosts with
/// [`Reference::domain_lower`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses `input` the way `ParseNormalizedNamed` does.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if input.len() == 64
            && input
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(ReferenceError::HexIdentifier);
        }
        let (domain, remainder) = split_docker_domain(input);
        // Split remainder into name / tag / digest. '@' can only start a digest,
        // and ':' after the last '/' of the name can only start a tag.
        let (name_and_tag, digest) = match remainder.split_once('@') {
            Some((left, right)) => (left, Some(right)),
            None => (remainder, None),
        };
        // Paths never contain ':', so the first one starts the tag; a tag with
        // '/' or ':' in it is then rejected by the tag grammar.
        let (path, tag) = match name_and_tag.split_once(':') {
            Some((path, tag)) => (path, Some(tag)),
            None => (name_and_tag, None),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(path.to_string()));
        }
        validate_domain(domain)?;
        validate_path(path)?;
        let library = needs_library_prefix(domain, path);
        // The limit counts the normalised path, `library/` included, as in Go.
        let path_len = path.len() + if library { OFFICIAL_PREFIX.len() } else { 0 };
        if path_len > REPOSITORY_NAME_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(path_len));
        }
        if let Some(tag) = tag {
            validate_tag(tag)?;
        }
        if let Some(digest) = digest {
            validate_digest(digest)?;
        }
        let path = if library {
            let mut p = String::with_capacity(OFFICIAL_PREFIX.len() + path.len());
            p.push_str(OFFICIAL_PREFIX);
            p.push_str(path);
            p
        } else {
            path.to_string()
        };
        Ok(Self {
            domain: domain.to_string(),
            path,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    /// Builds a normalised reference from parts that are each valid under the
    /// grammar (the rewriter's case), checking what joining them can break:
    /// an empty path, the name length limit, and Docker Hub's `library/`.
    pub(crate) fn from_valid_parts(
        domain: &str,
        path: String,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<Self, ReferenceError> {
        if path.is_empty() {
            return Err(ReferenceError::EmptyPath);
        }
        let domain = if domain == LEGACY_DOCKER_HUB {
            DOCKER_HUB
        } else {
            domain
        };
        let path = if needs_library_prefix(domain, &path) {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        if path.len() > REPOSITORY_NAME_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong(path.len()));
        }
        Ok(Self {
            domain: domain.to_string(),
            path,
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The domain lowercased, for host comparisons (DNS names ignore case).
    pub fn domain_lower(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`, the repository without tag or digest.
    pub fn repository(&self) -> String {
        let mut s = String::with_capacity(self.domain.len() + 1 + self.path.len());
        s.push_str(&self.domain);
        s.push('/');
        s.push_str(&self.path);
        s
    }

    /// The same reference with another tag/digest combination.
    pub fn with_tag_and_digest(&self, tag: Option<String>, digest: Option<String>) -> Self {
        Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag,
            digest,
        }
    }

    /// The familiar (short) form, as `docker` prints it: `nginx:1.25`,
    /// `bitnami/redis`, `quay.io/coreos/etcd`.
    pub fn familiar(&self) -> String {
        let mut s = String::new();
        let first_component = self.path.split('/').next().unwrap_or_default();
        // Go's FamiliarString drops `docker.io/` even when the first path
        // component would then read as a host (`docker.io/a.b/c` -> `a.b/c`);
        // keeping the domain there makes the familiar form parse back.
        if self.domain == DOCKER_HUB
            && !(self.path.contains('/') && looks_like_domain(first_component))
        {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(rest) if !rest.contains('/') => s.push_str(rest),
                _ => s.push_str(&self.path),
            }
        } else {
            s.push_str(&self.domain);
            s.push('/');
            s.push_str(&self.path);
        }
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
    }
}

/// The fully-qualified form `domain/path[:tag][@digest]`.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.repository();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// `splitDockerDomain` of normalize.go, minus the `library/` insertion, which
/// [`needs_library_prefix`] does after validation.
fn split_docker_domain(input: &str) -> (&str, &str) {
    let (domain, remainder) = match input.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (first, rest),
        _ => (DOCKER_HUB, input),
    };
    if domain == LEGACY_DOCKER_HUB {
        (DOCKER_HUB, remainder)
    } else {
        (domain, remainder)
    }
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn needs_library_prefix(domain: &str, path: &str) -> bool {
    domain == DOCKER_HUB && !path.contains('/')
}

/// Validates `host[:port]` where host is a domain name or a bracketed IPv6 address.
pub fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidDomain(domain.to_string());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(invalid)?;
        let addr = &rest[..end];
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(invalid());
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return Err(invalid()),
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() || !host.split('.').all(is_domain_component) {
            return Err(invalid());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReferenceError::InvalidPort(domain.to_string()));
        }
    }
    Ok(())
}

fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
}

/// Validates a repository path: components separated by '/'.
pub fn validate_path(path: &str) -> Result<(), ReferenceError> {
    if path.is_empty() {
        return Err(ReferenceError::EmptyPath);
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(ReferenceError::InvalidPathComponent(component.to_string()));
        }
    }
    Ok(())
}

/// `alpha-numeric (separator alpha-numeric)*` with separator `[_.]|__|[-]+`.
pub fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < b.len() {
        if alnum(b[i]) {
            while i < b.len() && alnum(b[i]) {
                i += 1;
            }
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return false;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i == b.len() {
            return false;
        }
        expect_alnum = true;
    }
    !expect_alnum
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty()
        && b.len() <= TAG_LENGTH_MAX
        && word(b[0])
        && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag(tag.to_string()))
    }
}

fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let format_err = || ReferenceError::InvalidDigestFormat(digest.to_string());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(format_err)?;
    if !is_digest_algorithm(algorithm)
        || hex.is_empty()
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format_err());
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(ReferenceError::UnsupportedDigestAlgorithm(
                algorithm.to_string(),
            ))
        }
    };
    if hex.len() != expected {
        return Err(ReferenceError::InvalidDigestLength {
            algorithm: algorithm.to_string(),
            expected,
            got: hex.len(),
        });
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::InvalidDigestHex);
    }
    Ok(())
}

/// `[A-Za-z][A-Za-z0-9]*([+.-_][A-Za-z][A-Za-z0-9]*)*`
fn is_digest_algorithm(a: &str) -> bool {
    !a.is_empty()
        && a.split(['+', '.', '-', '_']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests;
