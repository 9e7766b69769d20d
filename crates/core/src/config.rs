//! The configuration file: typed YAML in, a validated [`Config`] out.
//!
//! Layer: adapter from files to the pure core. Every value is checked while
//! it is deserialised, so an error names the file, the line and the reason;
//! a config that loads can always be applied. Unknown fields are errors.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::mirror_settings::MirrorSettings;
use crate::presets::{self, PresetRef};
use crate::rule_spec::{AliasSpec, RepoPattern, RuleSpec};
use crate::rules::{Alias, DigestPolicy, RepoSet, Rule, RuleSet, Swap};

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

/// Where the rules come from: a config file and presets (`--config`,
/// `--preset`), or the embedded default when neither is given. Every command
/// and every reload of `detour serve` loads through this.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub config: Option<PathBuf>,
    pub presets: Vec<PresetRef>,
}

impl ConfigSource {
    /// Loads and validates the rules this source names.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match &self.config {
            Some(path) => Config::load_with_presets(path, &self.presets),
            None if !self.presets.is_empty() => {
                Config::from_yaml_with_presets("", "--preset", &self.presets)
            }
            None => Ok(Config::embedded_default()),
        }
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

#[cfg(test)]
mod tests;
