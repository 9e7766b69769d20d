//! `detour explain`: which rule rewrites an image, and to what.
//!
//! Layer: runtime wiring for the CLI. Reads images from the arguments or
//! standard input, asks the core to explain each, writes text or JSON lines.

use std::io::{BufRead, Write};

use detour_core::explain;
use detour_core::reference::Reference;
use detour_core::rules::RuleSet;

use super::CommandError;
use crate::cli::{ExplainArgs, OutputFormat};

/// Explains each image; the exit code is 1 when any was invalid (text).
pub fn run(rules: &RuleSet, args: &ExplainArgs, out: &mut dyn Write) -> Result<i32, CommandError> {
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
                any_invalid |= Reference::parse(image).is_err();
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
