//! The names detour uses in Pods: the labels and annotations it reads and
//! writes, and the three container lists whose images it rewrites.
//!
//! Layer: pure core. The webhook, the offline manifest rewrite and the
//! cluster reader all name these; they live here so that each uses one
//! definition.

/// Records container name → original image for every image detour rewrote.
pub const ORIGINAL_IMAGES_ANNOTATION: &str = "detour.dev/original-images";
/// Pods labelled `detour.dev/skip=true` are left alone (the webhook's
/// objectSelector excludes them too; this is the belt to those braces).
pub const SKIP_LABEL: &str = "detour.dev/skip";
/// The namespace label that chooses a namespace's mode: `enforce`, `audit`
/// or `off` (the webhook overlays and native mode's bindings select on it).
pub const MODE_LABEL: &str = "detour.dev/mode";
/// Namespaces never touched, whatever their label: the cluster's own and
/// detour's (the webhook overlays and native mode's bindings exclude them).
pub const EXCLUDED_NAMESPACES: [&str; 2] = ["kube-system", "detour-system"];
/// Static Pods' mirror objects: the kubelet rejects changes to them.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

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
