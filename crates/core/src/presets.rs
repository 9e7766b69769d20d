//! Built-in mirror presets: named rule blocks for public mirrors and a
//! template for a self-hosted one.
//!
//! Layer: data for the config adapter. Each preset is written in the same
//! YAML schema as user rules (so it is validated by the same code) and
//! records its status and the date of the newest information found
//! (`mirrors.md` §1). Presets are opt-in; shut-down services are refused by
//! name with the reason, never offered as live.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::rules::{
    Alias, DigestPolicy, RepoPrefix, RepoSet, Rule, RuleOrigin, SourcePattern, Transform,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetStatus {
    /// First-party information says it works as described.
    Active,
    /// Works, but carries only some images or tags; the preset allow-lists them.
    Partial,
    /// Host names come from third-party configs only.
    Unverified,
    /// No first-party news for a long time.
    Stale,
}

impl fmt::Display for PresetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PresetStatus::Active => "active",
            PresetStatus::Partial => "partial",
            PresetStatus::Unverified => "unverified",
            PresetStatus::Stale => "stale",
        })
    }
}

pub struct PresetInfo {
    pub name: &'static str,
    pub status: PresetStatus,
    /// Date of the newest information found about the service.
    pub newest_info: &'static str,
    pub summary: &'static str,
    rules_yaml: &'static str,
}

/// The self-hosted template takes the mirror as its argument.
pub const SELF_HOSTED: &str = "self-hosted";
/// The host-style template (one reverse-proxy host per upstream) takes the
/// user's domain.
pub const SELF_HOSTED_HOSTS: &str = "self-hosted-hosts";

/// Upstream registry → host label under the domain of `self-hosted-hosts`,
/// the layout of the one-reverse-proxy-per-registry recipe.
const HOST_STYLE_UPSTREAMS: &[(&str, &str)] = &[
    ("docker.io", "docker"),
    ("quay.io", "quay"),
    ("gcr.io", "gcr"),
    ("ghcr.io", "ghcr"),
    ("registry.k8s.io", "k8s"),
    ("k8s.gcr.io", "k8s-gcr"),
];

pub const PRESETS: &[PresetInfo] = &[
    PresetInfo {
        name: "daocloud",
        status: PresetStatus::Active,
        newest_info: "2026-08-21",
        summary: "DaoCloud prefix mode: m.daocloud.io/<full reference> for the registries DaoCloud allow-lists whole",
        rules_yaml: include_str!("presets/daocloud.yaml"),
    },
    PresetInfo {
        name: "daocloud-hosts",
        status: PresetStatus::Active,
        newest_info: "2026-08-21",
        summary: "DaoCloud host mode: k8s.m.daocloud.io, gcr.m.daocloud.io, ... (host replace)",
        rules_yaml: include_str!("presets/daocloud-hosts.yaml"),
    },
    PresetInfo {
        name: "lank8s",
        status: PresetStatus::Stale,
        newest_info: "2023-04-09",
        summary: "lank8s.cn, registry.lank8s.cn, gcr.lank8s.cn, ghcr.lank8s.cn (host replace, 302 router)",
        rules_yaml: include_str!("presets/lank8s.yaml"),
    },
    PresetInfo {
        name: "aliyun",
        status: PresetStatus::Partial,
        newest_info: "2022-05-08",
        summary: "registry.aliyuncs.com/google_containers: Kubernetes components only, flattened, renames; re-pushed, so digest references are left alone",
        rules_yaml: include_str!("presets/aliyun.yaml"),
    },
    PresetInfo {
        name: "sjtu",
        status: PresetStatus::Active,
        newest_info: "2026-04-14",
        summary: "SJTUG registry-k8s-io.mirrors.sjtug.sjtu.edu.cn for registry.k8s.io (host replace)",
        rules_yaml: include_str!("presets/sjtu.yaml"),
    },
    PresetInfo {
        name: "nju",
        status: PresetStatus::Unverified,
        newest_info: "2023-06-08",
        summary: "NJU caches: docker/gcr/ghcr/quay/k8s/k8s-gcr/nvcr.nju.edu.cn (host replace)",
        rules_yaml: include_str!("presets/nju.yaml"),
    },
    PresetInfo {
        name: "anjia0532",
        status: PresetStatus::Partial,
        newest_info: "2024-03-01",
        summary: "Docker Hub re-pushes by anjia0532 (dot-joined names); only requested images exist, no digests",
        rules_yaml: include_str!("presets/anjia0532.yaml"),
    },
];

/// Services that are gone, with the reason; naming one is an error.
pub const RETIRED: &[(&str, &str)] = &[
    ("ustc", "USTC's registry caches are shut down (Docker Hub 2024-06-06, gcr.io and quay.io 2024-08-12)"),
    ("azk8s", "azk8s.cn is restricted to Azure China IPs since 2020-04-02"),
];

/// A preset named in a config file or on the command line: `NAME` or
/// `self-hosted=MIRROR` (for example `self-hosted=harbor.example.com/proxy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresetRef {
    Named(&'static str),
    SelfHosted(RepoPrefix),
    /// `self-hosted-hosts=DOMAIN`: `docker.DOMAIN`, `quay.DOMAIN`, ...
    SelfHostedHosts(String),
}

impl FromStr for PresetRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // Before `self-hosted`, which is a prefix of it.
        if let Some(domain) = text.strip_prefix(SELF_HOSTED_HOSTS) {
            let domain = domain.strip_prefix('=').filter(|d| !d.is_empty()).ok_or_else(|| {
                format!("preset {SELF_HOSTED_HOSTS} needs your domain: {SELF_HOSTED_HOSTS}=mirror.example.com")
            })?;
            // Every host it makes must be a registry host with no path.
            for (_, label) in HOST_STYLE_UPSTREAMS {
                let host = format!("{label}.{domain}");
                let prefix = RepoPrefix::parse(&host)
                    .map_err(|e| format!("preset {SELF_HOSTED_HOSTS}: {e}"))?;
                if !prefix.path.is_empty() {
                    return Err(format!(
                        "preset {SELF_HOSTED_HOSTS}: {domain:?} must be a domain, without a path"
                    ));
                }
            }
            return Ok(PresetRef::SelfHostedHosts(domain.to_string()));
        }
        if let Some(mirror) = text.strip_prefix(SELF_HOSTED) {
            let mirror = mirror.strip_prefix('=').filter(|m| !m.is_empty()).ok_or_else(|| {
                format!("preset {SELF_HOSTED} needs the mirror: {SELF_HOSTED}=harbor.example.com/mirror")
            })?;
            let target =
                RepoPrefix::parse(mirror).map_err(|e| format!("preset {SELF_HOSTED}: {e}"))?;
            return Ok(PresetRef::SelfHosted(target));
        }
        if let Some((_, why)) = RETIRED.iter().find(|(name, _)| *name == text) {
            return Err(format!("preset {text:?} is not offered: {why}"));
        }
        match PRESETS.iter().find(|p| p.name == text) {
            Some(p) => Ok(PresetRef::Named(p.name)),
            None => Err(format!(
                "unknown preset {text:?}; known presets: {}",
                known_names()
            )),
        }
    }
}

impl<'de> Deserialize<'de> for PresetRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PresetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresetRef::Named(n) => f.write_str(n),
            PresetRef::SelfHosted(t) => write!(f, "{SELF_HOSTED}={t}"),
            PresetRef::SelfHostedHosts(d) => write!(f, "{SELF_HOSTED_HOSTS}={d}"),
        }
    }
}

fn known_names() -> String {
    let mut names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    names.push("self-hosted=<mirror>");
    names.push("self-hosted-hosts=<domain>");
    names.join(", ")
}

/// The rules and aliases a preset stands for.
pub fn expand(preset: &PresetRef) -> Result<(Vec<Rule>, Vec<Alias>), String> {
    match preset {
        PresetRef::Named(name) => {
            let info = PRESETS
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| format!("unknown preset {name}"))?;
            let (mut rules, aliases) = crate::rule_spec::parse_rule_specs(info.rules_yaml)
                .map_err(|e| format!("built-in preset {name} is invalid: {e}"))?;
            for rule in &mut rules {
                rule.origin = RuleOrigin::Preset(info.name);
                rule.name = format!("{}/{}", info.name, rule.name);
            }
            Ok((rules, aliases))
        }
        PresetRef::SelfHosted(target) => {
            // `<mirror>/<source host>/<path>`: no flattening, so no collisions;
            // images already on the mirror's own registry are left alone.
            let own_host = RepoSet::parse(&[target.domain.as_str()]).map_err(|e| e.to_string())?;
            let rule = Rule {
                name: format!("{SELF_HOSTED}={target}"),
                origin: RuleOrigin::Preset(SELF_HOSTED),
                source: SourcePattern::parse("*").map_err(|e| e.to_string())?,
                transform: Transform::FullReference(target.clone()),
                digests: DigestPolicy::Keep,
                allow: RepoSet::default(),
                skip: own_host,
                mirror: Default::default(),
            };
            Ok((vec![rule], vec![]))
        }
        PresetRef::SelfHostedHosts(domain) => {
            // Written in the rule schema, so the same validation applies.
            let mut yaml = String::from("rules:\n");
            for (upstream, label) in HOST_STYLE_UPSTREAMS {
                yaml.push_str(&format!(
                    "  - {{name: {upstream}, source: {upstream}, kind: host, target: {label}.{domain}}}\n"
                ));
            }
            let (mut rules, aliases) = crate::rule_spec::parse_rule_specs(&yaml)
                .map_err(|e| format!("preset {SELF_HOSTED_HOSTS}={domain}: {e}"))?;
            for rule in &mut rules {
                rule.origin = RuleOrigin::Preset(SELF_HOSTED_HOSTS);
                rule.name = format!("{SELF_HOSTED_HOSTS}={domain}/{}", rule.name);
            }
            Ok((rules, aliases))
        }
    }
}

#[cfg(test)]
mod tests;
