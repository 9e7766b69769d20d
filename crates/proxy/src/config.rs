//! The proxy's config file: which upstreams it serves, how it reaches them,
//! where and how much it caches, and who may pull.
//!
//! Layer: pure (parsing and validation; files named here are read by the
//! runtime). Typed, with unknown fields refused, so that a typo is an error
//! at load and not a silently open proxy.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use detour_core::config::MirrorSettings;
use detour_core::duration::ConfigDuration;
use detour_core::reference::validate_domain;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyConfig {
    /// The allow-list: only these registries are ever fetched from.
    pub upstreams: Vec<Upstream>,
    /// How upstreams are reached: credentials (Docker `config.json`), CAs,
    /// plain HTTP, forward proxy, timeouts, retries (the `mirror:` settings
    /// of the webhook's config).
    #[serde(default)]
    pub registry: MirrorSettings,
    #[serde(default)]
    pub cache: CacheSettings,
    #[serde(default)]
    pub clients: ClientSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Upstream {
    /// `registry.k8s.io`, `docker.io`, `host:port`: as in image references.
    pub host: String,
    /// How clients name this upstream as the first path component
    /// (`MIRROR/<name>/<repository>`); the host by default. A host with a
    /// port is not a path component: give it a name (or use `hostNames`,
    /// or containerd's `?ns=`).
    #[serde(default)]
    pub name: Option<String>,
    /// Host names this proxy answers as this upstream (host-based routing,
    /// e.g. `k8s.mirror.example.com`).
    #[serde(default)]
    pub host_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CacheSettings {
    /// Where blobs and manifests are kept (`--dev`: a temporary directory);
    /// with `s3`, only blobs being fetched.
    #[serde(default = "defaults::directory")]
    pub directory: PathBuf,
    /// Keep the cache in an S3-compatible bucket instead, shared by every
    /// replica. Credentials from `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub s3: Option<S3Cache>,
    /// Least recently used blobs are evicted beyond this size.
    #[serde(default = "defaults::max_size")]
    pub max_size: ByteSize,
    /// A tag is re-checked with the upstream when older than this.
    #[serde(default = "defaults::tag_ttl")]
    pub tag_ttl: ConfigDuration,
    /// How long past its TTL a tag is still served when the upstream cannot
    /// be reached (`0s`: never serve stale tags).
    #[serde(default = "defaults::serve_stale")]
    pub serve_stale: ConfigDuration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            directory: defaults::directory(),
            s3: None,
            max_size: defaults::max_size(),
            tag_ttl: defaults::tag_ttl(),
            serve_stale: defaults::serve_stale(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Cache {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio.storage:9000`.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "defaults::region")]
    pub region: String,
    /// Prepended to every key, e.g. `detour/`.
    #[serde(default)]
    pub prefix: String,
    /// `bucket.endpoint` (virtual-hosted style) instead of `endpoint/bucket`.
    #[serde(default)]
    pub virtual_host: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientSettings {
    /// An htpasswd file (bcrypt entries, `htpasswd -B`): pulls need Basic
    /// auth. Without it, pulls are anonymous.
    #[serde(default)]
    pub htpasswd: Option<PathBuf>,
    /// Requests one client address may have in flight; more are answered
    /// 429 `TOOMANYREQUESTS`. 0: no limit.
    #[serde(default = "defaults::per_client")]
    pub max_requests_per_client: usize,
}

mod defaults {
    use super::ByteSize;
    use detour_core::duration::ConfigDuration;
    use std::time::Duration;
    pub fn directory() -> std::path::PathBuf {
        "/var/cache/detour".into()
    }
    pub fn max_size() -> ByteSize {
        ByteSize(20 << 30)
    }
    pub fn tag_ttl() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(300))
    }
    pub fn serve_stale() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(7 * 86_400))
    }
    pub fn region() -> String {
        "us-east-1".into()
    }
    pub fn per_client() -> usize {
        64
    }
}

/// A size as people write it: `512MiB`, `20GiB`, `1GB`, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid size {text:?}: write e.g. 512MiB or 20GiB"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => {
                return Err(format!(
                    "invalid size unit in {text:?}: use B, KiB, MiB, GiB or TiB"
                ))
            }
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyConfigError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("proxy config: {0}")]
    Invalid(String),
}

/// The key of this config that permits loopback upstreams.
const LOOPBACK_SETTING: &str = "registry.allowLoopback";

impl ProxyConfig {
    pub fn load(path: &std::path::Path) -> Result<ProxyConfig, ProxyConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProxyConfigError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<ProxyConfig, ProxyConfigError> {
        let mut config: ProxyConfig =
            serde_yaml_ng::from_str(text).map_err(|e| ProxyConfigError::Invalid(e.to_string()))?;
        config.registry.allow_loopback_setting = LOOPBACK_SETTING;
        config.validate()?;
        Ok(config)
    }

    /// Refuses what would make the proxy open, ambiguous or unable to start.
    fn validate(&self) -> Result<(), ProxyConfigError> {
        let invalid = |m: String| Err(ProxyConfigError::Invalid(m));
        if self.upstreams.is_empty() {
            return invalid("no upstreams: list the registries this proxy may fetch from".into());
        }
        let router = self.router();
        let policy = detour_registry::safety::AddressPolicy {
            allow_loopback: self.registry.allow_loopback,
            loopback_setting: LOOPBACK_SETTING,
        };
        let mut names = std::collections::HashSet::new();
        for (i, upstream) in self.upstreams.iter().enumerate() {
            let host = &upstream.host;
            if validate_domain(host).is_err() || host.contains('/') {
                return invalid(format!("upstream {host:?} is not a registry host[:port]"));
            }
            if router.upstream(host) != Some(i) {
                return invalid(format!("upstream {host:?} is listed twice"));
            }
            let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
            if let Err(why) = policy.check_host(bare.trim_start_matches('[').trim_end_matches(']'))
            {
                return invalid(format!("upstream {host:?}: {why}"));
            }
            if let Some(name) = &upstream.name {
                if !detour_core::reference::is_path_component(name) {
                    return invalid(format!(
                        "name {name:?} of {host:?} is not a repository path component"
                    ));
                }
                if router.upstream(name) != Some(i) {
                    return invalid(format!("name {name:?} is given to two upstreams"));
                }
            }
            for name in &upstream.host_names {
                if validate_domain(name).is_err() || name.contains(':') {
                    return invalid(format!("host name {name:?} of {host:?} is not a DNS name"));
                }
                if !names.insert(name.to_ascii_lowercase()) {
                    return invalid(format!("host name {name:?} is given to two upstreams"));
                }
            }
        }
        if let Some(s3) = &self.cache.s3 {
            match reqwest::Url::parse(&s3.endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                _ => {
                    return invalid(format!(
                        "cache.s3.endpoint {:?} is not an http(s) URL",
                        s3.endpoint
                    ))
                }
            }
            if s3.bucket.is_empty() || s3.bucket.contains('/') {
                return invalid(format!(
                    "cache.s3.bucket {:?} is not a bucket name",
                    s3.bucket
                ));
            }
        }
        if self.cache.max_size.0 == 0 {
            return invalid("cache.maxSize must be above 0".into());
        }
        if self.cache.tag_ttl.0 > Duration::from_secs(365 * 86_400) {
            return invalid("cache.tagTtl is above a year".into());
        }
        Ok(())
    }

    /// Routing for these upstreams.
    pub fn router(&self) -> super::route::Router {
        super::route::Router::new(self.upstreams.iter().map(|u| super::route::UpstreamNames {
            host: &u.host,
            name: u.name.as_deref(),
            host_names: &u.host_names,
        }))
    }

    /// `--dev`: the public registries that clusters behind a wall miss,
    /// cached in `directory`.
    pub fn dev(directory: PathBuf) -> ProxyConfig {
        let upstreams = [
            "docker.io",
            "registry.k8s.io",
            "k8s.gcr.io",
            "gcr.io",
            "quay.io",
            "ghcr.io",
        ]
        .into_iter()
        .map(|host| Upstream {
            host: host.into(),
            name: None,
            host_names: vec![],
        })
        .collect();
        ProxyConfig {
            upstreams,
            registry: MirrorSettings {
                allow_loopback_setting: LOOPBACK_SETTING,
                ..MirrorSettings::default()
            },
            cache: CacheSettings {
                directory,
                max_size: ByteSize(2 << 30),
                ..CacheSettings::default()
            },
            clients: ClientSettings::default(),
        }
    }
}
