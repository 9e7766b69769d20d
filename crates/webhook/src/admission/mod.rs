//! AdmissionReview in, AdmissionReview out: the webhook's domain logic.
//!
//! Layer: pure (no I/O, no logging). The HTTP layer hands over the body
//! bytes and the mode that the request path selects; this module returns the
//! response bytes and a [`Summary`] for logs and metrics.
//!
//! This is the hot path of every Pod creation in a cluster, so it is built to
//! cost little: the request is decoded in one pass, borrowed from the body,
//! reading only the fields detour uses ([`decode`], [`pod::PodView`]); images
//! are decided through the rule set's decision cache; the response is written
//! once into one buffer ([`encode`]). uid, apiVersion and kind are echoed
//! from the request, so a `v1beta1` request is answered in `v1beta1`. The
//! bytes equal those of kube's typed `AdmissionResponse` encoded by serde
//! (a test compares them for a corpus of Pods).

pub mod decode;
mod encode;
pub(crate) mod json;
pub mod pod;
pub mod reader;

use kube::core::admission::Operation;

use decode::{Objects, RequestEnvelope, Text};
use detour_core::config::{Config, GlobalMode};
use detour_core::rules::Swap;
use encode::Answer;
use pod::{ContainerSkip, ContainerSkipKind, ImageChange, Plan, PodSkip, PodView, Scope};

/// How a request is answered: patched, or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// kubectl prints warnings; Kubernetes asks for at most 120 characters.
pub const MAX_WARNING_CHARS: usize = 120;
/// The audit annotation key (the apiserver prefixes the webhook name).
pub const AUDIT_ANNOTATION: &str = "would-rewrite";

/// A request the webhook cannot read at all: answered 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed AdmissionReview: {0}")]
    Malformed(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Enforce mode, and a patch was returned.
    Patched,
    /// Audit mode, and something would have changed.
    WouldPatch,
    /// Ours, and nothing to change.
    Unchanged,
    /// The whole Pod is exempt.
    Skipped(PodSkip),
    /// Not a Pod CREATE or ephemeral-container UPDATE: allowed untouched.
    NotHandled,
    /// detour's own failure: allowed untouched (fail open).
    FailedOpen(String),
}

impl Disposition {
    pub fn label(&self) -> &'static str {
        match self {
            Disposition::Patched => "patched",
            Disposition::WouldPatch => "would_patch",
            Disposition::Unchanged => "unchanged",
            Disposition::Skipped(_) => "skipped",
            Disposition::NotHandled => "not_handled",
            Disposition::FailedOpen(_) => "failed_open",
        }
    }
}

#[derive(Debug, Clone)]
/// Borrowed from the request body and the config.
pub struct Summary<'a> {
    pub uid: Text<'a>,
    pub namespace: Text<'a>,
    pub name: Text<'a>,
    pub mode: Mode,
    pub dry_run: bool,
    pub disposition: Disposition,
    /// Rewrites applied (enforce) or reported (audit).
    pub changes: Vec<ImageChange<'a>>,
    /// `swap: if-present` rewrites held back because the mirror lacks the image.
    pub deferred: Vec<ImageChange<'a>>,
    pub skipped: Vec<ContainerSkip<'a>>,
}

pub struct Reviewed<'a> {
    /// The serialized AdmissionReview response.
    pub body: Vec<u8>,
    pub summary: Summary<'a>,
}

/// Answers one AdmissionReview body, with no knowledge of what the mirror
/// holds (`swap: if-present` changes are then left out).
pub fn review<'a>(
    body: &'a [u8],
    path_mode: Mode,
    config: &'a Config,
) -> Result<Reviewed<'a>, ReviewError> {
    Ok(prepare(body, path_mode, config)?.finish(&|_| false))
}

/// A decoded request with its plan, waiting for the answers to
/// [`Prepared::lookups`] before the response is built. Borrows the body.
pub struct Prepared<'a> {
    api_version: Text<'a>,
    kind: Text<'a>,
    summary: Summary<'a>,
    work: Work<'a>,
}

// One value per request, moved once: boxing the Pod would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Work<'a> {
    Nothing,
    Failed(String),
    Pod {
        pod: PodView<'a>,
        plan: Plan<'a>,
        scope: Scope,
    },
}

/// Decodes a body and plans the rewrite; no response yet.
pub fn prepare<'a>(
    body: &'a [u8],
    path_mode: Mode,
    config: &'a Config,
) -> Result<Prepared<'a>, ReviewError> {
    let (envelope, objects) =
        decode::decode(body).map_err(|e| ReviewError::Malformed(e.to_string()))?;
    let request = envelope.request.ok_or(ReviewError::MissingRequest)?;
    let mode = match config.mode {
        GlobalMode::Audit => Mode::Audit,
        GlobalMode::Enforce => path_mode,
    };
    let mut summary = Summary {
        uid: request.uid.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        mode,
        dry_run: request.dry_run,
        disposition: Disposition::NotHandled,
        changes: vec![],
        deferred: vec![],
        skipped: vec![],
    };
    // Anything below that goes wrong is detour's fault: answer "allowed,
    // unchanged" with the uid, never an error the apiserver would act on.
    let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plan_request(&request, objects, config, &mut summary)
    }));
    let work = match planned {
        Ok(Ok(Some((pod, plan, scope)))) => Work::Pod { pod, plan, scope },
        Ok(Ok(None)) => Work::Nothing,
        Ok(Err(message)) => Work::Failed(message),
        Err(_) => Work::Failed("internal panic".into()),
    };
    Ok(Prepared {
        api_version: envelope.api_version,
        kind: envelope.kind,
        summary,
        work,
    })
}

impl<'a> Prepared<'a> {
    /// Rewritten references whose rule swaps only when the mirror has them.
    pub fn lookups(&self) -> Vec<&str> {
        let Work::Pod { plan, .. } = &self.work else {
            return vec![];
        };
        let mut out: Vec<&str> = plan
            .changes
            .iter()
            .filter(|c| c.mirror.swap == Swap::IfPresent)
            .map(|c| &*c.to)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn mode(&self) -> Mode {
        self.summary.mode
    }

    pub fn dry_run(&self) -> bool {
        self.summary.dry_run
    }

    /// Builds the response; `present(to)` says whether the mirror has a
    /// reference that [`Prepared::lookups`] listed.
    pub fn finish(self, present: &dyn Fn(&str) -> bool) -> Reviewed<'a> {
        let Prepared {
            api_version,
            kind,
            mut summary,
            work,
        } = self;
        let parts = match work {
            Work::Nothing => None,
            Work::Failed(message) => {
                summary.disposition = Disposition::FailedOpen(message);
                None
            }
            Work::Pod { pod, plan, scope } => {
                let responded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    respond(&pod, plan, scope, present, &mut summary)
                }));
                match responded {
                    Ok(parts) => Some(parts),
                    Err(_) => {
                        summary.disposition = Disposition::FailedOpen("internal panic".into());
                        None
                    }
                }
            }
        };
        let parts = parts.unwrap_or_default();
        let body = encode::encode(&Answer {
            api_version: &api_version,
            kind: &kind,
            uid: &summary.uid,
            patch: parts.patch.as_deref(),
            audit_annotation: parts.audit_annotation.as_deref(),
            warnings: &parts.warnings,
        });
        Reviewed { body, summary }
    }
}

/// What to add to the allowed response.
#[derive(Default)]
struct ResponseParts {
    /// The JSON Patch, as JSON.
    patch: Option<Vec<u8>>,
    warnings: Vec<String>,
    /// The [`AUDIT_ANNOTATION`]'s value.
    audit_annotation: Option<String>,
}

/// Is this request ours, and what would change? `None`: allowed untouched.
fn plan_request<'a>(
    request: &RequestEnvelope<'a>,
    objects: Objects<'a>,
    config: &'a Config,
    summary: &mut Summary<'a>,
) -> Result<Option<(PodView<'a>, Plan<'a>, Scope)>, String> {
    let is_pod = request.kind.group.is_empty() && &*request.kind.kind == "Pod";
    let scope = match (is_pod, &request.operation, request.sub_resource.as_deref()) {
        (true, Operation::Create, None) => Scope::Create,
        (true, Operation::Update, Some("ephemeralcontainers")) => Scope::NewEphemeralContainers,
        _ => return Ok(None),
    };
    let (pod, old) = objects?;
    let pod = pod.ok_or("request has no object")?;
    if summary.name.is_empty() {
        summary.name = pod.display_name();
    }
    let plan = pod::plan(&pod, old.as_ref(), scope, config);
    if let Some(skip) = plan.pod_skip {
        summary.disposition = Disposition::Skipped(skip);
        return Ok(None);
    }
    Ok(Some((pod, plan, scope)))
}

fn respond<'a>(
    pod: &PodView,
    mut plan: Plan<'a>,
    scope: Scope,
    present: &dyn Fn(&str) -> bool,
    summary: &mut Summary<'a>,
) -> ResponseParts {
    let mode = summary.mode;
    let mut parts = ResponseParts::default();
    for skip in &plan.skipped {
        if skip.kind == ContainerSkipKind::InvalidReference {
            parts.warnings.push(truncate(&format!(
                "detour: {}: image {:?} is not a valid reference",
                skip.container, skip.image
            )));
        }
    }
    // `swap: if-present`: the original image stays until the mirror has it.
    let (deferred, applied): (Vec<ImageChange<'a>>, Vec<ImageChange<'a>>) = plan
        .changes
        .into_iter()
        .partition(|c| c.mirror.swap == Swap::IfPresent && !present(&c.to));
    plan.changes = applied;
    for c in &deferred {
        parts.warnings.push(truncate(&format!(
            "detour: {}: mirror lacks {}; original image kept",
            c.container, c.to
        )));
    }
    if plan.changes.is_empty() {
        summary.disposition = Disposition::Unchanged;
    } else if mode == Mode::Audit {
        summary.disposition = Disposition::WouldPatch;
        for c in &plan.changes {
            parts.warnings.push(truncate(&format!(
                "detour: would rewrite {}: {} -> {}",
                c.container, c.from, c.to
            )));
        }
        parts.audit_annotation = Some(audit_report(&plan.changes));
    } else {
        summary.disposition = Disposition::Patched;
        // The ephemeralcontainers subresource keeps only ephemeral container
        // changes, so an annotation patch there would be silently dropped.
        let annotate = scope == Scope::Create;
        let mut patch = Vec::with_capacity(128 * (plan.changes.len() + 1));
        pod::write_patch(pod, &plan, annotate, &mut patch);
        parts.patch = Some(patch);
    }
    // The plan is no longer needed: hand its lists to the summary, not copies.
    summary.changes = plan.changes;
    summary.deferred = deferred;
    summary.skipped = plan.skipped;
    parts
}

/// At most [`MAX_WARNING_CHARS`] characters, cut on a char boundary.
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING_CHARS {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_WARNING_CHARS - 3).collect();
    out.push_str("...");
    out
}

/// The audit annotation's value: a JSON array of
/// `{"container", "from", "to", "rule"}` objects.
fn audit_report(changes: &[ImageChange]) -> String {
    let mut out = Vec::with_capacity(128 * changes.len());
    out.push(b'[');
    for (n, c) in changes.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'{');
        for (i, (key, value)) in [
            ("container", &*c.container),
            ("from", &c.from),
            ("to", &c.to),
            ("rule", c.rule),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            json::key(&mut out, key);
            json::string(&mut out, value);
        }
        out.push(b'}');
    }
    out.push(b']');
    // Only UTF-8 strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

/// A JSON error body for requests that cannot be read.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default()
}

#[cfg(test)]
mod tests;
