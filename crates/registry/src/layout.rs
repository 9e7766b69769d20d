//! An OCI image layout directory (`oci:DIR`) as a copy destination: blobs
//! under `blobs/<algorithm>/<hex>`, each written to a temporary file while
//! its digest is computed and renamed into place only when it matches, and
//! `index.json` naming each image with `org.opencontainers.image.ref.name`.
//!
//! Layer: adapter (files). Blobs shared between images are stored once;
//! manifests are stored byte for byte, so digests do not change and
//! `skopeo` and other OCI tools read the directory as any layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::client::ManifestBytes;
use super::digest::Hasher;
use super::referrers::Descriptor;
use super::MirrorError;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct OciLayout {
    dir: PathBuf,
}

impl std::fmt::Display for OciLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci:{}", self.dir.display())
    }
}

/// A manifest as `index.json` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    pub digest: String,
    pub media_type: String,
}

fn io(what: &Path, e: std::io::Error) -> MirrorError {
    MirrorError::Invalid(format!("{}: {e}", what.display()))
}

impl OciLayout {
    /// Opens a layout, creating the directory, `oci-layout` and an empty
    /// `index.json` when they do not exist.
    pub fn open(dir: &Path) -> Result<OciLayout, MirrorError> {
        std::fs::create_dir_all(dir.join("blobs")).map_err(|e| io(dir, e))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(|e| io(&marker, e))?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let empty = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []});
            std::fs::write(&index, empty.to_string()).map_err(|e| io(&index, e))?;
        }
        Ok(OciLayout {
            dir: dir.to_path_buf(),
        })
    }

    /// An existing layout, to read from.
    pub fn existing(dir: &Path) -> Result<OciLayout, MirrorError> {
        for file in ["oci-layout", "index.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(MirrorError::Invalid(format!(
                    "{}: not an OCI image layout (no {file})",
                    dir.display()
                )));
            }
        }
        Ok(OciLayout {
            dir: dir.to_path_buf(),
        })
    }

    /// Unpacks an `oci-archive:` tar into `into` and opens it. Only regular
    /// files and directories with plain relative paths are accepted: a
    /// symlink, a hard link, a device or a path that leaves the archive is
    /// refused, as is a truncated archive, before anything is read from it.
    pub fn unpack(archive: &Path, into: &Path) -> Result<OciLayout, MirrorError> {
        extract(archive, into, false)?;
        for file in ["oci-layout", "index.json"] {
            if !into.join(file).is_file() {
                return Err(MirrorError::Invalid(format!(
                    "{}: no {file}: not an OCI archive, or cut short",
                    archive.display()
                )));
            }
        }
        OciLayout::existing(into)
    }

    /// Reads a `docker save` archive (`docker-archive:`) as a layout: each
    /// image becomes a Docker schema 2 manifest over its config and its
    /// (uncompressed) layer tars, named by each of its `RepoTags`. A `docker
    /// save` archive holds no registry manifest, so these digests are new.
    pub fn from_docker_archive(archive: &Path, into: &Path) -> Result<OciLayout, MirrorError> {
        let bad = |why: String| MirrorError::Invalid(format!("{}: {why}", archive.display()));
        let raw = into.join("archive");
        let links = extract(archive, &raw, true)?;
        let layout = OciLayout::open(into)?;
        let manifest_path = raw.join("manifest.json");
        let text = std::fs::read(&manifest_path)
            .map_err(|_| bad("no manifest.json: not a docker save archive".into()))?;
        let images: Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("manifest.json: {e}")))?;
        // Files are copied into blobs/ by digest (hashed first).
        let store = |relative: &str| -> Result<(String, u64), MirrorError> {
            // Follow the archive's inner links (a few hops at most).
            let mut at = normal(Path::new(relative));
            for _ in 0..8 {
                match links.get(&at) {
                    Some(next) => at = next.clone(),
                    None => break,
                }
            }
            let path = raw.join(&at);
            if !std::path::Path::new(relative)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(bad(format!("{relative} leaves the archive")));
            }
            let (digest, size) = hash_file(&path, Hasher::sha256()).map_err(|e| io(&path, e))?;
            if !layout.has_blob(&digest)? {
                let (target, partial) = layout.blob_paths(&digest)?;
                std::fs::copy(&path, &partial).map_err(|e| io(&partial, e))?;
                std::fs::rename(&partial, &target).map_err(|e| io(&target, e))?;
            }
            Ok((digest, size))
        };
        for (i, image) in images.as_array().into_iter().flatten().enumerate() {
            let config = image["Config"]
                .as_str()
                .ok_or_else(|| bad(format!("manifest.json entry {i} has no Config")))?;
            let (config_digest, config_size) = store(config)?;
            let mut layers = Vec::new();
            for layer in image["Layers"].as_array().into_iter().flatten() {
                let layer = layer
                    .as_str()
                    .ok_or_else(|| bad(format!("manifest.json entry {i}: bad layer")))?;
                let (digest, size) = store(layer)?;
                layers.push(json!({
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "size": size,
                    "digest": digest,
                }));
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": config_size,
                    "digest": config_digest,
                },
                "layers": layers,
            });
            let bytes = serde_json::to_vec(&manifest).map_err(|e| bad(e.to_string()))?;
            let top = ManifestBytes {
                media_type: DOCKER_MANIFEST.into(),
                digest: super::digest::digest_of(&bytes, None)?,
                bytes: bytes.into(),
            };
            layout.write_manifest(&top)?;
            let tags: Vec<String> = image["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            if tags.is_empty() {
                layout.name(&format!("image-{i}"), &top)?;
            }
            for tag in tags {
                layout.name(&tag, &top)?;
            }
        }
        let _ = std::fs::remove_dir_all(&raw);
        Ok(layout)
    }

    /// `blobs/<algorithm>/<hex>`; a digest that is not `algorithm:hex` of
    /// safe characters is refused, so no path can leave the layout.
    fn blob_path(&self, digest: &str) -> Result<PathBuf, MirrorError> {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or_else(|| MirrorError::Invalid(format!("digest {digest:?}")))?;
        let safe = |s: &str, extra: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
        };
        if !safe(algorithm, "+._-") || !safe(hex, "") {
            return Err(MirrorError::Invalid(format!("digest {digest:?}")));
        }
        Ok(self.dir.join("blobs").join(algorithm).join(hex))
    }

    /// The top descriptor named `name` in `index.json`.
    pub fn named(&self, name: &str) -> Result<ManifestRef, MirrorError> {
        self.names()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .ok_or_else(|| {
                MirrorError::Invalid(format!("{}: no image named {name:?}", self.dir.display()))
            })
    }

    /// Every named image of `index.json`: (name, descriptor). Names with
    /// cosign's tags are not images of their own ([`Self::cosign_names`]).
    pub fn names(&self) -> Result<Vec<(String, ManifestRef)>, MirrorError> {
        self.named_entries(false)
    }

    /// The entries named with cosign's tags (`REPOSITORY:sha256-<hex>.sig`):
    /// signatures, attestations and SBOMs of the images beside them.
    pub fn cosign_names(&self) -> Result<Vec<(String, ManifestRef)>, MirrorError> {
        self.named_entries(true)
    }

    /// The named entries whose tag is one of cosign's, or those whose is not.
    fn named_entries(&self, cosign: bool) -> Result<Vec<(String, ManifestRef)>, MirrorError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter_map(|(name, at)| Some((name?, at)))
            .filter(|(name, _)| is_cosign_name(name) == cosign)
            .collect())
    }

    /// Every referrer among the unnamed entries of `index.json` (as oras
    /// lays them out): (its subject's digest, the descriptor a referrers
    /// list gives it).
    pub fn referrers(&self) -> Result<Vec<(String, Descriptor)>, MirrorError> {
        let mut out = Vec::new();
        for (name, at) in self.entries()? {
            if name.is_some() || super::manifest::kind(&at.media_type).is_none() {
                continue;
            }
            let manifest = self.read_manifest(&at.digest, &at.media_type)?;
            out.extend(super::referrers::referrer_of(
                &at.media_type,
                &at.digest,
                &manifest.bytes,
            ));
        }
        Ok(out)
    }

    /// Every manifest entry of `index.json`: (its name, if any; descriptor).
    fn entries(&self) -> Result<Vec<(Option<String>, ManifestRef)>, MirrorError> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let index: Value = serde_json::from_slice(&text)
            .map_err(|e| MirrorError::Invalid(format!("{}: {e}", path.display())))?;
        let mut out = Vec::new();
        for m in index["manifests"].as_array().into_iter().flatten() {
            let (Some(digest), Some(media_type)) = (m["digest"].as_str(), m["mediaType"].as_str())
            else {
                continue;
            };
            out.push((
                m["annotations"][REF_NAME].as_str().map(str::to_string),
                ManifestRef {
                    digest: digest.to_string(),
                    media_type: media_type.to_string(),
                },
            ));
        }
        Ok(out)
    }

    /// A manifest blob, checked against its digest.
    pub fn read_manifest(
        &self,
        digest: &str,
        media_type: &str,
    ) -> Result<ManifestBytes, MirrorError> {
        let path = self.blob_path(digest)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if !meta.is_file() || meta.len() > 4 * 1024 * 1024 {
            return Err(MirrorError::Invalid(format!(
                "{}: not a manifest file",
                path.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let actual = super::digest::digest_of(&bytes, Some(digest))?;
        if actual != digest {
            return Err(MirrorError::DigestMismatch {
                what: format!("manifest {}", path.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(ManifestBytes {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            bytes: bytes.into(),
        })
    }

    /// A blob's bytes, streamed from its file (the copy checks the digest).
    pub async fn blob_stream(
        &self,
        digest: &str,
    ) -> Result<
        impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
        MirrorError,
    > {
        let path = self.blob_path(digest)?;
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        if !meta.is_file() {
            return Err(MirrorError::Invalid(format!(
                "{}: not a file",
                path.display()
            )));
        }
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io(&path, e))?;
        Ok(futures_util::stream::unfold(file, |mut file| async move {
            use tokio::io::AsyncReadExt;
            let mut buffer = vec![0u8; 256 * 1024];
            match file.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(bytes::Bytes::from(buffer)), file))
                }
                Err(e) => Some((Err(e), file)),
            }
        }))
    }

    /// Checks that image `name` is whole: every manifest, config and layer
    /// it needs (every child of an index) is here, of the size its
    /// descriptor gives and with the digest it is named by. A copy from a
    /// layout calls this first, so that an archive cut short or a blob with
    /// other bytes is refused before anything reaches the destination.
    /// Errors name what is missing by digest and role, not by a path inside
    /// the layout (for an archive that is a scratch directory).
    pub fn check_image(&self, name: &str) -> Result<(), MirrorError> {
        self.check_whole(&format!("image {name:?}"), self.named(name)?)
    }

    /// Checks, as [`Self::check_image`] does, every artifact a copy may
    /// send beside the images: the entries named with cosign's tags and
    /// the unnamed ones (referrers).
    pub fn check_attached(&self) -> Result<(), MirrorError> {
        for (name, at) in self.entries()? {
            match name {
                Some(name) if is_cosign_name(&name) => {
                    self.check_whole(&format!("cosign artifact {name:?}"), at)?
                }
                Some(_) => {}
                None => self.check_whole(&format!("artifact {}", at.digest), at)?,
            }
        }
        Ok(())
    }

    /// Checks that the manifest `top` (called `label` in errors) is whole.
    fn check_whole(&self, label: &str, top: ManifestRef) -> Result<(), MirrorError> {
        let incomplete = |what: String| MirrorError::Invalid(format!("{label}: {what}"));
        let mut manifests = vec![(top.digest, top.media_type, "manifest".to_string())];
        while let Some((digest, media_type, role)) = manifests.pop() {
            if !self.has_blob(&digest)? {
                return Err(incomplete(format!(
                    "{role} {digest} is missing (cut short?)"
                )));
            }
            let manifest = self
                .read_manifest(&digest, &media_type)
                .map_err(|e| incomplete(format!("{role} {digest} {}", without_paths(&e))))?;
            let kind = super::manifest::kind(&media_type).or_else(|| {
                super::manifest::media_type(&manifest.bytes, None)
                    .ok()
                    .and_then(|t| super::manifest::kind(&t))
            });
            if kind == Some(super::manifest::ManifestKind::Index) {
                for child in super::manifest::children(&manifest.bytes)? {
                    let role = match &child.platform {
                        Some(p) => format!("manifest for {p}"),
                        None => "child manifest".to_string(),
                    };
                    manifests.push((child.digest, child.media_type, role));
                }
                continue;
            }
            for (n, blob) in super::manifest::blobs(&manifest.bytes)?
                .into_iter()
                .enumerate()
            {
                let role = if n == 0 {
                    "config".to_string()
                } else {
                    format!("layer {n}")
                };
                self.check_blob(&blob.digest, blob.size)
                    .map_err(|why| incomplete(format!("{role} {} {why}", blob.digest)))?;
            }
        }
        Ok(())
    }

    /// Present, of `size` bytes, with the bytes `digest` names.
    fn check_blob(&self, digest: &str, size: u64) -> Result<(), String> {
        let path = self.blob_path(digest).map_err(|e| e.to_string())?;
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Err("is not a file".into()),
            Err(_) => return Err("is missing (cut short?)".into()),
        };
        if meta.len() != size {
            return Err(format!(
                "has {} bytes where the manifest says {size} (cut short?)",
                meta.len()
            ));
        }
        let hasher = Hasher::for_digest(digest).map_err(|e| e.to_string())?;
        let (actual, _) = hash_file(&path, hasher).map_err(|e| e.to_string())?;
        if actual != digest {
            return Err(format!("has bytes of another digest, {actual}"));
        }
        Ok(())
    }

    pub fn has_blob(&self, digest: &str) -> Result<bool, MirrorError> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Writes a blob from `body`, checking size and digest on the way; a
    /// blob that does not match is deleted, never renamed into place.
    pub async fn write_blob<S, E>(
        &self,
        digest: &str,
        size: u64,
        body: S,
        mut on_chunk: impl FnMut(u64),
    ) -> Result<u64, MirrorError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>>,
        E: std::fmt::Display,
    {
        let (path, partial) = self.blob_paths(digest)?;
        let result = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| io(&partial, e))?;
            let mut hasher = Hasher::for_digest(digest)?;
            let mut written = 0u64;
            let mut body = std::pin::pin!(body);
            while let Some(chunk) = body.next().await {
                let chunk =
                    chunk.map_err(|e| MirrorError::Invalid(format!("blob {digest}: {e}")))?;
                written += chunk.len() as u64;
                if written > size {
                    return Err(MirrorError::Invalid(format!(
                        "blob {digest} is larger than its descriptor ({size} bytes)"
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| io(&partial, e))?;
                on_chunk(chunk.len() as u64);
            }
            file.flush().await.map_err(|e| io(&partial, e))?;
            let actual = hasher.finish();
            if actual != digest || written != size {
                return Err(MirrorError::DigestMismatch {
                    what: format!("blob {digest}"),
                    expected: format!("{digest} ({size} bytes)"),
                    actual: format!("{actual} ({written} bytes)"),
                });
            }
            Ok(written)
        }
        .await;
        match result {
            Ok(written) => {
                tokio::fs::rename(&partial, &path)
                    .await
                    .map_err(|e| io(&path, e))?;
                Ok(written)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                Err(e)
            }
        }
    }

    /// Stores a manifest as a blob (its bytes as served).
    pub fn write_manifest(&self, manifest: &ManifestBytes) -> Result<(), MirrorError> {
        if self.has_blob(&manifest.digest)? {
            return Ok(());
        }
        let actual = super::digest::digest_of(&manifest.bytes, Some(&manifest.digest))?;
        if actual != manifest.digest {
            return Err(MirrorError::DigestMismatch {
                what: format!("manifest {}", manifest.digest),
                expected: manifest.digest.clone(),
                actual,
            });
        }
        let (path, partial) = self.blob_paths(&manifest.digest)?;
        std::fs::write(&partial, &manifest.bytes).map_err(|e| io(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| io(&path, e))
    }

    /// A blob's place and the temporary file it is written to first (in the
    /// same directory, so the rename is atomic); the directory is created.
    fn blob_paths(&self, digest: &str) -> Result<(PathBuf, PathBuf), MirrorError> {
        let path = self.blob_path(digest)?;
        let parent = path.parent().unwrap_or(&self.dir).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| io(&parent, e))?;
        let partial = parent.join(format!(
            ".partial-{}-{}",
            std::process::id(),
            path.file_name().and_then(|n| n.to_str()).unwrap_or("blob")
        ));
        Ok((path, partial))
    }

    /// Packs the layout into `archive` (an `oci-archive:` tar): `oci-layout`,
    /// `index.json`, then every blob, each streamed from its file. Written
    /// beside and renamed into place, so a failed pack leaves no archive.
    pub fn pack(&self, archive: &Path) -> Result<(), MirrorError> {
        let partial = archive.with_extension("partial");
        let result = (|| {
            let file = std::fs::File::create(&partial).map_err(|e| io(&partial, e))?;
            let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
            let mut entries = vec!["oci-layout".to_string(), "index.json".to_string()];
            let blobs = self.dir.join("blobs");
            let mut found = Vec::new();
            for algorithm in std::fs::read_dir(&blobs).map_err(|e| io(&blobs, e))? {
                let algorithm = algorithm.map_err(|e| io(&blobs, e))?.path();
                for blob in std::fs::read_dir(&algorithm).map_err(|e| io(&algorithm, e))? {
                    let blob = blob.map_err(|e| io(&algorithm, e))?.path();
                    let name = blob.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.starts_with('.') {
                        continue; // an interrupted write
                    }
                    if let Ok(relative) = blob.strip_prefix(&self.dir) {
                        found.push(relative.to_string_lossy().into_owned());
                    }
                }
            }
            found.sort();
            entries.extend(found);
            for entry in &entries {
                let path = self.dir.join(entry);
                let file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
                let size = file.metadata().map_err(|e| io(&path, e))?.len();
                let mut header = tar::Header::new_ustar();
                header.set_size(size);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut header, entry, file)
                    .map_err(|e| io(&path, e))?;
            }
            tar.into_inner()
                .map_err(|e| io(&partial, e))?
                .into_inner()
                .map_err(|e| io(&partial, e.into_error()))?
                .sync_all()
                .map_err(|e| io(&partial, e))
        })();
        match result {
            Ok(()) => std::fs::rename(&partial, archive).map_err(|e| io(archive, e)),
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    /// Names `top` in `index.json` as `name`, replacing an earlier image of
    /// that name.
    pub fn name(&self, name: &str, top: &ManifestBytes) -> Result<(), MirrorError> {
        self.edit_index(|manifests| {
            manifests.retain(|m| m["annotations"][REF_NAME] != name);
            manifests.push(json!({
                "mediaType": top.media_type,
                "digest": top.digest,
                "size": top.bytes.len(),
                "annotations": {REF_NAME: name},
            }));
        })
    }

    /// Lists a referrer in `index.json` without a name (once), with the
    /// descriptor its subject's referrers list gives it.
    pub fn add_unnamed(&self, referrer: &Descriptor) -> Result<(), MirrorError> {
        self.edit_index(|manifests| {
            let listed = manifests.iter().any(|m| {
                m["digest"] == referrer.digest.as_str() && m["annotations"][REF_NAME].is_null()
            });
            if !listed {
                manifests.push(serde_json::to_value(referrer).unwrap_or_default());
            }
        })
    }

    /// Changes the manifests of `index.json`; the new index is written
    /// beside and renamed over the old.
    fn edit_index(&self, edit: impl FnOnce(&mut Vec<Value>)) -> Result<(), MirrorError> {
        let path = self.dir.join("index.json");
        let text = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let mut index: Value = serde_json::from_slice(&text)
            .map_err(|e| MirrorError::Invalid(format!("{}: {e}", path.display())))?;
        let manifests = index["manifests"].as_array_mut().ok_or_else(|| {
            MirrorError::Invalid(format!("{}: no manifests list", path.display()))
        })?;
        edit(manifests);
        let next = self.dir.join(".index.json.next");
        std::fs::write(&next, index.to_string()).map_err(|e| io(&next, e))?;
        std::fs::rename(&next, &path).map_err(|e| io(&path, e))
    }
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A name whose tag is one of cosign's (`…:sha256-<hex>.sig`).
fn is_cosign_name(name: &str) -> bool {
    name.rsplit_once(':')
        .is_some_and(|(_, tag)| super::referrers::parse_cosign_tag(tag).is_some())
}

/// Unpacks a tar into `into`, accepting only regular files and directories
/// with plain relative paths.
///
/// With `inner_links` (docker-archive, where `docker save` and skopeo link
/// `<id>/layer.tar` to the layer's file), a symlink whose target stays
/// inside the archive is recorded, not created: path in the archive → the
/// archive path it names. Any other link is refused.
fn extract(
    archive: &Path,
    into: &Path,
    inner_links: bool,
) -> Result<HashMap<PathBuf, PathBuf>, MirrorError> {
    let mut links = HashMap::new();
    let bad = |why: String| MirrorError::Invalid(format!("{}: {why}", archive.display()));
    std::fs::create_dir_all(into).map_err(|e| io(into, e))?;
    let file = std::fs::File::open(archive).map_err(|e| io(archive, e))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("cut short or damaged: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad path: {e}")))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_symlink() && inner_links {
            let target = entry
                .link_name()
                .map_err(|e| bad(format!("bad link: {e}")))?
                .ok_or_else(|| bad(format!("{} links nowhere", path.display())))?;
            let resolved = inside(path.parent().unwrap_or(Path::new("")), &target)
                .ok_or_else(|| bad(format!("{} links out of the archive", path.display())))?;
            links.insert(normal(&path), resolved);
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            return Err(bad(format!(
                "{} is a link or special file, which an image archive does not hold",
                path.display()
            )));
        }
        if !path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        }) {
            return Err(bad(format!("{} leaves the archive", path.display())));
        }
        // The error's own text names the scratch directory: only its kind.
        let unpacked = entry.unpack_in(into).map_err(|e| {
            bad(match e.kind() {
                // What the tar reader says when the data ends early.
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::Other => {
                    format!("cut short inside {}", path.display())
                }
                kind => format!("cannot unpack {}: {kind}", path.display()),
            })
        })?;
        if !unpacked {
            return Err(bad(format!("{} leaves the archive", path.display())));
        }
    }
    Ok(links)
}

/// The digest (in `hasher`'s algorithm) and size of a file, read in
/// 256 KiB pieces.
fn hash_file(path: &Path, mut hasher: Hasher) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok((hasher.finish(), size));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

/// An error's text for a user who never saw the layout's directory.
fn without_paths(e: &MirrorError) -> String {
    match e {
        MirrorError::DigestMismatch { actual, .. } => {
            format!("has bytes of another digest, {actual}")
        }
        other => other.to_string(),
    }
}

/// `path` without `.` components.
fn normal(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// `target`, relative to `dir` in the archive, as an archive path; `None`
/// when it is absolute or climbs out of the archive.
fn inside(dir: &Path, target: &Path) -> Option<PathBuf> {
    let mut parts: Vec<std::ffi::OsString> = normal(dir)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for c in target.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_owned()),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(parts.iter().collect())
}
