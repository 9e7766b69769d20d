//! Renders every kustomize overlay with `kubectl kustomize` and checks the
//! properties a production install depends on.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");

fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl on PATH");
    assert!(
        out.status.success(),
        "kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str(doc).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

fn mode_expression(webhook: &Value) -> &Value {
    webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "detour.dev/mode")
        .expect("detour.dev/mode selector")
}

/// What every overlay must keep from the base.
fn check_common(docs: &[Value]) {
    let ns = find(docs, "Namespace", "detour-system");
    assert_eq!(ns["metadata"]["labels"]["detour.dev/mode"], "off");
    let deploy = find(docs, "Deployment", "detour");
    assert_eq!(deploy["metadata"]["namespace"], "detour-system");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod["affinity"]["podAntiAffinity"].is_object());
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&"--cert-dir=/etc/detour/tls")
            && args.contains(&"--config=/etc/detour/config/config.yaml")
    );
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 25,
        "longer than shutdown delay + grace"
    );
    assert_eq!(
        find(docs, "PodDisruptionBudget", "detour")["spec"]["minAvailable"],
        1
    );
    assert_eq!(
        find(docs, "Role", "detour")["rules"],
        Value::Array(vec![]),
        "detour needs no API access"
    );
    // The config shipped in the ConfigMap is a valid detour config.
    let config = find(docs, "ConfigMap", "detour-config")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    detour_core::config::Config::from_yaml(config, "configmap").expect("shipped config loads");

    let mwc = find(docs, "MutatingWebhookConfiguration", "detour");
    let hooks = mwc["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    for (hook, path) in hooks.iter().zip(["/mutate", "/audit"]) {
        assert_eq!(hook["clientConfig"]["service"]["path"], path);
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 5);
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
        assert_eq!(hook["matchPolicy"], "Equivalent");
        let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(
            excluded["values"],
            serde_json::json!(["kube-system", "detour-system"])
        );
        let skip = &hook["objectSelector"]["matchExpressions"][0];
        assert_eq!(
            (skip["key"].as_str(), skip["operator"].as_str()),
            (Some("detour.dev/skip"), Some("NotIn"))
        );
        let rules = hook["rules"].as_array().unwrap();
        assert_eq!(rules[0]["resources"][0], "pods");
        assert_eq!(rules[0]["operations"][0], "CREATE");
        assert_eq!(rules[1]["resources"][0], "pods/ephemeralcontainers");
        assert_eq!(rules[1]["operations"][0], "UPDATE");
    }
    assert_eq!(mode_expression(&hooks[1])["operator"], "In");
    assert_eq!(
        mode_expression(&hooks[1])["values"],
        serde_json::json!(["audit"])
    );
}

#[test]
fn opt_in_overlay() {
    let docs = render(&Path::new(MANIFESTS).join("overlays/opt-in"));
    check_common(&docs);
    let mwc = find(&docs, "MutatingWebhookConfiguration", "detour");
    let enforce = mode_expression(&mwc["webhooks"][0]);
    assert_eq!(enforce["operator"], "In");
    assert_eq!(enforce["values"], serde_json::json!(["enforce"]));
}

#[test]
fn cluster_wide_overlay() {
    let docs = render(&Path::new(MANIFESTS).join("overlays/cluster-wide"));
    check_common(&docs);
    let mwc = find(&docs, "MutatingWebhookConfiguration", "detour");
    let enforce = mode_expression(&mwc["webhooks"][0]);
    assert_eq!(enforce["operator"], "NotIn");
    assert_eq!(enforce["values"], serde_json::json!(["off", "audit"]));
}

#[test]
fn cert_manager_overlay() {
    let docs = render(&Path::new(MANIFESTS).join("overlays/cert-manager"));
    check_common(&docs);
    let cert = find(&docs, "Certificate", "detour-serving-cert");
    assert_eq!(cert["spec"]["secretName"], "detour-tls");
    assert!(cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .contains(&"detour.detour-system.svc".into()));
    find(&docs, "Issuer", "detour-ca");
    let mwc = find(&docs, "MutatingWebhookConfiguration", "detour");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "detour-system/detour-serving-cert"
    );
}

#[test]
fn self_signed_overlay_carries_the_ca_from_detour_certs() {
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("manifests");
    let status = Command::new("cp")
        .arg("-r")
        .arg(MANIFESTS)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let overlay = copy.join("overlays/self-signed");
    let certs = overlay.join("certs");
    common::detour(&[
        "certs",
        "--out",
        certs.to_str().unwrap(),
        "--service",
        "detour",
        "--namespace",
        "detour-system",
    ]);
    let docs = render(&overlay);
    check_common(&docs);
    let secret = find(&docs, "Secret", "detour-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    use base64::Engine as _;
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let mwc = find(&docs, "MutatingWebhookConfiguration", "detour");
    for hook in mwc["webhooks"].as_array().unwrap() {
        // kustomize wraps base64 at 70 columns; the apiserver's decoder
        // (Go encoding/base64) skips the newlines, and so do we.
        let wrapped = hook["clientConfig"]["caBundle"]
            .as_str()
            .expect("caBundle set");
        let joined: String = wrapped.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap(),
            ca
        );
    }
    // The serving certificate names the Service the apiserver calls.
    let pem = std::fs::read_to_string(certs.join("tls.crt")).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = format!(
        "{:?}",
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
    );
    assert!(sans.contains("detour.detour-system.svc"), "{sans}");
}

#[test]
fn self_managed_overlay_uses_the_api_with_named_permissions_only() {
    let docs = render(&Path::new(MANIFESTS).join("overlays/self-managed"));
    let deploy = find(&docs, "Deployment", "detour");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], true);
    let c = &pod["containers"][0];
    let args = c["args"].to_string();
    assert!(
        args.contains("--manage-certs") && !args.contains("--cert-dir"),
        "{args}"
    );
    assert_eq!(c["env"][0]["name"], "DETOUR_NAMESPACE");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // Still hardened as in the base.
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // No certificate volume: the certificate comes from the API.
    let volumes = pod["volumes"].to_string();
    assert!(!volumes.contains("detour-tls"), "{volumes}");
    // RBAC: by name, except create (which cannot be), and only in detour's
    // namespace; cluster-wide only the one webhook configuration.
    let role = find(&docs, "Role", "detour-certs");
    assert_eq!(role["metadata"]["namespace"], "detour-system");
    let rules = role["rules"].as_array().unwrap();
    assert_eq!(
        rules[0]["resourceNames"],
        serde_json::json!(["detour-certs"])
    );
    assert_eq!(rules[0]["verbs"], serde_json::json!(["get", "update"]));
    assert_eq!(rules[1]["verbs"], serde_json::json!(["create"]));
    let cluster_role = find(&docs, "ClusterRole", "detour-webhook-ca-bundle");
    let rules = cluster_role["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["resourceNames"], serde_json::json!(["detour"]));
    assert_eq!(rules[0]["verbs"], serde_json::json!(["get", "update"]));
    for doc in &docs {
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let verbs = rule["verbs"].to_string();
            assert!(
                !verbs.contains("list") && !verbs.contains("watch") && !verbs.contains('*'),
                "{doc}"
            );
        }
    }
}

#[test]
fn proxy_manifests_run_the_proxy_locked_down_with_a_valid_config() {
    let dir = Path::new(MANIFESTS).join("proxy");
    let docs = render(&dir);
    let deploy = find(&docs, "Deployment", "detour-proxy");
    assert_eq!(deploy["metadata"]["namespace"], "detour-mirror");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    let container = &pod["containers"][0];
    assert_eq!(container["args"][0], "proxy");
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // No Kubernetes API access at all.
    assert!(docs.iter().all(
        |d| !["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
            .contains(&d["kind"].as_str().unwrap_or_default())
    ));
    // The shipped config is one the proxy accepts, and its cache directory
    // is the mounted volume.
    let config_map = find(&docs, "ConfigMap", "detour-proxy-config");
    let text = config_map["data"]["proxy.yaml"].as_str().unwrap();
    let config = detour_proxy::ProxyConfig::parse(text).expect("valid proxy config");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let cache = mounts.iter().find(|m| m["name"] == "cache").unwrap();
    assert_eq!(
        cache["mountPath"].as_str().unwrap(),
        config.cache.directory.to_str().unwrap()
    );
    let config_path = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--config="))
        .unwrap();
    let config_mount = mounts.iter().find(|m| m["name"] == "config").unwrap();
    assert_eq!(
        Path::new(config_path).parent().unwrap(),
        Path::new(config_mount["mountPath"].as_str().unwrap())
    );
    let namespace = find(&docs, "Namespace", "detour-mirror");
    assert_eq!(namespace["metadata"]["labels"]["detour.dev/mode"], "off");
}
