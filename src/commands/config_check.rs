//! `detour config check`: validates a config file and lists its rules in
//! precedence order.
//!
//! Layer: runtime wiring for the CLI over the core's config loader.

use std::io::Write;
use std::path::Path;

use detour_core::config::ConfigSource;
use detour_core::rules::{RuleOrigin, Transform};

use super::CommandError;
use crate::cli::RuleArgs;

/// `config check`: validates and lists the rules in precedence order.
pub fn run(path: &Path, args: &RuleArgs, out: &mut dyn Write) -> Result<i32, CommandError> {
    let source = ConfigSource {
        config: Some(path.to_path_buf()),
        presets: args.presets.clone(),
    };
    let config = source.load()?;
    let io = |e| CommandError::Io("stdout".into(), e);
    let set = &config.rules;
    writeln!(out, "{}: ok", config.origin).map_err(io)?;
    for p in &config.presets {
        writeln!(out, "preset {p}").map_err(io)?;
    }
    for rule in set.rules() {
        let target = match &rule.transform {
            Transform::Keep => "(left alone)".to_string(),
            t => t.target().map(|t| t.to_string()).unwrap_or_default(),
        };
        let origin = match rule.origin {
            RuleOrigin::Config => "config".to_string(),
            RuleOrigin::Preset(p) => format!("preset {p}"),
        };
        let mut line = format!(
            "rule {:?}: {} --{}--> {} (digests {}, {origin})",
            rule.name,
            rule.source,
            rule.transform.kind(),
            target,
            rule.digests.as_str()
        );
        if !rule.allow.is_empty() {
            line.push_str(&format!(", allow {} repositories", rule.allow.len()));
        }
        if !rule.skip.is_empty() {
            line.push_str(&format!(", skip {} repositories", rule.skip.len()));
        }
        writeln!(out, "{line}").map_err(io)?;
    }
    for alias in set.aliases() {
        writeln!(out, "alias {} = {}", alias.from, alias.to).map_err(io)?;
    }
    if !set.skip().is_empty() {
        writeln!(out, "skip {}", set.skip().patterns().join(", ")).map_err(io)?;
    }
    let mut placeholders: Vec<&str> = set.placeholders().collect();
    placeholders.sort_unstable();
    writeln!(out, "placeholders [{}]", placeholders.join(", ")).map_err(io)?;
    Ok(0)
}
