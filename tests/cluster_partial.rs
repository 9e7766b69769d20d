//! `detour audit` against a cluster that does not serve a kind it lists:
//! a kube-apiserver started without the batch/v1 API (no Jobs, no CronJobs).
//! The audit says the result is partial and reports the rest.

mod common;

use common::kube::{audit_report, control_plane_with};

#[test]
fn a_kind_the_cluster_does_not_serve_makes_the_audit_partial() {
    let cp = control_plane_with(&["--runtime-config=batch/v1=false"]);
    let versions = cp.kubectl_ok(&["api-versions"]);
    assert!(!versions.lines().any(|l| l == "batch/v1"), "{versions}");
    cp.namespace("served", &[("detour.dev/mode", "enforce")]);
    cp.apply(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "served"},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}"#,
    );
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/config.yaml");
    let report = audit_report(&cp.kubeconfig, &["--config", config, "audit", "-o", "json"]);
    let partial = report["partial"].to_string();
    assert!(
        partial.contains("list Job: not served by this cluster"),
        "{partial}"
    );
    assert!(
        partial.contains("list CronJob: not served by this cluster"),
        "{partial}"
    );
    let pod = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["namespace"] == "served" && f["name"] == "p")
        .expect("the Pod is still reported");
    assert_eq!(pod["to"], "m.daocloud.io/registry.k8s.io/pause:3.9");
}
