//! `detour audit` and `detour mirror --from-cluster` against a real
//! kube-apiserver (tests/kube), with real docker-registry instances as the
//! mirror and skopeo reading the copies back.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use common::kube::{
    audit_report, control_plane, create_pods, detour_with_kubeconfig, serial, write_kubeconfig,
    ControlPlane, Installed, VIEWER_TOKEN,
};
use common::registry::{skopeo_digest, Image, Registry, RegistryOptions};
use common::*;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn shipped_config() -> PathBuf {
    Path::new(REPO).join("manifests/base/config.yaml")
}

/// Runs the detour binary against the control plane (its kubeconfig).
fn detour_on(cp: &ControlPlane, args: &[&str]) -> Output {
    detour_with_kubeconfig(&cp.kubeconfig, args)
}

fn audit_json(cp: &ControlPlane, extra: &[&str]) -> Value {
    let config = shipped_config();
    let mut args = vec!["--config", config.to_str().unwrap(), "audit", "-o", "json"];
    args.extend_from_slice(extra);
    audit_report(&cp.kubeconfig, &args)
}

/// `(mode, action, to)` counts over the findings of namespaces `prefix*`.
fn tally(report: &Value, prefix: &str) -> std::collections::BTreeMap<(String, String), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for f in report["findings"].as_array().unwrap() {
        if f["namespace"].as_str().unwrap().starts_with(prefix) {
            let key = (
                f["mode"].as_str().unwrap().to_string(),
                f["action"].as_str().unwrap().to_string(),
            );
            *counts.entry(key).or_default() += 1;
        }
    }
    counts
}

fn key(mode: &str, action: &str) -> (String, String) {
    (mode.to_string(), action.to_string())
}

/// What the shipped config does to each image the load uses.
const LOAD_IMAGES: [(&str, Option<&str>); 4] = [
    (
        "registry.k8s.io/pause:3.9",
        Some("m.daocloud.io/registry.k8s.io/pause:3.9"),
    ),
    (
        "k8s.gcr.io/pause:3.1",
        Some("m.daocloud.io/k8s.gcr.io/pause:3.1"),
    ),
    ("nginx:1.25", None),
    (
        "registry.k8s.io/coredns/coredns:v1.11.1",
        Some("m.daocloud.io/registry.k8s.io/coredns/coredns:v1.11.1"),
    ),
];

/// 50 namespaces of 100 Pods (25 of each load image): load-00..19 labelled
/// enforce, 20..29 audit, 30..39 off, 40..49 unlabelled. load-00 also
/// holds workloads and the skip cases.
fn create_load(cp: &'static ControlPlane) {
    for i in 0..50 {
        let ns = format!("load-{i:02}");
        let labels: &[(&str, &str)] = match i {
            0..=19 => &[("detour.dev/mode", "enforce")],
            20..=29 => &[("detour.dev/mode", "audit")],
            30..=39 => &[("detour.dev/mode", "off")],
            _ => &[],
        };
        cp.namespace(&ns, labels);
    }
    runtime().block_on(async {
        for i in 0..50 {
            let ns = format!("load-{i:02}");
            for (n, (image, _)) in LOAD_IMAGES.iter().enumerate() {
                let stop = Arc::new(AtomicBool::new(false));
                let created = create_pods(cp, &ns, &format!("p{n}"), image, 16, 25, stop).await;
                assert!(created.iter().all(|c| c.status == 201));
            }
        }
    });
    let template = |image: &str| {
        json!({"metadata": {"labels": {"app": "x"}},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    };
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "load-00"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template("registry.k8s.io/echoserver:2.5")}});
    let (out, _) = cp.apply(&deployment.to_string());
    assert!(
        out.contains("created") || out.contains("unchanged"),
        "{out}"
    );
    let deployment = cp.get(&["-n", "load-00", "deployment", "web"]);
    let owned = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "load-00", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "Deployment", "name": "web", "uid": deployment["metadata"]["uid"], "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template("registry.k8s.io/echoserver:2.5")}});
    let solo = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "solo", "namespace": "load-00"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": template("registry.k8s.io/solo:1")}});
    let mut job_template = template("registry.k8s.io/cron:1");
    job_template["spec"]["restartPolicy"] = "Never".into();
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "load-00"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": job_template}}}});
    for object in [owned, solo, cron] {
        cp.apply(&object.to_string());
    }
    let cron = cp.get(&["-n", "load-00", "cronjob", "nightly"]);
    let mut job_template = template("registry.k8s.io/cron:1");
    job_template["spec"]["restartPolicy"] = "Never".into();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "nightly-1", "namespace": "load-00", "ownerReferences": [{"apiVersion": "batch/v1",
            "kind": "CronJob", "name": "nightly", "uid": cron["metadata"]["uid"], "controller": true}]},
        "spec": {"template": job_template}});
    cp.apply(&job.to_string());
    let pod = |name: &str, container: Value, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "load-00", "labels": labels},
               "spec": {"containers": [container]}})
    };
    for p in [
        pod(
            "skipped",
            json!({"name": "c", "image": "registry.k8s.io/pause:3.9"}),
            json!({"detour.dev/skip": "true"}),
        ),
        pod(
            "local",
            json!({"name": "c", "image": "registry.k8s.io/pause:3.9", "imagePullPolicy": "Never"}),
            json!({}),
        ),
        pod(
            "bad",
            json!({"name": "c", "image": "registry.k8s.io/Pause:3.9"}),
            json!({}),
        ),
    ] {
        cp.apply(&p.to_string());
    }
}

#[test]
fn audit_of_5000_pods_in_50_namespaces_matches_the_config() {
    let _turn = serial();
    let cp = control_plane();
    let started = Instant::now();
    create_load(cp);
    eprintln!(
        "5,000 Pods and the workloads created in {:?}",
        started.elapsed()
    );
    // The opt-in overlay as installed decides the modes.
    let _installed = Installed::new(
        cp,
        "opt-in",
        free_port(),
        &std::fs::read_to_string(&cp.ca).unwrap(),
    );

    let started = Instant::now();
    let report = audit_json(cp, &[]);
    let took = started.elapsed();
    eprintln!("detour audit of the whole cluster took {took:?}");
    let counts = tally(&report, "load-");
    // Per namespace: 75 Pods with an image the config rewrites, 25 without.
    // load-00 adds the Deployment, the ReplicaSet without an owner and the
    // CronJob (the owned ReplicaSet and Job repeat their owners' templates).
    assert_eq!(counts.get(&key("enforce", "rewrite")), Some(&(20 * 75 + 3)));
    assert_eq!(counts.get(&key("audit", "rewrite")), Some(&(10 * 75)));
    assert_eq!(counts.get(&key("off", "rewrite")), Some(&(20 * 75)));
    assert_eq!(counts.get(&key("enforce", "unchanged")), Some(&(20 * 25)));
    assert_eq!(counts.get(&key("enforce", "skipped")), Some(&2));
    assert_eq!(counts.get(&key("enforce", "invalid")), Some(&1));
    // Every rewrite is what the config says for that image.
    for f in report["findings"].as_array().unwrap() {
        if let Some((_, to)) = LOAD_IMAGES.iter().find(|(image, _)| f["image"] == *image) {
            let expected = if f["action"] == "skipped" {
                Value::Null
            } else {
                to.map_or(Value::Null, Value::from)
            };
            assert_eq!(f["to"], expected, "{f}");
        }
    }
    let names: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["namespace"] == "load-00" && f["kind"] != "Pod")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for name in ["web", "solo", "nightly"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert_eq!(report["namespaces"]["kube-system"], "excluded");
    assert!(report["modesFrom"]
        .as_str()
        .unwrap()
        .contains("MutatingWebhookConfiguration detour (opt-in)"));
    assert_eq!(report["partial"], json!([]));
    let summary = &report["summary"];
    assert!(summary["containers"].as_u64().unwrap() >= 5006);
    assert!(summary["distinctRewrites"].as_u64().unwrap() >= 6);

    // The readable form, one namespace.
    let config = shipped_config();
    let out = detour_on(
        cp,
        &[
            "--config",
            config.to_str().unwrap(),
            "audit",
            "-n",
            "load-00",
            "--page-size",
            "7",
        ],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("detour audit -n load-00:\n{text}");
    assert!(
        text.contains("namespace load-00 (enforce: new Pods get these images)"),
        "{text}"
    );
    assert!(
        text.contains("registry.k8s.io/pause:3.9 -> m.daocloud.io/registry.k8s.io/pause:3.9  (25 objects: Pod/p0-0, Pod/p0-1, Pod/p0-10, ...)"),
        "{text}"
    );
    assert!(text.contains("registry.k8s.io/echoserver:2.5 -> m.daocloud.io/registry.k8s.io/echoserver:2.5  (1 object: Deployment/web)"), "{text}");
    assert!(
        text.contains("skipped: labelled detour.dev/skip=true  (1 object: Pod/skipped)"),
        "{text}"
    );
    assert!(
        text.contains("\"registry.k8s.io/Pause:3.9\" invalid"),
        "{text}"
    );
    assert!(
        text.contains("106 objects, 106 containers in 1 namespace"),
        "{text}"
    );
    assert!(!text.contains("load-01"), "{text}");

    // Under the cluster-wide overlay, unlabelled namespaces are enforced.
    drop(_installed);
    let _installed = Installed::new(
        cp,
        "cluster-wide",
        free_port(),
        &std::fs::read_to_string(&cp.ca).unwrap(),
    );
    let counts = tally(&audit_json(cp, &[]), "load-");
    assert_eq!(counts.get(&key("enforce", "rewrite")), Some(&(30 * 75 + 3)));
    assert_eq!(counts.get(&key("off", "rewrite")), Some(&(10 * 75)));
}

#[test]
fn check_mirror_marks_present_and_missing_images_and_can_fail_a_gate() {
    let _turn = serial();
    let cp = control_plane();
    let mirror = Registry::start(RegistryOptions::default());
    let ns = "mirror-check";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    // The mirror holds one of the two rewritten images.
    let image = Image::new(false, &[1024, 2048], 7);
    runtime().block_on(mirror.push_image("mirror/registry.k8s.io/pause", "3.9", &image));
    runtime().block_on(async {
        for (prefix, image) in [
            ("present", "registry.k8s.io/pause:3.9"),
            ("absent", "registry.k8s.io/kube-proxy:v1.37.2"),
            ("other", "nginx:1.25"),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            create_pods(cp, ns, prefix, image, 2, 2, stop).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "rules:\n  - source: registry.k8s.io\n    kind: full-reference\n    target: {}/mirror\n",
            mirror.host()
        ),
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "audit",
            "-n",
            ns,
            "--check-mirror",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let host = mirror.host();
    let registry_flags = ["--plain-http", host.as_str(), "--allow-loopback"];
    let run = |extra: &[&str]| {
        let all: Vec<String> = args(&[&registry_flags[..], extra].concat());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        detour_on(cp, &all)
    };
    let out = run(&["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let state_of = |image: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["image"] == image)
            .map(|f| f["mirror"].clone())
            .unwrap()
    };
    assert_eq!(state_of("registry.k8s.io/pause:3.9"), "present");
    assert_eq!(state_of("registry.k8s.io/kube-proxy:v1.37.2"), "missing");
    assert_eq!(state_of("nginx:1.25"), Value::Null);
    assert_eq!(report["summary"]["mirrorPresent"], 1);
    assert_eq!(report["summary"]["mirrorMissing"], 1);

    // As a CI gate: exit 3 (or the code given) when something is missing.
    let out = run(&["--fail-on-missing"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("detour audit --check-mirror --fail-on-missing:\n{text}");
    assert!(
        text.contains(&format!("registry.k8s.io/kube-proxy:v1.37.2 -> {host}/mirror/registry.k8s.io/kube-proxy:v1.37.2  (2 objects: Pod/absent-0, Pod/absent-1)  [mirror: MISSING]")),
        "{text}"
    );
    assert!(
        text.contains("mirror: 1 present, 1 missing, 0 unknown"),
        "{text}"
    );
    assert_eq!(run(&["--fail-on-missing=9"]).status.code(), Some(9));
    // --fail-on-missing asks the mirror even without --check-mirror.
    let gate = [
        "--config",
        config.to_str().unwrap(),
        "audit",
        "-n",
        ns,
        "--fail-on-missing",
    ];
    let out = detour_on(cp, &[&gate[..], &registry_flags[..]].concat());
    assert_eq!(out.status.code(), Some(3));
    // Without the loopback permission the address guard refuses to ask:
    // unknown, not missing, and the reason is shown; the gate says it
    // checked nothing, and --fail-on-unknown fails on that.
    let all = args(&["--plain-http", host.as_str(), "--fail-on-missing"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = detour_on(cp, &all);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("mirror: 0 present, 0 missing, 2 unknown"),
        "{text}"
    );
    assert!(text.contains("mirror lookup failed for"), "{text}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .contains("detour: 2 rewritten images were not checked: the mirror could not be asked"),
        "{stderr}"
    );
    let all = args(&[
        "--plain-http",
        host.as_str(),
        "--fail-on-missing",
        "--fail-on-unknown",
    ]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(detour_on(cp, &all).status.code(), Some(3));
}

#[test]
fn mirror_from_cluster_copies_what_the_rules_rewrite() {
    let _turn = serial();
    let cp = control_plane();
    let source = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions::default());
    let app = Image::new(false, &[4096, 1024], 11);
    let tool = Image::new(true, &[2048], 12);
    runtime().block_on(async {
        source.push_image("team/app", "1.0", &app).await;
        source.push_image("team/tool", "2", &tool).await;
    });
    let ns = "from-cluster";
    cp.namespace(ns, &[]);
    let src = source.host();
    runtime().block_on(async {
        for (prefix, image) in [
            ("app", format!("{src}/team/app:1.0")),
            ("tool", format!("{src}/team/tool:2")),
            ("web", "nginx:1.25".to_string()),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            create_pods(cp, ns, prefix, &image, 2, 3, stop).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "rules:\n  - source: {src}/team\n    kind: prefix\n    target: {}/mirror/team\n",
            mirror.host()
        ),
    )
    .unwrap();
    let dst = mirror.host();
    let out = detour_on(
        cp,
        &[
            "--config",
            config.to_str().unwrap(),
            "mirror",
            "--from-cluster",
            "-n",
            ns,
            "--plain-http",
            &src,
            "--plain-http",
            &dst,
            "--allow-loopback",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two images, each copied once although three Pods use it.
    assert_eq!(stdout.matches("copied ").count(), 2, "{stdout}");
    assert!(stdout.contains("total: 2 images (0 failed)"), "{stdout}");
    assert_eq!(
        skopeo_digest(&mirror, "mirror/team/app:1.0"),
        skopeo_digest(&source, "team/app:1.0")
    );
    assert_eq!(
        skopeo_digest(&mirror, "mirror/team/tool:2"),
        skopeo_digest(&source, "team/tool:2")
    );
    assert_eq!(skopeo_digest(&mirror, "mirror/team/app:1.0"), app.digest());
}

#[test]
fn unreachable_clusters_and_refused_namespaces_are_reported_not_panicked() {
    let _turn = serial();
    let cp = control_plane();
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let dead = dir.path().join("dead");
    write_kubeconfig(&dead, free_port(), &cp.ca, VIEWER_TOKEN);
    let out = detour_with_kubeconfig(&dead, &["audit"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("detour: cannot reach the Kubernetes API"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // --context picks a context other than the current one.
    let two = dir.path().join("two-contexts");
    std::fs::write(
        &two,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n\
             - {{name: dead, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: '{ca}'}}}}\n\
             - {{name: e2e, cluster: {{server: 'https://127.0.0.1:{}', certificate-authority: '{ca}'}}}}\n\
             users: [{{name: admin, user: {{token: '{}'}}}}]\n\
             contexts:\n\
             - {{name: dead, context: {{cluster: dead, user: admin}}}}\n\
             - {{name: e2e, context: {{cluster: e2e, user: admin}}}}\n\
             current-context: dead\n",
            free_port(),
            cp.port,
            cp.token,
            ca = cp.ca.display()
        ),
    )
    .unwrap();
    assert_eq!(
        detour_with_kubeconfig(&two, &["audit"]).status.code(),
        Some(2)
    );
    let out = detour_with_kubeconfig(&two, &["audit", "--context", "e2e", "-n", "kube-system"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A wrong token.
    let wrong = dir.path().join("wrong");
    write_kubeconfig(&wrong, cp.port, &cp.ca, "no-such-token");
    let out = detour_with_kubeconfig(&wrong, &["audit"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("no-such-token"), "{stderr}");

    // A CA that did not sign the apiserver's certificate: said to be a
    // certificate the kubeconfig does not trust, not a connection error
    // like nothing listening; one line, no token.
    let other_ca = dir.path().join("other-ca");
    make_certs(&other_ca);
    let untrusted = dir.path().join("untrusted");
    write_kubeconfig(&untrusted, cp.port, &other_ca.join("ca.crt"), VIEWER_TOKEN);
    let out = detour_with_kubeconfig(&untrusted, &["audit"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the apiserver's certificate is not trusted (check certificate-authority in the kubeconfig)"),
        "{stderr}"
    );
    assert!(!stderr.contains(VIEWER_TOKEN), "{stderr}");
    let dead_stderr =
        String::from_utf8_lossy(&detour_with_kubeconfig(&dead, &["audit"]).stderr).to_string();
    assert!(!dead_stderr.contains("certificate"), "{dead_stderr}");
    assert!(dead_stderr.contains("Connection refused"), "{dead_stderr}");

    // A user allowed to read one namespace only: the cluster-wide lists are
    // refused and said to be partial; that namespace alone works.
    let ns = "viewer-only";
    cp.namespace(ns, &[("detour.dev/mode", "enforce")]);
    runtime().block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        create_pods(cp, ns, "p", "registry.k8s.io/pause:3.9", 1, 2, stop).await;
    });
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "audit-reader", "namespace": ns},
         "rules": [{"apiGroups": ["", "apps", "batch"], "resources": ["pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"], "verbs": ["list"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "audit-reader", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "audit-reader"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer"}]}]});
    cp.apply(&rbac.to_string());
    let viewer = dir.path().join("viewer");
    write_kubeconfig(&viewer, cp.port, &cp.ca, VIEWER_TOKEN);
    let config = shipped_config();
    let config = config.to_str().unwrap();
    let out = detour_with_kubeconfig(&viewer, &["--config", config, "audit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("partial: list Pod in all namespaces: forbidden"),
        "{text}"
    );
    assert!(text.contains("partial: read namespaces"), "{text}");
    let out = detour_with_kubeconfig(
        &viewer,
        &["--config", config, "audit", "-n", ns, "-o", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rewrites = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["action"] == "rewrite")
        .count();
    assert_eq!(rewrites, 2, "{report}");
    // It may not read the namespace's label, so its mode is not known:
    // not `off` (the text says why), and nothing is counted as off.
    assert_eq!(report["namespaces"][ns], "unknown", "{report}");
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["mode"] == "unknown"));
    let text = detour_with_kubeconfig(&viewer, &["--config", config, "audit", "-n", ns]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "namespace {ns} (unknown: its detour.dev/mode label could not be read)"
        )),
        "{text}"
    );
    assert!(!text.contains("(off"), "{text}");
    // It may not read the namespace or the webhook configuration: said so.
    let partial = report["partial"].to_string();
    assert!(partial.contains("read namespaces"), "{partial}");
    assert!(
        partial.contains("mutatingwebhookconfiguration"),
        "{partial}"
    );
    // Cluster-scoped objects have no namespace to name.
    assert!(
        partial.contains("get mutatingwebhookconfiguration detour: forbidden"),
        "{partial}"
    );
    assert!(partial.contains("read namespaces: forbidden"), "{partial}");
}
