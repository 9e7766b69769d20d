//! What detour reads of a Pod, what it decides, and the JSON Patch for it.
//!
//! Layer: pure core. [`PodView`] decodes only metadata and the image fields
//! of the three container lists; everything else in a (possibly megabytes
//! large) Pod is skipped by the deserializer. Patch operations are typed
//! `json_patch` operations on `PointerBuf`s, so `/` and `~` in keys are
//! escaped by construction.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{Config, NeverPolicy};
use crate::rules::{MirrorPolicy, Outcome};

/// Records container name → original image for every image detour rewrote.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "detour.dev/original-images";
/// Pods labelled `detour.dev/skip=true` are left alone (the webhook's
/// objectSelector excludes them too; this is the belt to those braces).
pub const SKIP_LABEL: &str = "detour.dev/skip";
/// Static Pods' mirror objects: the kubelet rejects changes to them.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

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

/// The three container lists, with their JSON field names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    Containers,
    InitContainers,
    EphemeralContainers,
}

impl ContainerList {
    pub const ALL: [ContainerList; 3] = [
        ContainerList::Containers,
        ContainerList::InitContainers,
        ContainerList::EphemeralContainers,
    ];

    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
            ContainerList::EphemeralContainers => "ephemeralContainers",
        }
    }
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

/// Which containers a request may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Pod CREATE: every container.
    Create,
    /// `pods/ephemeralcontainers` UPDATE (`kubectl debug`): only ephemeral
    /// containers that are not in the old object.
    NewEphemeralContainers,
}

/// One image detour rewrites (or, in audit mode, would rewrite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChange {
    pub list: ContainerList,
    pub index: usize,
    pub container: String,
    pub from: String,
    pub to: String,
    pub rule: String,
    /// The rule's pre-mirroring settings.
    pub mirror: MirrorPolicy,
}

/// Why a whole Pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodSkip {
    MirrorPod,
    SkipLabel,
}

impl PodSkip {
    pub fn reason(self) -> &'static str {
        match self {
            PodSkip::MirrorPod => "static mirror pod (kubernetes.io/config.mirror)",
            PodSkip::SkipLabel => "labelled detour.dev/skip=true",
        }
    }
}

/// A container left alone for a reason worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSkip {
    pub container: String,
    pub image: String,
    pub kind: ContainerSkipKind,
    pub reason: String,
}

/// Why a container was left alone; invalid images are also warned about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerSkipKind {
    PullPolicyNever,
    InvalidReference,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub pod_skip: Option<PodSkip>,
    pub changes: Vec<ImageChange>,
    pub skipped: Vec<ContainerSkip>,
}

/// Decides what to change in `pod`.
pub fn plan(pod: &PodView, old: Option<&PodView>, scope: Scope, config: &Config) -> Plan {
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
                    container: container.name.clone(),
                    image: image.to_string(),
                    kind: ContainerSkipKind::PullPolicyNever,
                    reason: "imagePullPolicy is Never: the image must already be on the node under this name".into(),
                });
                continue;
            }
            match config.rules.rewrite(image) {
                Outcome::Rewritten { to, rule, .. } => plan.changes.push(ImageChange {
                    list,
                    index,
                    container: container.name.clone(),
                    from: image.to_string(),
                    to: to.to_string(),
                    rule: rule.name.clone(),
                    mirror: rule.mirror,
                }),
                Outcome::Invalid(e) => plan.skipped.push(ContainerSkip {
                    container: container.name.clone(),
                    image: image.to_string(),
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
                value: Value::String(c.to.clone()),
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
                .entry(c.container.clone())
                .or_insert_with(|| c.from.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_the_annotation_slash() {
        let pod: PodView = serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}
        }))
        .unwrap();
        let config = Config::embedded_default();
        let p = plan(&pod, None, Scope::Create, &config);
        let text = serde_json::to_string(&patch(&pod, &p, true)).unwrap();
        assert!(
            text.contains(r#""path":"/metadata/annotations/detour.dev~1original-images""#),
            "{text}"
        );
        assert!(
            text.contains(r#""path":"/spec/containers/0/image""#),
            "{text}"
        );
    }
}
