//! Admission decisions on bodies shaped exactly like the recorded apiserver
//! request (tests/fixtures/kube-apiserver-v1.19-pod-create.json).

use super::*;
use base64::Engine as _;
use pod::ORIGINAL_IMAGES_ANNOTATION;
use serde_json::{json, Value};

const FIXTURE: &str =
    include_str!("../../../../tests/fixtures/kube-apiserver-v1.19-pod-create.json");

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

fn answer(body: &[u8], mode: Mode) -> (Value, Summary<'static>) {
    static CONFIG: std::sync::LazyLock<Config> = std::sync::LazyLock::new(Config::embedded_default);
    // The summary borrows the body and the config: both kept for the tests' life.
    let body: &'static [u8] = Box::leak(body.into());
    let reviewed = review(body, mode, &CONFIG).expect("readable review");
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
    let body = with_images(&[("a", "quay.io/x/y")]);
    let reviewed = review(&body, Mode::Enforce, &config).unwrap();
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
    assert_eq!(
        resp["response"]["warnings"][0],
        r#"detour: bad: image "Not A/Reference" is not a valid reference"#
    );
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

mod serde_reference;

/// Bodies covering every part of the answer: each list, escapes and Unicode
/// in every echoed string, existing annotations, reinvocation, kubectl debug,
/// skips, invalid images, deferred `if-present` swaps, other kinds, v1beta1,
/// missing fields, a Pod that cannot be read, and 0 to 60 containers.
fn corpus() -> Vec<Vec<u8>> {
    let images = [
        "registry.k8s.io/pause:3.9",
        "nginx",
        "quay.io/prometheus/node-exporter:v1.7.0",
        "ghcr.io/org/tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "k8s.gcr.io/coredns/coredns:v1.8.0",
        "Invalid//Image",
        "docker.io/library/busybox:1.36",
        "harbor.example/present/app:1",
    ];
    let containers = |n: usize, prefix: &str| -> Value {
        (0..n)
            .map(|i| json!({"name": format!("{prefix}{i}"), "image": images[i % images.len()], "imagePullPolicy": "IfNotPresent", "resources": {}, "env": [{"name": "A", "value": "\"q\" \\ \u{e9}"}]}))
            .collect()
    };
    let mut bodies = vec![FIXTURE.as_bytes().to_vec()];
    for n in [0, 1, 3, 8, 60] {
        bodies.push(body(|r| {
            r["request"]["object"]["spec"]["containers"] = containers(n, "c")
        }));
    }
    bodies.push(body(|r| {
        let spec = &mut r["request"]["object"]["spec"];
        spec["containers"] = containers(3, "main-");
        spec["initContainers"] = containers(2, "init-");
        spec["ephemeralContainers"] = containers(2, "debug-");
    }));
    bodies.push(body(|r| {
        r["request"]["uid"] = "uid \"with\" \\ escapes \u{1} and ü ☃".into();
        r["request"]["name"] = "".into();
        r["request"]["object"]["metadata"]["name"] = "näme\twith\"escapes".into();
        r["request"]["object"]["spec"]["containers"] = json!([
            {"name": "c\"1\\ü", "image": "registry.k8s.io/pause:3.9"},
            {"name": "c/2~0", "image": "quay.io/a/b:1"}
        ]);
    }));
    bodies.push(body(|r| {
        r["apiVersion"] = "admission.k8s.io/v1beta1".into();
        r["request"]["object"]["spec"]["containers"] = containers(2, "c");
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["metadata"]["annotations"] = json!({"a": "b", "c": "\u{2603}"});
        r["request"]["object"]["metadata"]["labels"] = json!({"app": "x"});
        r["request"]["object"]["spec"]["containers"] = containers(4, "c");
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["metadata"]["annotations"] = json!({
            ORIGINAL_IMAGES_ANNOTATION: "{\"c0\":\"registry.k8s.io/pause:3.9\",\"sidecar\":\"x:1\"}",
        });
        r["request"]["object"]["spec"]["containers"] = containers(3, "c");
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({ ORIGINAL_IMAGES_ANNOTATION: "not json" });
        r["request"]["object"]["spec"]["containers"] = containers(2, "c");
    }));
    bodies.push(body(|r| {
        r["request"]["operation"] = "UPDATE".into();
        r["request"]["subResource"] = "ephemeralcontainers".into();
        r["request"]["object"]["spec"]["ephemeralContainers"] = containers(3, "debug-");
        r["request"]["oldObject"] = r["request"]["object"].clone();
        r["request"]["oldObject"]["spec"]["ephemeralContainers"] = containers(1, "debug-");
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["metadata"]["labels"] = json!({"detour.dev/skip": "true"});
        r["request"]["object"]["spec"]["containers"] = containers(2, "c");
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({"kubernetes.io/config.mirror": "abc"});
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["spec"]["containers"] = json!([
            {"name": "never", "image": "registry.k8s.io/pause:3.9", "imagePullPolicy": "Never"},
            {"name": "noimage"},
            {"name": "long", "image": format!("registry.k8s.io/{}:1", "a".repeat(200))},
        ]);
    }));
    bodies.push(body(|r| {
        r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        r["request"]["object"] = json!({"spec": {"containers": "not-a-list"}});
    }));
    bodies.push(body(|r| {
        r["request"]["object"]["spec"]["containers"] = json!({"not": "a list"});
    }));
    bodies.push(body(|r| {
        r["request"]["dryRun"] = true.into();
        r["request"]["object"]["spec"]["containers"] = containers(2, "c");
    }));
    bodies.push(body(|r| {
        r.as_object_mut().unwrap().remove("apiVersion");
        r["request"].as_object_mut().unwrap().remove("namespace");
        r["request"]["object"]["spec"]["containers"] = containers(2, "c");
    }));
    // A raw control character (not JSON); not UTF-8, in a field detour
    // skips and in one it reads.
    bodies.push(FIXTURE.replace("\"admin\"", "\"adm\u{1}n\"").into_bytes());
    let mut latin1 = FIXTURE.as_bytes().to_vec();
    let at = FIXTURE.find("kubeharness-admin").unwrap();
    latin1[at] = 0xff;
    bodies.push(latin1);
    let mut latin1 = FIXTURE.as_bytes().to_vec();
    let at = FIXTURE.find("registry.invalid").unwrap();
    latin1[at] = 0xe9;
    bodies.push(latin1);
    bodies.push(br#"{"request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE","object":{"spec":{"containers":[{"name":"a","image":"registry.k8s.io/x:1"}]}}}}"#.to_vec());
    bodies
}

#[test]
fn answers_equal_the_previous_serde_encoder_byte_for_byte() {
    let configs = [
        Config::embedded_default(),
        Config::from_yaml(
            "rules:\n- {source: registry.k8s.io, kind: full-reference, target: m.daocloud.io}\n- {source: quay.io, kind: host, target: quay.m.example, swap: if-present}\n- {source: docker.io, kind: prefix, target: harbor.example/present}\n- {source: ghcr.io, kind: host, target: ghcr.m.example, swap: if-present}",
            "corpus",
        )
        .unwrap(),
        Config::from_yaml("mode: audit\nrules: [{source: registry.k8s.io, kind: host, target: r.m.example}]", "audit")
            .unwrap(),
    ];
    // The mirror "has" quay.io's images and lacks ghcr.io's.
    let present = |to: &str| to.starts_with("quay.m.example");
    let mut compared = 0;
    let mut patched = 0;
    for config in &configs {
        for body in corpus() {
            for mode in [Mode::Enforce, Mode::Audit] {
                // Twice: the second time every image decision comes from the cache.
                for round in 0..2 {
                    let new = prepare(&body, mode, config).map(|p| p.finish(&present));
                    let old =
                        serde_reference::prepare(&body, mode, config).map(|p| p.finish(&present));
                    let (new, old) = match (new, old) {
                        (Ok(new), Ok(old)) => (new, old),
                        (Err(new), Err(old)) => {
                            assert_same_refusal(&new, &old);
                            continue;
                        }
                        (new, old) => panic!("one failed: {:?} vs {:?}", new.err(), old.err()),
                    };
                    assert_eq!(
                        String::from_utf8_lossy(&new.body),
                        String::from_utf8_lossy(&old.body),
                        "config {}, {mode:?}, round {round}, body {}",
                        config.origin,
                        String::from_utf8_lossy(&body)
                    );
                    assert_same_summary(&new.summary, &old.summary);
                    compared += 1;
                    patched += usize::from(new.summary.disposition == Disposition::Patched);
                }
            }
        }
    }
    assert!(
        compared > 100 && patched > 20,
        "{compared} compared, {patched} patched"
    );
}

/// The same refusal; the reader words its errors its own way, and says
/// where (at the start of a value of the wrong type, where serde_json said
/// its end).
fn assert_same_refusal(new: &ReviewError, old: &ReviewError) {
    match (new, old) {
        (ReviewError::Malformed(new), ReviewError::Malformed(_)) => {
            assert!(
                new.contains(" at line ") && new.contains(" column "),
                "{new}"
            );
        }
        (ReviewError::MissingRequest, ReviewError::MissingRequest) => {}
        (new, old) => panic!("{new} / {old}"),
    }
}

/// The same summary; a Pod that cannot be read fails open in both, each
/// saying why in its own words.
fn assert_same_summary(n: &Summary, o: &Summary) {
    assert_eq!(
        (&n.uid, &n.namespace, &n.name, n.mode, n.dry_run),
        (&o.uid, &o.namespace, &o.name, o.mode, o.dry_run)
    );
    match (&n.disposition, &o.disposition) {
        (Disposition::FailedOpen(new), Disposition::FailedOpen(old))
            if old.starts_with("cannot read Pod: ") =>
        {
            assert!(
                new.starts_with("cannot read Pod: ") && new.contains(" at line "),
                "{new}"
            );
        }
        (new, old) => assert_eq!(new, old),
    }
    assert_eq!(
        (&n.changes, &n.deferred, &n.skipped),
        (&o.changes, &o.deferred, &o.skipped)
    );
}

#[test]
fn malformed_bodies_are_refused_as_before() {
    for body in [
        &b""[..],
        b"{",
        b"[]",
        b"{}",
        b"{\"request\":{}}",
        b"{\"request\":{\"uid\":1}}",
        b"{\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"operation\":\"CREATE\"}}",
        b"{\"request\":{\"uid\":\"u\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},\"resource\":{\"group\":\"\",\"version\":\"v1\",\"resource\":\"pods\"},\"operation\":\"EXPLODE\"}}",
        b"{\"request\":{\"uid\":\"u\",\"uid\":\"v\"}}",
        b"\xff\xfe",
        b"{} {}",
    ] {
        let config = Config::embedded_default();
        let new = prepare(body, Mode::Enforce, &config).err();
        let old = serde_reference::prepare(body, Mode::Enforce, &config).err();
        let (Some(new), Some(old)) = (new, old) else {
            panic!("not refused by both: {}", String::from_utf8_lossy(body));
        };
        assert_same_refusal(&new, &old);
    }
}

/// Every field detour reads, and the objects around them, given every kind
/// of JSON value (or removed): answered exactly as the serde decoder
/// answered, refused exactly when it refused. (Not given: an array where an
/// object is expected, which serde reads as the struct's fields in order; the
/// reader refuses it, and the apiserver never sends it.)
#[test]
fn every_field_of_every_type_is_answered_as_before() {
    let objects = [
        "",
        "/request",
        "/request/kind",
        "/request/resource",
        "/request/object",
        "/request/oldObject",
        "/request/object/metadata",
        "/request/object/spec",
        "/request/object/spec/containers/0",
    ];
    let fields = [
        "/apiVersion",
        "/kind",
        "/request",
        "/request/uid",
        "/request/kind",
        "/request/kind/group",
        "/request/kind/version",
        "/request/kind/kind",
        "/request/resource",
        "/request/resource/group",
        "/request/resource/version",
        "/request/resource/resource",
        "/request/subResource",
        "/request/name",
        "/request/namespace",
        "/request/operation",
        "/request/dryRun",
        "/request/object",
        "/request/oldObject",
        "/request/object/metadata",
        "/request/object/metadata/name",
        "/request/object/metadata/generateName",
        "/request/object/metadata/labels",
        "/request/object/metadata/labels/detour.dev~1skip",
        "/request/object/metadata/annotations",
        "/request/object/metadata/annotations/detour.dev~1original-images",
        "/request/object/spec",
        "/request/object/spec/containers",
        "/request/object/spec/initContainers",
        "/request/object/spec/ephemeralContainers",
        "/request/object/spec/containers/0",
        "/request/object/spec/containers/0/name",
        "/request/object/spec/containers/0/image",
        "/request/object/spec/containers/0/imagePullPolicy",
    ];
    let values = [
        json!(null),
        json!(7),
        json!(-1.5e3),
        json!(true),
        json!("text"),
        json!("registry.k8s.io/pause:3.9"),
        json!("Never"),
        json!("CREATE"),
        json!({}),
        json!({"a": "b", "detour.dev/skip": "true"}),
        json!([]),
        json!(["x"]),
        json!([{"name": "n", "image": "quay.io/a/b:1"}]),
    ];
    let config = Config::from_yaml(
        "rules:\n- {source: registry.k8s.io, kind: host, target: r.m.example}\n- {source: quay.io, kind: host, target: q.m.example}",
        "fields",
    )
    .unwrap();
    let base: Value = serde_json::from_str(FIXTURE).unwrap();
    let mut compared = 0;
    for field in fields {
        let (parent, name) = field.rsplit_once('/').unwrap();
        let name = name.replace("~1", "/");
        let mut edits: Vec<Option<&Value>> = values.iter().map(Some).collect();
        edits.push(None);
        for edit in edits {
            if objects.contains(&field) && edit.is_some_and(Value::is_array) {
                continue;
            }
            let mut review = base.clone();
            let Some(parent) = review.pointer_mut(parent) else {
                continue;
            };
            match (parent, edit) {
                (Value::Object(map), Some(value)) => {
                    map.insert(name.clone(), value.clone());
                }
                (Value::Object(map), None) => {
                    map.remove(&name);
                }
                (Value::Array(list), Some(value)) => list[0] = value.clone(),
                _ => continue,
            }
            let body = serde_json::to_vec(&review).unwrap();
            let new = prepare(&body, Mode::Enforce, &config).map(|p| p.finish(&|_| true));
            let old = serde_reference::prepare(&body, Mode::Enforce, &config)
                .map(|p| p.finish(&|_| true));
            match (new, old) {
                (Ok(new), Ok(old)) => {
                    assert_eq!(new.body, old.body, "{field} = {edit:?}");
                    assert_same_summary(&new.summary, &old.summary);
                }
                (Err(new), Err(old)) => assert_same_refusal(&new, &old),
                (new, old) => panic!(
                    "{field} = {edit:?}: one refused: {:?} vs {:?}",
                    new.err(),
                    old.err()
                ),
            }
            compared += 1;
        }
    }
    assert!(compared > 400, "{compared}");
}
