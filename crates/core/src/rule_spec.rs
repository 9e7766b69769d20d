//! One `rules:` or `aliases:` entry as a config file or a preset writes it,
//! validated while it is deserialised into the core's [`Rule`]s.
//!
//! Layer: pure core. The config file and the presets share this schema, so a
//! preset is checked by the same code as a user's rules.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::rules::{
    Alias, DigestPolicy, HostPattern, MirrorPolicy, RepoPrefix, RepoSet, Rule, RuleOrigin,
    SourcePattern, Swap, Transform,
};

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
pub(crate) struct RepoPattern(pub(crate) String);

impl TryFrom<String> for RepoPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        RepoSet::parse(&[&s]).map_err(|e| e.to_string())?;
        Ok(RepoPattern(s))
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
