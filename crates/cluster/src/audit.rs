//! `detour audit`: what the current config would do to the images a cluster
//! already runs, namespace by namespace.
//!
//! Layer: pure (no I/O). The inventory (workloads, namespace labels, which
//! namespaces the webhook selects) is read by [`crate::inventory`], the
//! Kubernetes adapter; this module only decides and renders, and never
//! imports it (the inventory builds its report with this module).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use detour_core::config::{Config, GlobalMode, NeverPolicy};
use detour_core::rules::Outcome;

use detour_core::pod::EXCLUDED_NAMESPACES;
pub use detour_core::pod::MODE_LABEL;

/// One container of a Pod or of a workload's Pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub container: String,
    pub image: String,
    /// `imagePullPolicy: Never`.
    pub pull_never: bool,
}

/// A Pod, or a workload whose template makes Pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub kind: &'static str,
    pub name: String,
    /// Labelled (or, for templates, its Pods labelled) `detour.dev/skip=true`.
    pub skip_label: bool,
    /// A static Pod's mirror (`kubernetes.io/config.mirror`).
    pub mirror_pod: bool,
    pub containers: Vec<ContainerImage>,
}

/// How the webhook treats a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
    Off,
    /// Never sent to detour (kube-system, detour's own namespace).
    Excluded,
    /// Its `detour.dev/mode` label could not be read, so its mode is not
    /// known (the report's `partial` says why).
    Unknown,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Off => "off",
            Mode::Excluded => "excluded",
            Mode::Unknown => "unknown",
        }
    }
}

/// Which namespaces the installed webhook configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Unlabelled namespaces are enforced (the cluster-wide overlay) rather
    /// than left alone (opt-in).
    pub cluster_wide: bool,
    pub excluded: BTreeSet<String>,
}

impl Default for Selection {
    /// The opt-in overlay as shipped.
    fn default() -> Self {
        Selection {
            cluster_wide: false,
            excluded: EXCLUDED_NAMESPACES.map(String::from).into(),
        }
    }
}

impl Selection {
    /// The mode of `namespace`, whose `detour.dev/mode` label is `label`,
    /// under a config whose global mode is `global`.
    pub fn mode(&self, namespace: &str, label: Option<&str>, global: GlobalMode) -> Mode {
        if self.excluded.contains(namespace) {
            return Mode::Excluded;
        }
        let mode = match label {
            Some("enforce") => Mode::Enforce,
            Some("audit") => Mode::Audit,
            Some("off") => Mode::Off,
            _ if self.cluster_wide => Mode::Enforce,
            _ => Mode::Off,
        };
        match (mode, global) {
            (Mode::Enforce, GlobalMode::Audit) => Mode::Audit,
            (mode, _) => mode,
        }
    }

    /// `cluster-wide` or `opt-in`, as the overlays are named.
    pub fn shape(&self) -> &'static str {
        if self.cluster_wide {
            "cluster-wide"
        } else {
            "opt-in"
        }
    }

    /// The mode of `namespace` when its label could not be read: excluded
    /// if the webhook configuration names it, else not known, since the
    /// label decides (and `off` would be a guess a script could act on).
    pub fn mode_unread(&self, namespace: &str) -> Mode {
        if self.excluded.contains(namespace) {
            Mode::Excluded
        } else {
            Mode::Unknown
        }
    }
}

/// What detour would do with one container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Rewrite,
    Unchanged,
    Skipped,
    Invalid,
}

/// Whether the mirror has the rewritten image (`--check-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorState {
    Present,
    Missing,
    /// The registry could not be asked (its error is in the report).
    Unknown,
}

/// One container of one object.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub namespace: String,
    pub mode: Mode,
    pub kind: &'static str,
    pub name: String,
    pub container: String,
    pub image: String,
    pub action: Action,
    /// The rewritten image (for `rewrite`).
    pub to: Option<String>,
    pub rule: Option<String>,
    /// Why it is skipped, invalid or unchanged.
    pub reason: Option<String>,
    pub mirror: Option<MirrorState>,
}

/// The audit of one inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Namespaces seen and their mode.
    pub namespaces: BTreeMap<String, Mode>,
    /// What could not be read (forbidden namespaces, kinds not served).
    pub partial: Vec<String>,
    /// Mirror lookups that failed: rewritten image -> error.
    pub mirror_errors: BTreeMap<String, String>,
}

/// Decides every container of every workload.
pub fn findings(
    workloads: &[Workload],
    modes: &BTreeMap<String, Mode>,
    config: &Config,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for w in workloads {
        let mode = modes.get(&w.namespace).copied().unwrap_or(Mode::Off);
        for c in &w.containers {
            let (action, to, rule, reason) = decide(w, c, config);
            out.push(Finding {
                namespace: w.namespace.clone(),
                mode,
                kind: w.kind,
                name: w.name.clone(),
                container: c.container.clone(),
                image: c.image.clone(),
                action,
                to,
                rule,
                reason,
                mirror: None,
            });
        }
    }
    out
}

type Decision = (Action, Option<String>, Option<String>, Option<String>);

fn decide(w: &Workload, c: &ContainerImage, config: &Config) -> Decision {
    let skipped = |why: &str| (Action::Skipped, None, None, Some(why.to_string()));
    if w.mirror_pod {
        return skipped("static Pod mirror");
    }
    if w.skip_label {
        return skipped("labelled detour.dev/skip=true");
    }
    if c.pull_never && config.pull_policy_never == NeverPolicy::Skip {
        return skipped("imagePullPolicy is Never");
    }
    match config.rules.rewrite(&c.image) {
        Outcome::Rewritten { to, rule, .. } => (
            Action::Rewrite,
            Some(to.to_string()),
            Some(rule.name.clone()),
            None,
        ),
        Outcome::Invalid(e) => (Action::Invalid, None, None, Some(e.to_string())),
        Outcome::Placeholder => skipped("placeholder"),
        Outcome::Unchanged(_, why) => (Action::Unchanged, None, None, Some(why.to_string())),
    }
}

impl Report {
    /// Distinct rewritten images: what a mirror must hold.
    pub fn rewritten_images(&self) -> BTreeSet<&str> {
        self.findings
            .iter()
            .filter_map(|f| f.to.as_deref())
            .collect()
    }

    /// Distinct (original, rewritten) pairs: what to copy into the mirror.
    pub fn copies(&self) -> BTreeSet<(&str, &str)> {
        self.findings
            .iter()
            .filter_map(|f| Some((f.image.as_str(), f.to.as_deref()?)))
            .collect()
    }

    /// Marks each rewrite with what the mirror said about its image.
    pub fn set_mirror_states(&mut self, states: &BTreeMap<String, MirrorState>) {
        for f in &mut self.findings {
            if let Some(to) = &f.to {
                f.mirror = states.get(to).copied();
            }
        }
    }

    /// Distinct rewritten images the mirror lacks.
    pub fn missing(&self) -> BTreeSet<&str> {
        self.findings
            .iter()
            .filter(|f| f.mirror == Some(MirrorState::Missing))
            .filter_map(|f| f.to.as_deref())
            .collect()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            objects: self
                .findings
                .iter()
                .map(|f| (&f.namespace, f.kind, &f.name))
                .collect::<BTreeSet<_>>()
                .len(),
            containers: self.findings.len(),
            namespaces: self.namespaces.len(),
            ..Summary::default()
        };
        for f in &self.findings {
            match f.action {
                Action::Rewrite => *s.rewrite.entry(f.mode.as_str()).or_default() += 1,
                Action::Unchanged => s.unchanged += 1,
                Action::Skipped => s.skipped += 1,
                Action::Invalid => s.invalid += 1,
            }
        }
        s.distinct_rewrites = self.rewritten_images().len();
        let mut seen = BTreeSet::new();
        for f in &self.findings {
            if let (Some(to), Some(state)) = (&f.to, f.mirror) {
                if seen.insert(to) {
                    match state {
                        MirrorState::Present => s.mirror_present += 1,
                        MirrorState::Missing => s.mirror_missing += 1,
                        MirrorState::Unknown => s.mirror_unknown += 1,
                    }
                }
            }
        }
        s
    }

    /// The readable form: per namespace, the images that would change (or
    /// cannot be parsed, or are skipped), each with how many objects use it;
    /// then the summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut by_namespace: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in self
            .findings
            .iter()
            .filter(|f| f.action != Action::Unchanged)
        {
            by_namespace.entry(&f.namespace).or_default().push(f);
        }
        for (namespace, findings) in &by_namespace {
            let mode = self
                .namespaces
                .get(*namespace)
                .copied()
                .unwrap_or(Mode::Off);
            let _ = writeln!(out, "namespace {namespace} ({})", mode_note(mode));
            // Rows: one per (action, image, result, reason), with the
            // objects using it.
            type Row<'a> = (Action, &'a str, Option<&'a str>, Option<&'a str>);
            let mut rows: BTreeMap<Row, Vec<&Finding>> = BTreeMap::new();
            for f in findings {
                let row = (
                    f.action,
                    f.image.as_str(),
                    f.to.as_deref(),
                    f.reason.as_deref(),
                );
                rows.entry(row).or_default().push(f);
            }
            for ((action, image, to, _), uses) in rows {
                let first = uses[0];
                let what = match action {
                    Action::Rewrite => format!("{image} -> {}", to.unwrap_or_default()),
                    Action::Invalid => format!(
                        "{image:?} invalid: {}",
                        first.reason.as_deref().unwrap_or_default()
                    ),
                    _ => format!(
                        "{image} skipped: {}",
                        first.reason.as_deref().unwrap_or_default()
                    ),
                };
                let mut objects: Vec<String> = uses
                    .iter()
                    .map(|f| format!("{}/{}", f.kind, f.name))
                    .collect();
                objects.dedup();
                let count = objects.len();
                let shown: Vec<&str> = objects.iter().take(3).map(String::as_str).collect();
                let more = if count > 3 { ", ..." } else { "" };
                let mirror = match first.mirror {
                    Some(MirrorState::Present) => "  [mirror: present]",
                    Some(MirrorState::Missing) => "  [mirror: MISSING]",
                    Some(MirrorState::Unknown) => "  [mirror: unknown]",
                    None => "",
                };
                let _ = writeln!(
                    out,
                    "  {what}  ({}: {}{more}){mirror}",
                    counted(count, "object", "objects"),
                    shown.join(", ")
                );
            }
        }
        if !by_namespace.is_empty() {
            out.push('\n');
        }
        out.push_str(&self.summary().to_string());
        for (image, error) in &self.mirror_errors {
            let _ = writeln!(out, "mirror lookup failed for {image}: {error}");
        }
        for note in &self.partial {
            let _ = writeln!(out, "partial: {note}");
        }
        out
    }
}

/// `1 object`, `2 objects`: a count with the word that agrees with it.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn mode_note(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce: new Pods get these images",
        Mode::Audit => "audit: new Pods get warnings only",
        Mode::Off => "off: not touched until labelled detour.dev/mode=enforce",
        Mode::Excluded => "excluded by the webhook configuration",
        Mode::Unknown => "unknown: its detour.dev/mode label could not be read",
    }
}

/// Counts over a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub namespaces: usize,
    pub objects: usize,
    pub containers: usize,
    /// Containers whose image would be rewritten, by namespace mode.
    pub rewrite: BTreeMap<&'static str, usize>,
    pub distinct_rewrites: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub invalid: usize,
    pub mirror_present: usize,
    pub mirror_missing: usize,
    pub mirror_unknown: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rewrites: usize = self.rewrite.values().sum();
        let by_mode: Vec<String> = self
            .rewrite
            .iter()
            .map(|(mode, n)| format!("{n} {mode}"))
            .collect();
        writeln!(
            f,
            "{}, {} in {}",
            counted(self.objects, "object", "objects"),
            counted(self.containers, "container", "containers"),
            counted(self.namespaces, "namespace", "namespaces")
        )?;
        writeln!(
            f,
            "rewrite: {}{} to {} distinct {}; unchanged: {}; skipped: {}; invalid: {}",
            counted(rewrites, "container", "containers"),
            if by_mode.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_mode.join(", "))
            },
            self.distinct_rewrites,
            if self.distinct_rewrites == 1 {
                "image"
            } else {
                "images"
            },
            self.unchanged,
            self.skipped,
            self.invalid
        )?;
        if self.mirror_present + self.mirror_missing + self.mirror_unknown > 0 {
            writeln!(
                f,
                "mirror: {} present, {} missing, {} unknown",
                self.mirror_present, self.mirror_missing, self.mirror_unknown
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
