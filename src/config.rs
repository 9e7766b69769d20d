//! The configuration file: typed YAML in, a validated [`Config`] out.
//!
//! Layer: adapter from files to the pure core. Every value is checked while
//! it is deserialised, so an error names the file, the line and the reason;
//! a config that loads can always be applied. Unknown fields are errors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::duration::ConfigDuration;
use crate::mirror::PlatformFilter;
use crate::presets::{self, PresetRef};
use crate::rules::{
    Alias, DigestPolicy, HostPattern, MirrorPolicy, RepoPrefix, RepoSet, Rule, RuleOrigin, RuleSet,
    SourcePattern, Swap, Transform,
};

/// Config files larger than this are refused: a ConfigMap holds 1 MiB, and a
/// bound keeps a hostile file from exhausting memory.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// The config used when none is given (README: "The embedded default").
pub const EMBEDDED_DEFAULT: &str = include_str!("default-config.yaml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {size} bytes is more than the {MAX_CONFIG_BYTES}-byte limit")]
    TooLarge { file: String, size: u64 },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Rejected { file: String, message: String },
}

/// What images the webhook rewrites in which way: the whole file, validated.
#[derive(Debug)]
pub struct Config {
    /// Where it came from: a path or `embedded default`.
    pub origin: String,
    pub presets: Vec<PresetRef>,
    pub rules: RuleSet,
    pub mode: GlobalMode,
    pub pull_policy_never: NeverPolicy,
    pub mirror: MirrorSettings,
}

/// The file format. Field documentation is in the README ("Configuration").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    presets: Vec<PresetRef>,
    #[serde(default)]
    rules: Vec<RuleSpec>,
    #[serde(default)]
    aliases: Vec<AliasSpec>,
    #[serde(default)]
    skip: Vec<RepoPattern>,
    #[serde(default = "default_placeholders")]
    placeholders: Vec<String>,
    #[serde(default)]
    mode: GlobalMode,
    #[serde(default)]
    pull_policy_never: NeverPolicy,
    #[serde(default)]
    mirror: MirrorSettings,
}

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

/// `mode:` in the file. `audit` forces audit on every path; `enforce` lets
/// the request path choose (`/mutate` enforces, `/audit` audits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GlobalMode {
    #[default]
    Enforce,
    Audit,
}

/// What to do with containers whose `imagePullPolicy` is `Never`: their
/// image must already be on the node, under the name written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NeverPolicy {
    #[default]
    Skip,
    Rewrite,
}

fn default_placeholders() -> Vec<String> {
    vec!["auto".to_string()]
}

/// The transformation kinds of `mirrors.md` §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransformKind {
    Host,
    Prefix,
    FullReference,
    Flatten,
    Join,
    Keep,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRule {
    name: Option<String>,
    source: String,
    kind: TransformKind,
    target: Option<String>,
    token: Option<String>,
    #[serde(default)]
    digests: DigestPolicy,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    renames: BTreeMap<String, String>,
    #[serde(default)]
    premirror: bool,
    #[serde(default)]
    swap: Swap,
}

/// One `rules:` entry: the rule and the exact renames it carries.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawRule")]
pub(crate) struct RuleSpec {
    pub(crate) rules: Vec<Rule>,
}

impl TryFrom<RawRule> for RuleSpec {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Self, String> {
        let source = SourcePattern::parse(&raw.source).map_err(|e| e.to_string())?;
        let name = raw.name.clone().unwrap_or_else(|| format!("{source}"));
        let ctx = |msg: String| format!("rule {name:?}: {msg}");
        let target = |what: &str| -> Result<RepoPrefix, String> {
            let text = raw
                .target
                .as_deref()
                .ok_or_else(|| ctx(format!("kind {what} needs a target")))?;
            RepoPrefix::parse(text).map_err(|e| ctx(e.to_string()))
        };
        if raw.token.is_some() && raw.kind != TransformKind::Join {
            return Err(ctx("token is only used by kind join".into()));
        }
        let transform = match raw.kind {
            TransformKind::Host => {
                let t = target("host")?;
                if !t.path.is_empty() {
                    return Err(ctx(format!(
                        "kind host replaces only the registry, so the target must be a host without a path (got {t}); use kind prefix to add a path"
                    )));
                }
                Transform::Host(t.domain)
            }
            TransformKind::Prefix => Transform::Prefix(target("prefix")?),
            TransformKind::FullReference => Transform::FullReference(target("full-reference")?),
            TransformKind::Flatten => Transform::Flatten(target("flatten")?),
            TransformKind::Join => {
                let token = raw.token.clone().unwrap_or_default();
                if !token.is_empty() && !crate::reference::is_path_component(&token) {
                    return Err(ctx(format!(
                        "token {token:?} must be a lowercase path component (or empty)"
                    )));
                }
                Transform::Join {
                    target: target("join")?,
                    token,
                }
            }
            TransformKind::Keep => {
                if raw.target.is_some() {
                    return Err(ctx(
                        "kind keep leaves images alone and takes no target".into()
                    ));
                }
                Transform::Keep
            }
        };
        let mirror = MirrorPolicy {
            premirror: raw.premirror,
            swap: raw.swap,
        };
        if transform == Transform::Keep && (mirror.premirror || mirror.swap != Swap::Always) {
            return Err(ctx("kind keep has no target to mirror into".into()));
        }
        if mirror.premirror && source.host == HostPattern::Any {
            // The source host of a copy comes from the Pod: a rule for every
            // registry would let any image string pick the host detour calls.
            return Err(ctx(
                "premirror copies only from registries the rule names; source `*` names every registry".into(),
            ));
        }
        let allow = RepoSet::parse(&raw.allow).map_err(|e| ctx(format!("allow: {e}")))?;
        let skip = RepoSet::parse(&raw.skip).map_err(|e| ctx(format!("skip: {e}")))?;
        let mut rules = vec![Rule {
            name: name.clone(),
            origin: RuleOrigin::Config,
            source: source.clone(),
            transform,
            digests: raw.digests,
            allow,
            skip,
            mirror,
        }];
        for (from, to) in &raw.renames {
            let from_pattern =
                SourcePattern::parse(from).map_err(|e| ctx(format!("renames: {e}")))?;
            if from_pattern.path.is_empty()
                || !matches!(from_pattern.host, crate::rules::HostPattern::Exact(_))
            {
                return Err(ctx(format!(
                    "renames: {from:?} must be a full repository (registry/path)"
                )));
            }
            if !covers(&source, &from_pattern) {
                return Err(ctx(format!(
                    "renames: {from:?} is not under this rule's source {source}"
                )));
            }
            let to_prefix = RepoPrefix::parse(to).map_err(|e| ctx(format!("renames: {e}")))?;
            if to_prefix.path.is_empty() {
                return Err(ctx(format!(
                    "renames: {to:?} must be a full repository (registry/path)"
                )));
            }
            rules.push(Rule {
                name: format!("{name}: rename {from_pattern}"),
                origin: RuleOrigin::Config,
                source: from_pattern,
                transform: Transform::Rename(to_prefix),
                digests: raw.digests,
                allow: RepoSet::default(),
                skip: RepoSet::default(),
                mirror,
            });
        }
        Ok(RuleSpec { rules })
    }
}

/// Does `outer` cover every repository that the exact pattern `inner` names?
fn covers(outer: &SourcePattern, inner: &SourcePattern) -> bool {
    use crate::rules::HostPattern::*;
    let Exact(inner_host) = &inner.host else {
        return false;
    };
    let host_ok = match &outer.host {
        Exact(h) => h == inner_host,
        Subdomains(s) => inner_host.ends_with(&format!(".{s}")),
        Any => true,
    };
    let path_ok = outer.path.is_empty()
        || inner.path == outer.path
        || inner
            .path
            .strip_prefix(&outer.path)
            .is_some_and(|rest| rest.starts_with('/'));
    host_ok && path_ok
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlias {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(try_from = "RawAlias")]
pub(crate) struct AliasSpec(pub(crate) Alias);

impl TryFrom<RawAlias> for AliasSpec {
    type Error = String;
    fn try_from(raw: RawAlias) -> Result<Self, String> {
        let from = SourcePattern::parse(&raw.from).map_err(|e| format!("alias from: {e}"))?;
        if !matches!(from.host, crate::rules::HostPattern::Exact(_)) {
            return Err(format!(
                "alias from {:?}: must name one registry, not a wildcard",
                raw.from
            ));
        }
        let to = RepoPrefix::parse(&raw.to).map_err(|e| format!("alias to: {e}"))?;
        if from.key() == to.key() {
            return Err(format!("alias {:?} points at itself", raw.from));
        }
        Ok(AliasSpec(Alias { from, to }))
    }
}

/// One validated repository pattern string (see [`RepoSet`]).
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct RepoPattern(String);

impl TryFrom<String> for RepoPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RepoSet::parse(&[&s]).map_err(|e| e.to_string())?;
        Ok(RepoPattern(s))
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_presets(path, &[])
    }

    /// Reads and validates a config file, adding `extra` presets after its own.
    pub fn load_with_presets(path: &Path, extra: &[PresetRef]) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file,
                size: meta.len(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml_with_presets(&text, &file, extra)
    }

    pub fn embedded_default() -> Config {
        Self::from_yaml(EMBEDDED_DEFAULT, "embedded default").unwrap_or_else(|e| {
            // A test checks that the embedded default loads; an empty rule set
            // is the harmless fallback should that ever be broken.
            tracing::error!(error = %e, "embedded default config is invalid; rewriting nothing");
            Config {
                origin: "empty".into(),
                presets: vec![],
                rules: RuleSet::default(),
                mode: GlobalMode::default(),
                pull_policy_never: NeverPolicy::default(),
                mirror: MirrorSettings::default(),
            }
        })
    }

    /// Parses YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_with_presets(text, origin, &[])
    }

    /// Parses YAML text and adds `extra` presets after the file's own (the
    /// `--preset` flag).
    pub fn from_yaml_with_presets(
        text: &str,
        origin: &str,
        extra: &[PresetRef],
    ) -> Result<Config, ConfigError> {
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                file: origin.into(),
                size: text.len() as u64,
            });
        }
        // An empty file is an empty mapping, not an error.
        let text = if text.trim().is_empty() { "{}" } else { text };
        let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(origin, &e))?;
        Self::build(file, origin, extra)
    }

    fn build(file: ConfigFile, origin: &str, extra: &[PresetRef]) -> Result<Config, ConfigError> {
        let mut rules: Vec<Rule> = file.rules.into_iter().flat_map(|spec| spec.rules).collect();
        let mut aliases: Vec<Alias> = file.aliases.into_iter().map(|a| a.0).collect();
        let mut preset_refs = file.presets;
        preset_refs.extend(extra.iter().cloned());
        for preset in &preset_refs {
            let (preset_rules, preset_aliases) =
                presets::expand(preset).map_err(|message| ConfigError::Rejected {
                    file: origin.into(),
                    message,
                })?;
            rules.extend(preset_rules);
            aliases.extend(preset_aliases);
        }
        let skip = RepoSet::parse(&file.skip.iter().map(|p| p.0.as_str()).collect::<Vec<_>>())
            .map_err(|e| ConfigError::Rejected {
                file: origin.into(),
                message: e.to_string(),
            })?;
        let rejected = |message: String| ConfigError::Rejected {
            file: origin.into(),
            message,
        };
        if !file.mirror.platforms.is_empty() {
            if let Some(rule) = rules.iter().find(|r| {
                r.mirror.premirror
                    && r.mirror.swap == Swap::Always
                    && matches!(r.digests, DigestPolicy::Keep | DigestPolicy::Require)
            }) {
                return Err(rejected(format!(
                    "rule {:?}: with mirror.platforms the copied index has another digest, so digest-pinned images would be sent to a digest the mirror lacks; use swap: if-present, or digests: skip or drop",
                    rule.name
                )));
            }
        }
        let limits = [
            ("blobConcurrency", file.mirror.blob_concurrency, 64),
            ("copiesPerRegistry", file.mirror.copies_per_registry, 64),
            ("queueLength", file.mirror.queue_length, 100_000),
        ];
        for (name, value, max) in limits {
            if value == 0 || value > max {
                return Err(rejected(format!(
                    "mirror.{name} must be between 1 and {max} (got {value})"
                )));
            }
        }
        Ok(Config {
            origin: origin.to_string(),
            presets: preset_refs,
            rules: RuleSet::new(rules, aliases, skip, file.placeholders),
            mode: file.mode,
            pull_policy_never: file.pull_policy_never,
            mirror: file.mirror,
        })
    }
}

/// Turns a YAML error into file:line:column: reason.
fn yaml_error(origin: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let message = e.to_string();
    // serde_yaml appends " at line L column C"; the location goes up front instead.
    let message = match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    ConfigError::Invalid {
        file: origin.into(),
        line,
        column,
        message,
    }
}

/// Parses preset rule blocks with the same schema as user rules.
pub(crate) fn parse_rule_specs(yaml: &str) -> Result<(Vec<Rule>, Vec<Alias>), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Block {
        #[serde(default)]
        rules: Vec<RuleSpec>,
        #[serde(default)]
        aliases: Vec<AliasSpec>,
    }
    let block: Block = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    Ok((
        block.rules.into_iter().flat_map(|s| s.rules).collect(),
        block.aliases.into_iter().map(|a| a.0).collect(),
    ))
}

#[cfg(test)]
mod tests;
