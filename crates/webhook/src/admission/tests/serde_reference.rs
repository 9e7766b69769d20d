//! The previous, serde-based admission pipeline (detour before the hot-path
//! work), kept verbatim as the reference the new decoder and encoder are
//! compared with byte for byte: kube's typed `AdmissionRequest` and
//! `AdmissionResponse`, `json_patch` operations on `PointerBuf`s, owned
//! strings, `serde_json` throughout, and the uncached rule lookup.

// Verbatim: some of its API is not needed for the comparison.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

use crate::admission::pod::{
    ContainerList, ContainerSkip, ContainerSkipKind, ImageChange, Plan, PodSkip, Scope,
    MIRROR_POD_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION, SKIP_LABEL,
};
use crate::admission::{
    Disposition, Mode, ReviewError, Reviewed, Summary, AUDIT_ANNOTATION, MAX_WARNING_CHARS,
};
use detour_core::config::{Config, GlobalMode, NeverPolicy};
use detour_core::rules::{Outcome, Swap};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodView {
    #[serde(default)]
    pub metadata: MetaView,
    #[serde(default)]
    pub spec: PodSpecView,
}

/// The metadata fields detour reads; `managedFields` and the rest are skipped.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaView {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView {
    pub containers: Option<Vec<ContainerView>>,
    pub init_containers: Option<Vec<ContainerView>>,
    pub ephemeral_containers: Option<Vec<ContainerView>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    #[serde(default)]
    pub name: String,
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
}

impl PodView {
    pub fn list(&self, which: ContainerList) -> &[ContainerView] {
        let list = match which {
            ContainerList::Containers => &self.spec.containers,
            ContainerList::InitContainers => &self.spec.init_containers,
            ContainerList::EphemeralContainers => &self.spec.ephemeral_containers,
        };
        list.as_deref().unwrap_or_default()
    }

    /// `name`, or `generateName` for controller-made Pods, or `-`.
    pub fn display_name(&self) -> &str {
        self.metadata
            .name
            .as_deref()
            .or(self.metadata.generate_name.as_deref())
            .unwrap_or("-")
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }
}

/// Decides what to change in `pod`.
pub fn plan<'c>(
    pod: &PodView,
    old: Option<&PodView>,
    scope: Scope,
    config: &'c Config,
) -> Plan<'c> {
    let mut plan = Plan::default();
    if pod.annotation(MIRROR_POD_ANNOTATION).is_some() {
        plan.pod_skip = Some(PodSkip::MirrorPod);
        return plan;
    }
    if pod.label(SKIP_LABEL) == Some("true") {
        plan.pod_skip = Some(PodSkip::SkipLabel);
        return plan;
    }
    let lists: &[ContainerList] = match scope {
        Scope::Create => &ContainerList::ALL,
        Scope::NewEphemeralContainers => &[ContainerList::EphemeralContainers],
    };
    let existing: Vec<&str> = match (scope, old) {
        (Scope::NewEphemeralContainers, Some(old)) => old
            .list(ContainerList::EphemeralContainers)
            .iter()
            .map(|c| c.name.as_str())
            .collect(),
        _ => Vec::new(),
    };
    for &list in lists {
        for (index, container) in pod.list(list).iter().enumerate() {
            if existing.contains(&container.name.as_str()) {
                continue;
            }
            let Some(image) = container.image.as_deref() else {
                continue;
            };
            if container.image_pull_policy.as_deref() == Some("Never")
                && config.pull_policy_never == NeverPolicy::Skip
            {
                plan.skipped.push(ContainerSkip {
                    container: container.name.clone().into(),
                    image: image.to_string().into(),
                    kind: ContainerSkipKind::PullPolicyNever,
                    reason: "imagePullPolicy is Never: the image must already be on the node under this name".into(),
                });
                continue;
            }
            match config.rules.rewrite(image) {
                Outcome::Rewritten { to, rule, .. } => plan.changes.push(ImageChange {
                    list,
                    index,
                    container: container.name.clone().into(),
                    from: image.to_string().into(),
                    to: to.to_string().into(),
                    rule: &rule.name,
                    mirror: rule.mirror,
                }),
                Outcome::Invalid(e) => plan.skipped.push(ContainerSkip {
                    container: container.name.clone().into(),
                    image: image.to_string().into(),
                    kind: ContainerSkipKind::InvalidReference,
                    reason: format!("not a valid image reference, allowed unchanged: {e}"),
                }),
                Outcome::Unchanged(..) | Outcome::Placeholder => {}
            }
        }
    }
    plan
}

/// The JSON Patch for `plan`: one `replace` per image, then the
/// original-images annotation (created, or merged with what earlier
/// invocations recorded, so reinvocation keeps it consistent).
pub fn patch(pod: &PodView, plan: &Plan, annotate: bool) -> Patch {
    let mut ops: Vec<PatchOperation> = plan
        .changes
        .iter()
        .map(|c| {
            PatchOperation::Replace(ReplaceOperation {
                path: PointerBuf::from_tokens([
                    "spec",
                    c.list.field(),
                    &c.index.to_string(),
                    "image",
                ]),
                value: Value::String(c.to.to_string()),
            })
        })
        .collect();
    if annotate && !plan.changes.is_empty() {
        let mut originals: BTreeMap<String, String> = pod
            .annotation(ORIGINAL_IMAGES_ANNOTATION)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        for c in &plan.changes {
            originals
                .entry(c.container.to_string())
                .or_insert_with(|| c.from.to_string());
        }
        let encoded = serde_json::to_string(&originals).unwrap_or_default();
        let key_path =
            PointerBuf::from_tokens(["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION]);
        ops.push(match &pod.metadata.annotations {
            None => PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "annotations"]),
                value: serde_json::json!({ ORIGINAL_IMAGES_ANNOTATION: encoded }),
            }),
            Some(map) if map.contains_key(ORIGINAL_IMAGES_ANNOTATION) => {
                PatchOperation::Replace(ReplaceOperation {
                    path: key_path,
                    value: Value::String(encoded),
                })
            }
            Some(_) => PatchOperation::Add(AddOperation {
                path: key_path,
                value: Value::String(encoded),
            }),
        });
    }
    Patch(ops)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct ReviewEnvelope<O> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestEnvelope<O>>,
}

/// The request; `O` is [`PodView`] on the fast path (one pass over the
/// body), or `IgnoredAny` when the object is not a readable Pod.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct RequestEnvelope<O> {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    dry_run: bool,
    #[serde(default = "none")]
    object: Option<O>,
    #[serde(default = "none")]
    old_object: Option<O>,
}

fn none<O>() -> Option<O> {
    None
}

/// The decoded objects, or why the object could not be read as a Pod.
type Objects = Result<(Option<PodView>, Option<PodView>), String>;

/// Decodes the body in one pass when it holds a readable Pod; otherwise
/// decodes the envelope alone, so that other kinds are still answered.
fn decode(body: &[u8]) -> Result<(ReviewEnvelope<IgnoredAny>, Objects), ReviewError> {
    match serde_json::from_slice::<ReviewEnvelope<PodView>>(body) {
        Ok(envelope) => {
            let (request, objects) = match envelope.request {
                Some(r) => {
                    let objects = Ok((r.object, r.old_object));
                    let request = RequestEnvelope {
                        uid: r.uid,
                        kind: r.kind,
                        resource: r.resource,
                        sub_resource: r.sub_resource,
                        name: r.name,
                        namespace: r.namespace,
                        operation: r.operation,
                        dry_run: r.dry_run,
                        object: None,
                        old_object: None,
                    };
                    (Some(request), objects)
                }
                None => (None, Ok((None, None))),
            };
            let envelope = ReviewEnvelope {
                api_version: envelope.api_version,
                kind: envelope.kind,
                request,
            };
            Ok((envelope, objects))
        }
        Err(pod_error) => {
            let envelope = serde_json::from_slice::<ReviewEnvelope<IgnoredAny>>(body)
                .map_err(|e| ReviewError::Malformed(e.to_string()))?;
            Ok((envelope, Err(format!("cannot read Pod: {pod_error}"))))
        }
    }
}

/// Answers one AdmissionReview body, with no knowledge of what the mirror
/// holds (`swap: if-present` changes are then left out).
pub fn review<'c>(
    body: &[u8],
    path_mode: Mode,
    config: &'c Config,
) -> Result<Reviewed<'c>, ReviewError> {
    Ok(prepare(body, path_mode, config)?.finish(&|_| false))
}

/// A decoded request with its plan, waiting for the answers to
/// [`Prepared::lookups`] before the response is built.
pub struct Prepared<'c> {
    allowed: AdmissionResponse,
    summary: Summary<'c>,
    work: Work<'c>,
}

// One value per request, moved once: boxing the Pod would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Work<'c> {
    Nothing,
    Failed(String),
    Pod {
        pod: PodView,
        plan: Plan<'c>,
        scope: Scope,
    },
}

/// Decodes a body and plans the rewrite; no response yet.
pub fn prepare<'c>(
    body: &[u8],
    path_mode: Mode,
    config: &'c Config,
) -> Result<Prepared<'c>, ReviewError> {
    let (envelope, objects) = decode(body)?;
    let request = envelope.request.ok_or(ReviewError::MissingRequest)?;
    let mode = match config.mode {
        GlobalMode::Audit => Mode::Audit,
        GlobalMode::Enforce => path_mode,
    };
    let typed = AdmissionRequest::<DynamicObject> {
        types: TypeMeta {
            api_version: envelope.api_version,
            kind: envelope.kind,
        },
        uid: request.uid.clone(),
        kind: request.kind.clone(),
        resource: request.resource.clone(),
        sub_resource: request.sub_resource.clone(),
        request_kind: None,
        request_resource: None,
        request_sub_resource: None,
        name: request.name.clone(),
        namespace: request.namespace.clone(),
        operation: request.operation.clone(),
        user_info: Default::default(),
        object: None,
        old_object: None,
        dry_run: request.dry_run,
        options: None,
    };
    let mut summary = Summary {
        uid: request.uid.clone().into(),
        namespace: request.namespace.clone().unwrap_or_default().into(),
        name: request.name.clone().into(),
        mode,
        dry_run: request.dry_run,
        disposition: Disposition::NotHandled,
        changes: vec![],
        deferred: vec![],
        skipped: vec![],
    };
    let allowed = AdmissionResponse::from(&typed);
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
        allowed,
        summary,
        work,
    })
}

impl<'c> Prepared<'c> {
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
    pub fn finish(self, present: &dyn Fn(&str) -> bool) -> Reviewed<'c> {
        let Prepared {
            allowed,
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
        let response = match parts {
            None => allowed,
            Some(parts) => parts.apply(allowed.clone()).unwrap_or_else(|message| {
                summary.disposition = Disposition::FailedOpen(message);
                allowed
            }),
        };
        Reviewed {
            body: encode(response),
            summary,
        }
    }
}

/// What to add to the allowed response.
struct ResponseParts {
    patch: Option<json_patch::Patch>,
    warnings: Vec<String>,
    audit_annotations: HashMap<String, String>,
}

impl ResponseParts {
    fn apply(self, mut response: AdmissionResponse) -> Result<AdmissionResponse, String> {
        if !self.warnings.is_empty() {
            response.warnings = Some(self.warnings);
        }
        response.audit_annotations = self.audit_annotations;
        match self.patch {
            Some(patch) => response
                .with_patch(patch)
                .map_err(|e| format!("cannot serialize patch: {e}")),
            None => Ok(response),
        }
    }
}

/// Is this request ours, and what would change? `None`: allowed untouched.
fn plan_request<'c>(
    request: &RequestEnvelope<IgnoredAny>,
    objects: Objects,
    config: &'c Config,
    summary: &mut Summary<'c>,
) -> Result<Option<(PodView, Plan<'c>, Scope)>, String> {
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let scope = match (is_pod, &request.operation, request.sub_resource.as_deref()) {
        (true, Operation::Create, None) => Scope::Create,
        (true, Operation::Update, Some("ephemeralcontainers")) => Scope::NewEphemeralContainers,
        _ => return Ok(None),
    };
    let (pod, old) = objects?;
    let pod = pod.ok_or("request has no object")?;
    if summary.name.is_empty() {
        summary.name = pod.display_name().to_string().into();
    }
    let plan: Plan<'c> = plan(&pod, old.as_ref(), scope, config);
    if let Some(skip) = plan.pod_skip {
        summary.disposition = Disposition::Skipped(skip);
        return Ok(None);
    }
    Ok(Some((pod, plan, scope)))
}

fn respond<'c>(
    pod: &PodView,
    mut plan: Plan<'c>,
    scope: Scope,
    present: &dyn Fn(&str) -> bool,
    summary: &mut Summary<'c>,
) -> ResponseParts {
    let mode = summary.mode;
    let mut parts = ResponseParts {
        patch: None,
        warnings: vec![],
        audit_annotations: HashMap::new(),
    };
    for skip in &plan.skipped {
        if skip.kind == ContainerSkipKind::InvalidReference {
            parts.warnings.push(truncate(&format!(
                "detour: {}: image {:?} is not a valid reference",
                skip.container, &*skip.image
            )));
        }
    }
    // `swap: if-present`: the original image stays until the mirror has it.
    let (deferred, applied): (Vec<ImageChange>, Vec<ImageChange>) = plan
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
        let report: Vec<serde_json::Value> = plan
            .changes
            .iter()
            .map(|c| serde_json::json!({"container": &*c.container, "from": &*c.from, "to": &*c.to, "rule": c.rule}))
            .collect();
        parts.audit_annotations.insert(
            AUDIT_ANNOTATION.to_string(),
            serde_json::Value::Array(report).to_string(),
        );
    } else {
        summary.disposition = Disposition::Patched;
        // The ephemeralcontainers subresource keeps only ephemeral container
        // changes, so an annotation patch there would be silently dropped.
        let annotate = scope == Scope::Create;
        parts.patch = Some(patch(pod, &plan, annotate));
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

/// The response review as sent: kube's typed response, except that the patch
/// is base64 as the AdmissionReview API documents (kube serializes its
/// `Vec<u8>` as a number array, which the apiserver also accepts but which is
/// about three times larger).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'a str,
    response: ResponseOut<'a>,
}

#[derive(serde::Serialize)]
struct ResponseOut<'a> {
    #[serde(flatten)]
    response: &'a AdmissionResponse,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

fn encode(mut response: AdmissionResponse) -> Vec<u8> {
    let patch = response
        .patch
        .take()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let types = response.types.clone();
    let out = ReviewOut {
        api_version: &types.api_version,
        kind: &types.kind,
        response: ResponseOut {
            response: &response,
            patch,
        },
    };
    serde_json::to_vec(&out).unwrap_or_default()
}
