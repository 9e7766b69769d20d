//! `detour audit`: read a live cluster, decide every image with the current
//! config, optionally ask the mirror, and report.
//!
//! Layer: runtime wiring for the CLI. The cluster adapter reads, the pure
//! `audit` module decides and renders, the registry client asks the mirror.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use futures_util::StreamExt;

use crate::audit::{self, MirrorState, Mode, Report};
use crate::cli::{AuditArgs, ClusterArgs, OutputFormat};
use crate::cluster::{self, ClusterOptions, Inventory};
use crate::config::{Config, MirrorSettings};
use crate::mirror::{self, Repo};
use crate::reference::Reference;

fn options(args: &ClusterArgs) -> ClusterOptions {
    ClusterOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        namespace: args.namespace.clone(),
        page_size: args.page_size,
        webhook: args.webhook_configuration.clone(),
    }
}

/// Reads the cluster, with a spinner on a terminal when `progress`.
async fn read(args: &ClusterArgs, progress: bool) -> Result<Inventory, String> {
    let opts = options(args);
    let client = cluster::connect(opts.kubeconfig.as_deref(), opts.context.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let spinner = indicatif::ProgressBar::new_spinner();
    if !(progress && std::io::stderr().is_terminal()) {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner.set_message("reading the cluster");
    let tell = |n: usize| spinner.set_message(format!("read {n} objects"));
    let inventory = cluster::inventory(&client, &opts, &tell).await;
    spinner.finish_and_clear();
    inventory.map_err(|e| e.to_string())
}

fn report(inventory: Inventory, config: &Config) -> Report {
    let modes: BTreeMap<String, Mode> = inventory
        .namespace_labels
        .iter()
        .map(|(ns, label)| {
            let mode = inventory.selection.mode(ns, label.as_deref(), config.mode);
            (ns.clone(), mode)
        })
        .collect();
    Report {
        findings: audit::findings(&inventory.workloads, &modes, config),
        namespaces: modes,
        partial: inventory.partial,
        mirror_errors: BTreeMap::new(),
    }
}

/// `detour mirror --from-cluster`: the (image, rewritten image) pairs of
/// every Pod and workload template in the cluster.
pub async fn cluster_copies(
    args: &ClusterArgs,
    config: &Config,
    progress: bool,
) -> Result<Vec<(String, String)>, String> {
    let inventory = read(args, progress).await?;
    let partial = inventory.partial.clone();
    let report = report(inventory, config);
    for note in &partial {
        eprintln!("detour: partial: {note}");
    }
    Ok(report
        .copies()
        .into_iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect())
}

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
            Ok(false) => MirrorState::Absent,
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
    let inventory = read(&args.cluster, !args.no_progress).await?;
    let source = inventory.selection_source.clone();
    let mut report = report(inventory, config);
    if args.check_mirror {
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
    Ok(match args.fail_on_missing {
        Some(code) if missing => i32::from(code),
        _ => 0,
    })
}
