//! Admission decisions on bodies shaped exactly like the recorded apiserver
//! request (tests/fixtures/kube-apiserver-v1.19-pod-create.json).

use super::*;
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("../../tests/fixtures/kube-apiserver-v1.19-pod-create.json");

fn body(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_str(FIXTURE).unwrap();
    edit(&mut review);
    serde_json::to_vec(&review).unwrap()
}

fn with_images(images: &[(&str, &str)]) -> Vec<u8> {
    body(|r| {
        r["request"]["object"]["spec"]["containers"] = images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i, "imagePullPolicy": "IfNotPresent"}))
            .collect();
    })
}

fn answer(body: &[u8], mode: Mode) -> (Value, Summary) {
    let reviewed = review(body, mode, &Config::embedded_default()).expect("readable review");
    (
        serde_json::from_slice(&reviewed.body).unwrap(),
        reviewed.summary,
    )
}

fn decoded_patch(resp: &Value) -> Value {
    let b64 = resp["response"]["patch"].as_str().expect("base64 patch");
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn unchanged_pod_gets_allowed_without_patch_and_echoes_uid() {
    let (resp, summary) = answer(FIXTURE.as_bytes(), Mode::Enforce);
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(
        resp["response"]["uid"],
        "3e1f5b2e-8446-4b87-a3f3-7efe6676d98a"
    );
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"].get("patch").is_none() && resp["response"].get("patchType").is_none());
    assert_eq!(summary.disposition, Disposition::Unchanged);
}

#[test]
fn enforce_patches_images_and_records_originals() {
    let (resp, summary) = answer(
        &with_images(&[("a", "registry.k8s.io/pause:3.9"), ("b", "nginx")]),
        Mode::Enforce,
    );
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let patch = decoded_patch(&resp);
    assert_eq!(
        patch,
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "m.daocloud.io/registry.k8s.io/pause:3.9"},
            {"op": "add", "path": "/metadata/annotations", "value": {"detour.dev/original-images": "{\"a\":\"registry.k8s.io/pause:3.9\"}"}}
        ])
    );
    assert_eq!(summary.disposition, Disposition::Patched);
    assert_eq!(summary.changes.len(), 1);
}

#[test]
fn audit_warns_and_annotates_but_never_patches() {
    let (resp, summary) = answer(
        &with_images(&[("app", "registry.k8s.io/pause:3.9")]),
        Mode::Audit,
    );
    let r = &resp["response"];
    assert!(r.get("patch").is_none());
    assert_eq!(r["warnings"][0], "detour: would rewrite app: registry.k8s.io/pause:3.9 -> m.daocloud.io/registry.k8s.io/pause:3.9");
    let audit: Value =
        serde_json::from_str(r["auditAnnotations"]["would-rewrite"].as_str().unwrap()).unwrap();
    assert_eq!(audit[0]["to"], "m.daocloud.io/registry.k8s.io/pause:3.9");
    assert_eq!(summary.disposition, Disposition::WouldPatch);
    let long = format!("registry.k8s.io/{}:1", "x".repeat(150));
    let (resp, _) = answer(&with_images(&[("app", &long)]), Mode::Audit);
    assert_eq!(
        resp["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        MAX_WARNING_CHARS
    );
}

#[test]
fn global_audit_mode_overrides_the_enforce_path() {
    let config = Config::from_yaml(
        "mode: audit\nrules: [{source: quay.io, kind: host, target: q.m.example}]",
        "t",
    )
    .unwrap();
    let reviewed = review(
        &with_images(&[("a", "quay.io/x/y")]),
        Mode::Enforce,
        &config,
    )
    .unwrap();
    let resp: Value = serde_json::from_slice(&reviewed.body).unwrap();
    assert!(resp["response"].get("patch").is_none());
    assert_eq!(reviewed.summary.mode, Mode::Audit);
}

#[test]
fn v1beta1_is_answered_in_v1beta1() {
    let (resp, _) = answer(
        &body(|r| r["apiVersion"] = "admission.k8s.io/v1beta1".into()),
        Mode::Enforce,
    );
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(
        resp["response"]["uid"],
        "3e1f5b2e-8446-4b87-a3f3-7efe6676d98a"
    );
}

#[test]
fn other_kinds_and_operations_are_allowed_untouched() {
    let deployment = body(|r| {
        r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        r["request"]["object"] =
            json!({"kind": "Deployment", "spec": {"containers": "not-a-list"}});
    });
    let (resp, summary) = answer(&deployment, Mode::Enforce);
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(
        resp["response"]["uid"],
        "3e1f5b2e-8446-4b87-a3f3-7efe6676d98a"
    );
    assert_eq!(summary.disposition, Disposition::NotHandled);
    let update = body(|r| {
        r["request"]["operation"] = "UPDATE".into();
        r["request"]["object"]["spec"]["containers"][0]["image"] =
            "registry.k8s.io/pause:3.9".into();
    });
    let (resp, _) = answer(&update, Mode::Enforce);
    assert!(
        resp["response"].get("patch").is_none(),
        "plain Pod UPDATE must not restart containers"
    );
}

#[test]
fn skips_mirror_pods_skip_label_never_pull_policy_and_invalid_images() {
    let mirror = body(|r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({"kubernetes.io/config.mirror": "abc"});
        r["request"]["object"]["spec"]["containers"][0]["image"] =
            "registry.k8s.io/pause:3.9".into();
    });
    assert_eq!(
        answer(&mirror, Mode::Enforce).1.disposition,
        Disposition::Skipped(PodSkip::MirrorPod)
    );
    let labelled = body(|r| {
        r["request"]["object"]["metadata"]["labels"] = json!({"detour.dev/skip": "true"});
        r["request"]["object"]["spec"]["containers"][0]["image"] =
            "registry.k8s.io/pause:3.9".into();
    });
    assert_eq!(
        answer(&labelled, Mode::Enforce).1.disposition,
        Disposition::Skipped(PodSkip::SkipLabel)
    );
    let never = body(|r| {
        r["request"]["object"]["spec"]["containers"] = json!([{"name": "n", "image": "registry.k8s.io/pause:3.9", "imagePullPolicy": "Never"}]);
    });
    let (resp, summary) = answer(&never, Mode::Enforce);
    assert!(resp["response"].get("patch").is_none());
    assert_eq!(summary.skipped.len(), 1);
    let rewrite_never = Config::from_yaml("pullPolicyNever: rewrite\nrules: [{source: registry.k8s.io, kind: host, target: k.m.example}]", "t").unwrap();
    assert_eq!(
        review(&never, Mode::Enforce, &rewrite_never)
            .unwrap()
            .summary
            .changes
            .len(),
        1
    );
    let (resp, summary) = answer(&with_images(&[("bad", "Not A/Reference")]), Mode::Enforce);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not a valid reference"));
    assert_eq!(summary.skipped.len(), 1);
}

#[test]
fn existing_annotations_are_extended_with_an_escaped_pointer() {
    let b = body(|r| {
        r["request"]["object"]["metadata"]["annotations"] = json!({"team": "x"});
        r["request"]["object"]["spec"]["containers"][0]["image"] =
            "registry.k8s.io/pause:3.9".into();
    });
    let patch = decoded_patch(&answer(&b, Mode::Enforce).0);
    assert_eq!(patch[1]["op"], "add");
    assert_eq!(
        patch[1]["path"],
        "/metadata/annotations/detour.dev~1original-images"
    );
}

#[test]
fn reinvocation_rewrites_only_new_containers_and_merges_the_annotation() {
    let second_pass = body(|r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({"detour.dev/original-images": "{\"app\":\"registry.k8s.io/pause:3.9\"}"});
        r["request"]["object"]["spec"]["containers"] = json!([
            {"name": "app", "image": "m.daocloud.io/registry.k8s.io/pause:3.9"},
            {"name": "sidecar", "image": "registry.k8s.io/sidecar:1"}
        ]);
    });
    let patch = decoded_patch(&answer(&second_pass, Mode::Enforce).0);
    assert_eq!(
        patch,
        json!([
            {"op": "replace", "path": "/spec/containers/1/image", "value": "m.daocloud.io/registry.k8s.io/sidecar:1"},
            {"op": "replace", "path": "/metadata/annotations/detour.dev~1original-images",
             "value": "{\"app\":\"registry.k8s.io/pause:3.9\",\"sidecar\":\"registry.k8s.io/sidecar:1\"}"}
        ])
    );
}

#[test]
fn ephemeral_container_update_rewrites_only_new_ephemeral_containers() {
    let b = body(|r| {
        let req = &mut r["request"];
        req["operation"] = "UPDATE".into();
        req["subResource"] = "ephemeralcontainers".into();
        req["object"]["spec"]["containers"][0]["image"] = "registry.k8s.io/app:1".into();
        req["oldObject"] = req["object"].clone();
        req["oldObject"]["spec"]["ephemeralContainers"] =
            json!([{"name": "old", "image": "registry.k8s.io/debug:1"}]);
        req["object"]["spec"]["ephemeralContainers"] = json!([
            {"name": "old", "image": "registry.k8s.io/debug:1"},
            {"name": "new", "image": "registry.k8s.io/debug:2"}
        ]);
    });
    let patch = decoded_patch(&answer(&b, Mode::Enforce).0);
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/spec/ephemeralContainers/1/image", "value": "m.daocloud.io/registry.k8s.io/debug:2"}])
    );
}

#[test]
fn dry_run_is_answered_exactly_as_usual() {
    let normal = with_images(&[("a", "registry.k8s.io/pause:3.9")]);
    let mut dry: Value = serde_json::from_slice(&normal).unwrap();
    dry["request"]["dryRun"] = true.into();
    let (a, _) = answer(&normal, Mode::Enforce);
    let (b, summary) = answer(&serde_json::to_vec(&dry).unwrap(), Mode::Enforce);
    assert_eq!(a, b);
    assert!(summary.dry_run);
}

#[test]
fn unreadable_requests_are_errors_and_unreadable_pods_fail_open() {
    assert!(matches!(
        review(b"{not json", Mode::Enforce, &Config::embedded_default()),
        Err(ReviewError::Malformed(_))
    ));
    assert!(matches!(
        review(b"[]", Mode::Enforce, &Config::embedded_default()),
        Err(ReviewError::Malformed(_))
    ));
    assert!(matches!(
        review(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            Mode::Enforce,
            &Config::embedded_default()
        ),
        Err(ReviewError::MissingRequest)
    ));
    let weird_pod =
        body(|r| r["request"]["object"]["spec"]["containers"] = json!({"not": "a list"}));
    let (resp, summary) = answer(&weird_pod, Mode::Enforce);
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(
        resp["response"]["uid"],
        "3e1f5b2e-8446-4b87-a3f3-7efe6676d98a"
    );
    assert!(matches!(summary.disposition, Disposition::FailedOpen(_)));
}
