//! End to end through a real kube-apiserver (built from Go modules, see
//! tests/kube/): the install manifests applied as users apply them, the real
//! `detour serve` binary on 127.0.0.1, the apiserver calling it for every
//! Pod, kubectl creating Pods and printing warnings.
//!
//! Since no Pod runs, detour runs on the host: the tests install the shipped
//! overlays through a test overlay that points `clientConfig` at a `url` on
//! 127.0.0.1 (with the CA of detour's certificate in `caBundle`); everything
//! else is applied as shipped, and detour serves the shipped config.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use common::kube::{
    assert_all_rewritten, b64, control_plane, copy_manifests, create_pods,
    install_cert_manager_crds, metric_value, serial, single_container_pod, ControlPlane, Created,
    Installed, TestWebhook,
};
use common::*;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PAUSE: &str = "registry.k8s.io/pause:3.9";
const PAUSE_MIRRORED: &str = "m.daocloud.io/registry.k8s.io/pause:3.9";

fn shipped_config() -> PathBuf {
    Path::new(REPO).join("manifests/base/config.yaml")
}

/// detour serving the shipped config with certificates from `detour certs`.
fn start_detour() -> Server {
    Server::start(Options {
        config: Some(&shipped_config()),
        ..Options::default()
    })
}

fn detour_ca(detour: &Server) -> String {
    std::fs::read_to_string(detour.cert_dir.join("ca.crt")).unwrap()
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": containers}})
}

fn pause_pod(name: &str) -> Value {
    single_container_pod(name, PAUSE)
}

/// `kubectl create -o json -f -`: the object the apiserver stored (or, with
/// `--dry-run=server`, would store) and what kubectl printed on stderr.
fn create(cp: &ControlPlane, ns: &str, object: &Value, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["create", "-n", ns, "-o", "json", "-f", "-"];
    args.extend_from_slice(extra);
    let out = cp.kubectl_with_input(&args, Some(&object.to_string()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl create: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn image(pod: &Value, list: &str, i: usize) -> String {
    pod["spec"][list][i]["image"].as_str().unwrap().to_string()
}

/// Creates dry-run probe Pods in `ns` until `done(stored, kubectl's
/// stderr)`: a change of webhook configuration or namespace label takes a
/// moment to reach the apiserver's informers. Returns the last probe.
fn wait_for(cp: &ControlPlane, ns: &str, what: &str, done: impl Fn(&Value, &str) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (probe, stderr) = create(cp, ns, &pause_pod("probe"), &["--dry-run=server"]);
        if done(&probe, &stderr) {
            return probe;
        }
        assert!(Instant::now() < deadline, "{ns}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Until the apiserver sends `ns`'s Pods to detour's enforce webhook.
fn wait_enforced(cp: &ControlPlane, ns: &str) {
    wait_for(cp, ns, "webhook never called", |probe, _| {
        image(probe, "containers", 0) == PAUSE_MIRRORED
    });
}

/// Until a dry-run Pod in `ns` is left alone by the webhooks.
fn wait_untouched(cp: &ControlPlane, ns: &str) {
    wait_for(cp, ns, "still handled by detour", |probe, stderr| {
        image(probe, "containers", 0) == PAUSE && !stderr.contains("detour")
    });
}

/// Until the audit webhook answers for `ns` (a dry run prints its warning).
fn wait_audited(cp: &ControlPlane, ns: &str) {
    let probe = wait_for(cp, ns, "audit webhook never called", |_, stderr| {
        stderr.contains("detour: would rewrite")
    });
    assert_eq!(image(&probe, "containers", 0), PAUSE);
}

#[test]
fn the_control_plane_is_the_pinned_release() {
    let _turn = serial();
    let cp = control_plane();
    assert_eq!(
        cp.version, "v1.37.2",
        "/version of the built kube-apiserver"
    );
    let client = cp.kubectl_ok(&["version", "-o", "json"]);
    let client: Value = serde_json::from_str(&client).unwrap();
    assert_eq!(client["clientVersion"]["gitVersion"], "v1.37.2");
    // policy/v1 is served (the PodDisruptionBudget of the manifests needs it).
    let versions = cp.kubectl_ok(&["api-versions"]);
    assert!(versions.lines().any(|l| l == "policy/v1"), "{versions}");
}

#[test]
fn every_overlay_is_accepted_by_the_apiserver() {
    let _turn = serial();
    let cp = control_plane();
    install_cert_manager_crds(cp);
    let dir = tempfile::tempdir().unwrap();
    copy_manifests(dir.path());
    let manifests = dir.path().join("manifests");
    // The README's command for the self-signed overlay.
    detour(&[
        "certs",
        "--out",
        manifests
            .join("overlays/self-signed/certs")
            .to_str()
            .unwrap(),
        "--service",
        "detour",
        "--namespace",
        "detour-system",
    ]);
    for overlay in [
        "opt-in",
        "cluster-wide",
        "cert-manager",
        "self-signed",
        "self-managed",
    ] {
        let path = manifests.join("overlays").join(overlay);
        let path = path.to_str().unwrap();
        let rendered = cp.kubectl_ok(&["kustomize", path]);
        // kubectl validates every field on the server (strict field validation).
        let applied = cp.kubectl_ok(&["apply", "-k", path]);
        let objects: Vec<(String, String)> = rendered
            .split("\n---\n")
            .map(|doc| {
                let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(doc).unwrap();
                let kind = v["kind"].as_str().unwrap().to_lowercase();
                let name = v["metadata"]["name"].as_str().unwrap().to_string();
                (kind, name)
            })
            .collect();
        assert!(objects.len() >= 10, "{overlay}: {rendered}");
        for (kind, name) in &objects {
            assert!(
                applied.contains(&format!("/{name} ")),
                "{overlay}: {kind}/{name} not applied:\n{applied}"
            );
            // Stored: every object reads back from the apiserver.
            let stored = cp.get(&["-n", "detour-system", kind, name]);
            assert_eq!(stored["metadata"]["name"], name.as_str());
        }
        let webhook = cp.get(&["mutatingwebhookconfiguration", "detour"]);
        for hook in webhook["webhooks"].as_array().unwrap() {
            assert_eq!(hook["failurePolicy"], "Ignore");
            assert_eq!(hook["sideEffects"], "NoneOnDryRun");
            assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
            assert_eq!(hook["timeoutSeconds"], 5);
        }
        let enforce = &webhook["webhooks"][0]["namespaceSelector"]["matchExpressions"][1];
        match overlay {
            "cluster-wide" => assert_eq!(enforce["operator"], "NotIn", "{overlay}"),
            _ => assert_eq!(enforce["operator"], "In", "{overlay}"),
        }
        if overlay == "self-signed" {
            let ca = std::fs::read(manifests.join("overlays/self-signed/certs/ca.crt")).unwrap();
            for hook in webhook["webhooks"].as_array().unwrap() {
                assert_eq!(hook["clientConfig"]["caBundle"], b64(&ca));
            }
        }
    }
    cp.kubectl_ok(&["delete", "mutatingwebhookconfiguration", "detour"]);
}

#[test]
fn enforce_rewrites_containers_init_containers_and_a_deployments_pods() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-enforce";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    wait_enforced(cp, ns);

    let app = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": {
    "initContainers": [{"name": "init", "image": "k8s.gcr.io/pause:3.1"}],
    "containers": [
        {"name": "app", "image": "registry.k8s.io/ingress-nginx/controller:v1.9.4"},
        {"name": "web", "image": "nginx:1.25"},
    ]}});
    let (created, _) = create(cp, ns, &app, &[]);
    let stored = cp.get(&["-n", ns, "pod", "app"]);
    for pod in [&created, &stored] {
        assert_eq!(
            image(pod, "containers", 0),
            "m.daocloud.io/registry.k8s.io/ingress-nginx/controller:v1.9.4"
        );
        assert_eq!(image(pod, "containers", 1), "nginx:1.25");
        assert_eq!(
            image(pod, "initContainers", 0),
            "m.daocloud.io/k8s.gcr.io/pause:3.1"
        );
    }
    let originals: Value = serde_json::from_str(
        stored["metadata"]["annotations"]["detour.dev/original-images"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        originals,
        json!({"app": "registry.k8s.io/ingress-nginx/controller:v1.9.4", "init": "k8s.gcr.io/pause:3.1"})
    );

    // A Deployment is stored as written (detour rewrites Pods, not templates);
    // its Pods, made from the template as the ReplicaSet controller makes
    // them, are rewritten.
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "web", "image": "registry.k8s.io/echoserver:2.5"}]}});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}});
    let (deployment, _) = create(cp, ns, &deployment, &[]);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.k8s.io/echoserver:2.5"
    );
    let mut rs_template = deployment["spec"]["template"].clone();
    rs_template["metadata"]["labels"]["pod-template-hash"] = "5d8c7f9b6".into();
    let owner = |kind: &str, obj: &Value| {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}])
    };
    let replica_set = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-5d8c7f9b6", "labels": rs_template["metadata"]["labels"],
                     "ownerReferences": owner("Deployment", &deployment)},
        "spec": {"replicas": 2, "selector": {"matchLabels": rs_template["metadata"]["labels"]},
                 "template": rs_template}});
    let (replica_set, _) = create(cp, ns, &replica_set, &[]);
    for _ in 0..2 {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": rs_template["spec"]});
        pod["metadata"] = rs_template["metadata"].clone();
        pod["metadata"]["generateName"] = "web-5d8c7f9b6-".into();
        pod["metadata"]["ownerReferences"] = owner("ReplicaSet", &replica_set);
        let (created, _) = create(cp, ns, &pod, &[]);
        assert_eq!(
            image(&created, "containers", 0),
            "m.daocloud.io/registry.k8s.io/echoserver:2.5"
        );
    }
    let pods = cp.get(&["-n", ns, "pods", "-l", "app=web"]);
    let items = pods["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for pod in items {
        assert_eq!(
            image(pod, "containers", 0),
            "m.daocloud.io/registry.k8s.io/echoserver:2.5"
        );
    }
    let metrics = detour.metrics();
    assert!(
        metrics.contains(r#"detour_admissions_total{mode="enforce",outcome="patched"}"#),
        "{metrics}"
    );
}

#[test]
fn kubectl_debug_rewrites_only_the_new_ephemeral_container() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-debug";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    wait_enforced(cp, ns);
    let target = pod(
        "target",
        json!([{"name": "app", "image": PAUSE}, {"name": "web", "image": "nginx:1.25"}]),
    );
    create(cp, ns, &target, &[]);
    let before = cp.get(&["-n", ns, "pod", "target"]);
    let debug = |name: &str, image: &str| {
        let out = cp.kubectl(&[
            "debug",
            "-n",
            ns,
            "target",
            "-c",
            name,
            &format!("--image={image}"),
            "--profile=general",
        ]);
        assert!(
            out.status.success(),
            "kubectl debug: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    debug(
        "debugger",
        "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
    );
    let after = cp.get(&["-n", ns, "pod", "target"]);
    assert_eq!(
        image(&after, "ephemeralContainers", 0),
        "m.daocloud.io/registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
    );
    assert_eq!(after["spec"]["containers"], before["spec"]["containers"]);
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
    // A second debug container: the first is not touched again.
    debug("second", "k8s.gcr.io/pause:3.1");
    let after = cp.get(&["-n", ns, "pod", "target"]);
    assert_eq!(
        image(&after, "ephemeralContainers", 0),
        "m.daocloud.io/registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
    );
    assert_eq!(
        image(&after, "ephemeralContainers", 1),
        "m.daocloud.io/k8s.gcr.io/pause:3.1"
    );
    assert_eq!(after["spec"]["containers"], before["spec"]["containers"]);
}

#[test]
fn audit_mode_warns_through_kubectl_and_annotates_the_audit_log() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-audit";
    cp.namespace(ns, &[("detour.dev/mode", "audit")]);
    wait_audited(cp, ns);
    let out = cp.kubectl(&["run", "-n", ns, "pause", &format!("--image={PAUSE}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Warning: detour: would rewrite pause: {PAUSE} -> {PAUSE_MIRRORED}"
        )),
        "kubectl printed: {stderr}"
    );
    let stored = cp.get(&["-n", ns, "pod", "pause"]);
    assert_eq!(image(&stored, "containers", 0), PAUSE);
    assert!(stored["metadata"]["annotations"]["detour.dev/original-images"].is_null());

    // The apiserver's audit log holds detour's audit annotation, under the
    // webhook's name.
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let found = cp.audit_events().into_iter().find(|e| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["name"] == "pause"
                && e["verb"] == "create"
                && e["stage"] == "ResponseComplete"
        });
        if let Some(event) = found {
            break event;
        }
        assert!(Instant::now() < deadline, "no audit event for the Pod");
        std::thread::sleep(Duration::from_millis(100));
    };
    let annotation = event["annotations"]["audit.detour.dev/would-rewrite"]
        .as_str()
        .unwrap_or_else(|| panic!("annotations: {}", event["annotations"]));
    let report: Value = serde_json::from_str(annotation).unwrap();
    assert_eq!(report[0]["container"], "pause");
    assert_eq!(report[0]["from"], PAUSE);
    assert_eq!(report[0]["to"], PAUSE_MIRRORED);
}

#[test]
fn namespace_labels_switch_modes_and_the_cluster_wide_overlay_covers_the_rest() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let ca = detour_ca(&detour);
    let installed = Installed::new(cp, "opt-in", detour.port, &ca);
    let ns = "e2e-modes";
    let other = "e2e-unlabelled";
    cp.namespace(ns, &[]);
    cp.namespace(other, &[]);
    let mode = |value: Option<&str>| {
        let label = match value {
            Some(v) => format!("detour.dev/mode={v}"),
            None => "detour.dev/mode-".to_string(),
        };
        cp.kubectl_ok(&["label", "namespace", ns, &label, "--overwrite"]);
    };
    // Opt-in: an unlabelled namespace is not touched...
    wait_untouched(cp, ns);
    let (p, warnings) = create(cp, ns, &pause_pod("unlabelled"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(!warnings.contains("detour"), "{warnings}");
    // ... enforce rewrites ...
    mode(Some("enforce"));
    wait_enforced(cp, ns);
    let (p, _) = create(cp, ns, &pause_pod("enforced"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE_MIRRORED);
    // ... audit warns ...
    mode(Some("audit"));
    wait_audited(cp, ns);
    let (p, warnings) = create(cp, ns, &pause_pod("audited"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(warnings.contains("detour: would rewrite"), "{warnings}");
    // ... off leaves alone.
    mode(Some("off"));
    wait_untouched(cp, ns);
    let (p, warnings) = create(cp, ns, &pause_pod("off"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(!warnings.contains("detour"), "{warnings}");

    // Cluster-wide: unlabelled namespaces are rewritten, `off` still is not,
    // `audit` is audited.
    drop(installed);
    let _installed = Installed::new(cp, "cluster-wide", detour.port, &ca);
    wait_enforced(cp, other);
    let (p, _) = create(cp, other, &pause_pod("cluster-wide"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE_MIRRORED);
    let (p, warnings) = create(cp, ns, &pause_pod("still-off"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(!warnings.contains("detour"), "{warnings}");
    mode(Some("audit"));
    wait_audited(cp, ns);
    let (p, warnings) = create(cp, ns, &pause_pod("cluster-audit"), &[]);
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(warnings.contains("detour: would rewrite"), "{warnings}");
    // kube-system is never touched, whatever its labels.
    let (p, warnings) = create(
        cp,
        "kube-system",
        &pause_pod("system"),
        &["--dry-run=server"],
    );
    assert_eq!(image(&p, "containers", 0), PAUSE);
    assert!(!warnings.contains("detour"), "{warnings}");
}

#[test]
fn dry_run_skip_label_pull_policy_never_and_an_unparsable_image() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-edges";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    wait_enforced(cp, ns);

    // Server-side dry run: the answer shows the rewrite, nothing is stored.
    let out = cp.kubectl(&[
        "run",
        "-n",
        ns,
        "dry",
        "--image",
        PAUSE,
        "--dry-run=server",
        "-o",
        "json",
    ]);
    assert!(out.status.success());
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(image(&dry, "containers", 0), PAUSE_MIRRORED);
    let missing = cp.kubectl(&["get", "-n", ns, "pod", "dry"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    // The skip label.
    let out = cp.kubectl(&[
        "run",
        "-n",
        ns,
        "skipped",
        "--image",
        PAUSE,
        "--labels",
        "detour.dev/skip=true",
    ]);
    assert!(out.status.success());
    let stored = cp.get(&["-n", ns, "pod", "skipped"]);
    assert_eq!(image(&stored, "containers", 0), PAUSE);

    // imagePullPolicy: Never names an image already on the node.
    let never = pod(
        "never",
        json!([{"name": "local", "image": PAUSE, "imagePullPolicy": "Never"},
               {"name": "pulled", "image": PAUSE}]),
    );
    let (stored, _) = create(cp, ns, &never, &[]);
    assert_eq!(image(&stored, "containers", 0), PAUSE);
    assert_eq!(image(&stored, "containers", 1), PAUSE_MIRRORED);

    // An image the apiserver accepts but the reference grammar does not.
    let bad = pod(
        "bad",
        json!([{"name": "app", "image": "registry.k8s.io/Pause:3.9"},
               {"name": "ok", "image": PAUSE}]),
    );
    let (stored, warnings) = create(cp, ns, &bad, &[]);
    assert_eq!(image(&stored, "containers", 0), "registry.k8s.io/Pause:3.9");
    assert_eq!(image(&stored, "containers", 1), PAUSE_MIRRORED);
    assert!(
        warnings.contains(
            r#"Warning: detour: app: image "registry.k8s.io/Pause:3.9" is not a valid reference"#
        ),
        "kubectl printed: {warnings}"
    );
}

const SIDECAR_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A second mutating webhook, owned by the test, that injects a sidecar
/// the way service meshes do.
async fn inject(axum::Json(review): axum::Json<Value>) -> axum::Json<Value> {
    let request = &review["request"];
    let has_sidecar = request["object"]["spec"]["containers"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "sidecar"));
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if !has_sidecar {
        let patch = json!([{"op": "add", "path": "/spec/containers/-",
                            "value": {"name": "sidecar", "image": SIDECAR_IMAGE}}]);
        response["patchType"] = "JSONPatch".into();
        response["patch"] = b64(patch.to_string().as_bytes()).into();
    }
    axum::Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
}

#[test]
fn detour_is_called_again_after_another_webhook_adds_a_sidecar() {
    let _turn = serial();
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let injector = TestWebhook::start(axum::Router::new().route("/inject", post(inject)));
    // Named to sort after "detour": the apiserver calls it second.
    cp.apply(
        &injector
            .configuration("zz-e2e-sidecar-injector", "/inject", ("e2e-sidecar", "on"))
            .to_string(),
    );
    let ns = "e2e-reinvoke";
    cp.namespace(ns, &[("detour.dev/mode", "enforce"), ("e2e-sidecar", "on")]);
    wait_enforced(cp, ns);
    let (stored, _) = create(cp, ns, &pause_pod("meshed"), &[]);
    let _ = cp.kubectl(&[
        "delete",
        "mutatingwebhookconfiguration",
        "zz-e2e-sidecar-injector",
    ]);
    let containers = stored["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{containers:?}");
    assert_eq!(containers[0]["image"], PAUSE_MIRRORED);
    assert_eq!(containers[1]["name"], "sidecar");
    assert_eq!(
        containers[1]["image"],
        format!("m.daocloud.io/{}", SIDECAR_IMAGE),
        "the injected sidecar is rewritten when the apiserver reinvokes detour"
    );
    let originals: Value = serde_json::from_str(
        stored["metadata"]["annotations"]["detour.dev/original-images"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(originals, json!({"app": PAUSE, "sidecar": SIDECAR_IMAGE}));
}

/// The apiserver's count of calls to `webhook` that failed open.
fn failed_open(cp: &ControlPlane, webhook: &str) -> f64 {
    cp.metric(
        "apiserver_admission_webhook_fail_open_count",
        &[("name", webhook)],
    )
}

#[test]
fn pods_are_created_unchanged_when_detour_is_down_hung_or_too_slow() {
    let _turn = serial();
    let cp = control_plane();
    let mut detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-failure";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    wait_enforced(cp, ns);
    let signal = |sig: &str, pid: u32| {
        assert!(std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    let timed_create = |name: &str| {
        let started = Instant::now();
        let (stored, _) = create(cp, ns, &pause_pod(name), &[]);
        (stored, started.elapsed())
    };

    // Hung: detour is stopped mid-life (SIGSTOP); the apiserver gives up
    // after timeoutSeconds (5 s) and creates the Pod as written.
    let before = failed_open(cp, "enforce.detour.dev");
    let pid = detour.child.id();
    signal("-STOP", pid);
    let (stored, took) = timed_create("hung");
    assert_eq!(image(&stored, "containers", 0), PAUSE);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "created after {took:?}, expected about timeoutSeconds (5 s)"
    );
    assert!(failed_open(cp, "enforce.detour.dev") >= before + 1.0);

    // Too slow: the answer comes at 7 s, after the apiserver stopped waiting.
    let before = failed_open(cp, "enforce.detour.dev");
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(7));
        signal("-CONT", pid);
    });
    let (stored, took) = timed_create("slow");
    assert_eq!(image(&stored, "containers", 0), PAUSE);
    assert!(took < Duration::from_secs(9), "created after {took:?}");
    assert!(failed_open(cp, "enforce.detour.dev") >= before + 1.0);
    resume.join().unwrap();
    // Back to answering in time: Pods are rewritten again.
    wait_enforced(cp, ns);
    let (stored, _) = create(cp, ns, &pause_pod("recovered"), &[]);
    assert_eq!(image(&stored, "containers", 0), PAUSE_MIRRORED);

    // Down: nothing listens; the Pod is created at once.
    let before = failed_open(cp, "enforce.detour.dev");
    let _ = detour.child.kill();
    let _ = detour.child.wait();
    let (stored, took) = timed_create("down");
    assert_eq!(image(&stored, "containers", 0), PAUSE);
    assert!(took < Duration::from_secs(4), "created after {took:?}");
    assert!(failed_open(cp, "enforce.detour.dev") >= before + 1.0);
    // The audit log names the webhook that failed open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = cp.audit_events().into_iter().any(|e| {
            e["objectRef"]["name"] == "down"
                && e["objectRef"]["namespace"] == ns
                && e["annotations"].as_object().is_some_and(|a| {
                    a.iter().any(|(k, v)| {
                        k.starts_with("failed-open.mutation.webhook.admission.k8s.io/")
                            && v == "enforce.detour.dev"
                    })
                })
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "no failed-open audit annotation");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes a new serving certificate into detour's directory (the kubelet's
/// Secret update) and waits until detour presents it.
async fn rotate_serving_cert(
    detour: &Server,
    ca: &detour_serve::certs::CertificateAuthority,
    generation: u32,
) {
    let (cert, key) = ca.issue(&loopback_names()).unwrap();
    atomic_write(
        &detour.cert_dir,
        generation,
        &[
            ("tls.crt", cert.clone().into_bytes()),
            ("tls.key", key.into_bytes()),
        ],
    );
    let want = leaf_of(&cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_leaf(detour.port, &ca.pem()).await.as_ref() != Some(&want) {
        assert!(Instant::now() < deadline, "detour kept its old certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn loopback_names() -> detour_serve::certs::CertRequest {
    detour_serve::certs::CertRequest {
        service: None,
        namespace: String::new(),
        dns: vec!["localhost".into()],
        ips: vec!["127.0.0.1".parse().unwrap()],
        days: 2,
    }
}

/// detour with a serving certificate from `ca`, in a `..data` directory
/// the way a mounted Secret looks.
fn start_detour_with(
    ca: &detour_serve::certs::CertificateAuthority,
) -> (Server, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("tls");
    let (cert, key) = ca.issue(&loopback_names()).unwrap();
    atomic_write(
        &dir,
        1,
        &[
            ("tls.crt", cert.into_bytes()),
            ("tls.key", key.into_bytes()),
        ],
    );
    let detour = Server::start(Options {
        config: Some(&shipped_config()),
        cert_dir: Some(dir),
        ..Options::default()
    });
    (detour, scratch)
}

#[test]
fn serving_certificate_rotation_under_load_fails_no_pod() {
    let _turn = serial();
    runtime().block_on(serving_certificate_rotation_under_load_fails_no_pod_async());
}

/// Pods created continuously in `ns` through the apiserver by 4 clients.
struct PodLoad {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Created>>,
    failed_open_before: f64,
}

impl PodLoad {
    async fn start(ns: &'static str) -> PodLoad {
        let cp = control_plane();
        wait_enforced(cp, ns);
        let failed_open_before = failed_open(cp, "enforce.detour.dev");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn({
            let stop = stop.clone();
            async move { create_pods(control_plane(), ns, "p", PAUSE, 4, 100_000, stop).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        PodLoad {
            stop,
            handle,
            failed_open_before,
        }
    }

    /// Stops the clients: every Pod was admitted and rewritten, and no call
    /// to detour failed open.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let results = self.handle.await.unwrap();
        assert!(results.len() >= 20, "only {} Pods created", results.len());
        assert_all_rewritten(&results, PAUSE_MIRRORED);
        assert_eq!(
            failed_open(control_plane(), "enforce.detour.dev"),
            self.failed_open_before
        );
    }
}

async fn serving_certificate_rotation_under_load_fails_no_pod_async() {
    let cp = control_plane();
    let ca = detour_serve::certs::CertificateAuthority::generate(20).unwrap();
    let (detour, _scratch) = start_detour_with(&ca);
    let installed = Installed::new(cp, "opt-in", detour.port, &ca.pem());
    let ns = "e2e-rotate-cert";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    let load = PodLoad::start(ns).await;
    for (generation, host) in [(2, "localhost"), (3, "127.0.0.1")] {
        rotate_serving_cert(&detour, &ca, generation).await;
        installed.reconfigure(host, &ca.pem());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    load.finish().await;
}

#[test]
fn ca_rotation_with_an_overlap_fails_no_pod() {
    let _turn = serial();
    runtime().block_on(ca_rotation_with_an_overlap_fails_no_pod_async());
}

async fn ca_rotation_with_an_overlap_fails_no_pod_async() {
    let cp = control_plane();
    let old_ca = detour_serve::certs::CertificateAuthority::generate(20).unwrap();
    let new_ca = detour_serve::certs::CertificateAuthority::generate(20).unwrap();
    let (detour, _scratch) = start_detour_with(&old_ca);
    let installed = Installed::new(cp, "opt-in", detour.port, &old_ca.pem());
    let ns = "e2e-rotate-ca";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    let load = PodLoad::start(ns).await;
    let both = format!("{}{}", old_ca.pem(), new_ca.pem());
    // 1. Both CAs are trusted before any certificate of the new one is served.
    installed.reconfigure("127.0.0.1", &both);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 2. detour switches to a certificate signed by the new CA; the
    //    apiserver dials anew and verifies it against both.
    rotate_serving_cert(&detour, &new_ca, 2).await;
    installed.reconfigure("localhost", &both);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // 3. The old CA leaves the bundle: new connections verify against the
    //    new CA alone.
    installed.reconfigure("127.0.0.1", &new_ca.pem());
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.finish().await;
    let stored = cp.get(&["mutatingwebhookconfiguration", "detour"]);
    assert_eq!(
        stored["webhooks"][0]["clientConfig"]["caBundle"],
        b64(new_ca.pem().as_bytes())
    );
}

#[test]
fn a_burst_of_1000_pods_from_16_clients_is_all_rewritten() {
    let _turn = serial();
    runtime().block_on(a_burst_of_1000_pods_from_16_clients_is_all_rewritten_async());
}

async fn a_burst_of_1000_pods_from_16_clients_is_all_rewritten_async() {
    let cp = control_plane();
    let detour = start_detour();
    let _installed = Installed::new(cp, "opt-in", detour.port, &detour_ca(&detour));
    let ns = "e2e-burst";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    wait_enforced(cp, ns);
    let before = failed_open(cp, "enforce.detour.dev");
    let started = Instant::now();
    let results = create_pods(
        cp,
        ns,
        "burst",
        PAUSE,
        16,
        1000,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(results.len(), 1000);
    assert_all_rewritten(&results, PAUSE_MIRRORED);
    assert_eq!(failed_open(cp, "enforce.detour.dev"), before);
    // What the apiserver stored, read back in one list.
    let stored = cp.get(&["-n", ns, "pods"]);
    let items = stored["items"].as_array().unwrap();
    assert_eq!(items.len(), 1000);
    assert!(items
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == PAUSE_MIRRORED));
    let patched = metric_value(
        &detour.metrics(),
        "detour_admissions_total",
        &[("mode", "enforce"), ("outcome", "patched")],
    );
    assert!(
        patched >= 1000.0,
        "detour counted {patched} patched admissions"
    );
    eprintln!("1000 Pods through the apiserver in {took:?}");
}

/// `detour rewrite`'s YAML is read back by kubectl as written: quoted
/// strings that YAML 1.1 takes for booleans (`"off"`, `"yes"`) stay quoted,
/// and the text of a block scalar is kept.
#[test]
fn rewritten_manifests_keep_their_strings_for_kubectl() {
    let cp = control_plane();
    let manifest = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: rewrite-yaml
  namespace: default
  labels:
    detour.dev/mode: "off"
    enabled: "yes"
data:
  settings.yaml: |
    mode: off
    - no
---
apiVersion: v1
kind: Pod
metadata:
  name: rewrite-yaml
  namespace: default
  labels: {detour.dev/skip: "true", "on": "on"}
spec:
  containers: [{name: c, image: "k8s.gcr.io/pause:3.1"}]
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, manifest).unwrap();
    let rewritten =
        String::from_utf8(detour(&["rewrite", "-f", file.to_str().unwrap()]).stdout).unwrap();
    let out = cp.kubectl_with_input(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&rewritten),
    );
    assert!(
        out.status.success(),
        "kubectl refused detour's YAML: {}\n{rewritten}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON document per object.
    let items: Vec<Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items[0]["metadata"]["labels"]["detour.dev/mode"], "off");
    assert_eq!(items[0]["metadata"]["labels"]["enabled"], "yes");
    assert_eq!(items[0]["data"]["settings.yaml"], "mode: off\n- no\n");
    assert_eq!(items[1]["metadata"]["labels"]["on"], "on");
    assert_eq!(
        items[1]["spec"]["containers"][0]["image"],
        "m.daocloud.io/k8s.gcr.io/pause:3.1"
    );
}
