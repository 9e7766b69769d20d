//! `detour audit`: read a live cluster, decide every image with the current
//! config, optionally ask the mirror, and report.
//!
//! Layer: runtime wiring for the CLI. detour-cluster reads and decides
//! ([`super::cluster`] shows the progress), the registry client asks the
//! mirror.

use std::collections::BTreeMap;
use std::io::Write;

use detour_cluster::audit::{self, MirrorState};
use detour_core::config::{Config, MirrorSettings};
use detour_core::reference::Reference;
use detour_registry::{self as mirror, Repo};
use futures_util::StreamExt;

use super::cluster;
use crate::cli::{AuditArgs, OutputFormat};

/// Asks the mirror about each image, `at_once` at a time.
async fn check_mirror(
    images: Vec<String>,
    settings: &MirrorSettings,
    at_once: usize,
) -> Result<(BTreeMap<String, MirrorState>, BTreeMap<String, String>), String> {
    let client = mirror::client_for(settings).map_err(|e| e.to_string())?;
    let answers: Vec<(String, Result<bool, String>)> = futures_util::stream::iter(images)
        .map(|image| {
            let client = client.clone();
            async move {
                let answer = match Reference::parse(&image) {
                    Ok(r) => {
                        let reference = r.digest().or(r.tag()).unwrap_or("latest").to_string();
                        client
                            .manifest_digest(&Repo::of(&r), &reference)
                            .await
                            .map(|d| d.is_some())
                            .map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                (image, answer)
            }
        })
        .buffer_unordered(at_once.clamp(1, 64))
        .collect()
        .await;
    let mut states = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for (image, answer) in answers {
        let state = match answer {
            Ok(true) => MirrorState::Present,
            Ok(false) => MirrorState::Missing,
            Err(e) => {
                errors.insert(image.clone(), e);
                MirrorState::Unknown
            }
        };
        states.insert(image, state);
    }
    Ok((states, errors))
}

/// Runs the command; returns the exit code.
pub async fn run(args: &AuditArgs, config: &Config, out: &mut dyn Write) -> Result<i32, String> {
    let inventory = cluster::read(&args.cluster, !args.no_progress).await?;
    let source = inventory.selection_source.clone();
    let mut report = inventory.report(config);
    // A gate on missing images has to ask the mirror.
    if args.check_mirror || args.fail_on_missing.is_some() {
        let settings = args.registry.settings(config);
        let images = report
            .rewritten_images()
            .into_iter()
            .map(str::to_string)
            .collect();
        let (states, errors) = check_mirror(images, &settings, args.lookups).await?;
        report.set_mirror_states(&states);
        report.mirror_errors = errors;
    }
    let io = |e: std::io::Error| format!("stdout: {e}");
    match args.output {
        OutputFormat::Text => {
            write!(out, "{}", report.text()).map_err(io)?;
            writeln!(out, "modes: {source}").map_err(io)?;
        }
        OutputFormat::Json => {
            let document = serde_json::json!({
                "summary": report.summary(),
                "modesFrom": source,
                "namespaces": report.namespaces,
                "findings": report.findings,
                "partial": report.partial,
                "mirrorErrors": report.mirror_errors,
            });
            writeln!(out, "{document}").map_err(io)?;
        }
    }
    let missing = !report.missing().is_empty();
    let unknown = report.summary().mirror_unknown;
    if args.fail_on_missing.is_some() && unknown > 0 && !args.fail_on_unknown {
        eprintln!(
            "detour: {} not checked: the mirror could not be asked (see the mirror errors); \
             --fail-on-unknown fails the gate on them",
            audit::counted(unknown, "rewritten image was", "rewritten images were")
        );
    }
    Ok(match args.fail_on_missing {
        Some(code) if missing || (args.fail_on_unknown && unknown > 0) => i32::from(code),
        _ => 0,
    })
}
