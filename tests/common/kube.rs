//! Harness: a real control plane on 127.0.0.1, etcd and kube-apiserver built
//! from Go modules by `tests/kube/build.sh` (with a kubectl of the same
//! release), shared by the tests of one test binary.
//!
//! No kubelet, scheduler or controller-manager runs: Pods are admitted and
//! stored, never started. The processes are tied to the test process (they
//! get SIGKILL when it exits, whether its tests passed, failed or panicked),
//! and each run's files live in one directory that the next run removes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{free_port, make_certs};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

pub struct ControlPlane {
    /// kube-apiserver, kubectl and etcd.
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    pub token: String,
    /// The CA of the apiserver's serving certificate.
    pub ca: PathBuf,
    pub kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub apiserver_log: PathBuf,
    pub version: String,
}

/// The control plane of this test binary, started by the first caller.
pub fn control_plane() -> &'static ControlPlane {
    control_plane_with(&[])
}

/// The same, started with extra kube-apiserver flags (a test binary that
/// needs them calls only this; the first caller's flags win).
pub fn control_plane_with(extra: &[&str]) -> &'static ControlPlane {
    static PLANE: OnceLock<ControlPlane> = OnceLock::new();
    PLANE.get_or_init(|| ControlPlane::start(extra))
}

/// Tests that change cluster-scoped objects (webhook configurations) take
/// turns; a test that panicked does not stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The directory with the built binaries: `DETOUR_KUBE_BIN` when set (the
/// test script builds once and exports it), else build.sh (reused builds).
fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("DETOUR_KUBE_BIN") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kube/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs tests/kube/build.sh");
    assert!(
        out.status.success(),
        "tests/kube/build.sh failed (Go and the Go module proxy are needed)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Spawns `cmd` so that it dies with the test process: PR_SET_PDEATHSIG
/// fires when the *thread* that forked the child ends, so every child is
/// forked by one thread that lives as long as the process.
pub fn spawn_tied(cmd: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: the closure runs in the forked child before exec and
                // only makes the async-signal-safe prctl system call.
                #[allow(unsafe_code)] // the workspace denies it; this is a test's
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    keeper.lock().unwrap().send((cmd, reply)).unwrap();
    answer.recv().unwrap().expect("spawn")
}

/// One directory per run, under the system temp dir; directories of runs
/// whose process is gone are removed.
fn run_dir() -> PathBuf {
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("detour-kube-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    let dir = base.join(format!("detour-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A user in no group: it may do only what a test's RBAC grants it.
pub const VIEWER_TOKEN: &str = "detour-e2e-viewer";

const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - {group: "", resources: ["pods", "secrets"]}
      - {group: "admissionregistration.k8s.io", resources: ["mutatingwebhookconfigurations"]}
      - {group: "apps", resources: ["deployments"]}
  - level: None
"#;

impl ControlPlane {
    fn start(extra: &[&str]) -> ControlPlane {
        let bin = binaries();
        let dir = run_dir();
        let etcd = start_etcd(&bin, &dir);
        let port = free_port();
        let tls = dir.join("apiserver-tls");
        make_certs(&tls);
        let token = format!("detour-e2e-{}", std::process::id());
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{token},admin,admin-uid,system:masters\n{VIEWER_TOKEN},viewer,viewer-uid\n"),
        )
        .unwrap();
        std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY).unwrap();
        let audit_log = dir.join("audit.log");
        let apiserver_log = dir.join("kube-apiserver.log");
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let tls_file = |name: &str| tls.join(name).to_str().unwrap().to_string();
        let mut cmd = Command::new(bin.join("kube-apiserver"));
        cmd.args([
            format!("--etcd-servers=http://127.0.0.1:{etcd}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", tls_file("tls.crt")),
            format!("--tls-private-key-file={}", tls_file("tls.key")),
            format!("--token-auth-file={}", path("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            // The public half, read from the certificate of that key.
            format!("--service-account-key-file={}", tls_file("tls.crt")),
            format!("--service-account-signing-key-file={}", tls_file("tls.key")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            // Needs the controller-manager's token controller, which is not here.
            "--disable-admission-plugins=ServiceAccount".into(),
            // The loopback advertise address cannot be an endpoint.
            "--endpoint-reconciler-type=none".into(),
            format!("--audit-policy-file={}", path("audit-policy.yaml")),
            format!("--audit-log-path={}", audit_log.to_str().unwrap()),
            "--audit-log-mode=blocking".into(),
            format!("--cert-dir={}", path("apiserver-generated")),
            "--profiling=false".into(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&apiserver_log).unwrap());
        let mut apiserver = spawn_tied(cmd);
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, port, &tls.join("ca.crt"), &token);
        let plane = ControlPlane {
            bin,
            port,
            token,
            ca: tls.join("ca.crt"),
            kubeconfig,
            audit_log,
            apiserver_log,
            dir,
            version: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = apiserver.try_wait().unwrap() {
                panic!(
                    "kube-apiserver exited ({status}):\n{}",
                    tail(&plane.apiserver_log)
                );
            }
            let out = plane.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in 120 s:\n{}",
                tail(&plane.apiserver_log)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let version: Value =
            serde_json::from_str(&plane.kubectl_ok(&["get", "--raw", "/version"])).unwrap();
        ControlPlane {
            version: version["gitVersion"].as_str().unwrap().to_string(),
            ..plane
        }
    }

    /// Runs the built kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new(self.bin.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(input) = input {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// kubectl that must succeed; returns its standard output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply -f -` of YAML or JSON; returns (stdout, stderr).
    pub fn apply(&self, manifest: &str) -> (String, String) {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "kubectl apply: {stderr}\n{manifest}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    /// An object as the apiserver stores it.
    pub fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get", "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// A namespace with labels; created or relabelled.
    pub fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let ns = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        });
        self.apply(&ns.to_string());
    }

    /// A REST client that trusts the apiserver and sends the admin token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap();
        auth.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        reqwest::Client::builder()
            .use_preconfigured_tls(super::tls_config(&[&self.ca]))
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The apiserver's own Prometheus metrics.
    pub fn metrics(&self) -> String {
        self.kubectl_ok(&["get", "--raw", "/metrics"])
    }

    /// The value of one sample in the apiserver's metrics (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    pub fn audit_events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A kubeconfig for the apiserver on `port` that sends `token`.
pub fn write_kubeconfig(path: &Path, port: u16, ca: &Path, token: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: e2e, cluster: {{server: 'https://127.0.0.1:{port}', certificate-authority: '{}'}}}}]\n\
             users: [{{name: user, user: {{token: '{token}'}}}}]\n\
             contexts: [{{name: e2e, context: {{cluster: e2e, user: user}}}}]\n\
             current-context: e2e\n",
            ca.display()
        ),
    )
    .unwrap();
}

/// Runs the detour binary against the cluster of `kubeconfig`, with no
/// config or in-cluster settings from the test's environment.
pub fn detour_with_kubeconfig(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(super::BIN)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("DETOUR_CONFIG")
        .env_remove("DETOUR_PRESET")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

/// `detour … audit -o json …` (the `args` given) that must succeed, parsed.
pub fn audit_report(kubeconfig: &Path, args: &[&str]) -> Value {
    let out = detour_with_kubeconfig(kubeconfig, args);
    assert!(
        out.status.success(),
        "detour audit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sums the samples of `name` whose labels include every pair in `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

fn start_etcd(bin: &Path, dir: &Path) -> u16 {
    let client = free_port();
    let peer = free_port();
    let data = dir.join("etcd");
    let mut cmd = Command::new(bin.join("etcd"));
    cmd.args([
        "--name=e2e".to_string(),
        format!("--data-dir={}", data.to_str().unwrap()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster=e2e=http://127.0.0.1:{peer}"),
        // Test data: durability across power loss is not wanted, speed is.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap());
    let mut child = spawn_tied(cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("etcd exited ({status}):\n{}", tail(&dir.join("etcd.log")));
        }
        if let Ok((200, body)) = super::http_get(client, "/health") {
            if body.contains("\"health\":\"true\"") {
                return client;
            }
        }
        assert!(Instant::now() < deadline, "etcd not healthy in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of a log, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Copies `manifests/` into `dest`, as a user's checkout would have it.
pub fn copy_manifests(dest: &Path) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    copy(&Path::new(REPO).join("manifests"), &dest.join("manifests"));
}

pub fn install_cert_manager_crds(cp: &ControlPlane) {
    let crds =
        std::fs::read_to_string(Path::new(REPO).join("tests/fixtures/kube/cert-manager-crds.yaml"))
            .unwrap();
    cp.apply(&crds);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/issuers.cert-manager.io",
        "crd/certificates.cert-manager.io",
    ]);
}

/// The shipped webhook configuration, installed by `kubectl apply -k` of a
/// test overlay over `manifests/overlays/{overlay}` that only swaps each
/// webhook's Service for a URL of detour on 127.0.0.1. Removed on drop.
pub struct Installed<'a> {
    cp: &'a ControlPlane,
    port: u16,
    _dir: tempfile::TempDir,
}

impl<'a> Installed<'a> {
    pub fn new(cp: &'a ControlPlane, overlay: &str, port: u16, ca_bundle: &str) -> Self {
        Self::install(cp, overlay, port, Some(ca_bundle))
    }

    /// Without a caBundle: for `--manage-certs`, which writes it.
    pub fn without_ca_bundle(cp: &'a ControlPlane, overlay: &str, port: u16) -> Self {
        Self::install(cp, overlay, port, None)
    }

    fn install(cp: &'a ControlPlane, overlay: &str, port: u16, ca_bundle: Option<&str>) -> Self {
        install_cert_manager_crds(cp);
        let dir = tempfile::tempdir().unwrap();
        copy_manifests(dir.path());
        let e2e = dir.path().join("e2e");
        std::fs::create_dir(&e2e).unwrap();
        let ops: Vec<Value> = [
            ("enforce.detour.dev", "/mutate"),
            ("audit.detour.dev", "/audit"),
        ]
        .iter()
        .enumerate()
        .flat_map(|(i, (name, path))| {
            [
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}),
                {
                    let mut client_config =
                        json!({"url": format!("https://127.0.0.1:{port}{path}")});
                    if let Some(pem) = ca_bundle {
                        client_config["caBundle"] = b64(pem.as_bytes()).into();
                    }
                    json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig"),
                           "value": client_config})
                },
            ]
        })
        .collect();
        let kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [format!("../manifests/overlays/{overlay}")],
            "patches": [{
                "target": {"kind": "MutatingWebhookConfiguration", "name": "detour"},
                "patch": serde_json::to_string(&ops).unwrap(),
            }],
        });
        std::fs::write(e2e.join("kustomization.yaml"), kustomization.to_string()).unwrap();
        cp.kubectl_ok(&["apply", "-k", e2e.to_str().unwrap()]);
        Installed {
            cp,
            port,
            _dir: dir,
        }
    }

    /// Points both webhooks at detour on `host` (an address or name its
    /// certificate covers) with `ca_pem` as `caBundle`. A changed client
    /// config makes the apiserver dial new connections, as a new replica
    /// behind a Service would: the apiserver otherwise keeps its connections
    /// (and the certificate they were opened with) across a rotation.
    pub fn reconfigure(&self, host: &str, ca_pem: &str) {
        let ops: Vec<Value> = [(0, "/mutate"), (1, "/audit")]
            .iter()
            .map(|(i, path)| {
                json!({"op": "replace", "path": format!("/webhooks/{i}/clientConfig"),
                       "value": {"url": format!("https://{host}:{}{path}", self.port),
                                 "caBundle": b64(ca_pem.as_bytes())}})
            })
            .collect();
        self.cp.kubectl_ok(&[
            "patch",
            "mutatingwebhookconfiguration",
            "detour",
            "--type=json",
            "-p",
            &serde_json::to_string(&ops).unwrap(),
        ]);
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        let _ = self.cp.kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            "detour",
            "--ignore-not-found",
        ]);
    }
}

/// What creating one Pod through the apiserver gave.
#[derive(Debug, Clone)]
pub struct Created {
    /// HTTP status; 0 when the request itself failed.
    pub status: u16,
    /// The first container's image as stored (or the error).
    pub image: String,
    /// Request to response, as the client saw it.
    pub latency: Duration,
}

/// Every Pod was created (201) and stored with `image`.
pub fn assert_all_rewritten(results: &[Created], image: &str) {
    let bad: Vec<&Created> = results
        .iter()
        .filter(|c| c.status != 201 || c.image != image)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} Pods failed or were not rewritten: {:?}",
        bad.len(),
        results.len(),
        &bad[..bad.len().min(5)]
    );
}

/// A Pod named `name` with one container running `image`.
pub fn single_container_pod(name: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "app", "image": image}]}})
}

/// Creates Pods `{prefix}-{i}` running `image` through the apiserver's REST
/// API from `clients` concurrent tasks, until `limit` Pods or `stop`.
pub async fn create_pods(
    cp: &ControlPlane,
    ns: &str,
    prefix: &str,
    image: &str,
    clients: usize,
    limit: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Created> {
    let client = cp.client();
    let url = cp.url(&format!("/api/v1/namespaces/{ns}/pods"));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, next, stop) = (client.clone(), url.clone(), next.clone(), stop.clone());
        let (prefix, image) = (prefix.to_string(), image.to_string());
        tasks.push(tokio::spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit || stop.load(Ordering::Relaxed) {
                    return results;
                }
                let body = single_container_pod(&format!("{prefix}-{i}"), &image);
                let started = Instant::now();
                let (status, image) = match client.post(&url).json(&body).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let pod: Value = resp.json().await.unwrap_or(Value::Null);
                        let image = pod["spec"]["containers"][0]["image"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        (status, image)
                    }
                    Err(e) => (0, e.to_string()),
                };
                results.push(Created {
                    status,
                    image,
                    latency: started.elapsed(),
                });
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// A mutating webhook owned by a test or a benchmark: `router` served over
/// rustls on 127.0.0.1 from its own thread and runtime, with a certificate
/// from `detour certs`.
pub struct TestWebhook {
    pub port: u16,
    pub ca: String,
    _dir: tempfile::TempDir,
}

impl TestWebhook {
    pub fn start(router: axum::Router) -> Self {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let port = free_port();
        let chain: Vec<_> =
            rustls::pki_types::CertificateDer::pem_file_iter(dir.path().join("tls.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(dir.path().join("tls.key")).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Arc::new(config);
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use axum_server::accept::NoDelayAcceptor;
                use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
                // TCP_NODELAY, as detour sets it: a fair comparison.
                let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls))
                    .acceptor(NoDelayAcceptor::new());
                axum_server::from_tcp(listener)
                    .unwrap()
                    .acceptor(acceptor)
                    .serve(router.into_make_service())
                    .await
                    .unwrap();
            });
        });
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        TestWebhook {
            port,
            ca,
            _dir: dir,
        }
    }

    /// A MutatingWebhookConfiguration `name` (its one webhook is
    /// `{name}.e2e.test`) for Pod creation in namespaces labelled `label`.
    pub fn configuration(&self, name: &str, path: &str, label: (&str, &str)) -> Value {
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": format!("{name}.e2e.test"),
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", self.port),
                             "caBundle": b64(self.ca.as_bytes())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {label.0: label.1}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "reinvocationPolicy": "Never",
            "timeoutSeconds": 5,
        }]})
    }
}
