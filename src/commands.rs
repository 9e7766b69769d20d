//! The offline commands: explain, rewrite, config check.
//!
//! Layer: runtime wiring for the CLI. Reads files and standard streams,
//! calls the pure core, writes results. Returns the process exit code.

use std::io::{BufRead, Read, Write};
use std::path::Path;

use crate::cli::{ExplainArgs, OutputFormat, RewriteArgs, RuleArgs};
use crate::config::{Config, ConfigError};
use crate::rules::{RuleOrigin, RuleSet, Transform};
use crate::{explain, manifest};

/// Manifests larger than this are refused (a guard against runaway input).
const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: more than {1} bytes")]
    TooLarge(String, u64),
}

/// Loads the rules that the global flags select.
pub fn load_config(args: &RuleArgs) -> Result<Config, ConfigError> {
    match &args.config {
        Some(path) => Config::load_with_presets(path, &args.presets),
        None if !args.presets.is_empty() => {
            Config::from_yaml_with_presets("", "--preset", &args.presets)
        }
        None => Ok(Config::embedded_default()),
    }
}

pub fn explain(
    rules: &RuleSet,
    args: &ExplainArgs,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let mut any_invalid = false;
    let mut emit = |image: &str, out: &mut dyn Write| -> Result<(), CommandError> {
        let io = |e| CommandError::Io("stdout".into(), e);
        match args.output {
            OutputFormat::Json => {
                let record = explain::record(rules, image);
                any_invalid |= !record.valid;
                let line = serde_json::to_string(&record).unwrap_or_else(|_| "{}".into());
                writeln!(out, "{line}").map_err(io)
            }
            OutputFormat::Text => {
                any_invalid |= crate::reference::Reference::parse(image).is_err();
                writeln!(out, "{}", explain::text(rules, image)).map_err(io)
            }
        }
    };
    for image in &args.images {
        if image == "-" {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.map_err(|e| CommandError::Io("stdin".into(), e))?;
                emit(line.trim_end_matches('\r'), out)?;
            }
        } else {
            emit(image, out)?;
        }
    }
    // JSON carries validity in each record; text signals it in the exit code.
    Ok(if any_invalid && args.output == OutputFormat::Text {
        1
    } else {
        0
    })
}

pub fn rewrite(
    rules: &RuleSet,
    args: &RewriteArgs,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let text = read_input(&args.file, MAX_MANIFEST_BYTES)?;
    let (rewritten, changes) = manifest::rewrite_text(&text, rules)?;
    let io = |e| CommandError::Io("stdout".into(), e);
    if args.diff {
        for c in &changes {
            writeln!(
                out,
                "{}: {}: {} -> {} ({})",
                c.object, c.field, c.from, c.to, c.rule
            )
            .map_err(io)?;
        }
    } else {
        out.write_all(rewritten.as_bytes()).map_err(io)?;
    }
    Ok(0)
}

/// Reads a file (or standard input for `-`), refusing more than `limit` bytes.
pub(crate) fn read_input(file: &Path, limit: u64) -> Result<String, CommandError> {
    let name = file.display().to_string();
    let mut text = String::new();
    if name == "-" {
        std::io::stdin()
            .take(limit + 1)
            .read_to_string(&mut text)
            .map_err(|e| CommandError::Io(name.clone(), e))?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
            .map_err(|e| CommandError::Io(name.clone(), e))?;
    }
    if text.len() as u64 > limit {
        return Err(CommandError::TooLarge(name, limit));
    }
    Ok(text)
}

/// `config check`: validates and lists the rules in precedence order.
pub fn config_check(
    path: &Path,
    args: &RuleArgs,
    out: &mut dyn Write,
) -> Result<i32, CommandError> {
    let args = RuleArgs {
        config: Some(path.to_path_buf()),
        presets: args.presets.clone(),
    };
    let config = load_config(&args)?;
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
