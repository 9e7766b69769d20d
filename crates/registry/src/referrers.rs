//! The artifacts attached to an image: cosign's tags (`sha256-<hex>.sig`,
//! `.att`, `.sbom` in the image's repository) and OCI 1.1 referrers
//! (manifests whose `subject` is the image), listed by a registry's
//! referrers API or, where a registry has none, by the fallback tag
//! `sha256-<hex>` (an index the pushing client keeps up to date).
//!
//! Layer: pure (bytes in, bytes out). The copy engine
//! ([`crate::copy`]), the layout ([`crate::layout`]) and `detour proxy`
//! read and write these shapes; none of them builds this JSON itself.

use serde::{Deserialize, Serialize};

use super::manifest::OCI_INDEX;
use super::MirrorError;

/// cosign's tag suffixes: signatures, attestations, SBOMs.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// A referrer as a referrers list names it. Fields this code does not use
/// travel unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `sha256:<hex>` → `sha256-<hex>`: the fallback tag of a digest, and the
/// stem of cosign's tags. `None` for text that is not a digest.
pub fn tag_stem(digest: &str) -> Option<String> {
    let (algorithm, hex) = digest.split_once(':')?;
    let valid = !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| format!("{algorithm}-{hex}"))
}

/// cosign's tags of `digest` among `tags`, in suffix order, each with its
/// suffix.
pub fn cosign_tags<'a>(digest: &str, tags: &'a [String]) -> Vec<(&'a str, &'static str)> {
    let Some(stem) = tag_stem(digest) else {
        return Vec::new();
    };
    COSIGN_SUFFIXES
        .iter()
        .filter_map(|&suffix| {
            tags.iter()
                .find(|t| t.strip_prefix(&stem).and_then(|r| r.strip_prefix('.')) == Some(suffix))
                .map(|t| (t.as_str(), suffix))
        })
        .collect()
}

/// `sha256-<hex>.sig` → (`sha256:<hex>`, `sig`): a cosign tag, read back.
pub fn parse_cosign_tag(tag: &str) -> Option<(String, &str)> {
    let (stem, suffix) = tag.rsplit_once('.')?;
    if !COSIGN_SUFFIXES.contains(&suffix) {
        return None;
    }
    let (algorithm, hex) = stem.split_once('-')?;
    let digest = format!("{algorithm}:{hex}");
    (tag_stem(&digest).as_deref() == Some(stem)).then_some((digest, suffix))
}

/// What cosign's tag suffix holds, for reports.
pub fn cosign_kind(suffix: &str) -> &'static str {
    match suffix {
        "sig" => "cosign signature",
        "att" => "cosign attestation",
        _ => "cosign SBOM",
    }
}

/// The entries of a referrers list or a fallback tag's index.
pub fn descriptors(index: &[u8]) -> Result<Vec<Descriptor>, MirrorError> {
    #[derive(Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| MirrorError::Invalid(format!("referrers index: {e}")))?;
    Ok(index.manifests)
}

/// An OCI image index of `entries`: a referrers answer or a fallback tag.
pub fn index_of(entries: &[Descriptor]) -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    serde_json::to_vec(&index).unwrap_or_default()
}

/// The fallback index with `added` in it (after what `existing` held),
/// `None` when it already names all of them.
pub fn merge_fallback(
    existing: Option<&[u8]>,
    added: &[Descriptor],
) -> Result<Option<Vec<u8>>, MirrorError> {
    let mut entries = match existing {
        Some(bytes) => descriptors(bytes)?,
        None => Vec::new(),
    };
    let before = entries.len();
    for d in added {
        if !entries.iter().any(|e| e.digest == d.digest) {
            entries.push(d.clone());
        }
    }
    Ok((existing.is_none() || entries.len() > before).then(|| index_of(&entries)))
}

/// The entries of `artifact_type`, as the referrers API filters them.
pub fn filtered(entries: Vec<Descriptor>, artifact_type: &str) -> Vec<Descriptor> {
    entries
        .into_iter()
        .filter(|d| d.artifact_type.as_deref() == Some(artifact_type))
        .collect()
}

/// What a manifest says of itself that a referrers list repeats: its
/// subject's digest, and the descriptor that lists it (`artifactType`,
/// else the config's media type, and its annotations).
pub fn referrer_of(media_type: &str, digest: &str, bytes: &[u8]) -> Option<(String, Descriptor)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        subject: Option<Digest>,
        artifact_type: Option<String>,
        config: Option<MediaType>,
        annotations: Option<serde_json::Map<String, serde_json::Value>>,
    }
    #[derive(Deserialize)]
    struct Digest {
        digest: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MediaType {
        media_type: String,
    }
    let shape: Shape = serde_json::from_slice(bytes).ok()?;
    let subject = shape.subject?.digest;
    let descriptor = Descriptor {
        media_type: media_type.to_string(),
        digest: digest.to_string(),
        size: bytes.len() as u64,
        artifact_type: shape.artifact_type.or(shape.config.map(|c| c.media_type)),
        annotations: shape.annotations,
        other: serde_json::Map::new(),
    };
    Some((subject, descriptor))
}

/// The `next` target of an RFC 8288 `Link` header, as registries paginate
/// tag and referrers lists.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(target)
    })
}

#[cfg(test)]
mod tests;
