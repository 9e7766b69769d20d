//! Real registries for tests: Debian's `docker-registry` (the distribution
//! registry) on 127.0.0.1 with temporary storage, optionally behind TLS with
//! htpasswd Basic auth; synthetic images pushed through the Distribution API;
//! `skopeo` to read back what landed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

pub const USER: &str = "mirror-bot";
pub const PASSWORD: &str = "pa55-w0rd-not-for-logs";

pub fn sha256(bytes: &[u8]) -> String {
    let d = digest(&SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for large layers.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Which registry server runs.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryServer {
    /// Debian's `docker-registry` (distribution 2.8).
    #[default]
    Debian,
    /// distribution v3 (built by tests/oci/build.sh): fallback tags only,
    /// no referrers API.
    DistributionV3,
    /// go-containerregistry's registry with the referrers API (built by
    /// tests/oci/build.sh), in memory.
    Referrers,
    /// The same, answering the referrers API with 403 (as a registry that
    /// does not let this client read it).
    ReferrersRefused,
}

/// A tool that tests/oci/build.sh builds (tests/run.sh exports its directory).
pub fn oci_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("DETOUR_OCI_BIN").expect(
        "DETOUR_OCI_BIN is not set: run the tests with `bash tests/run.sh`, or export DETOUR_OCI_BIN=$(bash tests/oci/build.sh)",
    );
    Path::new(&dir).join(name)
}

#[derive(Default, Clone)]
pub struct RegistryOptions {
    pub server: RegistryServer,
    /// TLS with a throwaway CA (written by `detour certs`) and htpasswd auth.
    pub secure: bool,
    /// Bearer token auth: (realm, certificate bundle of the token signer).
    pub token: Option<(String, PathBuf)>,
    /// Log every request (to `access.log`), to count what clients fetched.
    pub access_log: bool,
}

pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub options: RegistryOptions,
}

impl Registry {
    pub fn start(options: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let mut registry = Registry {
            child: None,
            port,
            dir,
            options,
        };
        registry.write_config();
        registry.spawn();
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.crt")
    }

    fn write_config(&self) {
        let root = self.dir.path();
        std::fs::create_dir_all(root.join("storage")).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n  secret: detour-tests\n",
            !self.options.access_log,
            root.join("storage").display(),
            self.port
        );
        if self.options.secure {
            let certs = root.join("certs");
            std::fs::create_dir_all(&certs).unwrap();
            super::make_certs(&certs);
            // skopeo's --cert-dir reads *.key as a client key: CA only there.
            let trust = root.join("trust");
            std::fs::create_dir_all(&trust).unwrap();
            std::fs::copy(certs.join("ca.crt"), trust.join("ca.crt")).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.join("tls.crt").display(),
                certs.join("tls.key").display()
            ));
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(out.status.success());
            std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: detour-tests\n    path: {}\n",
                root.join("htpasswd").display()
            ));
        }
        if let Some((realm, bundle)) = &self.options.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                super::token::SERVICE,
                super::token::ISSUER,
                bundle.display()
            ));
        }
        std::fs::write(root.join("config.yml"), config).unwrap();
    }

    fn spawn(&mut self) {
        let mut command = match self.options.server {
            RegistryServer::Debian => Command::new("docker-registry"),
            RegistryServer::DistributionV3 => Command::new(oci_tool("registry-v3")),
            RegistryServer::Referrers | RegistryServer::ReferrersRefused => {
                Command::new(oci_tool("referrers-registry"))
            }
        };
        if self.options.server == RegistryServer::ReferrersRefused {
            command.arg("-refuse-referrers=403");
        }
        if matches!(
            self.options.server,
            RegistryServer::Referrers | RegistryServer::ReferrersRefused
        ) {
            command.arg("-addr").arg(self.host());
        } else {
            command.arg("serve").arg(self.dir.path().join("config.yml"));
        }
        let child = command
            .stdout(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("access.log"))
                    .unwrap(),
            )
            .stderr(std::fs::File::create(self.dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{:?} registry: {e}", self.options.server));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Requests in the access log (`access_log: true`) whose line contains
    /// every needle, e.g. `["GET ", "/blobs/sha256:…"]`.
    pub fn requests(&self, needles: &[&str]) -> usize {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .count()
    }

    /// Kills the registry (storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// An HTTP client for this registry (trusting its CA when secure).
    pub fn http(&self) -> reqwest::Client {
        let ca = self.ca();
        let cas: Vec<&Path> = if self.options.secure {
            vec![&ca]
        } else {
            vec![]
        };
        reqwest::Client::builder()
            .use_preconfigured_tls(super::tls_config(&cas))
            .build()
            .unwrap()
    }

    pub fn base(&self) -> String {
        let scheme = if self.options.secure { "https" } else { "http" };
        format!("{scheme}://{}/v2", self.host())
    }

    fn auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.options.secure {
            request.basic_auth(USER, Some(PASSWORD))
        } else {
            request
        }
    }

    /// Pushes one blob (monolithic upload).
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let http = self.http();
        let digest = sha256(bytes);
        let start = self
            .auth(http.post(format!("{}/{repo}/blobs/uploads/", self.base())))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202, "start upload");
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let mut url = reqwest::Url::parse(&self.base())
            .unwrap()
            .join(&location)
            .unwrap();
        url.query_pairs_mut().append_pair("digest", &digest);
        let done = self
            .auth(http.put(url))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            done.status(),
            201,
            "finish upload: {}",
            done.text().await.unwrap()
        );
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let response = self
            .auth(
                self.http()
                    .put(format!("{}/{repo}/manifests/{reference}", self.base())),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "push manifest: {}",
            response.text().await.unwrap()
        );
    }

    /// A manifest (by tag or digest), as JSON.
    pub async fn manifest_bytes(&self, repo: &str, reference: &str) -> Value {
        let response = self
            .auth(
                self.http()
                    .get(format!("{}/{repo}/manifests/{reference}", self.base())),
            )
            .header("accept", detour_registry::client::MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{repo}:{reference}");
        response.json().await.unwrap()
    }

    /// HTTP status of a manifest HEAD (200 present, 404 absent).
    pub async fn manifest_status(&self, repo: &str, reference: &str) -> u16 {
        self.auth(
            self.http()
                .head(format!("{}/{repo}/manifests/{reference}", self.base())),
        )
        .header("accept", detour_registry::client::MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }

    pub async fn blob_status(&self, repo: &str, digest: &str) -> u16 {
        self.auth(
            self.http()
                .head(format!("{}/{repo}/blobs/{digest}", self.base())),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
    }

    /// Pushes a single-platform image with `layers` random layers of `size`
    /// bytes; returns it. Docker schema 2 or OCI media types.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) {
        for blob in image.blobs() {
            self.push_blob(repo, blob).await;
        }
        self.push_manifest(repo, tag, image.media_type, &image.manifest)
            .await;
    }

    /// Pushes a multi-platform index of `images` (each pushed by digest).
    pub async fn push_index(&self, repo: &str, tag: &str, images: &[(&str, &Image)]) -> Vec<u8> {
        self.push_index_as(repo, tag, OCI_INDEX, images).await
    }

    /// The same with another index media type (a Docker manifest list).
    pub async fn push_index_as(
        &self,
        repo: &str,
        tag: &str,
        index_type: &str,
        images: &[(&str, &Image)],
    ) -> Vec<u8> {
        let mut entries = Vec::new();
        for (platform, image) in images {
            for blob in image.blobs() {
                self.push_blob(repo, blob).await;
            }
            self.push_manifest(repo, &image.digest(), image.media_type, &image.manifest)
                .await;
            let parts: Vec<&str> = platform.split('/').collect();
            let mut p = json!({"os": parts[0], "architecture": parts[1]});
            if let Some(v) = parts.get(2) {
                p["variant"] = json!(v);
            }
            entries.push(json!({
                "mediaType": image.media_type,
                "digest": image.digest(),
                "size": image.manifest.len(),
                "platform": p,
            }));
        }
        let index = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": entries,
        }))
        .unwrap();
        self.push_manifest(repo, tag, index_type, &index).await;
        index
    }

    /// Path of a blob's data file in the registry's filesystem storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Number of blobs stored.
    pub fn blob_count(&self) -> usize {
        let root = self.storage().join("docker/registry/v2/blobs/sha256");
        let Ok(prefixes) = std::fs::read_dir(root) else {
            return 0;
        };
        prefixes
            .flatten()
            .flat_map(|p| std::fs::read_dir(p.path()).into_iter().flatten().flatten())
            .filter(|d| d.path().join("data").exists())
            .count()
    }

    /// `skopeo` arguments to read from this registry.
    pub fn skopeo_args(&self) -> Vec<String> {
        if self.options.secure {
            vec![
                format!("--creds={USER}:{PASSWORD}"),
                format!("--cert-dir={}", self.dir.path().join("trust").display()),
            ]
        } else if self.options.token.is_some() {
            vec![
                format!("--creds={USER}:{PASSWORD}"),
                "--tls-verify=false".into(),
            ]
        } else {
            vec!["--tls-verify=false".into()]
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A synthetic image: a config blob, random layers, a manifest.
pub struct Image {
    pub media_type: &'static str,
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    pub fn new(docker: bool, layer_sizes: &[usize], seed: u64) -> Image {
        let layers: Vec<Vec<u8>> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, n)| random_bytes(*n, seed * 1000 + i as u64))
            .collect();
        Image::from_layers(docker, layers, seed)
    }

    pub fn from_layers(docker: bool, layers: Vec<Vec<u8>>, seed: u64) -> Image {
        let diff_ids = layers.iter().map(|l| sha256(l)).collect();
        Image::with_diff_ids(docker, layers, diff_ids, seed)
    }

    /// An image that a node can unpack: one gzip'd tar layer (written by
    /// `gzip`), the config's diff_id the digest of the tar, as OCI.
    pub fn unpackable(seed: u64) -> Image {
        let mut tar = tar::Builder::new(Vec::new());
        let text = format!("seed {seed}\n");
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "hello.txt", text.as_bytes())
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut gzip = Command::new("gzip")
            .args(["-n", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut gzip.stdin.take().unwrap(), &tar).unwrap();
        let layer = gzip.wait_with_output().unwrap().stdout;
        Image::with_diff_ids(false, vec![layer], vec![sha256(&tar)], seed)
    }

    /// `layers` as they are stored; `diff_ids` the digests of their
    /// uncompressed contents, as the config lists them.
    fn with_diff_ids(
        docker: bool,
        layers: Vec<Vec<u8>>,
        diff_ids: Vec<String>,
        seed: u64,
    ) -> Image {
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"seed": seed.to_string()}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let (media_type, config_type, layer_type) = if docker {
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        } else {
            (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        // Pretty-printed on purpose: a copy that re-serialised the manifest
        // would change its digest.
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": layer_type, "digest": sha256(l), "size": l.len()})).collect::<Vec<Value>>(),
        }))
        .unwrap();
        Image {
            media_type,
            config,
            layers,
            manifest,
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// `skopeo inspect --raw` of `reference`, as its sha256 digest.
pub fn skopeo_digest(registry: &Registry, reference: &str) -> String {
    let mut args = vec!["inspect".to_string(), "--raw".into()];
    args.extend(registry.skopeo_args());
    args.push(format!("docker://{}/{reference}", registry.host()));
    let out = Command::new("skopeo")
        .args(&args)
        .output()
        .expect("skopeo is installed");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    sha256(&out.stdout)
}

/// A Docker config.json with credentials for `host`.
pub fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"auths": {host: {"auth": auth}}})).unwrap(),
    )
    .unwrap();
    path
}
