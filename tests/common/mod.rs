//! Harness: runs the real `detour` binary on 127.0.0.1 with TLS, talks to it
//! with a rustls client, and applies patches with `kubectl patch --local`.

#![allow(dead_code)]

pub mod containerd;
pub mod kube;
pub mod registry;
pub mod token;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_detour");
pub const FIXTURE: &str = include_str!("../fixtures/kube-apiserver-v1.19-pod-create.json");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on 127.0.0.1:`port` (a server the test
/// started, named `what` in the failure), for at most `seconds`.
pub fn wait_listening(port: u16, what: &str, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the detour binary and insists that it succeeds.
pub fn detour(args: &[&str]) -> std::process::Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "detour {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes certificates with `detour certs` (a real use of that command).
pub fn make_certs(dir: &Path) {
    detour(&[
        "certs",
        "--out",
        dir.to_str().unwrap(),
        "--ip",
        "127.0.0.1",
        "--dns",
        "localhost",
        "--days",
        "2",
    ]);
}

pub struct Server {
    pub child: Child,
    pub port: u16,
    pub admin: u16,
    pub cert_dir: PathBuf,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

#[derive(Default)]
pub struct Options<'a> {
    pub config: Option<&'a Path>,
    pub cert_dir: Option<PathBuf>,
    pub extra: Vec<&'a str>,
    /// `DETOUR_LOG`; `debug` when not given.
    pub log: Option<&'a str>,
    /// The webhook port; a free one when not given.
    pub port: Option<u16>,
}

impl Server {
    /// The detour binary serving with `yaml` as its config file (kept in
    /// the directory returned).
    pub fn with_config(yaml: &str) -> (Server, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        let server = Server::start(Options {
            config: Some(&config),
            ..Options::default()
        });
        (server, dir)
    }

    pub fn start(opts: Options) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cert_dir = opts.cert_dir.clone().unwrap_or_else(|| {
            let d = dir.path().join("tls");
            make_certs(&d);
            d
        });
        let port = opts.port.unwrap_or_else(free_port);
        let admin = free_port();
        let log = dir.path().join("detour.log");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--log-format",
            "json",
            "--shutdown-delay",
            "500ms",
            "--reload-interval",
            "300ms",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .args(["--cert-dir", cert_dir.to_str().unwrap()])
        .args(&opts.extra)
        .env_remove("DETOUR_CONFIG")
        .env_remove("DETOUR_PRESET")
        .env("DETOUR_LOG", opts.log.unwrap_or("debug"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        if let Some(config) = opts.config {
            cmd.args(["--config", config.to_str().unwrap()]);
        }
        let child = cmd.spawn().unwrap();
        let server = Server {
            child,
            port,
            admin,
            cert_dir,
            log,
            dir,
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(body) = http_get(self.admin, "/readyz") {
                if body.0 == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "detour did not become ready; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn client(&self) -> reqwest::Client {
        client_trusting(&[&self.cert_dir.join("ca.crt")])
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap().1
    }

    /// Waits until the metrics contain `needle`; `what` says what is awaited.
    pub async fn wait_metric(&self, needle: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.metrics().contains(needle) {
            assert!(Instant::now() < deadline, "{what}: metrics lack {needle}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until every needle is in the log (lines are written by a
    /// background thread, so they appear shortly after the request).
    pub fn wait_log(&self, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            let missing: Vec<&&str> = needles.iter().filter(|n| !logs.contains(**n)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "log lacks {missing:?}:\n{logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET on the admin port (std only).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn root_store(cas: &[&Path]) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    roots
}

pub fn tls_config(cas: &[&Path]) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(root_store(cas))
        .with_no_client_auth()
}

pub fn client_trusting(cas: &[&Path]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(cas))
        .tls_info(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The recorded apiserver body, edited.
pub fn review(edit: impl FnOnce(&mut Value)) -> Value {
    let mut review: Value = serde_json::from_str(FIXTURE).unwrap();
    edit(&mut review);
    review
}

pub fn with_containers(containers: Value) -> Value {
    review(|r| r["request"]["object"]["spec"]["containers"] = containers)
}

pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let resp = client.post(url).json(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let json = resp.json().await.unwrap_or(Value::Null);
    (status, json)
}

pub fn decode_patch(resp: &Value) -> Value {
    let b64 = resp["response"]["patch"].as_str().expect("patch present");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// Applies a JSON Patch to an object the way the apiserver does, with kubectl.
pub fn kubectl_patch(object: &Value, patch: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("object.json");
    std::fs::write(&file, serde_json::to_vec(object).unwrap()).unwrap();
    let out = Command::new("kubectl")
        .args(["patch", "--local", "--type=json", "-o", "json", "-f"])
        .arg(&file)
        .arg("-p")
        .arg(serde_json::to_string(patch).unwrap())
        .env("KUBECONFIG", dir.path().join("none"))
        .output()
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "kubectl patch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Writes `files` the way the kubelet's AtomicWriter does: into a fresh
/// timestamped directory, then `..data` is swapped to it with a rename.
pub fn atomic_write(dir: &Path, generation: u32, files: &[(&str, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let target = format!("..2026_11_22_{generation:04}");
    std::fs::create_dir(dir.join(&target)).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(&target).join(name), content).unwrap();
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&target, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// A runtime for tests whose bodies are async but hold a std guard (the
/// control plane's serial() lock) outside them.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The first certificate of a PEM text, as DER.
pub fn leaf_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The certificate a TLS server on 127.0.0.1:`port` presents on a new
/// connection, if the CAs in `ca_pem` verify it.
pub async fn served_leaf(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, ca_pem).ok()?;
    let client = client_trusting(&[&ca]);
    let resp = client
        .get(format!("https://127.0.0.1:{port}/unknown"))
        .send()
        .await
        .ok()?;
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>()?;
    Some(info.peer_certificate()?.to_vec())
}
