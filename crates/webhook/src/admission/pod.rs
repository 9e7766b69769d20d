//! What detour reads of a Pod, what it decides, and the JSON Patch for it.
//!
//! Layer: pure (no I/O). [`PodView`] holds only metadata and the image fields
//! of the three container lists, borrowed from the request body
//! ([`super::decode`] reads them; everything else in a possibly megabytes
//! large Pod is skipped). Images
//! are decided through the rule set's decision cache. The patch is written
//! straight into a buffer: its pointers are fixed tokens plus one constant
//! whose `/` escape is checked against jsonptr, its values escaped by serde_json.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::json;
use super::reader::Text;
use detour_core::config::{Config, NeverPolicy};
use detour_core::rules::{Decision, MirrorPolicy};

pub use detour_core::pod::{
    ContainerList, MIRROR_POD_ANNOTATION, ORIGINAL_IMAGES_ANNOTATION, SKIP_LABEL,
};

#[derive(Debug, Clone, Default)]
pub struct PodView<'a> {
    pub metadata: MetaView<'a>,
    pub spec: PodSpecView<'a>,
}

/// The metadata fields detour reads; `managedFields` and the rest are skipped.
#[derive(Debug, Clone, Default)]
pub struct MetaView<'a> {
    pub name: Option<Text<'a>>,
    pub generate_name: Option<Text<'a>>,
    pub labels: Option<PickedMap<'a>>,
    pub annotations: Option<PickedMap<'a>>,
}

#[derive(Debug, Clone, Default)]
pub struct PodSpecView<'a> {
    pub containers: Option<Vec<ContainerView<'a>>>,
    pub init_containers: Option<Vec<ContainerView<'a>>>,
    pub ephemeral_containers: Option<Vec<ContainerView<'a>>>,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerView<'a> {
    pub name: Text<'a>,
    pub image: Option<Text<'a>>,
    pub image_pull_policy: Option<Text<'a>>,
}

/// The label and annotation keys detour reads.
pub(super) const READ_KEYS: [&str; 3] = [
    SKIP_LABEL,
    MIRROR_POD_ANNOTATION,
    ORIGINAL_IMAGES_ANNOTATION,
];

/// A `map[string]string` (labels, annotations) of which only [`READ_KEYS`]
/// are kept (in order; the last of duplicate keys wins).
#[derive(Debug, Clone, Default)]
pub struct PickedMap<'a> {
    pub(super) kept: Vec<(&'static str, Text<'a>)>,
}

impl PickedMap<'_> {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.kept
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &**v)
    }
}

impl<'a> PodView<'a> {
    pub fn list(&self, which: ContainerList) -> &[ContainerView<'a>] {
        let list = match which {
            ContainerList::Containers => &self.spec.containers,
            ContainerList::InitContainers => &self.spec.init_containers,
            ContainerList::EphemeralContainers => &self.spec.ephemeral_containers,
        };
        list.as_deref().unwrap_or_default()
    }

    /// `name`, or `generateName` for controller-made Pods, or `-`.
    pub fn display_name(&self) -> Text<'a> {
        self.metadata
            .name
            .clone()
            .or_else(|| self.metadata.generate_name.clone())
            .unwrap_or(Text(std::borrow::Cow::Borrowed("-")))
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key)
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key)
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
pub struct ImageChange<'a> {
    pub list: ContainerList,
    pub index: usize,
    pub container: Text<'a>,
    pub from: Text<'a>,
    /// Shared with the rule set's decision cache.
    pub to: Arc<str>,
    /// The rule's name, borrowed from the config.
    pub rule: &'a str,
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
pub struct ContainerSkip<'a> {
    pub container: Text<'a>,
    pub image: Text<'a>,
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
pub struct Plan<'a> {
    pub pod_skip: Option<PodSkip>,
    pub changes: Vec<ImageChange<'a>>,
    pub skipped: Vec<ContainerSkip<'a>>,
}

/// Decides what to change in `pod`.
pub fn plan<'a>(
    pod: &PodView<'a>,
    old: Option<&PodView>,
    scope: Scope,
    config: &'a Config,
) -> Plan<'a> {
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
            .map(|c| &*c.name)
            .collect(),
        _ => Vec::new(),
    };
    let mut decider = config.rules.decider();
    for &list in lists {
        for (index, container) in pod.list(list).iter().enumerate() {
            if existing.contains(&&*container.name) {
                continue;
            }
            let Some(image) = &container.image else {
                continue;
            };
            if container.image_pull_policy.as_deref() == Some("Never")
                && config.pull_policy_never == NeverPolicy::Skip
            {
                plan.skipped.push(ContainerSkip {
                    container: container.name.clone(),
                    image: image.clone(),
                    kind: ContainerSkipKind::PullPolicyNever,
                    reason: "imagePullPolicy is Never: the image must already be on the node under this name".into(),
                });
                continue;
            }
            match decider.decide(image) {
                Decision::Rewrite { to, rule } => {
                    let rule = &config.rules.rules()[rule];
                    plan.changes.push(ImageChange {
                        list,
                        index,
                        container: container.name.clone(),
                        from: image.clone(),
                        to,
                        rule: &rule.name,
                        mirror: rule.mirror,
                    })
                }
                Decision::Invalid(e) => plan.skipped.push(ContainerSkip {
                    container: container.name.clone(),
                    image: image.clone(),
                    kind: ContainerSkipKind::InvalidReference,
                    reason: format!("not a valid image reference, allowed unchanged: {e}"),
                }),
                Decision::Keep => {}
            }
        }
    }
    plan
}

/// The JSON Pointer of the original-images annotation (`/` in the key
/// escaped as `~1`; a test checks it against jsonptr's encoding).
pub const ORIGINAL_IMAGES_POINTER: &str = "/metadata/annotations/detour.dev~1original-images";

/// Writes the JSON Patch for `plan` into `out`: one `replace` per image, then
/// the original-images annotation (created, or merged with what earlier
/// invocations recorded, so reinvocation keeps it consistent).
///
/// Pointers are fixed tokens (list field names, indexes) and
/// [`ORIGINAL_IMAGES_POINTER`]; values are escaped by [`json::string`].
pub fn write_patch(pod: &PodView, plan: &Plan, annotate: bool, out: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    out.push(b'[');
    for (n, c) in plan.changes.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"op":"replace","path":"/spec/"#);
        out.extend_from_slice(c.list.field().as_bytes());
        out.push(b'/');
        out.extend_from_slice(digits.format(c.index).as_bytes());
        out.extend_from_slice(br#"/image","value":"#);
        json::string(out, &c.to);
        out.push(b'}');
    }
    if annotate && !plan.changes.is_empty() {
        // A record from an earlier invocation is merged, its entries first.
        let earlier: BTreeMap<String, String> = pod
            .annotation(ORIGINAL_IMAGES_ANNOTATION)
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        // Sorted by container name, as a map; the first entry of a name wins.
        let mut originals: Vec<(&str, &str)> = earlier
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(plan.changes.iter().map(|c| (&*c.container, &*c.from)))
            .collect();
        originals.sort_by(|a, b| a.0.cmp(b.0));
        originals.dedup_by(|later, first| later.0 == first.0);
        let (op, path) = match &pod.metadata.annotations {
            None => ("add", "/metadata/annotations"),
            Some(map) if map.get(ORIGINAL_IMAGES_ANNOTATION).is_some() => {
                ("replace", ORIGINAL_IMAGES_POINTER)
            }
            Some(_) => ("add", ORIGINAL_IMAGES_POINTER),
        };
        out.extend_from_slice(br#",{"op":""#);
        out.extend_from_slice(op.as_bytes());
        out.extend_from_slice(br#"","path":""#);
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(br#"","value":"#);
        if pod.metadata.annotations.is_none() {
            out.push(b'{');
            json::key(out, ORIGINAL_IMAGES_ANNOTATION);
            json::object_as_string(out, &originals);
            out.push(b'}');
        } else {
            json::object_as_string(out, &originals);
        }
        out.push(b'}');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::decode::pod_view;
    use crate::admission::reader::Reader;
    use json_patch::jsonptr::PointerBuf;

    #[test]
    fn the_annotation_pointer_escapes_its_slash() {
        let pointer =
            PointerBuf::from_tokens(["metadata", "annotations", ORIGINAL_IMAGES_ANNOTATION]);
        assert_eq!(pointer.as_str(), ORIGINAL_IMAGES_POINTER);
    }

    #[test]
    fn picked_maps_keep_only_read_keys_and_the_last_duplicate() {
        fn read(json: &str) -> crate::admission::reader::Result<PodView<'_>> {
            pod_view(&mut Reader::new(json.as_bytes()))
        }
        let pod = read(
            r#"{"metadata": {"labels": {"a": "1", "detour.dev/skip": "false", "detour.dev/skip": "true"},
                "annotations": {"x": "y"}}}"#,
        )
        .unwrap();
        assert_eq!(pod.label(SKIP_LABEL), Some("true"));
        assert_eq!(pod.label("a"), None, "not a key detour reads");
        assert!(pod.metadata.annotations.is_some() && pod.annotation("x").is_none());
        assert!(
            read(r#"{"metadata": {"labels": {"a": 1}}}"#).is_err(),
            "label values must be strings"
        );
        let pod = read(r#"{"metadata": {"annotations": null}}"#).unwrap();
        assert!(pod.metadata.annotations.is_none());
    }
}
