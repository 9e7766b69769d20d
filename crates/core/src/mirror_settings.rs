//! The `mirror:` settings: how detour reaches registries when it copies
//! images or asks a mirror what it has, and which platforms a copy keeps.
//!
//! Layer: pure core (typed config, no I/O). The registry client and the copy
//! engine are built from these; nothing here opens a connection.

use std::str::FromStr;

use serde::Deserialize;

use crate::duration::ConfigDuration;

/// The key that permits loopback where these settings usually come from,
/// the webhook's config (`mirror:`).
pub const ALLOW_LOOPBACK_KEY: &str = "mirror.allowLoopback";

/// `mirror:`: how detour reaches registries when it copies images or checks
/// that the mirror has them. Used by `detour mirror` and by rules with
/// `premirror` or `swap: if-present`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MirrorSettings {
    /// Docker `config.json` files (a mounted dockerconfigjson Secret).
    #[serde(default)]
    pub credentials: Vec<std::path::PathBuf>,
    /// PEM files of extra CAs that registry certificates may chain to.
    #[serde(default)]
    pub ca_files: Vec<std::path::PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    #[serde(default)]
    pub plain_http: Vec<String>,
    /// Permit loopback addresses (refused by default, like link-local and
    /// cloud metadata addresses, which are always refused).
    #[serde(default)]
    pub allow_loopback: bool,
    /// How the user permits loopback where these settings came from
    /// (`mirror.allowLoopback` in the webhook's config, the proxy's
    /// `registry.allowLoopback`, `--allow-loopback`), for the refusal's
    /// message. Not a key of the file.
    #[serde(skip, default = "defaults::allow_loopback_setting")]
    pub allow_loopback_setting: &'static str,
    /// A forward proxy for every registry (`http://host:port`); without it,
    /// `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Hosts reached without `proxy` (as `NO_PROXY`).
    #[serde(default)]
    pub no_proxy: Vec<String>,
    /// A file with `user:password` for the proxy.
    #[serde(default)]
    pub proxy_credentials: Option<std::path::PathBuf>,
    /// Copy only these platforms of multi-platform images. The copied index
    /// then has another digest, so digest-pinned images are not swapped to it.
    #[serde(default)]
    pub platforms: Vec<PlatformFilter>,
    /// Copy the signatures, attestations, SBOMs and other referrers
    /// attached to each image with it (cosign's tags and OCI 1.1
    /// referrers), so verifiers find them beside the rewritten image.
    #[serde(default = "defaults::attached_artifacts")]
    pub attached_artifacts: bool,
    #[serde(default = "defaults::blob_concurrency")]
    pub blob_concurrency: usize,
    /// Copies running at once per destination registry (webhook queue).
    #[serde(default = "defaults::copies_per_registry")]
    pub copies_per_registry: usize,
    /// Copies waiting at most (webhook queue); beyond it, copies are dropped and counted.
    #[serde(default = "defaults::queue_length")]
    pub queue_length: usize,
    #[serde(default = "defaults::request_timeout")]
    pub request_timeout: ConfigDuration,
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Time one admission may spend asking the mirror what it has.
    #[serde(default = "defaults::lookup_budget")]
    pub lookup_budget: ConfigDuration,
    /// How long "the mirror has it" is believed.
    #[serde(default = "defaults::present_ttl")]
    pub present_ttl: ConfigDuration,
    /// How long "the mirror lacks it" is believed.
    #[serde(default = "defaults::absent_ttl")]
    pub absent_ttl: ConfigDuration,
    /// A finished copy is not queued again for this long.
    #[serde(default = "defaults::recent_ttl")]
    pub recent_ttl: ConfigDuration,
}

mod defaults {
    use crate::duration::ConfigDuration;
    use std::time::Duration;
    pub fn allow_loopback_setting() -> &'static str {
        super::ALLOW_LOOPBACK_KEY
    }
    pub fn attached_artifacts() -> bool {
        true
    }
    pub fn blob_concurrency() -> usize {
        6
    }
    pub fn copies_per_registry() -> usize {
        2
    }
    pub fn queue_length() -> usize {
        256
    }
    pub fn request_timeout() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(30))
    }
    pub fn retries() -> u32 {
        4
    }
    pub fn lookup_budget() -> ConfigDuration {
        ConfigDuration(Duration::from_millis(500))
    }
    pub fn present_ttl() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(300))
    }
    pub fn absent_ttl() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(10))
    }
    pub fn recent_ttl() -> ConfigDuration {
        ConfigDuration(Duration::from_secs(600))
    }
}

impl Default for MirrorSettings {
    fn default() -> Self {
        serde_yaml_ng::from_str("{}").expect("every mirror setting has a default")
    }
}

/// `os/arch[/variant]`, as in `--platform linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl FromStr for PlatformFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(PlatformFilter {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(PlatformFilter {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!("platform {s:?} is not os/arch[/variant]")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PlatformFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl PlatformFilter {
    /// Does an index entry's `os/arch[/variant]` match? Without a variant
    /// in the filter, every variant matches.
    pub fn matches(&self, platform: &str) -> bool {
        let mut parts = platform.split('/');
        parts.next() == Some(self.os.as_str())
            && parts.next() == Some(self.architecture.as_str())
            && match &self.variant {
                None => true,
                Some(v) => parts.next() == Some(v.as_str()),
            }
    }
}
