//! `detour mirror`: copy images now, with a progress bar and a summary.
//!
//! Layer: runtime wiring for the CLI. Decides what goes where (arguments,
//! lists, manifests; destinations from `--to` or the config's rules), then
//! runs the copy engine image by image.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use detour_core::config::{Config, MirrorSettings};
use detour_core::reference::Reference;
use detour_core::rules::Outcome;
use detour_registry::{self as mirror, Copier, CopyReport, Observer};

use super::cluster;
use crate::cli::{MirrorArgs, OutputFormat};

/// Where one image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Registry(Reference),
    /// Into the `--to oci:DIR` layout, under this name.
    Layout(String),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Registry(r) => write!(f, "{r}"),
            Destination::Layout(name) => write!(f, "oci layout: {name}"),
        }
    }
}

/// One planned copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyJob {
    pub source: Reference,
    pub destination: Destination,
    /// From a source layout (its index in [`Plan::layouts`]), under this
    /// name; `None`: from the source's registry.
    pub from_layout: Option<(usize, String)>,
}

/// The copies, and the layouts (and unpacked archives) they read.
pub struct Plan {
    pub jobs: Vec<CopyJob>,
    pub layouts: Vec<detour_registry::layout::OciLayout>,
    /// How the user named each layout (`oci-archive:FILE`, `oci:DIR`,
    /// `docker-archive:FILE`), for messages: an archive's layout is a
    /// scratch directory the user never saw.
    pub layout_sources: Vec<String>,
    /// Archives unpacked for reading, removed when the command ends.
    pub scratch: Vec<std::path::PathBuf>,
}

/// `oci:DIR[:NAME]` or `oci-archive:FILE[:NAME]` as a source: every image
/// of the layout, or the one named (the name may contain ':').
/// With `attached`, what travels beside the images is checked whole too.
fn layout_source(
    text: &str,
    plan: &mut Plan,
    attached: bool,
) -> Result<Option<Vec<(usize, String)>>, String> {
    #[derive(PartialEq)]
    enum Kind {
        Dir,
        OciArchive,
        DockerArchive,
    }
    let (kind, rest) = if let Some(rest) = text.strip_prefix("oci-archive:") {
        (Kind::OciArchive, rest)
    } else if let Some(rest) = text.strip_prefix("docker-archive:") {
        (Kind::DockerArchive, rest)
    } else if let Some(rest) = text.strip_prefix("oci:") {
        (Kind::Dir, rest)
    } else {
        return Ok(None);
    };
    let (path, name) = match rest.split_once(':') {
        Some((path, name)) => (path, Some(name)),
        None => (rest, None),
    };
    let path = std::path::Path::new(path);
    use detour_registry::layout::OciLayout;
    let layout = if kind == Kind::Dir {
        OciLayout::existing(path)
    } else {
        let dir = std::env::temp_dir().join(format!(
            "detour-archive-{}-{}",
            std::process::id(),
            plan.scratch.len()
        ));
        plan.scratch.push(dir.clone());
        if kind == Kind::OciArchive {
            OciLayout::unpack(path, &dir)
        } else {
            OciLayout::from_docker_archive(path, &dir)
        }
    }
    // These errors name the archive or directory themselves.
    .map_err(|e| e.to_string())?;
    let names: Vec<String> = layout
        .names()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| name.is_none_or(|wanted| wanted == n))
        .collect();
    if names.is_empty() {
        return Err(format!("{text}: no such image in the layout"));
    }
    // Whole, with the right bytes, before anything is sent anywhere.
    for name in &names {
        layout
            .check_image(name)
            .map_err(|e| format!("{text}: {e}"))?;
    }
    if attached {
        layout
            .check_attached()
            .map_err(|e| format!("{text}: {e}"))?;
    }
    plan.layouts.push(layout);
    let prefix = match kind {
        Kind::Dir => "oci",
        Kind::OciArchive => "oci-archive",
        Kind::DockerArchive => "docker-archive",
    };
    plan.layout_sources
        .push(format!("{prefix}:{}", path.display()));
    let index = plan.layouts.len() - 1;
    Ok(Some(names.into_iter().map(|n| (index, n)).collect()))
}

/// `--to oci:DIR` or `--to oci-archive:FILE`.
enum LayoutTarget<'a> {
    Dir(&'a std::path::Path),
    Archive(&'a std::path::Path),
}

fn layout_target(args: &MirrorArgs) -> Option<LayoutTarget<'_>> {
    let to = args.to.as_deref()?;
    if let Some(file) = to.strip_prefix("oci-archive:") {
        return Some(LayoutTarget::Archive(std::path::Path::new(file)));
    }
    to.strip_prefix("oci:")
        .map(|dir| LayoutTarget::Dir(std::path::Path::new(dir)))
}

/// Lists larger than this are refused.
const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

fn read_limited(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_LIST_BYTES {
        return Err(format!(
            "{}: more than {MAX_LIST_BYTES} bytes",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// What to copy where. Every image needs a destination: `--to` (one image
/// only) or a rule that rewrites it.
/// `from_cluster` holds the (image, rewritten image) pairs of `--from-cluster`.
pub fn plan(
    args: &MirrorArgs,
    config: &Config,
    from_cluster: &[(String, String)],
) -> Result<Plan, String> {
    let mut plan = Plan {
        jobs: Vec::new(),
        layouts: Vec::new(),
        layout_sources: Vec::new(),
        scratch: Vec::new(),
    };
    let result = plan_jobs(args, config, from_cluster, &mut plan);
    match result {
        Ok(jobs) => {
            plan.jobs = jobs;
            Ok(plan)
        }
        Err(e) => {
            plan.cleanup();
            Err(e)
        }
    }
}

impl Plan {
    pub fn cleanup(&self) {
        for dir in &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn plan_jobs(
    args: &MirrorArgs,
    config: &Config,
    from_cluster: &[(String, String)],
    plan: &mut Plan,
) -> Result<Vec<CopyJob>, String> {
    let mut sources: Vec<String> = Vec::new();
    let mut layout_images: Vec<(usize, String)> = Vec::new();
    let attached = settings(args, config).attached_artifacts;
    for image in &args.images {
        match layout_source(image, plan, attached)? {
            Some(found) => layout_images.extend(found),
            None => sources.push(image.clone()),
        }
    }
    for path in &args.list {
        let text = read_limited(path)?;
        sources.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let mut jobs = Vec::new();
    for path in &args.from_manifests {
        let text = read_limited(path)?;
        let (_, changes) = detour_core::manifest::rewrite_text(&text, &config.rules)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for change in changes {
            jobs.push(job(&change.from, &change.to)?);
        }
    }
    for (from, to) in from_cluster {
        jobs.push(job(from, to)?);
    }
    if !layout_images.is_empty() {
        if !sources.is_empty() || !jobs.is_empty() || layout_target(args).is_some() {
            return Err("images from a layout or archive go to registries; give them alone".into());
        }
        let single = layout_images.len() == 1;
        for (index, name) in layout_images {
            let destination = match (&args.to, single) {
                (Some(to), true) => to.clone(),
                (Some(_), false) => {
                    return Err(format!(
                        "--to takes exactly one image; {} holds several (name one: {}:NAME)",
                        plan.layout_sources[index], plan.layout_sources[index]
                    ))
                }
                (None, _) => match config.rules.rewrite(&name) {
                    Outcome::Rewritten { to, .. } => to.to_string(),
                    _ => {
                        return Err(format!(
                            "{name}: no rule rewrites this image; give --to or a rule"
                        ))
                    }
                },
            };
            let mut j = job(&name, &destination)?;
            j.from_layout = Some((index, name));
            jobs.push(j);
        }
        return Ok(jobs);
    }
    if layout_target(args).is_some() {
        // Every image goes into the layout, named as written.
        let mut named: Vec<String> = sources;
        named.extend(jobs.iter().map(|j| j.source.to_string()));
        let mut layout_jobs = Vec::new();
        for source in named {
            let reference = Reference::parse(&source).map_err(|e| format!("{source:?}: {e}"))?;
            layout_jobs.push(CopyJob {
                destination: Destination::Layout(source),
                source: reference,
                from_layout: None,
            });
        }
        jobs = layout_jobs;
    } else if let Some(to) = &args.to {
        if sources.len() != 1 || !jobs.is_empty() {
            return Err("--to takes exactly one source image".into());
        }
        jobs.push(job(&sources[0], to)?);
    } else {
        for source in &sources {
            match config.rules.rewrite(source) {
                Outcome::Rewritten { to, .. } => jobs.push(job(source, &to.to_string())?),
                Outcome::Invalid(e) => return Err(format!("{source:?}: {e}")),
                Outcome::Unchanged(..) | Outcome::Placeholder => {
                    return Err(format!(
                        "{source}: no rule rewrites this image; give --to or a rule (try `detour explain {source}`)"
                    ))
                }
            }
        }
    }
    if jobs.is_empty() {
        return Err(if args.from_cluster {
            "nothing to copy: the rules rewrite no image that the cluster uses".into()
        } else {
            "nothing to copy: give images, -f LIST, --from-manifests FILE or --from-cluster".into()
        });
    }
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert((j.source.to_string(), j.destination.to_string())));
    Ok(jobs)
}

fn job(source: &str, destination: &str) -> Result<CopyJob, String> {
    Ok(CopyJob {
        source: Reference::parse(source).map_err(|e| format!("{source:?}: {e}"))?,
        destination: Destination::Registry(
            Reference::parse(destination).map_err(|e| format!("{destination:?}: {e}"))?,
        ),
        from_layout: None,
    })
}

/// The config's `mirror:` settings with the command's flags on top.
pub fn settings(args: &MirrorArgs, config: &Config) -> MirrorSettings {
    let mut s = args.registry.settings(config);
    if !args.platform.is_empty() {
        s.platforms = args.platform.clone();
    }
    if let Some(n) = args.concurrency {
        s.blob_concurrency = n.clamp(1, 64);
    }
    if args.no_attached_artifacts {
        s.attached_artifacts = false;
    }
    s
}

struct Bar(indicatif::ProgressBar);

impl Observer for Bar {
    fn planned(&self, bytes: u64) {
        self.0.inc_length(bytes);
    }
    fn transferred(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

/// Runs the command; returns the exit code (1 when any copy failed).
pub async fn run(args: &MirrorArgs, config: &Config, out: &mut dyn Write) -> Result<i32, String> {
    let from_cluster = if args.from_cluster {
        cluster::cluster_copies(&args.cluster, config, !args.no_progress).await?
    } else {
        Vec::new()
    };
    let plan = plan(args, config, &from_cluster)?;
    let result = run_plan(args, config, &plan, out).await;
    plan.cleanup();
    result
}

async fn run_plan(
    args: &MirrorArgs,
    config: &Config,
    plan: &Plan,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let jobs = &plan.jobs;
    // An archive is assembled in a layout directory beside it, then packed.
    let staging = match layout_target(args) {
        Some(LayoutTarget::Archive(file)) => {
            let mut name = file.as_os_str().to_owned();
            name.push(".layout");
            Some(std::path::PathBuf::from(name))
        }
        _ => None,
    };
    let layout = match (layout_target(args), &staging) {
        (Some(LayoutTarget::Dir(dir)), _) => Some(dir),
        (Some(LayoutTarget::Archive(_)), Some(staging)) => Some(staging.as_path()),
        _ => None,
    }
    .map(detour_registry::layout::OciLayout::open)
    .transpose()
    .map_err(|e| e.to_string())?;
    let settings = settings(args, config);
    let client = mirror::client_for(&settings).map_err(|e| e.to_string())?;
    let copier = Copier::new(client, mirror::copy_options(&settings));
    let show_bar = !args.no_progress && std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if show_bar {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let observer: Arc<dyn Observer> = Arc::new(Bar(bar.clone()));
    let io = |e: std::io::Error| format!("stdout: {e}");
    let started = Instant::now();
    let mut total = CopyReport::default();
    let mut failed = 0usize;
    for job in jobs {
        // An image of a layout or archive is named as the user names it.
        let source = match &job.from_layout {
            Some((index, name)) => format!("{}:{name}", plan.layout_sources[*index]),
            None => job.source.to_string(),
        };
        bar.set_message(source.clone());
        let one = Instant::now();
        let result = match (&job.destination, &layout) {
            (Destination::Registry(to), _) => match &job.from_layout {
                Some((index, name)) => copier
                    .copy_from_layout(&plan.layouts[*index], name, to, observer.clone())
                    .await
                    .map(|mut report| {
                        report.source = source.clone();
                        report
                    }),
                None => copier.copy(&job.source, to, observer.clone()).await,
            },
            (Destination::Layout(name), Some(layout)) => copier
                .copy_to_layout(&job.source, layout, name, observer.clone())
                .await
                .map(|mut report| {
                    // As the user names it: `oci-archive:FILE:NAME`, `oci:DIR:NAME`.
                    report.destination = format!("{}:{name}", args.to.as_deref().unwrap_or(""));
                    report
                }),
            (Destination::Layout(_), None) => Err(detour_registry::MirrorError::Invalid(
                "no layout directory".into(),
            )),
        };
        let seconds = one.elapsed().as_secs_f64();
        match (&result, args.output) {
            (Ok(report), OutputFormat::Json) => {
                let mut value = serde_json::to_value(report).unwrap_or_default();
                value["seconds"] = serde_json::json!(seconds);
                bar.suspend(|| writeln!(out, "{value}")).map_err(io)?;
            }
            (Ok(report), OutputFormat::Text) => {
                bar.suspend(|| writeln!(out, "{}", describe(report, seconds)))
                    .map_err(io)?;
            }
            (Err(e), OutputFormat::Json) => {
                let value = serde_json::json!({
                    "source": source,
                    "destination": job.destination.to_string(),
                    "error": e.to_string(),
                });
                bar.suspend(|| writeln!(out, "{value}")).map_err(io)?;
            }
            (Err(e), OutputFormat::Text) => {
                bar.suspend(|| writeln!(out, "FAILED {source} -> {}: {e}", job.destination))
                    .map_err(io)?;
            }
        }
        match result {
            Ok(report) => total.add(&report),
            Err(_) => failed += 1,
        }
    }
    bar.finish_and_clear();
    if let (Some(LayoutTarget::Archive(file)), Some(layout), Some(staging)) =
        (layout_target(args), &layout, &staging)
    {
        // Only a complete set of images becomes an archive.
        let packed = if failed == 0 {
            layout.pack(file).map_err(|e| e.to_string())
        } else {
            Err(format!("{failed} images failed: no archive written"))
        };
        let _ = std::fs::remove_dir_all(staging);
        packed?;
    }
    if args.output == OutputFormat::Text && jobs.len() > 1 {
        writeln!(
            out,
            "total: {} images ({} failed); {}",
            jobs.len(),
            failed,
            counts(&total, started.elapsed().as_secs_f64())
        )
        .map_err(io)?;
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

fn describe(r: &CopyReport, seconds: f64) -> String {
    let mut text = format!(
        "copied {} -> {} ({}): {}",
        r.source,
        r.destination,
        r.digest,
        counts(r, seconds)
    );
    // What travelled with the image, one line each.
    for a in &r.attached {
        let what = a
            .tag
            .as_deref()
            .or(a.artifact_type.as_deref())
            .unwrap_or("");
        text.push_str(&format!(
            "\n  with {} {} ({what}) of {}{}",
            a.kind,
            a.digest,
            a.subject,
            if a.copied { "" } else { ", already there" }
        ));
    }
    text
}

fn counts(r: &CopyReport, seconds: f64) -> String {
    let mut text = format!(
        "manifests {} copied, {} skipped; blobs {} copied, {} skipped, {} mounted; {} in {:.1}s",
        r.manifests_copied,
        r.manifests_skipped,
        r.blobs_copied,
        r.blobs_skipped,
        r.blobs_mounted,
        indicatif::HumanBytes(r.bytes_copied),
        seconds
    );
    if r.platforms_dropped > 0 {
        text.push_str(&format!(
            "; {} platforms left out by the filter",
            r.platforms_dropped
        ));
    }
    text
}
