//! `detour serve --manage-certs` against a real kube-apiserver (tests/kube):
//! detour runs with a ServiceAccount token bound to exactly the RBAC of
//! `manifests/overlays/self-managed`, keeps its CA and serving certificate
//! in one Secret, and keeps the CA in the webhook configuration's caBundle.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::kube::{
    assert_all_rewritten, control_plane, create_pods, serial, write_kubeconfig, ControlPlane,
    Created, Installed,
};
use common::*;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PAUSE: &str = "registry.k8s.io/pause:3.9";
const PAUSE_MIRRORED: &str = "m.daocloud.io/registry.k8s.io/pause:3.9";
const SA_USER: &str = "system:serviceaccount:detour-system:detour";

fn shipped_config() -> PathBuf {
    Path::new(REPO).join("manifests/base/config.yaml")
}

fn decode(value: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("base64 string"))
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The overlay installed (detour's URL on 127.0.0.1, no caBundle), and a
/// kubeconfig with a token of detour's ServiceAccount.
fn install<'a>(cp: &'a ControlPlane, port: u16, dir: &Path) -> (Installed<'a>, PathBuf) {
    let installed = Installed::without_ca_bundle(cp, "self-managed", port);
    let _ = cp.kubectl(&[
        "delete",
        "secret",
        "-n",
        "detour-system",
        "detour-certs",
        "--ignore-not-found",
    ]);
    let token = cp.kubectl_ok(&[
        "create",
        "token",
        "detour",
        "-n",
        "detour-system",
        "--duration=1h",
    ]);
    let kubeconfig = dir.join("detour-sa.kubeconfig");
    write_kubeconfig(&kubeconfig, cp.port, &cp.ca, token.trim());
    (installed, kubeconfig)
}

fn managed_detour(kubeconfig: &Path, port: Option<u16>, extra: &[&str]) -> Server {
    let config = shipped_config();
    let mut args = vec![
        "--manage-certs",
        "--cert-ip",
        "127.0.0.1",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(Options {
        config: Some(&config),
        extra: args,
        port,
        log: Some("info"),
        ..Options::default()
    })
}

fn secret(cp: &ControlPlane) -> Value {
    cp.get(&["-n", "detour-system", "secret", "detour-certs"])
}

fn ca_bundles(cp: &ControlPlane) -> Vec<String> {
    let config = cp.get(&["mutatingwebhookconfiguration", "detour"]);
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| decode(&w["clientConfig"]["caBundle"]))
        .collect()
}

/// Every request detour's ServiceAccount made after the first `skip` audit
/// events, as the audit log has it: (verb, resource, name, status code).
fn service_account_requests(cp: &ControlPlane, skip: usize) -> Vec<(String, String, String, u64)> {
    cp.audit_events()
        .into_iter()
        .skip(skip)
        .filter(|e| e["user"]["username"] == SA_USER && e["stage"] == "ResponseComplete")
        .map(|e| {
            (
                e["verb"].as_str().unwrap_or("").to_string(),
                e["objectRef"]["resource"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                e["objectRef"]["name"].as_str().unwrap_or("").to_string(),
                e["responseStatus"]["code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn two_replicas_share_one_ca_that_the_apiserver_trusts_and_a_changed_ca_bundle_is_put_back() {
    let _turn = serial();
    let cp = control_plane();
    let dir = tempfile::tempdir().unwrap();
    let audit_start = cp.audit_events().len();
    // Replica A's port is the one the apiserver calls; B starts at the
    // same moment and must end up with the same Secret.
    let port_a = free_port();
    let (_installed, kubeconfig) = install(cp, port_a, dir.path());
    let extra = ["--cert-sync-interval", "1s"];
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| managed_detour(&kubeconfig, Some(port_a), &extra));
        let b = scope.spawn(|| managed_detour(&kubeconfig, None, &extra));
        (a.join().unwrap(), b.join().unwrap())
    });

    let stored = secret(cp);
    let bundle = decode(&stored["data"]["ca-bundle.crt"]);
    let ca = decode(&stored["data"]["ca.crt"]);
    assert_eq!(bundle, ca, "one CA, and it is the bundle");
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);
    let serving = decode(&stored["data"]["tls.crt"]);
    runtime().block_on(async {
        for port in [a.port, b.port] {
            let leaf = served_leaf(port, &bundle)
                .await
                .expect("verifies with the CA");
            assert_eq!(
                leaf,
                leaf_of(&serving),
                "replica on {port} serves the Secret's certificate"
            );
        }
    });
    for webhook_bundle in ca_bundles(cp) {
        assert_eq!(webhook_bundle, bundle);
    }

    // The apiserver calls detour with the caBundle detour wrote.
    let ns = "managed-certs";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let results = runtime().block_on(async {
            let stop = Arc::new(AtomicBool::new(false));
            create_pods(
                cp,
                ns,
                &format!("p{}", deadline.elapsed().as_millis()),
                PAUSE,
                1,
                1,
                stop,
            )
            .await
        });
        if results[0].image == PAUSE_MIRRORED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the apiserver never got a rewrite from detour: {results:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Someone edits the caBundle: detour puts it back.
    let other = detour_serve::certs::CertificateAuthority::generate(1)
        .unwrap()
        .pem();
    let patch = serde_json::json!([{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
        "value": base64::engine::general_purpose::STANDARD.encode(&other)}]);
    cp.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "detour",
        "--type=json",
        "-p",
        &patch.to_string(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ca_bundles(cp).iter().any(|b| *b != bundle) {
        assert!(Instant::now() < deadline, "caBundle not restored");
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = format!("{}{}", a.logs(), b.logs());
    assert!(logs.contains("caBundle written"), "{logs}");

    // Nothing beyond the overlay's RBAC was needed: every request detour's
    // ServiceAccount made was allowed, and each one is on the list.
    let requests = service_account_requests(cp, audit_start);
    assert!(!requests.is_empty());
    for (verb, resource, name, code) in &requests {
        assert!(
            *code < 400 || *code == 404 || *code == 409,
            "{verb} {resource}/{name}: {code}"
        );
        let allowed = matches!(
            (verb.as_str(), resource.as_str(), name.as_str()),
            ("get" | "update" | "create", "secrets", "detour-certs")
                | ("get" | "update", "mutatingwebhookconfigurations", "detour")
        );
        assert!(allowed, "unexpected request {verb} {resource}/{name}");
    }
    assert!(requests.iter().any(|r| r.0 == "create" && r.3 < 300));
    // Both replicas raced to create; exactly one create succeeded.
    let created = requests
        .iter()
        .filter(|r| r.0 == "create" && r.3 < 300)
        .count();
    assert_eq!(created, 1, "{requests:?}");
}

#[test]
fn renewal_and_ca_rotation_while_pods_are_created_fail_no_pod() {
    let _turn = serial();
    let cp = control_plane();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_installed, kubeconfig) = install(cp, port, dir.path());
    // Short lives: the serving certificate is renewed every ~8 s, the CA
    // rotates ~20 s after it is made (adding, removing, steady, 2 s apart).
    // Two replicas: the apiserver calls A; B lags A by up to a sync interval.
    let flags = [
        "--cert-sync-interval",
        "1s",
        "--cert-validity",
        "12s",
        "--ca-validity",
        "30s",
    ];
    let a = managed_detour(&kubeconfig, Some(port), &flags);
    // Half an interval apart, so that the replicas' syncs do not coincide.
    std::thread::sleep(Duration::from_millis(500));
    let b = managed_detour(&kubeconfig, None, &flags);
    let ns = "managed-rotation";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    let first = secret(cp);
    let first_ca = decode(&first["data"]["ca.crt"]);

    let before = cp.metric(
        "apiserver_admission_webhook_fail_open_count",
        &[("name", "enforce.detour.dev")],
    );
    let mut phases = std::collections::BTreeSet::new();
    let mut serving = std::collections::BTreeSet::new();
    let (mut checks, mut mismatches) = (0, Vec::new());
    let results: Vec<Created> = runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let load = tokio::spawn({
            let stop = stop.clone();
            async move { create_pods(control_plane(), ns, "p", PAUSE, 4, 1_000_000, stop).await }
        });
        // The invariant, checked from outside all along (every few ms,
        // through the REST API): whatever caBundle the webhook configuration
        // holds, every replica's certificate verifies against it on a new
        // connection.
        let api = cp.client();
        let get = |path: &str| {
            let request = api.get(cp.url(path));
            async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let started = Instant::now();
        let mut last_line = String::new();
        while started.elapsed() < Duration::from_secs(34) {
            let s = get("/api/v1/namespaces/detour-system/secrets/detour-certs").await;
            phases.insert(decode(&s["data"]["phase"]));
            serving.insert(decode(&s["data"]["tls.crt"]));
            let config =
                get("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/detour")
                    .await;
            let published = decode(&config["webhooks"][0]["clientConfig"]["caBundle"]);
            let fingerprint = &published[published.len().saturating_sub(60)..];
            let mut line = format!("{} {fingerprint:?}", decode(&s["data"]["phase"]));
            for (name, port) in [("A", a.port), ("B", b.port)] {
                checks += 1;
                let r = served_leaf(port, &published).await;
                line.push_str(&format!(" {name}:{}", r.is_some()));
                if r.is_none() {
                    mismatches.push(format!("{:?}: replica {name}", started.elapsed()));
                }
            }
            // The timeline, printed on failure.
            if line != last_line {
                eprintln!("{:?} {line}", started.elapsed());
                last_line = line;
            }
        }
        stop.store(true, Ordering::Relaxed);
        load.await.unwrap()
    });
    assert!(checks > 500, "{checks} checks");
    eprintln!("{checks} checks of the published caBundle against both replicas");
    assert!(
        mismatches.is_empty(),
        "a replica's certificate did not verify against the published caBundle: {mismatches:?}"
    );
    let last = secret(cp);
    let last_ca = decode(&last["data"]["ca.crt"]);
    assert_ne!(last_ca, first_ca, "the CA rotated");
    assert!(
        phases.contains("adding") && phases.contains("removing"),
        "{phases:?}"
    );
    assert!(
        serving.len() >= 3,
        "only {} serving certificates seen",
        serving.len()
    );
    assert!(results.len() >= 100, "only {} Pods", results.len());
    assert_all_rewritten(&results, PAUSE_MIRRORED);
    let after = cp.metric(
        "apiserver_admission_webhook_fail_open_count",
        &[("name", "enforce.detour.dev")],
    );
    assert_eq!(after, before, "no call to detour failed");
    // The webhook trusts the new CA now.
    let bundle = decode(&last["data"]["ca-bundle.crt"]);
    for webhook_bundle in ca_bundles(cp) {
        assert_eq!(webhook_bundle, bundle);
    }
    for line in a.logs().lines().chain(b.logs().lines()) {
        if line.contains("written") || line.contains("reloaded") {
            eprintln!("{line}");
        }
    }
    eprintln!(
        "{} Pods; phases {phases:?}; {} serving certificates",
        results.len(),
        serving.len()
    );
}

#[test]
fn without_the_api_detour_is_live_but_not_ready_and_stops_on_sigterm() {
    // The kubeconfig points where nothing listens: the first sync keeps
    // failing, so there is no certificate to serve yet.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("dead.kubeconfig");
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        detour_serve::certs::CertificateAuthority::generate(1)
            .unwrap()
            .pem(),
    )
    .unwrap();
    write_kubeconfig(&kubeconfig, free_port(), &ca, "token");
    let admin = free_port();
    let log = dir.path().join("detour.log");
    let config = shipped_config();
    let mut child = std::process::Command::new(BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "serve",
            "--manage-certs",
        ])
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--cert-sync-interval", "1s", "--shutdown-delay", "100ms"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(http_get(admin, "/livez"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "no /livez: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(admin, "/readyz").unwrap().0, 503);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("cannot set up the managed certificates; retrying")
    {
        assert!(Instant::now() < deadline, "no retry logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(admin, "/readyz").unwrap().0, 503);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "detour did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
