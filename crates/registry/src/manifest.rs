//! What a manifest refers to: child manifests of an index, blobs of an
//! image. Parsed with oci-spec, which reads OCI and Docker schema 2 alike
//! (their JSON shapes are the same); the bytes themselves are never
//! re-serialised unless a platform filter asks for a smaller index.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::MirrorError;
use detour_core::mirror_settings::PlatformFilter;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Index or image, by media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    Index,
    Image,
}

pub fn kind(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Some(ManifestKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        _ => None,
    }
}

/// The manifest's media type: its own `mediaType` field, else the
/// Content-Type the registry sent, else guessed from its shape (OCI allows
/// omitting the field).
pub fn media_type(bytes: &[u8], header: Option<&str>) -> Result<String, MirrorError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let shape: Shape = serde_json::from_slice(bytes)
        .map_err(|e| MirrorError::Invalid(format!("manifest is not JSON: {e}")))?;
    if shape.schema_version == Some(1) {
        return Err(MirrorError::Unsupported(
            "Docker schema 1 manifests are deprecated and not copied".into(),
        ));
    }
    let guessed = if shape.manifests.is_some() {
        Some(OCI_INDEX)
    } else if shape.layers.is_some() {
        Some(OCI_MANIFEST)
    } else {
        None
    };
    let media_type = shape
        .media_type
        .or_else(|| header.filter(|h| kind(h).is_some()).map(str::to_string))
        .or_else(|| guessed.map(str::to_string))
        .ok_or_else(|| MirrorError::Unsupported("manifest of unknown type".into()))?;
    if kind(&media_type).is_none() {
        return Err(MirrorError::Unsupported(format!(
            "manifest media type {media_type:?} is not an image or an index"
        )));
    }
    Ok(media_type)
}

/// A blob or manifest that must exist before its parent is pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// `os/arch[/variant]` for index entries that carry a platform.
    pub platform: Option<String>,
}

fn target(d: &Descriptor) -> Target {
    Target {
        digest: d.digest().to_string(),
        size: d.size(),
        media_type: d.media_type().to_string(),
        platform: d.platform().as_ref().map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        }),
    }
}

/// The child manifests of an index.
pub fn children(bytes: &[u8]) -> Result<Vec<Target>, MirrorError> {
    let index: ImageIndex =
        serde_json::from_slice(bytes).map_err(|e| MirrorError::Invalid(format!("index: {e}")))?;
    Ok(index.manifests().iter().map(target).collect())
}

/// The blobs of an image manifest (config first), without
/// non-distributable ("foreign") layers, which registries do not hold.
pub fn blobs(bytes: &[u8]) -> Result<Vec<Target>, MirrorError> {
    let manifest: ImageManifest = serde_json::from_slice(bytes)
        .map_err(|e| MirrorError::Invalid(format!("image manifest: {e}")))?;
    let mut out = vec![target(manifest.config())];
    out.extend(
        manifest
            .layers()
            .iter()
            .filter(|l| !l.media_type().to_string().contains("foreign") && l.urls().is_none())
            .map(target),
    );
    Ok(out)
}

/// An index re-serialised without the entries no filter matches.
pub struct FilteredIndex {
    pub bytes: Vec<u8>,
    pub kept: Vec<Target>,
}

/// The index `bytes`, whose entries are `all` (from [`children`]), without
/// the entries no filter matches; `None` when every entry is kept (the
/// original bytes are then pushed).
pub fn filter_index(
    bytes: &[u8],
    all: &[Target],
    filters: &[PlatformFilter],
) -> Result<Option<FilteredIndex>, MirrorError> {
    let keep = |t: &Target| {
        t.platform
            .as_deref()
            .is_some_and(|p| filters.iter().any(|f| f.matches(p)))
    };
    if filters.is_empty() || all.iter().all(keep) {
        return Ok(None);
    }
    let kept: Vec<Target> = all.iter().filter(|t| keep(t)).cloned().collect();
    if kept.is_empty() {
        return Err(MirrorError::Invalid(
            "no platform in the index matches the platform filter".into(),
        ));
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| MirrorError::Invalid(format!("index: {e}")))?;
    if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        list.retain(|entry| {
            entry
                .get("digest")
                .and_then(|d| d.as_str())
                .is_some_and(|d| kept.iter().any(|k| k.digest == d))
        });
    }
    let out =
        serde_json::to_vec(&value).map_err(|e| MirrorError::Invalid(format!("index: {e}")))?;
    Ok(Some(FilteredIndex { bytes: out, kept }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {"mediaType": DOCKER_MANIFEST, "digest": D1, "size": 10, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": DOCKER_MANIFEST, "digest": D2, "size": 20, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn media_types_come_from_the_document_then_the_header_then_the_shape() {
        assert_eq!(media_type(&index(), None).unwrap(), DOCKER_LIST);
        let bare = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":1},"layers":[]}"#;
        assert_eq!(
            media_type(bare, Some(DOCKER_MANIFEST)).unwrap(),
            DOCKER_MANIFEST
        );
        assert_eq!(media_type(bare, Some("text/plain")).unwrap(), OCI_MANIFEST);
        assert!(media_type(br#"{"schemaVersion":1}"#, None).is_err());
        assert!(media_type(b"nope", None).is_err());
    }

    #[test]
    fn platform_filters_keep_matching_entries_and_change_the_bytes() {
        let amd64: PlatformFilter = "linux/amd64".parse().unwrap();
        let arm: PlatformFilter = "linux/arm64".parse().unwrap();
        assert!(filter_index(
            &index(),
            &children(&index()).unwrap(),
            &[amd64.clone(), arm]
        )
        .unwrap()
        .is_none());
        let FilteredIndex { bytes, kept } =
            filter_index(&index(), &children(&index()).unwrap(), &[amd64])
                .unwrap()
                .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].digest, D1);
        assert_eq!(children(&bytes).unwrap().len(), 1);
        let none: PlatformFilter = "windows/amd64".parse().unwrap();
        assert!(filter_index(&index(), &children(&index()).unwrap(), &[none]).is_err());
        assert!("linux".parse::<PlatformFilter>().is_err());
        assert!("linux/arm64/v8"
            .parse::<PlatformFilter>()
            .unwrap()
            .matches("linux/arm64/v8"));
    }
}
