//! The Helm chart (`charts/detour`) with helm v4 (built by tests/oci/build.sh)
//! against a real kube-apiserver: lint, every values combination rendered and
//! accepted by the apiserver (`kubectl apply --dry-run=server`), bad values
//! refused by the schema with their path, install, upgrade (the config
//! reaches the ConfigMap the pods read, the caBundle detour wrote stays),
//! rollback, uninstall (the webhook configuration deleted first, nothing
//! left), `helm test` (its Pod rewritten in a labelled namespace), and the
//! chart's objects compared with the kustomize overlays'. Pods do not run
//! here (no kubelet): what a Pod would do is checked on the object the
//! apiserver stored.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::kube::{control_plane, install_cert_manager_crds, serial, ControlPlane};
use common::registry::oci_tool;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NAMESPACE: &str = "detour-helm";

fn chart() -> String {
    Path::new(REPO).join("charts/detour").display().to_string()
}

fn helm(cp: &ControlPlane, args: &[&str]) -> Output {
    let home = cp.dir.join("helm-home");
    Command::new(oci_tool("helm"))
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("PATH", format!("{}:/usr/bin:/bin", cp.bin.display()))
        .output()
        .unwrap()
}

fn helm_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm(cp, args);
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of a multi-document YAML stream, as JSON.
fn objects(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value = Value::deserialize(doc).unwrap();
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

const LINT_TEST_NAMESPACE: &str = "detour-helm-lint";

fn template(cp: &ControlPlane, namespace: &str, sets: &[&str]) -> String {
    let test_namespace = format!("test.namespace={LINT_TEST_NAMESPACE}");
    let mut args = vec!["template", "detour", &*CHART, "--namespace", namespace];
    args.extend(["--set", &test_namespace]);
    for set in sets {
        args.extend(["--set", set]);
    }
    helm_ok(cp, &args)
}

static CHART: std::sync::LazyLock<String> = std::sync::LazyLock::new(chart);

/// Every combination of the values that change which objects there are.
fn combinations() -> Vec<Vec<&'static str>> {
    let mut all = Vec::new();
    for namespaces in ["namespaces=opt-in", "namespaces=cluster-wide"] {
        all.push(vec!["mode=native", namespaces]);
        for certificates in [
            "certificates.source=self-managed",
            "certificates.source=cert-manager",
            "certificates.source=provided",
        ] {
            let mut set = vec!["mode=webhook", namespaces, certificates];
            if certificates.ends_with("provided") {
                set.extend([
                    "certificates.provided.secretName=my-tls",
                    "certificates.provided.caBundle=Y2E=",
                ]);
            }
            all.push(set);
        }
    }
    all.push(vec!["mode=none", "proxy.enabled=true"]);
    all.push(vec![
        "config.existingConfigMap=my-rules",
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "podDisruptionBudget.enabled=false",
        "proxy.enabled=true",
        "replicas=3",
    ]);
    all
}

#[test]
fn lint_and_every_combination_is_accepted_by_the_apiserver() {
    // The dry runs name the cluster-wide objects and the test namespace
    // that the install tests create and delete.
    let _turn = serial();
    let cp = control_plane();
    install_cert_manager_crds(cp);
    cp.namespace(NAMESPACE, &[]);
    // `helm template` renders the test hook too, whose Pod goes in the
    // namespace the hook creates first (a dry run creates nothing): one of
    // this test's own, since namespaces are never deleted on this control
    // plane (no namespace controller).
    cp.namespace(LINT_TEST_NAMESPACE, &[("detour.dev/mode", "enforce")]);
    helm_ok(cp, &["lint", "--strict", &CHART]);
    for sets in combinations() {
        let mut args = vec!["lint", "--strict", &*CHART];
        for set in &sets {
            args.extend(["--set", set]);
        }
        helm_ok(cp, &args);
        let rendered = template(cp, NAMESPACE, &sets);
        let out = cp.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
        assert!(
            out.status.success(),
            "{sets:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kinds: Vec<String> = objects(&rendered)
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        if sets.contains(&"mode=native") {
            assert!(
                kinds.contains(&"MutatingAdmissionPolicy".into()),
                "{kinds:?}"
            );
            assert!(!kinds.contains(&"Deployment".into()), "{kinds:?}");
        } else if sets.contains(&"mode=none") {
            // detour proxy alone: no admission object, no helm test.
            for absent in [
                "MutatingWebhookConfiguration",
                "MutatingAdmissionPolicy",
                "Pod",
            ] {
                assert!(!kinds.contains(&absent.to_string()), "{kinds:?}");
            }
            assert!(kinds.contains(&"Deployment".into()), "{kinds:?}");
        } else {
            assert!(kinds.contains(&"Deployment".into()), "{kinds:?}");
            assert!(
                kinds.contains(&"MutatingWebhookConfiguration".into()),
                "{kinds:?}"
            );
        }
    }

    // Bad values are refused by the schema (or the chart), naming the value.
    let refusals: [(&[&str], &str); 8] = [
        (&["mode=none"], "proxy.enabled"),
        (&["mode=sidecar"], "mode"),
        (&["namespaces=some"], "namespaces"),
        (&["image.digest=sha256:xyz"], "digest"),
        (&["replicas=0"], "replicas"),
        (&["certificates.source=provided"], "secretName"),
        (&["colour=blue"], "colour"),
        (
            &["mode=native", "config.existingConfigMap=x"],
            "config.existingConfigMap",
        ),
    ];
    for (sets, named) in refusals {
        let mut args = vec!["template", "detour", &*CHART];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = helm(cp, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sets:?} was accepted");
        assert!(stderr.contains(named), "{sets:?}: {stderr}");
    }
}

/// `helm install detour` of the chart into `namespace` (created).
fn install(cp: &ControlPlane, namespace: &str, sets: &[&str]) {
    let mut args = vec![
        "install",
        "detour",
        &*CHART,
        "-n",
        namespace,
        "--create-namespace",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    helm_ok(cp, &args);
}

/// The MutatingWebhookConfiguration `detour`, or `None`.
fn webhook_configuration(cp: &ControlPlane) -> Option<Value> {
    let out = cp.kubectl(&[
        "get",
        "mutatingwebhookconfiguration",
        "detour",
        "-o",
        "json",
    ]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn install_upgrade_rollback_and_uninstall() {
    let _turn = serial();
    let cp = control_plane();
    let namespace = "detour-release";
    install(cp, namespace, &[]);
    let deployment = cp.get(&["deployment", "detour", "-n", namespace]);
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(image, "ghcr.io/detour-dev/detour:0.1.0");
    let config = cp.get(&["configmap", "detour-config", "-n", namespace]);
    assert!(config["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .contains("m.daocloud.io"));

    // detour writes its CA into the webhook configuration (self-managed
    // certificates); here the test does, as detour's field manager would.
    let ca = common::kube::b64(
        b"-----BEGIN CERTIFICATE-----\nnot checked here\n-----END CERTIFICATE-----\n",
    );
    let patch = serde_json::json!([
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": ca},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": ca},
    ]);
    cp.kubectl_ok(&[
        "patch",
        "mutatingwebhookconfiguration",
        "detour",
        "--type=json",
        "--field-manager=detour",
        "-p",
        &patch.to_string(),
    ]);

    // An upgrade with new rules: the ConfigMap the pods read has them (they
    // reload it), and the caBundle stays.
    let rules =
        "rules:\n  - source: quay.io\n    kind: prefix\n    target: harbor.example.com/quay\n";
    helm_ok(
        cp,
        &[
            "upgrade",
            "detour",
            &CHART,
            "-n",
            namespace,
            "--set-string",
            &format!("config.inline={rules}"),
        ],
    );
    let config = cp.get(&["configmap", "detour-config", "-n", namespace]);
    assert_eq!(config["data"]["config.yaml"], rules);
    let webhooks = webhook_configuration(cp).unwrap();
    for i in 0..2 {
        assert_eq!(
            webhooks["webhooks"][i]["clientConfig"]["caBundle"], ca,
            "the upgrade kept the caBundle"
        );
    }

    helm_ok(cp, &["rollback", "detour", "1", "-n", namespace]);
    let config = cp.get(&["configmap", "detour-config", "-n", namespace]);
    assert!(config["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .contains("m.daocloud.io"));

    let audited_before = cp.audit_events().len();
    helm_ok(cp, &["uninstall", "detour", "-n", namespace]);
    assert!(webhook_configuration(cp).is_none());
    for kind in [
        "deployment",
        "service",
        "configmap",
        "serviceaccount",
        "role",
        "rolebinding",
        "poddisruptionbudget",
    ] {
        let left = cp.kubectl_ok(&[
            "get",
            kind,
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/instance=detour",
            "-o",
            "name",
        ]);
        assert!(left.trim().is_empty(), "{kind} left: {left}");
    }
    let left = cp.kubectl_ok(&[
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/instance=detour",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left: {left}");
    // The webhook configuration went first: no Pod creation could be sent
    // to a Service with nothing behind it in between.
    let deletes: Vec<String> = cp.audit_events()[audited_before..]
        .iter()
        .filter(|e| e["verb"] == "delete" && e["stage"] == "ResponseComplete")
        .map(|e| {
            e["objectRef"]["resource"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let webhook = deletes
        .iter()
        .position(|r| r == "mutatingwebhookconfigurations")
        .expect("the webhook configuration was deleted");
    let deployment = deletes
        .iter()
        .position(|r| r == "deployments")
        .expect("the Deployment was deleted");
    assert!(webhook < deployment, "{deletes:?}");
}

#[test]
fn helm_test_creates_a_pod_that_native_mode_rewrites() {
    let _turn = serial();
    let cp = control_plane();
    let namespace = "detour-native";
    install(cp, namespace, &["mode=native"]);
    let policy = cp.get(&["mutatingadmissionpolicy", "detour"]);
    assert_eq!(
        policy["metadata"]["labels"]["app.kubernetes.io/instance"],
        "detour"
    );
    // The policy takes a moment to reach the admission chain: a server-side
    // dry run of a Pod in a labelled namespace says when it has.
    cp.namespace("detour-helm-probe", &[("detour.dev/mode", "enforce")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = cp.kubectl_ok(&[
            "run",
            "probe",
            "-n",
            "detour-helm-probe",
            "--dry-run=server",
            "-o",
            "json",
            "--image=registry.k8s.io/pause:3.10",
        ]);
        let probe: Value = serde_json::from_str(&probe).unwrap();
        if probe["spec"]["containers"][0]["image"] != "registry.k8s.io/pause:3.10" {
            break;
        }
        assert!(Instant::now() < deadline, "the policy never took effect");
        std::thread::sleep(Duration::from_millis(200));
    }
    // `helm test` creates its namespace and Pod, then waits for the Pod to
    // finish, which it cannot here (no kubelet): the Pod is read as stored.
    let _ = helm(cp, &["test", "detour", "-n", namespace, "--timeout", "3s"]);
    let pod = cp.get(&["pod", "detour-test-rewrite", "-n", "detour-helm-test"]);
    assert!(
        pod["metadata"]["annotations"]["detour.dev/original-images"].is_string(),
        "{pod}"
    );
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "m.daocloud.io/registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
    );
    let namespace_labels = cp.get(&["namespace", "detour-helm-test"])["metadata"]["labels"].clone();
    assert_eq!(namespace_labels["detour.dev/mode"], "enforce");
    // What the test container checks is there: the env var reads this annotation.
    assert_eq!(
        pod["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['detour.dev/original-images']"
    );
    helm_ok(cp, &["uninstall", "detour", "-n", namespace]);
    let left = cp.kubectl(&["get", "mutatingadmissionpolicy", "detour"]);
    assert!(!left.status.success(), "the policy was removed");
}

/// `kubectl kustomize` of an overlay.
fn kustomize(cp: &ControlPlane, overlay: &str) -> Vec<Value> {
    let dir = Path::new(REPO).join("manifests/overlays").join(overlay);
    objects(&cp.kubectl_ok(&["kustomize", dir.to_str().unwrap()]))
}

/// The rules of every Role and ClusterRole bound to detour's ServiceAccount,
/// sorted: what detour may do, whatever the objects are called.
fn permissions(objects: &[Value]) -> Vec<String> {
    let bound: Vec<(&str, &str)> = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
        .filter(|o| {
            o["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["name"] == "detour")
        })
        .map(|o| {
            (
                o["roleRef"]["kind"].as_str().unwrap(),
                o["roleRef"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    let mut rules: Vec<String> = bound
        .iter()
        .flat_map(|(kind, name)| {
            find(objects, kind, name)["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |r| format!("{kind}: {}", canonical(r)))
        })
        .collect();
    rules.sort();
    rules
}

/// JSON text with the keys of every object sorted.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[*k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// What the chart and the overlays must agree on in a Deployment.
fn deployment_essentials(objects: &[Value]) -> Value {
    let spec = &find(objects, "Deployment", "detour")["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    serde_json::json!({
        "podSecurityContext": spec["securityContext"],
        "automountServiceAccountToken": spec["automountServiceAccountToken"],
        "securityContext": container["securityContext"],
        "args": container["args"],
        "env": container["env"],
        "ports": container["ports"],
        "probes": [container["livenessProbe"], container["readinessProbe"]],
        "resources": container["resources"],
        "volumeMounts": container["volumeMounts"],
    })
}

#[test]
fn the_chart_and_the_kustomize_overlays_agree() {
    let cp = control_plane();
    let pairs: [(&str, &[&str]); 3] = [
        ("self-managed", &["certificates.source=self-managed"]),
        ("opt-in", &["certificates.source=cert-manager"]),
        (
            "cluster-wide",
            &[
                "certificates.source=cert-manager",
                "namespaces=cluster-wide",
            ],
        ),
    ];
    for (overlay, sets) in pairs {
        let shipped = kustomize(cp, overlay);
        let charted = objects(&template(cp, "detour-system", sets));
        let webhooks = |objects: &[Value]| {
            let mut configuration = find(objects, "MutatingWebhookConfiguration", "detour").clone();
            configuration["metadata"]["labels"] = Value::Null;
            configuration["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("labels");
            configuration
        };
        assert_eq!(
            webhooks(&charted),
            webhooks(&shipped),
            "{overlay}: webhooks"
        );
        assert_eq!(
            permissions(&charted),
            permissions(&shipped),
            "{overlay}: RBAC"
        );
        assert_eq!(
            deployment_essentials(&charted),
            deployment_essentials(&shipped),
            "{overlay}: Deployment"
        );
        for kind in ["Issuer", "Certificate"] {
            let specs = |objects: &[Value]| -> Vec<String> {
                let mut specs: Vec<String> = objects
                    .iter()
                    .filter(|o| o["kind"] == kind)
                    .map(|o| canonical(&serde_json::json!([o["metadata"]["name"], o["spec"]])))
                    .collect();
                specs.sort();
                specs
            };
            assert_eq!(specs(&charted), specs(&shipped), "{overlay}: {kind}");
        }
    }
    // Native mode: the chart's policies are the overlay's (and so what
    // `detour policy` prints for the embedded default).
    let shipped = kustomize(cp, "native");
    let charted: Vec<Value> = objects(&template(cp, "detour-system", &["mode=native"]))
        .into_iter()
        .filter(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_null())
        .collect();
    assert_eq!(shipped.len(), charted.len());
    for object in &shipped {
        let name = object["metadata"]["name"].as_str().unwrap();
        let mut ours = find(&charted, object["kind"].as_str().unwrap(), name).clone();
        ours["metadata"].as_object_mut().unwrap().remove("labels");
        let mut theirs = object.clone();
        theirs["metadata"].as_object_mut().unwrap().remove("labels");
        assert_eq!(ours, theirs, "{name}");
    }
}

/// The chart ships `detour policy` of the embedded default for each
/// namespace scope (regenerate with the commands in the message).
#[test]
fn the_charts_native_policies_are_fresh() {
    for scope in ["opt-in", "cluster-wide"] {
        let printed = common::detour(&["policy", "--namespaces", scope]).stdout;
        let file = format!("charts/detour/files/native-{scope}.yaml");
        let shipped = std::fs::read(Path::new(REPO).join(&file)).unwrap();
        assert!(
            printed == shipped,
            "{file} is stale: run `detour policy --namespaces {scope} > {file}`"
        );
    }
}
