//! `detour rewrite`: manifests in, the same manifests with rewritten images
//! out (or the list of changes with `--diff`).
//!
//! Layer: runtime wiring for the CLI over the core's manifest rewrite.

use std::io::Write;

use detour_core::manifest;
use detour_core::rules::RuleSet;

use super::{read_input, CommandError};
use crate::cli::RewriteArgs;

/// Manifests larger than this are refused (a guard against runaway input).
const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// Rewrites the manifest file (or standard input); the exit code is 0.
pub fn run(rules: &RuleSet, args: &RewriteArgs, out: &mut dyn Write) -> Result<i32, CommandError> {
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
