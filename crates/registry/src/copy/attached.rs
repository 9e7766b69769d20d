//! Signatures, attestations, SBOMs and other referrers, copied beside the
//! image they are attached to, so that a verifier that looks for them next
//! to the rewritten image (Kyverno, sigstore's policy-controller, `cosign
//! verify`) finds them there. Digests never change on any of detour's
//! paths, so a copied signature stays valid.
//!
//! Layer: adapter, on [`Copier`]. Once an image is whole at its
//! destination, each of its digests (the top manifest's and its
//! children's) is looked up at the source: cosign's tags
//! (`sha256-<hex>.sig`, `.att`, `.sbom`) among the repository's tags, and
//! referrers through the referrers API or, on a registry without it, the
//! fallback tag's index. Each artifact found is copied like an image, byte
//! for byte (blobs, manifest, then tag), and then looked up in turn (a
//! signature of an SBOM). At a destination registry without the referrers
//! API, the fallback tag index of each subject gains what was copied (as
//! oras and distribution's clients keep it). In a layout, cosign's tags are
//! named like images and referrers are listed unnamed (as oras lays them
//! out). An image with nothing attached costs one tag list per repository
//! and one referrers request per digest (none at a registry already known
//! not to answer the API).

use std::collections::HashSet;
use std::sync::Arc;

use super::{Copied, Copier, CopyReport, From, LayoutEntry, Observer, Source};
use crate::client::{ManifestBytes, Repo};
use crate::layout::{ManifestRef, OciLayout};
use crate::referrers::{self, Descriptor};
use crate::MirrorError;
use detour_core::reference::Reference;

/// Artifacts followed from one image at most: a source that attaches more
/// (or a loop of subjects) is refused rather than copied forever.
const MAX_ATTACHED: usize = 1000;

/// One artifact that travelled with an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedReport {
    /// The digest it is attached to (the image's, a child's, or another
    /// artifact's).
    pub subject: String,
    pub digest: String,
    /// `cosign signature`, `cosign attestation`, `cosign SBOM` or `referrer`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// cosign's tag, for cosign's artifacts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// False when the destination already held it.
    pub copied: bool,
}

/// An artifact found attached to a digest at the source.
enum Attachment {
    /// cosign's tag, and where a layout holds it.
    Cosign {
        tag: String,
        kind: &'static str,
        at: Option<ManifestRef>,
    },
    Referrer(Descriptor),
}

impl Attachment {
    fn kind(&self) -> &'static str {
        match self {
            Attachment::Cosign { kind, .. } => kind,
            Attachment::Referrer(_) => "referrer",
        }
    }

    fn tag(&self) -> Option<&str> {
        match self {
            Attachment::Cosign { tag, .. } => Some(tag),
            Attachment::Referrer(_) => None,
        }
    }

    fn descriptor(&self) -> Option<&Descriptor> {
        match self {
            Attachment::Cosign { .. } => None,
            Attachment::Referrer(d) => Some(d),
        }
    }

    /// What the source holds it by: a layout, by digest; a registry, by
    /// cosign's tag or the referrer's digest.
    fn reference(&self) -> &str {
        match self {
            Attachment::Cosign { at: Some(at), .. } => &at.digest,
            Attachment::Cosign { tag, at: None, .. } => tag,
            Attachment::Referrer(d) => &d.digest,
        }
    }

    /// The media type, where the source needs it (a layout).
    fn media_type(&self) -> Option<&str> {
        match self {
            Attachment::Cosign { at, .. } => at.as_ref().map(|a| a.media_type.as_str()),
            Attachment::Referrer(d) => Some(&d.media_type),
        }
    }
}

/// The image's source, with what its lookups read from it once.
enum Known<'a> {
    /// The registry repository, and its tags (`None`: it will not list them).
    Registry {
        repo: &'a Repo,
        tags: Option<Vec<String>>,
    },
    /// The layout's cosign entries under the image's repository, as (tag,
    /// descriptor), and its referrers, as (subject, descriptor).
    Layout {
        cosign: Vec<(String, ManifestRef)>,
        referrers: Vec<(String, Descriptor)>,
    },
}

/// Where attached artifacts go: beside the image in its destination
/// repository, or into the layout the image went into (from a registry).
pub(super) enum Beside<'a> {
    Registry(&'a Reference),
    /// cosign's tags named `REPOSITORY:sha256-<hex>.sig`, after the
    /// image's name; referrers listed unnamed.
    Layout {
        layout: &'a OciLayout,
        src: &'a Repo,
        name: &'a str,
    },
}

impl Copier {
    /// The image's report, with what was attached to it copied too (unless
    /// the options say not to).
    pub(super) async fn with_attached(
        &self,
        copied: Copied,
        source: Source<'_>,
        destination: Beside<'_>,
        observer: Arc<dyn Observer>,
    ) -> Result<CopyReport, MirrorError> {
        let Copied {
            mut report,
            digests,
        } = copied;
        if !self.options.attached {
            return Ok(report);
        }
        let known = match source {
            Source::Registry(repo) => Known::Registry {
                repo,
                tags: self.client.all_tags(repo).await?,
            },
            Source::Layout(layout) => {
                let repository = repository_of(&report.source);
                let cosign = layout
                    .cosign_names()?
                    .into_iter()
                    .filter_map(|(name, at)| {
                        let (of, tag) = split_name(&name);
                        (of == repository).then(|| (tag.to_string(), at))
                    })
                    .collect();
                Known::Layout {
                    cosign,
                    referrers: layout.referrers()?,
                }
            }
        };
        let mut queue = digests;
        let mut seen: HashSet<String> = queue.iter().cloned().collect();
        while let Some(subject) = queue.pop() {
            let mut fallback_entries = Vec::new();
            for found in self.attached_to(&known, &subject).await? {
                let kind = found.kind();
                let one = match &destination {
                    Beside::Registry(image) => {
                        let target = image.with_tag_and_digest(
                            found.tag().map(str::to_string),
                            found.descriptor().map(|d| d.digest.clone()),
                        );
                        let from = From {
                            source,
                            label: format!("{} ({kind} of {subject})", report.source),
                            reference: found.reference(),
                            media_type: found.media_type(),
                            default_tag: found.tag(),
                            filter_platforms: false,
                        };
                        self.copy_image(from, &target, observer.clone()).await?
                    }
                    Beside::Layout { layout, src, name } => {
                        let entry = match &found {
                            Attachment::Cosign { tag, .. } => {
                                LayoutEntry::Named(format!("{}:{tag}", repository_of(name)))
                            }
                            Attachment::Referrer(d) => LayoutEntry::Unnamed(d.clone()),
                        };
                        let reference = found.reference();
                        self.image_to_layout(src, reference, layout, entry, false, observer.clone())
                            .await?
                    }
                };
                let digest = one.report.digest.clone();
                record(&mut report, &one.report, &subject, &found);
                if let Attachment::Referrer(d) = found {
                    fallback_entries.push(d);
                }
                if seen.insert(digest.clone()) {
                    if seen.len() > MAX_ATTACHED {
                        return Err(too_many(&report.source));
                    }
                    queue.push(digest);
                }
            }
            if let (Beside::Registry(image), false) = (&destination, fallback_entries.is_empty()) {
                let dst = Repo::of(image);
                if !self.answers_referrers(&dst, &subject).await? {
                    self.update_fallback(&dst, &subject, &fallback_entries)
                        .await?;
                }
            }
        }
        Ok(report)
    }

    /// What the source holds attached to `subject`.
    async fn attached_to(
        &self,
        known: &Known<'_>,
        subject: &str,
    ) -> Result<Vec<Attachment>, MirrorError> {
        let mut found = Vec::new();
        match known {
            Known::Registry { repo, tags } => {
                let Some(stem) = referrers::tag_stem(subject) else {
                    return Ok(found);
                };
                if self.known_api(&repo.host) != Some(false) {
                    match self.client.referrers(repo, subject).await? {
                        Some(entries) => {
                            self.learn_api(&repo.host, true);
                            found.extend(entries.into_iter().map(Attachment::Referrer));
                        }
                        None => self.learn_api(&repo.host, false),
                    }
                }
                let tags = tags.as_deref().unwrap_or(&[]);
                if self.known_api(&repo.host) == Some(false) && tags.contains(&stem) {
                    let index = self.client.get_manifest(repo, &stem).await?;
                    found.extend(
                        referrers::descriptors(&index.bytes)?
                            .into_iter()
                            .map(Attachment::Referrer),
                    );
                }
                for (tag, suffix) in referrers::cosign_tags(subject, tags) {
                    found.push(Attachment::Cosign {
                        tag: tag.to_string(),
                        kind: referrers::cosign_kind(suffix),
                        at: None,
                    });
                }
            }
            Known::Layout { cosign, referrers } => {
                for (tag, at) in cosign {
                    if let Some((digest, suffix)) = referrers::parse_cosign_tag(tag) {
                        if digest == subject {
                            found.push(Attachment::Cosign {
                                tag: tag.clone(),
                                kind: referrers::cosign_kind(suffix),
                                at: Some(at.clone()),
                            });
                        }
                    }
                }
                found.extend(
                    referrers
                        .iter()
                        .filter(|(of, _)| of == subject)
                        .map(|(_, d)| Attachment::Referrer(d.clone())),
                );
            }
        }
        Ok(found)
    }

    fn known_api(&self, host: &str) -> Option<bool> {
        let known = self.referrers_api.lock().unwrap_or_else(|p| p.into_inner());
        known.get(host).copied()
    }

    fn learn_api(&self, host: &str, answers: bool) {
        let mut known = self.referrers_api.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(host.to_string(), answers);
    }

    /// Whether the destination registry answers the referrers API (asked
    /// once per registry).
    async fn answers_referrers(&self, dst: &Repo, subject: &str) -> Result<bool, MirrorError> {
        if let Some(known) = self.known_api(&dst.host) {
            return Ok(known);
        }
        let answers = self.client.referrers(dst, subject).await?.is_some();
        self.learn_api(&dst.host, answers);
        Ok(answers)
    }

    /// Adds `entries` to the fallback tag index of `subject` at `dst`.
    async fn update_fallback(
        &self,
        dst: &Repo,
        subject: &str,
        entries: &[Descriptor],
    ) -> Result<(), MirrorError> {
        let Some(stem) = referrers::tag_stem(subject) else {
            return Ok(());
        };
        let existing = match self.client.get_manifest(dst, &stem).await {
            Ok(index) => Some(index.bytes),
            Err(MirrorError::Status { status: 404, .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(bytes) = referrers::merge_fallback(existing.as_deref(), entries)? else {
            return Ok(());
        };
        let index = ManifestBytes {
            media_type: crate::manifest::OCI_INDEX.to_string(),
            digest: crate::digest::digest_of(&bytes, None)?,
            bytes: bytes.into(),
        };
        self.client.put_manifest(dst, &stem, &index).await
    }
}

/// Adds one artifact's copy to the image's report.
fn record(report: &mut CopyReport, one: &CopyReport, subject: &str, found: &Attachment) {
    report.add(one);
    report.attached.push(AttachedReport {
        subject: subject.to_string(),
        digest: one.digest.clone(),
        kind: found.kind().to_string(),
        artifact_type: found.descriptor().and_then(|d| d.artifact_type.clone()),
        tag: found.tag().map(str::to_string),
        copied: one.manifests_copied > 0,
    });
}

fn too_many(image: &str) -> MirrorError {
    MirrorError::Invalid(format!(
        "{image}: more than {MAX_ATTACHED} artifacts attached; not copied (copy it with --no-attached-artifacts)"
    ))
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a name with no tag is
/// all repository.
fn split_name(name: &str) -> (&str, &str) {
    let name = name.split('@').next().unwrap_or(name);
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, tag),
        _ => (name, ""),
    }
}

/// The repository part of an image's name in a layout.
fn repository_of(name: &str) -> &str {
    split_name(name).0
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn layout_names_split_into_repository_and_tag() {
        assert_eq!(
            split_name("registry.k8s.io/pause:3.10"),
            ("registry.k8s.io/pause", "3.10")
        );
        assert_eq!(split_name("localhost:5000/a/b"), ("localhost:5000/a/b", ""));
        assert_eq!(
            split_name("localhost:5000/a:sha256-00.sig"),
            ("localhost:5000/a", "sha256-00.sig")
        );
        assert_eq!(split_name("a/b@sha256:00"), ("a/b", ""));
        assert_eq!(split_name("a/b:v1@sha256:00"), ("a/b", "v1"));
    }
}
