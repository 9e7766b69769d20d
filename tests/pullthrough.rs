//! `detour proxy` against real upstreams: Debian's `docker-registry`
//! (plain, and behind Bearer token auth), pulled through by `skopeo` and by
//! an HTTP client, on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{
    docker_config, random_bytes, sha256, Image, Registry, RegistryOptions, DOCKER_LIST,
    DOCKER_MANIFEST, OCI_INDEX, PASSWORD, USER,
};
use common::{free_port, http_get, make_certs, BIN};

const ACCEPT: &str = detour_registry::client::MANIFEST_ACCEPT;
const S3_ACCESS: &str = "detour-test-access";
const S3_SECRET: &str = "detour-test-secret-not-for-logs";
const BUCKET: &str = "detour-cache";

/// A real S3-compatible server: versitygw over a temporary directory (its
/// posix backend: a bucket is a directory, an object a file), built by
/// tests/s3/build.sh.
struct S3Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        let binary = std::env::var("DETOUR_S3_SERVER")
            .expect("DETOUR_S3_SERVER: run the tests with bash tests/run.sh (it builds versitygw)");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args(["--access", S3_ACCESS, "--secret", S3_SECRET, "--quiet"])
            .args(["--port", &format!("127.0.0.1:{port}")])
            .args(["posix", dir.path().join("data").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("s3.log")).unwrap())
            .spawn()
            .unwrap();
        common::wait_listening(port, "versitygw", 20);
        S3Server { child, port, dir }
    }

    fn bucket_dir(&self) -> PathBuf {
        self.dir.path().join("data").join(BUCKET)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test's proxies keep their cache.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Storage {
    Local,
    S3,
}

/// The cache of a test: a directory, or a bucket on a real S3 server.
struct Cache {
    s3: Option<S3Server>,
}

impl Cache {
    fn new(storage: Storage) -> Cache {
        Cache {
            s3: (storage == Storage::S3).then(S3Server::start),
        }
    }

    fn local() -> Cache {
        Cache { s3: None }
    }

    /// The lines under `cache:` that name the backend.
    fn yaml(&self) -> String {
        match &self.s3 {
            Some(s3) => format!(
                "  s3:\n    endpoint: http://127.0.0.1:{}\n    bucket: {BUCKET}\n",
                s3.port
            ),
            None => String::new(),
        }
    }

    /// Where the cached objects are on disk (the S3 server's, for S3).
    fn root(&self, proxy_dir: &Path) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3.bucket_dir(),
            None => proxy_dir.join("cache"),
        }
    }
}

/// Runs a test once with each storage backend.
macro_rules! with_each_storage {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local_directory() {
                super::$name(super::Storage::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3_bucket() {
                super::$name(super::Storage::S3).await
            }
        }
    };
}

/// A running `detour proxy` with its own cache, certificates and config.
struct Proxy {
    child: Option<Child>,
    port: u16,
    admin: u16,
    dir: PathBuf,
    config: PathBuf,
    plain: bool,
    /// Where the cached objects are (a directory, or the S3 server's bucket).
    cache_root: PathBuf,
}

impl Proxy {
    /// `config`: the YAML after `upstreams:` and friends, written as is.
    fn start(dir: &Path, config: &str, plain: bool, cache: &Cache) -> Proxy {
        let certs = dir.join("tls");
        if !plain && !certs.join("tls.crt").exists() {
            make_certs(&certs);
            std::fs::create_dir_all(dir.join("trust")).unwrap();
            std::fs::copy(certs.join("ca.crt"), dir.join("trust/ca.crt")).unwrap();
        }
        let path = dir.join("proxy.yaml");
        std::fs::write(&path, config).unwrap();
        let mut proxy = Proxy {
            child: None,
            port: free_port(),
            admin: free_port(),
            dir: dir.to_path_buf(),
            config: path,
            plain,
            cache_root: cache.root(dir),
        };
        proxy.spawn();
        proxy
    }

    /// A proxy for `upstreams` (see [`config`]), `extra` appended to its config.
    fn serving(
        dir: &Path,
        upstreams: &[&Registry],
        cache: &Cache,
        extra: &str,
        plain: bool,
    ) -> Proxy {
        Proxy::start(dir, &config(dir, upstreams, cache, extra), plain, cache)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("proxy.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["proxy", "--config", self.config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", self.admin)])
            .args(["--cert-dir", self.dir.join("tls").to_str().unwrap()])
            .args(["--shutdown-delay", "0s", "--log-format", "json"])
            .env("DETOUR_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .stdout(Stdio::null())
            .stderr(log);
        if self.plain {
            cmd.arg("--plain-http");
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(self.admin, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
            assert!(
                Instant::now() < deadline,
                "proxy not ready: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    /// Waits until `n` blobs were stored in all (a client has its last byte
    /// once the digest is checked; the blob is synced and stored just after).
    fn wait_stored(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.logs().matches("blob fetched").count() < n {
            assert!(
                Instant::now() < deadline,
                "{n} blobs not stored: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!("{scheme}://{}{path}", self.host())
    }

    fn http(&self) -> reqwest::Client {
        if self.plain {
            return http_client();
        }
        common::client_trusting(&[&self.dir.join("tls/ca.crt")])
    }

    fn skopeo_tls(&self) -> String {
        if self.plain {
            "--tls-verify=false".into()
        } else {
            format!("--cert-dir={}", self.dir.join("trust").display())
        }
    }

    fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        common::kube::metric_value(&self.metrics(), name, labels)
    }

    /// Cached blob files.
    fn cached_blobs(&self) -> Vec<String> {
        let dir = self.cache_root.join("blobs/sha256");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return vec![];
        };
        entries
            .flatten()
            .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
            .collect()
    }

    fn cache_bytes(&self) -> u64 {
        let mut total = 0;
        for kind in ["blobs", "manifests"] {
            let Ok(algorithms) = std::fs::read_dir(self.cache_root.join(kind)) else {
                continue;
            };
            for algorithm in algorithms.flatten() {
                for file in std::fs::read_dir(algorithm.path()).unwrap().flatten() {
                    total += file.metadata().unwrap().len();
                }
            }
        }
        total
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A plain upstream registry that logs every request (to count what the
/// proxy fetched).
fn logged_registry() -> Registry {
    Registry::start(RegistryOptions {
        access_log: true,
        ..Default::default()
    })
}

/// How skopeo names an upstream through the proxy: `host:port` is not a
/// path component, so each test upstream gets the name `up<port>`.
fn name(upstream: &Registry) -> String {
    format!("up{}", upstream.port)
}

/// A proxy config for `upstreams` (plain-HTTP registries on loopback).
fn config(dir: &Path, upstreams: &[&Registry], cache: &Cache, extra: &str) -> String {
    let mut text = String::from("upstreams:\n");
    for u in upstreams {
        text.push_str(&format!(
            "  - host: \"{}\"\n    name: {}\n",
            u.host(),
            name(u)
        ));
    }
    text.push_str(
        "registry:\n  allowLoopback: true\n  retries: 0\n  requestTimeout: 5s\n  plainHttp:\n",
    );
    for u in upstreams {
        text.push_str(&format!("    - \"{}\"\n", u.host()));
    }
    text.push_str(&format!(
        "cache:\n  directory: {}\n",
        dir.join("cache").display()
    ));
    text.push_str(&cache.yaml());
    text.push_str(extra);
    text
}

/// A plain-HTTP client (the process's crypto provider installed first).
fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn skopeo(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `skopeo inspect --raw` through the proxy: the manifest's digest.
fn inspect_through(proxy: &Proxy, reference: &str) -> String {
    let tls = proxy.skopeo_tls();
    let target = format!("docker://{}/{reference}", proxy.host());
    let (ok, stdout, stderr) = skopeo(&["inspect", "--raw", &tls, &target]);
    assert!(
        ok,
        "skopeo inspect {target}: {stderr}\nproxy log:\n{}",
        proxy.logs()
    );
    sha256(&stdout)
}

/// `skopeo copy --all` through the proxy into a directory (skopeo verifies
/// every blob's digest as it writes).
fn copy_through(proxy: &Proxy, reference: &str, out: &Path) {
    let tls = proxy.skopeo_tls();
    let source = format!("docker://{}/{reference}", proxy.host());
    let dest = format!("dir:{}", out.display());
    let _ = std::fs::remove_dir_all(out);
    let (ok, _, stderr) = skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=true",
        &tls.replace("--", "--src-"),
        &source,
        &dest,
    ]);
    assert!(
        ok,
        "skopeo copy {source}: {stderr}\nproxy log:\n{}",
        proxy.logs()
    );
}

with_each_storage!(skopeo_pulls_every_manifest_kind_through_the_proxy_with_upstream_digests);

async fn skopeo_pulls_every_manifest_kind_through_the_proxy_with_upstream_digests(
    storage: Storage,
) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let docker = Image::new(true, &[200_000, 50_000], 1);
    upstream.push_image("team/app", "v1", &docker).await;
    let amd = Image::new(false, &[120_000], 2);
    let arm = Image::new(false, &[130_000], 3);
    upstream
        .push_index(
            "team/multi",
            "oci",
            &[("linux/amd64", &amd), ("linux/arm64", &arm)],
        )
        .await;
    let d_amd = Image::new(true, &[90_000], 4);
    let d_arm = Image::new(true, &[80_000], 5);
    upstream
        .push_index_as(
            "team/multi",
            "list",
            DOCKER_LIST,
            &[("linux/amd64", &d_amd), ("linux/arm64/v8", &d_arm)],
        )
        .await;
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", false);
    let host = name(&upstream);

    for reference in ["team/app:v1", "team/multi:oci", "team/multi:list"] {
        let direct = common::registry::skopeo_digest(&upstream, reference);
        let through = inspect_through(&proxy, &format!("{host}/{reference}"));
        assert_eq!(
            through, direct,
            "{reference}: the proxy serves the upstream's bytes"
        );
        copy_through(
            &proxy,
            &format!("{host}/{reference}"),
            &dir.path().join("out"),
        );
    }
    // By digest too, and a child manifest of an index.
    let through = inspect_through(&proxy, &format!("{host}/team/multi@{}", arm.digest()));
    assert_eq!(through, arm.digest());

    // Every blob crossed from the upstream once; a second copy is all hits.
    let blob_gets = upstream.requests(&["\"GET /v2/team/", "/blobs/sha256:"]);
    assert_eq!(
        blob_gets,
        2 + 1 + 2 + 2 + 2 + 2,
        "config + layers of every image"
    );
    let fetched = proxy.metric("detour_proxy_upstream_fetches_total", &[("kind", "blob")]);
    copy_through(
        &proxy,
        &format!("{host}/team/multi:oci"),
        &dir.path().join("again"),
    );
    copy_through(
        &proxy,
        &format!("{host}/team/app:v1"),
        &dir.path().join("again"),
    );
    assert_eq!(
        upstream.requests(&["\"GET /v2/team/", "/blobs/sha256:"]),
        blob_gets
    );
    assert_eq!(
        proxy.metric("detour_proxy_upstream_fetches_total", &[("kind", "blob")]),
        fetched
    );
    assert!(
        proxy.metric(
            "detour_proxy_requests_total",
            &[("kind", "blob"), ("result", "hit")]
        ) >= 5.0
    );
    let layer = sha256(&docker.layers[0]);
    assert!(proxy.cached_blobs().contains(&layer));
    assert!(
        proxy.logs().contains("blob fetched"),
        "one log line per upstream fetch"
    );

    // Tag lists are passed through.
    let tags: serde_json::Value = proxy
        .http()
        .get(proxy.url(&format!("/v2/{host}/team/multi/tags/list")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["list", "oci"]);

    // HEAD and Range, as containerd and resuming clients ask.
    let http = proxy.http();
    let uncached = sha256(&d_arm.layers[0]);
    let head = http
        .head(proxy.url(&format!("/v2/{host}/team/multi/blobs/{uncached}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        "80000",
        "the upstream's size"
    );
    let blob_url = proxy.url(&format!("/v2/{host}/team/app/blobs/{layer}"));
    let head = http.head(&blob_url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "200000");
    assert_eq!(head.headers()["docker-content-digest"], layer.as_str());
    let part = http
        .get(&blob_url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/200000");
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &docker.layers[0][100..200]
    );
    let beyond = http
        .get(&blob_url)
        .header("range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    let manifest = http
        .head(proxy.url(&format!("/v2/{host}/team/app/manifests/v1")))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        manifest.headers()["docker-content-digest"],
        docker.digest().as_str()
    );
    assert_eq!(manifest.headers()["content-type"], DOCKER_MANIFEST);
    assert_eq!(
        manifest.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    // Missing things are 404 with the Distribution error codes.
    let missing = http
        .get(proxy.url(&format!("/v2/{host}/team/app/manifests/nope")))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("MANIFEST_UNKNOWN"));
    let missing = http
        .get(proxy.url(&format!(
            "/v2/{host}/team/app/blobs/sha256:{}",
            "0".repeat(64)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("BLOB_UNKNOWN"));
    let _ = OCI_INDEX;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_behind_token_auth_is_pulled_with_configured_credentials() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let tokens = common::token::TokenService::start(dir.path(), USER, PASSWORD).await;
    let upstream = Registry::start(RegistryOptions {
        token: Some((tokens.realm.clone(), tokens.cert.clone())),
        ..Default::default()
    });
    // Pushed with a token of its own (the harness's client answers Basic only,
    // so push through detour mirror from a plain registry).
    let source = Registry::start(RegistryOptions::default());
    let image = Image::new(false, &[150_000, 10_000], 7);
    source.push_image("app", "v1", &image).await;
    let creds = docker_config(dir.path(), &upstream.host(), USER, PASSWORD);
    let out = Command::new(BIN)
        .args(["mirror", &format!("{}/app:v1", source.host())])
        .args(["--to", &format!("{}/lib/app:v1", upstream.host())])
        .args([
            "--plain-http",
            &source.host(),
            "--plain-http",
            &upstream.host(),
        ])
        .args([
            "--credentials",
            creds.to_str().unwrap(),
            "--allow-loopback",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let extra = format!("  credentials:\n    - {}\n", creds.display());
    let text = config(dir.path(), &[&upstream], &cache, "")
        .replace("registry:\n", &format!("registry:\n{extra}"));
    let proxy = Proxy::start(dir.path(), &text, false, &cache);
    let reference = format!("{}/lib/app:v1", name(&upstream));
    // Anonymous client; the proxy answers the upstream's challenge.
    assert_eq!(inspect_through(&proxy, &reference), image.digest());
    copy_through(&proxy, &reference, &dir.path().join("out"));
    assert!(tokens.issued() >= 1);
    assert!(!proxy.logs().contains(PASSWORD));
    // Without credentials the upstream refuses, and the client is told.
    let dir2 = tempfile::tempdir().unwrap();
    let anonymous = Proxy::serving(dir2.path(), &[&upstream], &cache, "", false);
    let response = anonymous
        .http()
        .get(anonymous.url(&format!("/v2/{}/lib/app/manifests/v1", name(&upstream))))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "{}", anonymous.logs());
    assert!(response.text().await.unwrap().contains("authentication"));
}

with_each_storage!(a_cached_tag_is_served_stale_while_the_upstream_is_down);

async fn a_cached_tag_is_served_stale_while_the_upstream_is_down(storage: Storage) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let mut upstream = Registry::start(RegistryOptions::default());
    let image = Image::new(true, &[60_000], 8);
    upstream.push_image("app", "v1", &image).await;
    let proxy = Proxy::serving(
        dir.path(),
        &[&upstream],
        &cache,
        "  tagTtl: 1s\n  serveStale: 1h\n",
        false,
    );
    let reference = format!("{}/app:v1", name(&upstream));
    copy_through(&proxy, &reference, &dir.path().join("first"));
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Past its TTL, the upstream unreachable: still pulls, whole.
    assert_eq!(inspect_through(&proxy, &reference), image.digest());
    copy_through(&proxy, &reference, &dir.path().join("second"));
    let response = proxy
        .http()
        .get(proxy.url(&format!("/v2/{}/app/manifests/v1", name(&upstream))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["warning"]
        .to_str()
        .unwrap()
        .contains("Stale"));
    let stale = proxy.metric("detour_proxy_stale_served_total", &[]);
    assert!(stale >= 3.0, "stale serves counted: {stale}");
    assert!(proxy.metric("detour_proxy_upstream_errors_total", &[]) >= 3.0);
    // A tag never cached is an error, not a guess.
    let response = proxy
        .http()
        .get(proxy.url(&format!("/v2/{}/app/manifests/v2", name(&upstream))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    // Back up: fresh again, no warning.
    upstream.restart();
    let response = proxy
        .http()
        .get(proxy.url(&format!("/v2/{}/app/manifests/v1", name(&upstream))))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("warning").is_none());
}

with_each_storage!(a_corrupt_upstream_blob_fails_the_client_and_is_never_cached);

async fn a_corrupt_upstream_blob_fails_the_client_and_is_never_cached(storage: Storage) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let image = Image::new(false, &[700_000], 9);
    upstream.push_image("app", "v1", &image).await;
    let layer = sha256(&image.layers[0]);
    // Same length, other bytes: only the digest can tell.
    let file = upstream.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[350_000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", true);
    let url = proxy.url(&format!("/v2/{}/app/blobs/{layer}", name(&upstream)));
    for attempt in 0..2 {
        // The fill may fail before the answer starts (the whole blob came
        // and was checked before this request looked): then a 502, and
        // never a 200 with a whole body.
        let outcome = match http_client().get(&url).send().await {
            Ok(response) if response.status() == 200 => response
                .bytes()
                .await
                .map(|b| b.len())
                .map_err(|e| e.to_string()),
            Ok(response) if response.status() == 502 => Err("502 before any byte".into()),
            Ok(response) => panic!("status {} before any byte", response.status()),
            Err(e) => Err(e.to_string()),
        };
        assert!(
            outcome.is_err(),
            "attempt {attempt}: the body must fail, got {outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(proxy.cached_blobs().is_empty(), "nothing cached");
    }
    // Each attempt went to the upstream again: a bad blob is not remembered as good.
    assert_eq!(upstream.requests(&["\"GET /v2/app/blobs/", &layer]), 2);
    let tls = proxy.skopeo_tls();
    let (ok, _, stderr) = skopeo(&[
        "copy",
        &tls.replace("--", "--src-"),
        &format!("docker://{}/{}/app:v1", proxy.host(), name(&upstream)),
        &format!("dir:{}", dir.path().join("out").display()),
    ]);
    assert!(!ok, "skopeo must fail on the corrupt layer");
    // A short body when the check failed mid-stream, a 502 when it failed
    // before the answer started: either way the layer is refused.
    assert!(
        stderr.contains("EOF") || stderr.contains("digest") || stderr.contains("502"),
        "{stderr}"
    );
    assert!(proxy.logs().contains("digest mismatch"), "{}", proxy.logs());
    assert!(proxy.cached_blobs().iter().all(|d| *d != layer));
}

with_each_storage!(fifty_clients_of_one_uncached_blob_make_one_upstream_fetch);

async fn fifty_clients_of_one_uncached_blob_make_one_upstream_fetch(storage: Storage) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let blob = random_bytes(256 << 20, 42);
    let digest = upstream.push_blob("big", &blob).await;
    drop(blob);
    let proxy = Proxy::serving(
        dir.path(),
        &[&upstream],
        &cache,
        "clients:\n  maxRequestsPerClient: 100\n",
        true,
    );
    let url = proxy.url(&format!("/v2/{}/big/blobs/{digest}", name(&upstream)));
    let client = http_client();
    let mut pulls = Vec::new();
    for _ in 0..50 {
        let (client, url) = (client.clone(), url.clone());
        pulls.push(tokio::spawn(async move {
            let mut response = client.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut hasher = detour_registry::digest::Hasher::sha256();
            let mut length = 0u64;
            while let Some(chunk) = response.chunk().await.unwrap() {
                length += chunk.len() as u64;
                hasher.update(&chunk);
            }
            (length, hasher.finish())
        }));
    }
    for pull in pulls {
        let (length, got) = pull.await.unwrap();
        assert_eq!((length, got.as_str()), (256 << 20, digest.as_str()));
    }
    assert_eq!(
        upstream.requests(&["\"GET /v2/big/blobs/", &digest]),
        1,
        "one upstream fetch"
    );
    assert_eq!(
        proxy.metric("detour_proxy_upstream_fetches_total", &[("kind", "blob")]),
        1.0
    );
    assert_eq!(proxy.cached_blobs(), [digest]);
}

with_each_storage!(a_restarted_proxy_serves_its_warm_cache_without_upstream_blob_traffic);

async fn a_restarted_proxy_serves_its_warm_cache_without_upstream_blob_traffic(storage: Storage) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let image = Image::new(true, &[300_000, 100_000], 10);
    upstream.push_image("app", "v1", &image).await;
    let mut proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", false);
    let reference = format!("{}/app:v1", name(&upstream));
    copy_through(&proxy, &reference, &dir.path().join("cold"));
    let blob_gets = upstream.requests(&["\"GET /v2/app/blobs/"]);
    assert_eq!(blob_gets, 3);
    proxy.wait_stored(3);
    // A file left half-written in tmp/ by a crash is dropped at start.
    std::fs::write(dir.path().join("cache/tmp/crashed"), b"partial").unwrap();
    proxy.restart();
    assert!(!dir.path().join("cache/tmp/crashed").exists());
    copy_through(&proxy, &reference, &dir.path().join("warm"));
    assert_eq!(
        upstream.requests(&["\"GET /v2/app/blobs/"]),
        blob_gets,
        "no upstream blob traffic"
    );
    assert_eq!(
        proxy.metric("detour_proxy_upstream_fetches_total", &[("kind", "blob")]),
        0.0
    );
    assert_eq!(
        proxy.metric(
            "detour_proxy_requests_total",
            &[("kind", "blob"), ("result", "hit")]
        ),
        3.0
    );
    let cache_bytes = proxy.metric("detour_proxy_cache_bytes", &[]);
    assert_eq!(cache_bytes as u64, proxy.cache_bytes());
}

with_each_storage!(eviction_keeps_the_cache_under_its_limit_least_recently_used_first);

async fn eviction_keeps_the_cache_under_its_limit_least_recently_used_first(storage: Storage) {
    let cache = Cache::new(storage);
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start(RegistryOptions::default());
    let blobs: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(400_000, 100 + i)).collect();
    let mut digests = Vec::new();
    for blob in &blobs {
        digests.push(upstream.push_blob("app", blob).await);
    }
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "  maxSize: 1MiB\n", true);
    let get = |digest: &str| {
        let url = proxy.url(&format!("/v2/{}/app/blobs/{digest}", name(&upstream)));
        async move {
            let response = http_client().get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        }
    };
    // Each blob stored before the next use, so that the order of uses is known.
    let stored = |n: usize| proxy.wait_stored(n);
    assert_eq!(get(&digests[0]).await.as_ref(), blobs[0].as_slice());
    stored(1);
    assert_eq!(get(&digests[1]).await.as_ref(), blobs[1].as_slice());
    stored(2);
    // Use the first again: the second is now the least recently used.
    get(&digests[0]).await;
    assert_eq!(get(&digests[2]).await.as_ref(), blobs[2].as_slice());
    stored(3);
    let cached = proxy.cached_blobs();
    assert!(
        proxy.cache_bytes() <= 1 << 20,
        "{} bytes cached",
        proxy.cache_bytes()
    );
    assert!(
        cached.contains(&digests[0]) && cached.contains(&digests[2]),
        "{cached:?}"
    );
    assert!(!cached.contains(&digests[1]), "least recently used evicted");
    assert_eq!(get(&digests[3]).await.as_ref(), blobs[3].as_slice());
    stored(4);
    assert!(proxy.cache_bytes() <= 1 << 20);
    assert!(proxy.metric("detour_proxy_evictions_total", &[]) >= 2.0);
    // Evicted blobs are fetched again when asked for.
    assert_eq!(get(&digests[1]).await.as_ref(), blobs[1].as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_and_containerd_ns_route_to_their_upstreams() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let a = Registry::start(RegistryOptions::default());
    let b = Registry::start(RegistryOptions::default());
    let image_a = Image::new(true, &[10_000], 11);
    let image_b = Image::new(true, &[10_000], 12);
    a.push_image("library/app", "v1", &image_a).await;
    b.push_image("library/app", "v1", &image_b).await;
    let mut text = config(dir.path(), &[&a, &b], &cache, "");
    text = text.replacen(
        &format!("  - host: \"{}\"\n", a.host()),
        &format!(
            "  - host: \"{}\"\n    hostNames: [a.mirror.test]\n",
            a.host()
        ),
        1,
    );
    let proxy = Proxy::start(dir.path(), &text, true, &cache);
    let addr: std::net::SocketAddr = proxy.host().parse().unwrap();
    let _ = http_client();
    let http = reqwest::Client::builder()
        .resolve("a.mirror.test", addr)
        .build()
        .unwrap();
    let digest_of = |response: reqwest::Response| {
        assert_eq!(response.status(), 200);
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let by_host = http
        .get(format!(
            "http://a.mirror.test:{}/v2/library/app/manifests/v1",
            addr.port()
        ))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(digest_of(by_host), image_a.digest());
    let by_ns = http
        .get(proxy.url(&format!("/v2/library/app/manifests/v1?ns={}", b.host())))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(digest_of(by_ns), image_b.digest());
    let by_path = http
        .get(proxy.url(&format!("/v2/{}/library/app/manifests/v1", name(&b))))
        .header("accept", ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(digest_of(by_path), image_b.digest());
    // skopeo by host name is not possible without DNS; by path it is.
    assert_eq!(
        inspect_through(&proxy, &format!("{}/library/app:v1", name(&a))),
        image_a.digest()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_unlisted_upstreams_guarded_addresses_path_escapes_and_pushes() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let other = logged_registry();
    let image = Image::new(true, &[10_000], 13);
    other.push_image("app", "v1", &image).await;
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", true);
    let pushed = other.requests(&["/v2/app"]);
    let http = http_client();
    let status = |path: String| {
        let (http, url) = (http.clone(), proxy.url(&path));
        async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // Not on the allow-list: refused without a request to it.
    let (code, body) = status(format!("/v2/{}/app/manifests/v1", other.host())).await;
    assert_eq!(code, 404);
    assert!(body.contains("not an upstream this proxy serves"), "{body}");
    assert_eq!(other.requests(&["/v2/app"]), pushed, "nothing asked of it");
    for path in [
        "/v2/169.254.169.254/latest/meta-data/manifests/x".to_string(),
        "/v2/quay.io/coreos/etcd/manifests/v3".to_string(),
    ] {
        assert_eq!(status(path).await.0, 404);
    }
    // Escaping the repository grammar.
    for path in [
        format!("/v2/{}/../../etc/passwd/manifests/x", name(&upstream)),
        format!("/v2/{}/app/manifests/..%2F..%2Fx", name(&upstream)),
        format!("/v2/{}/app/blobs/sha256:..%2f..%2fetc", name(&upstream)),
    ] {
        let (code, body) = status(path.clone()).await;
        assert!(code == 400 || code == 404, "{path}: {code} {body}");
    }
    assert!(!dir.path().join("etc").exists());
    // Pushes and deletes are not for a pull-through cache.
    let push = http
        .post(proxy.url(&format!("/v2/{}/app/blobs/uploads/", name(&upstream))))
        .send()
        .await
        .unwrap();
    assert_eq!(push.status(), 405);
    assert!(push.text().await.unwrap().contains("UNSUPPORTED"));
    let delete = http
        .delete(proxy.url(&format!("/v2/{}/app/manifests/v1", name(&upstream))))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(upstream.requests(&["/v2/app"]), 0);
    assert_eq!(
        proxy.metric(
            "detour_proxy_refused_requests_total",
            &[("reason", "unsupported")]
        ),
        2.0
    );

    // Configs naming a guarded address, or nothing, are refused at start.
    for (upstreams, allow_loopback, needle) in [
        ("  - host: 169.254.169.254\n", true, "metadata"),
        (
            "  - host: \"127.0.0.1:5000\"\n",
            false,
            "loopback address (set registry.allowLoopback to permit it)",
        ),
        ("  - host: \"[::1]:5000\"\n", false, "loopback"),
        ("  - host: \"a.example/b\"\n", true, "not a registry"),
        (
            "  - host: docker.io\n  - host: index.docker.io\n",
            true,
            "twice",
        ),
        ("  []\n", true, "no upstreams"),
    ] {
        let bad = dir.path().join("bad.yaml");
        let text = format!("upstreams:\n{upstreams}registry:\n  allowLoopback: {allow_loopback}\n");
        std::fs::write(&bad, text.replace("upstreams:\n  []", "upstreams: []")).unwrap();
        let out = Command::new(BIN)
            .args(["proxy", "--plain-http", "--config", bad.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{upstreams}: {stderr}");
        assert!(stderr.contains(needle), "{upstreams}: {stderr}");
    }
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "upstreams:\n  - host: quay.io\ncache:\n  maxsize: 1GiB\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["proxy", "--plain-http", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `maxsize`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_guards_pulls_and_the_client_limit_answers_429() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start(RegistryOptions::default());
    let image = Image::new(true, &[2_000_000], 14);
    upstream.push_image("app", "v1", &image).await;
    let out = Command::new("htpasswd")
        .args(["-Bbn", "puller", "pull-pass"])
        .output()
        .expect("htpasswd (apache2-utils)");
    std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
    let extra = format!(
        "clients:\n  htpasswd: {}\n  maxRequestsPerClient: 1\n",
        dir.path().join("htpasswd").display()
    );
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, &extra, false);
    let http = proxy.http();
    let url = proxy.url(&format!("/v2/{}/app/manifests/v1", name(&upstream)));
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    let wrong = http
        .get(&url)
        .basic_auth("puller", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // The configured user's GET of a proxy URL.
    let pull = |url: &str| http.get(url).basic_auth("puller", Some("pull-pass"));
    let ok = pull(&url).header("accept", ACCEPT).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let tls = proxy.skopeo_tls();
    let (ok, _, stderr) = skopeo(&[
        "inspect",
        "--raw",
        "--creds=puller:pull-pass",
        &tls,
        &format!("docker://{}/{}/app:v1", proxy.host(), name(&upstream)),
    ]);
    assert!(ok, "{stderr}");
    // One request in flight per client: a blob body being read holds it
    // (32 MiB: more than the socket buffers hold, so the body is still
    // being sent while this client does not read it).
    let big = random_bytes(32 << 20, 99);
    let layer = upstream.push_blob("app", &big).await;
    let blob = pull(&proxy.url(&format!("/v2/{}/app/blobs/{layer}", name(&upstream))))
        .send()
        .await
        .unwrap();
    assert_eq!(blob.status(), 200);
    let second = pull(&url).send().await.unwrap();
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(blob.bytes().await.unwrap().as_ref(), big.as_slice());
    // The server lets go of the slot when it has dropped the sent body,
    // a moment after the client read the last byte (longer on a busy machine).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let third = pull(&url).header("accept", ACCEPT).send().await.unwrap();
        if third.status() == 200 {
            break;
        }
        assert_eq!(third.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the slot is free once the body was sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn containerd_config_writes_hosts_toml_for_each_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "upstreams:\n  - host: docker.io\n  - host: registry.k8s.io\n  - host: \"registry.local:5000\"\nregistry:\n  plainHttp: [\"registry.local:5000\"]\n",
    )
    .unwrap();
    let out_dir = dir.path().join("certs.d");
    let out = common::detour(&[
        "containerd-config",
        "--config",
        config.to_str().unwrap(),
        "--mirror",
        "https://mirror.example.com:5443",
        "--ca",
        "/etc/detour/ca.crt",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let hub = std::fs::read_to_string(out_dir.join("docker.io/hosts.toml")).unwrap();
    assert!(
        hub.contains("server = \"https://registry-1.docker.io\""),
        "{hub}"
    );
    assert!(
        hub.contains("[host.\"https://mirror.example.com:5443\"]"),
        "{hub}"
    );
    let local = std::fs::read_to_string(out_dir.join("registry.local:5000/hosts.toml")).unwrap();
    assert!(
        local.contains("server = \"http://registry.local:5000\""),
        "{local}"
    );
    let k8s = std::fs::read_to_string(out_dir.join("registry.k8s.io/hosts.toml")).unwrap();
    assert!(k8s.contains("ca = \"/etc/detour/ca.crt\""), "{k8s}");
    // A mirror URL with a path would break containerd's /v2/ join.
    let out = Command::new(BIN)
        .args(["containerd-config", "--config", config.to_str().unwrap()])
        .args([
            "--mirror",
            "https://mirror.example.com/v2",
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no path"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_share_one_bucket() {
    let cache = Cache::new(Storage::S3);
    let upstream = logged_registry();
    let image = Image::new(false, &[400_000, 300_000], 15);
    upstream.push_image("app", "v1", &image).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proxy::serving(dir_a.path(), &[&upstream], &cache, "", false);
    let b = Proxy::serving(dir_b.path(), &[&upstream], &cache, "", false);
    let reference = format!("{}/app:v1", name(&upstream));
    copy_through(&a, &reference, &dir_a.path().join("out"));
    a.wait_stored(3);
    let requests = upstream.requests(&["\"GET /v2/app/"]);
    assert_eq!(upstream.requests(&["\"GET /v2/app/blobs/"]), 3);
    // The other replica finds blobs, manifest and tag in the bucket.
    copy_through(&b, &reference, &dir_b.path().join("out"));
    assert_eq!(
        upstream.requests(&["\"GET /v2/app/"]),
        requests,
        "nothing fetched twice"
    );
    assert_eq!(b.metric("detour_proxy_upstream_fetches_total", &[]), 0.0);
    assert_eq!(
        b.metric(
            "detour_proxy_requests_total",
            &[("kind", "blob"), ("result", "hit")]
        ),
        3.0
    );
    // The objects are in the bucket, not in either proxy's directory.
    assert_eq!(a.cached_blobs().len(), 3);
    assert!(!dir_a.path().join("cache/blobs").exists());
    assert!(!dir_b.path().join("cache/blobs").exists());
    assert!(!a.logs().contains(S3_SECRET) && !b.logs().contains(S3_SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_certificate_is_reloaded_when_its_files_change() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let upstream = Registry::start(RegistryOptions::default());
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", false);
    let tls = dir.path().join("tls");
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    let first = common::leaf_of(&read(&tls.join("tls.crt")));
    assert_eq!(
        common::served_leaf(proxy.port, &read(&tls.join("ca.crt"))).await,
        Some(first)
    );
    let next = dir.path().join("next");
    make_certs(&next);
    std::fs::copy(next.join("tls.key"), tls.join("tls.key")).unwrap();
    std::fs::copy(next.join("tls.crt"), tls.join("tls.crt")).unwrap();
    let wanted = common::leaf_of(&read(&next.join("tls.crt")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::served_leaf(proxy.port, &read(&next.join("ca.crt"))).await != Some(wanted.clone())
    {
        assert!(
            Instant::now() < deadline,
            "new certificate not served: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Log lines are written in batches by a thread of their own, so the line
    // can follow the swap it reports by a moment.
    while !proxy.logs().contains("serving certificate reloaded") {
        assert!(
            Instant::now() < deadline,
            "reload not logged: {}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_does_not_abort_the_fill_and_manifest_lookups_are_shared() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let image = Image::new(true, &[64 << 20], 16);
    upstream.push_image("app", "v1", &image).await;
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", true);
    let http = http_client();
    // Twenty clients ask for the same uncached tag at once: one lookup.
    let url = proxy.url(&format!("/v2/{}/app/manifests/v1", name(&upstream)));
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let response = http
                    .get(&url)
                    .header("accept", ACCEPT)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.headers()["docker-content-digest"]
                    .to_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    for lookup in lookups {
        assert_eq!(lookup.await.unwrap(), image.digest());
    }
    assert_eq!(upstream.requests(&["\"HEAD /v2/app/manifests/v1"]), 1);
    assert_eq!(upstream.requests(&["\"GET /v2/app/manifests/"]), 1);

    // A client reads a little of a 64 MiB layer and hangs up.
    let layer = sha256(&image.layers[0]);
    let blob_url = proxy.url(&format!("/v2/{}/app/blobs/{layer}", name(&upstream)));
    let mut response = http.get(&blob_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(response);
    // The fill goes on to the end, and the blob is cached whole.
    proxy.wait_stored(1);
    assert!(proxy.cached_blobs().contains(&layer));
    let again = http
        .get(&blob_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha256(&again), layer);
    assert_eq!(upstream.requests(&["\"GET /v2/app/blobs/", &layer]), 1);
}

/// containerd pulls as a node does, through the proxy, with the
/// `hosts.toml` files that `detour containerd-config` writes: an upstream
/// with a port (containerd asks `?ns=127.0.0.1%3A<port>`), one named
/// `localhost:<port>`, one behind TLS with a private CA and a password,
/// and then with the upstreams stopped (served from the cache). The
/// upstreams' access logs prove each pull went through the proxy: containerd
/// never reached them itself (its fallback `server` would have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_proxy_with_the_hosts_toml_detour_writes() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let mut by_address = logged_registry();
    let mut by_name = logged_registry();
    let mut secure = Registry::start(RegistryOptions {
        secure: true,
        access_log: true,
        ..Default::default()
    });
    let images = [
        Image::unpackable(1),
        Image::unpackable(2),
        Image::unpackable(3),
    ];
    by_address.push_image("team/app", "v1", &images[0]).await;
    by_name.push_image("app", "v1", &images[1]).await;
    secure.push_image("app", "v1", &images[2]).await;
    let named = format!("localhost:{}", by_name.port);
    let creds = docker_config(dir.path(), &secure.host(), USER, PASSWORD);
    let text = format!(
        "upstreams:\n  - host: \"{a}\"\n  - host: \"{named}\"\n  - host: \"{s}\"\n\
         registry:\n  allowLoopback: true\n  retries: 0\n  requestTimeout: 5s\n\
         \x20 plainHttp: [\"{a}\", \"{named}\"]\n  caFiles: [\"{ca}\"]\n  credentials: [\"{creds}\"]\n\
         cache:\n  directory: {cache}\n",
        a = by_address.host(),
        s = secure.host(),
        ca = secure.ca().display(),
        creds = creds.display(),
        cache = dir.path().join("cache").display(),
    );
    let proxy = Proxy::start(dir.path(), &text, false, &cache);
    let hosts = dir.path().join("hosts");
    common::detour(&[
        "containerd-config",
        "--config",
        proxy.config.to_str().unwrap(),
        "--mirror",
        &proxy.url(""),
        "--ca",
        dir.path().join("tls/ca.crt").to_str().unwrap(),
        "--out",
        hosts.to_str().unwrap(),
    ]);

    let pulls = [
        format!("{}/team/app:v1", by_address.host()),
        format!("{named}/app:v1"),
        format!("{}/app:v1", secure.host()),
    ];
    let node = common::containerd::Containerd::start();
    for (image, expected) in pulls.iter().zip(&images) {
        let out = node.pull(&hosts, image);
        assert!(
            out.status.success(),
            "{image}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            proxy.logs()
        );
        let listed = node.ctr(&["images", "ls"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(image.as_str()) && l.contains(&expected.digest())),
            "{listed}"
        );
    }
    // Every upstream request came from the proxy's client, none from
    // containerd's fallback to the upstream itself.
    for upstream in [&by_address, &by_name, &secure] {
        assert!(upstream.requests(&["GET ", "detour/"]) >= 1);
        assert_eq!(upstream.requests(&["containerd"]), 0, "{}", upstream.host());
    }
    assert!(proxy.metric("detour_proxy_requests_total", &[("kind", "manifest")]) >= 3.0);

    // The upstreams go down; a new node pulls the same images from the cache.
    by_address.stop();
    by_name.stop();
    secure.stop();
    let fresh = common::containerd::Containerd::start();
    for image in &pulls {
        let out = fresh.pull(&hosts, image);
        assert!(
            out.status.success(),
            "{image} with the upstream down: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            proxy.logs()
        );
    }
}

/// Started as a user first starts it: without certificates the error names
/// every way out (`--cert-dir`, `--plain-http`, `--dev`); `--dev` makes
/// its throwaway certificates outside the working directory.
#[test]
fn the_proxy_without_certificates_says_what_to_do_and_dev_leaves_the_working_directory_alone() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("proxy.yaml");
    std::fs::write(&config, "upstreams:\n  - host: quay.io\n").unwrap();
    let (port, admin) = (free_port(), free_port());
    let out = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["proxy", "--config", config.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env_remove("DETOUR_CERT_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("detour: no serving certificate in certs"),
        "{stderr}"
    );
    for way in ["--cert-dir", "--plain-http", "--dev", "detour certs"] {
        assert!(line.contains(way), "{way}: {stderr}");
    }

    let mut dev = Command::new(BIN)
        .current_dir(cwd.path())
        .args(["proxy", "--dev"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env_remove("DETOUR_CERT_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(admin, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "proxy --dev not ready");
        std::thread::sleep(Duration::from_millis(30));
    }
    let _ = dev.kill();
    let _ = dev.wait();
    let left: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["proxy.yaml".to_string()]);
    assert!(std::env::temp_dir()
        .join("detour-proxy-dev-certs/tls.crt")
        .is_file());
}

/// podman pulls as its users configure it: a `registries.conf` mirror that
/// names the proxy by path (`PROXY/<upstream name>`), the proxy's CA in a
/// certificate directory; own storage (vfs), own policy. The upstream's
/// access log shows only the proxy's requests: podman did not fall back to
/// the upstream itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_proxy_with_a_registries_conf_mirror() {
    let cache = Cache::local();
    let dir = tempfile::tempdir().unwrap();
    let upstream = logged_registry();
    let image = Image::unpackable(4);
    upstream.push_image("team/app", "v1", &image).await;
    let proxy = Proxy::serving(dir.path(), &[&upstream], &cache, "", false);
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "unqualified-search-registries = []\n\n[[registry]]\nprefix = \"{up}\"\nlocation = \"{up}\"\ninsecure = true\n\n\
             [[registry.mirror]]\nlocation = \"{proxy}/{name}\"\n",
            up = upstream.host(),
            proxy = proxy.host(),
            name = name(&upstream),
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default": [{"type": "insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    // containers/image reads <cert-dir>/*.crt as CAs.
    let trust = dir.path().join("trust");
    let storage = dir.path().join("storage");
    let reference = format!("{}/team/app:v1", upstream.host());
    let out = Command::new("podman")
        .args(["--root", storage.join("root").to_str().unwrap()])
        .args(["--runroot", storage.join("run").to_str().unwrap()])
        .args(["--storage-driver", "vfs", "pull", "--quiet"])
        .args(["--cert-dir", trust.to_str().unwrap()])
        .args(["--signature-policy", policy.to_str().unwrap()])
        .arg(&reference)
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("TMPDIR", dir.path())
        .output()
        .expect("podman is installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.logs()
    );
    // podman prints the image ID: the config's digest.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(format!("sha256:{id}"), sha256(&image.config));
    let all = upstream.requests(&["GET "]);
    assert!(all >= 1);
    assert_eq!(
        upstream.requests(&["GET ", "detour/"]),
        all,
        "podman reached the upstream itself"
    );
    assert!(proxy.metric("detour_proxy_requests_total", &[("kind", "blob")]) >= 1.0);
}
