//! Native mode through a real kube-apiserver (v1.37.2, built from Go
//! modules): `detour policy` applied with kubectl as users apply it, and the
//! apiserver itself rewriting Pods. The differential test sends the same
//! Pods through the native policy and through detour's webhook (both in
//! this test) and checks that the apiserver stores the same images and
//! annotation on both paths, and what the engine (`detour explain`)
//! predicts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use axum::routing::post;
use common::kube::{audit_report, control_plane, serial, ControlPlane, Installed, TestWebhook};
use common::*;
use detour_core::config::Config;
use detour_core::reference::Reference;
use serde_json::{json, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PAUSE: &str = "registry.k8s.io/pause:3.9";
const PAUSE_MIRRORED: &str = "m.daocloud.io/registry.k8s.io/pause:3.9";
const ORIGINALS: &str = "detour.dev/original-images";
/// Containers per Pod in the differential test: the size the issue asks
/// the policy to admit.
const PER_POD: usize = 60;
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// `detour policy --config FILE` that must fail: its exit code and stderr.
fn policy_refused(file: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["policy", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "nothing is printed for a refused config"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `detour policy` for `config` (a file, or the embedded default), as JSON objects.
fn policy(config: Option<&Path>, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["policy", "-o", "json"];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let out = detour(&args);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

fn apply_objects(cp: &ControlPlane, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    cp.apply(&list.to_string());
}

fn delete_policies(cp: &ControlPlane) {
    for kind in [
        "mutatingadmissionpolicybinding",
        "mutatingadmissionpolicy",
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        cp.kubectl_ok(&[
            "delete",
            kind,
            "-l",
            "app.kubernetes.io/component=native",
            "--ignore-not-found",
        ]);
    }
}

/// POSTs `pod` to `ns` (server-side dry run unless `store`); the stored Pod.
fn create(cp: &ControlPlane, ns: &str, pod: &Value, store: bool) -> Value {
    let mut args = vec!["create", "-n", ns, "-o", "json", "-f", "-"];
    if !store {
        args.push("--dry-run=server");
    }
    let out = cp.kubectl_with_input(&args, Some(&pod.to_string()));
    assert!(
        out.status.success(),
        "kubectl create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn create_with_stderr(cp: &ControlPlane, ns: &str, pod: &Value) -> (Value, String) {
    let out = cp.kubectl_with_input(
        &[
            "create",
            "-n",
            ns,
            "-o",
            "json",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&pod.to_string()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kubectl create: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

fn pod(name: &str, containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": containers}})
}

/// Until a probe Pod in `ns` is stored with `expected` as its image: a new
/// policy or binding takes a moment to reach the apiserver's informers.
fn wait_image(cp: &ControlPlane, ns: &str, image: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = create(
            cp,
            ns,
            &pod("probe", json!([{"name": "app", "image": image}])),
            false,
        );
        if probe["spec"]["containers"][0]["image"] == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}: probe {image} still stored as {}",
            probe["spec"]["containers"][0]["image"]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every image string the corpus holds: the project's fixtures and test
/// tables, each preset's known repositories, and generated variants.
fn corpus() -> BTreeSet<String> {
    let mut images = BTreeSet::new();
    // String literals of the test tables (core unit tests and these
    // integration tests) that could be images: no whitespace, and a '/',
    // ':' or '@', or a short bare name.
    let mut sources = vec![
        Path::new(REPO).join("crates/core/src/reference/tests.rs"),
        Path::new(REPO).join("crates/core/src/rules/engine/tests.rs"),
        Path::new(REPO).join("crates/core/src/presets/tests.rs"),
        Path::new(REPO).join("crates/core/src/config/tests.rs"),
        Path::new(REPO).join("tests/properties.rs"),
        Path::new(REPO).join("tests/webhook.rs"),
        Path::new(REPO).join("tests/apiserver.rs"),
        Path::new(REPO).join("tests/fixtures/kube-apiserver-v1.19-pod-create.json"),
    ];
    for dir in ["tests/fixtures/manifests"] {
        for entry in std::fs::read_dir(Path::new(REPO).join(dir)).unwrap() {
            sources.push(entry.unwrap().path());
        }
    }
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap();
        for literal in text.split('"').skip(1).step_by(2) {
            if !literal.is_empty()
                && literal.len() < 300
                && !literal.contains(char::is_whitespace)
                && !literal.contains('\\')
                && (literal.contains(['/', ':', '@']) || Reference::parse(literal).is_ok())
            {
                images.insert(literal.to_string());
            }
        }
        // YAML `image: x` lines.
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("image:") {
                let v = v.trim().trim_matches(['"', '\'']);
                if !v.is_empty() && !v.contains(char::is_whitespace) {
                    images.insert(v.to_string());
                }
            }
        }
    }
    let tsv =
        std::fs::read_to_string(Path::new(REPO).join("tests/fixtures/seed-examples.tsv")).unwrap();
    for line in tsv.lines().filter(|l| !l.starts_with('#')) {
        for field in line.split('\t').skip(1).take(2) {
            if !field.is_empty() && !field.contains(char::is_whitespace) {
                images.insert(field.to_string());
            }
        }
    }
    // Each preset's repositories: sources, allow-lists, renames, aliases.
    let mut repos: BTreeSet<String> = BTreeSet::new();
    for config in preset_configs() {
        let config = Config::from_yaml(&config, "corpus").unwrap();
        for rule in config.rules.rules() {
            let key = rule.source.to_string();
            if !key.starts_with('*') {
                let (host, path) = key.split_once('/').unwrap_or((&key, ""));
                if !host.contains(':') {
                    repos.insert(
                        format!("{host}:443/{path}")
                            .trim_end_matches('/')
                            .to_string()
                            + "/app",
                    );
                    repos.insert(host.to_uppercase() + "/app");
                }
                repos.insert(key.clone());
                repos.insert(format!("{key}/app"));
                repos.insert(format!("{key}/team/app"));
                repos.insert(format!("{key}/a/b/c"));
            } else if let Some(suffix) = key.strip_prefix("*.") {
                repos.insert(format!("eu.{suffix}/project/app"));
                repos.insert(format!("a.b.{suffix}/x"));
            }
            for p in rule.allow.patterns().iter().chain(rule.skip.patterns()) {
                let p = p.trim_end_matches("/**");
                repos.insert(p.to_string());
                repos.insert(format!("{p}/sub"));
            }
        }
        for alias in config.rules.aliases() {
            let from = alias.from.to_string();
            repos.insert(format!("{from}/pause"));
            repos.insert(format!("{from}/sub/dir/app"));
        }
    }
    // Docker Hub spellings, ports, IPv6, hosts that only look similar.
    for r in [
        "nginx",
        "library/nginx",
        "docker.io/nginx",
        "docker.io/library/nginx",
        "index.docker.io/nginx",
        "index.docker.io/library/busybox",
        "Docker.io/nginx",
        "bitnami/redis",
        "docker.io/bitnami/redis",
        "localhost/app",
        "localhost:5000/app",
        "registry.example.com:5000/team/app",
        "127.0.0.1:5000/x/y",
        "[::1]:5000/app",
        "[fe80::1]/app",
        "Registry.K8s.io/pause",
        "REGISTRY.K8S.IO/pause",
        "registry.k8s.io:443/pause",
        "quay.io.evil.example/x",
        "registry.k8s.io.example/pause",
        "k8s.gcr.io/ingress-nginx/controller",
        "gcr.io/google-containers/pause",
        "gcr.io/google_containers/pause",
        "us.gcr.io/p/app",
        "asia.gcr.io/google-containers/pause",
        "ghcr.io/org/app",
        "ghcr.io/org/sub/app",
        "nvcr.io/nvidia/cuda",
        "mcr.microsoft.com/dotnet/runtime",
        "public.ecr.aws/nginx/nginx",
        "registry.gitlab.com/group/project/image",
        "docker.elastic.co/elasticsearch/elasticsearch",
        "m.daocloud.io/registry.k8s.io/pause",
        "registry.aliyuncs.com/google_containers/pause",
        "a__b/c",
        "a-----b/c",
        "a.b.c/d_e",
        "x/y.z-w__v",
    ] {
        repos.insert(r.to_string());
    }
    for repo in &repos {
        for suffix in [
            String::new(),
            ":v1.2.3".into(),
            ":latest".into(),
            format!("@{DIGEST}"),
            format!(":1.0@{DIGEST}"),
            ":v1.0.0-rc.1_b".into(),
            ":stable".into(),
            format!("@sha512:{}", "ab".repeat(64)),
            format!(":9@sha384:{}", "cd".repeat(48)),
        ] {
            images.insert(format!("{repo}{suffix}"));
        }
    }
    // Invalid on purpose: the grammar's corners.
    for bad in [
        "nginx:",
        "nginx@",
        "nginx:tag:tag",
        "Nginx",
        "library/Nginx",
        "nginx@sha256:abc",
        "nginx@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        "nginx@md5:0123456789abcdef0123456789abcdef",
        "-nginx",
        "nginx-",
        "a//b",
        "/nginx",
        "registry.k8s.io/",
        "registry.k8s.io/pause:",
        "registry.k8s.io/pause@sha256:xyz",
        "host:port/app",
        "a:b:c/d",
        "[::1/app",
        "[zz]/app",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "auto",
        "$(IMAGE)",
        "{{.Values.image}}",
        "nginx:ünï",
        "ünï/app",
    ] {
        images.insert(bad.to_string());
    }
    let long = "a".repeat(250);
    images.insert(format!("registry.k8s.io/{long}"));
    images.insert(format!("registry.k8s.io/{}", "a".repeat(255)));
    images.insert(format!("{}:1", "b".repeat(248)));
    images.insert(format!("nginx:{}", "t".repeat(128)));
    images.insert(format!("nginx:{}", "t".repeat(129)));
    images.retain(|i| i.trim() == i && !i.is_empty());
    images
}

/// Every preset alone, all of them at once, and a user config with every
/// rule kind (the configs of the differential test).
fn preset_configs() -> Vec<String> {
    let names = [
        "daocloud",
        "daocloud-hosts",
        "lank8s",
        "aliyun",
        "sjtu",
        "nju",
        "anjia0532",
        "self-hosted=harbor.example.com/proxy",
        "self-hosted-hosts=mirror.example.com",
    ];
    let mut configs: Vec<String> = names
        .iter()
        .map(|n| format!("presets: [{n:?}]\n"))
        .collect();
    configs.push(format!("presets: {names:?}\n"));
    configs
}

const EVERY_KIND: &str = r#"
skip: [quay.io/skipped/**, ghcr.io/skipped/app]
placeholders: [auto, "$(IMAGE)"]
aliases:
  - {from: k8s.gcr.io, to: registry.k8s.io}
  - {from: gcr.io/google_containers, to: registry.k8s.io}
  - {from: mirror.gcr.io, to: docker.io}
rules:
  - {name: keep internal, source: registry.k8s.io/internal, kind: keep}
  - name: k8s flatten
    source: registry.k8s.io
    kind: flatten
    target: registry.aliyuncs.com/google_containers
    digests: drop
    renames:
      registry.k8s.io/coredns/coredns: registry.aliyuncs.com/google_containers/coredns-renamed
  - {name: quay host, source: quay.io, kind: host, target: quay.mirror.example, skip: [quay.io/private/**]}
  - {name: ghcr prefix, source: ghcr.io/org, kind: prefix, target: mirror.example/ghcr-org, digests: skip}
  - {name: ghcr allow, source: ghcr.io, kind: prefix, target: mirror.example/ghcr, allow: [ghcr.io/allowed/app, ghcr.io/team/**]}
  - {name: gcr join, source: gcr.io, kind: join, target: docker.io/anjia0532, token: gcr}
  - {name: gcr subdomains, source: "*.gcr.io", kind: full-reference, target: m.example.com/sub, digests: require}
  - {name: hub full, source: docker.io, kind: full-reference, target: m.daocloud.io}
  - {name: ports, source: "registry.example.com:5000", kind: prefix, target: localhost:5001/mirrored}
  - {name: everything else, source: "*", kind: full-reference, target: catchall.example.com/all}
"#;

/// What the webhook (and `detour explain`) decide for one image.
fn predicted(config: &Config, image: &str) -> Option<String> {
    config.rules.rewrite(image).rewritten()
}

/// The images of `pod` in container order, and its original-images record.
fn stored_images(pod: &Value) -> (Vec<String>, Option<String>) {
    let mut images = Vec::new();
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            images.push(c["image"].as_str().unwrap().to_string());
        }
    }
    let record = pod["metadata"]["annotations"][ORIGINALS]
        .as_str()
        .map(str::to_string);
    (images, record)
}

/// The differential test: for each config, Pods of 60 containers holding
/// the whole corpus (and each image's rewritten form) go through the native
/// policy in one namespace and through detour's webhook in another.
#[test]
fn native_policy_stores_what_the_webhook_stores_and_explain_predicts() {
    let _turn = serial();
    let cp = control_plane();
    delete_policies(cp);
    cp.namespace("diff-native", &[("detour-e2e/path", "native")]);
    cp.namespace("diff-hook", &[("detour.dev/mode", "enforce")]);
    let base = corpus();
    assert!(base.len() >= 2000, "corpus has {} images", base.len());
    eprintln!("corpus: {} image strings", base.len());
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("tls");
    make_certs(&certs);
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let port = free_port();
    let _installed = Installed::new(cp, "opt-in", port, &ca);
    let mut configs = preset_configs();
    configs.push(EVERY_KIND.to_string());
    let mut compared = 0;
    for (n, text) in configs.iter().enumerate() {
        let file = dir.path().join(format!("config-{n}.yaml"));
        std::fs::write(&file, text).unwrap();
        let config = Config::load(&file).unwrap();
        // The corpus and every image the config would rewrite it to
        // (already-mirrored images must be left alone).
        let mut images: Vec<String> = base.iter().cloned().collect();
        images.extend(base.iter().filter_map(|i| predicted(&config, i)));
        images.sort();
        images.dedup();
        let mut objects = policy(Some(&file), &[]);
        objects.retain(|o| o["kind"].as_str().unwrap().starts_with("Mutating"));
        objects[1]["spec"]["matchResources"]["namespaceSelector"] =
            json!({"matchLabels": {"detour-e2e/path": "native"}});
        apply_objects(cp, &objects);
        let server = Server::start(Options {
            config: Some(&file),
            cert_dir: Some(certs.clone()),
            port: Some(port),
            ..Options::default()
        });
        let probe = images
            .iter()
            .find(|i| predicted(&config, i).is_some())
            .unwrap();
        let probe_to = predicted(&config, probe).unwrap();
        wait_image(cp, "diff-native", probe, &probe_to);
        wait_image(cp, "diff-hook", probe, &probe_to);
        for (chunk_no, chunk) in images.chunks(PER_POD).enumerate() {
            let split = chunk.len().min(PER_POD - 10);
            let containers: Vec<Value> = chunk[..split]
                .iter()
                .enumerate()
                .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
                .collect();
            let inits: Vec<Value> = chunk[split..]
                .iter()
                .enumerate()
                .map(|(i, image)| json!({"name": format!("i{i}"), "image": image}))
                .collect();
            let mut body = pod(&format!("diff-{chunk_no}"), json!(containers));
            if !inits.is_empty() {
                body["spec"]["initContainers"] = json!(inits);
            }
            let native = stored_images(&create(cp, "diff-native", &body, false));
            let hook = stored_images(&create(cp, "diff-hook", &body, false));
            let names: Vec<String> = (0..split)
                .map(|i| format!("c{i}"))
                .chain((0..chunk.len() - split).map(|i| format!("i{i}")))
                .collect();
            let predictions: Vec<Option<String>> =
                chunk.iter().map(|i| predicted(&config, i)).collect();
            let expected_images: Vec<String> = chunk
                .iter()
                .zip(&predictions)
                .map(|(i, p)| p.clone().unwrap_or_else(|| i.clone()))
                .collect();
            let originals: BTreeMap<&str, &str> = names
                .iter()
                .zip(chunk)
                .zip(&predictions)
                .filter(|(_, p)| p.is_some())
                .map(|((n, i), _)| (n.as_str(), i.as_str()))
                .collect();
            let expected_record =
                (!originals.is_empty()).then(|| serde_json::to_string(&originals).unwrap());
            for (k, image) in chunk.iter().enumerate() {
                assert_eq!(
                    native.0[k],
                    expected_images[k],
                    "config {n} ({}): native policy stored {image:?} as {:?}, explain says {:?}",
                    text.lines().next().unwrap_or_default(),
                    native.0[k],
                    expected_images[k]
                );
                assert_eq!(
                    hook.0[k], expected_images[k],
                    "config {n}: webhook for {image:?}"
                );
            }
            assert_eq!(
                native.1, expected_record,
                "config {n} chunk {chunk_no}: annotation"
            );
            assert_eq!(hook.1, native.1, "config {n} chunk {chunk_no}: annotation");
            compared += chunk.len();
        }
        server.terminate();
    }
    eprintln!("compared {compared} images over {} configs", configs.len());
    delete_policies(cp);
}

/// The shipped default through the policy as users install it: opt-in
/// namespaces, skip label, `Never`, audit warnings, `off` and unlabelled
/// namespaces, a 60-container Pod.
#[test]
fn native_mode_honours_namespaces_labels_and_pull_policy() {
    let _turn = serial();
    let cp = control_plane();
    delete_policies(cp);
    // As the README installs it: the shipped overlay, server-side apply.
    let overlay = Path::new(REPO).join("manifests/overlays/native");
    cp.kubectl_ok(&["apply", "--server-side", "-k", overlay.to_str().unwrap()]);
    cp.namespace("nat-enforce", &[("detour.dev/mode", "enforce")]);
    cp.namespace("nat-audit", &[("detour.dev/mode", "audit")]);
    cp.namespace("nat-off", &[("detour.dev/mode", "off")]);
    cp.namespace("nat-plain", &[]);
    wait_image(cp, "nat-enforce", PAUSE, PAUSE_MIRRORED);

    let stored = create(
        cp,
        "nat-enforce",
        &pod("p", json!([{"name": "app", "image": PAUSE}])),
        true,
    );
    assert_eq!(stored["spec"]["containers"][0]["image"], PAUSE_MIRRORED);
    assert_eq!(
        stored["metadata"]["annotations"][ORIGINALS],
        format!(r#"{{"app":"{PAUSE}"}}"#)
    );
    for ns in ["nat-off", "nat-plain"] {
        let (left, stderr) =
            create_with_stderr(cp, ns, &pod("p", json!([{"name": "app", "image": PAUSE}])));
        assert_eq!(left["spec"]["containers"][0]["image"], PAUSE, "{ns}");
        assert!(!stderr.contains("detour"), "{ns}: {stderr}");
    }
    // The skip label and imagePullPolicy: Never.
    let mut skipped = pod("skip", json!([{"name": "app", "image": PAUSE}]));
    skipped["metadata"]["labels"] = json!({"detour.dev/skip": "true"});
    let left = create(cp, "nat-enforce", &skipped, false);
    assert_eq!(left["spec"]["containers"][0]["image"], PAUSE);
    let never = create(
        cp,
        "nat-enforce",
        &pod(
            "never",
            json!([
                {"name": "local", "image": PAUSE, "imagePullPolicy": "Never"},
                {"name": "pulled", "image": "k8s.gcr.io/pause:3.2"},
            ]),
        ),
        false,
    );
    assert_eq!(never["spec"]["containers"][0]["image"], PAUSE);
    assert_eq!(
        never["spec"]["containers"][1]["image"],
        "m.daocloud.io/k8s.gcr.io/pause:3.2"
    );
    // Audit: nothing changes, kubectl prints the warning.
    // The validating binding reaches the apiserver's informers on its own
    // schedule: until then a probe gets no warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (audited, stderr) = loop {
        let (audited, stderr) = create_with_stderr(
            cp,
            "nat-audit",
            &pod("audited", json!([{"name": "app", "image": PAUSE}])),
        );
        if stderr.contains("detour") || Instant::now() > deadline {
            break (audited, stderr);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(audited["spec"]["containers"][0]["image"], PAUSE);
    assert!(
        stderr.contains(&format!(
            "detour: would rewrite app: {PAUSE} -> {PAUSE_MIRRORED}"
        )),
        "{stderr}"
    );
    assert!(audited["metadata"]["annotations"].get(ORIGINALS).is_none());
    // An image the grammar refuses, though a rule covers its registry, is
    // kept as written: in an enforce namespace silently (the validating
    // policy is bound to audit namespaces only), in an audit namespace with
    // the webhook's warning.
    for (ns, warned) in [("nat-enforce", false), ("nat-audit", true)] {
        let (invalid, stderr) = create_with_stderr(
            cp,
            ns,
            &pod(
                "invalid",
                json!([{"name": "app", "image": "Registry.k8s.io/Pause"}]),
            ),
        );
        assert_eq!(
            invalid["spec"]["containers"][0]["image"],
            "Registry.k8s.io/Pause"
        );
        assert_eq!(
            stderr
                .contains("detour: app: image \"Registry.k8s.io/Pause\" is not a valid reference"),
            warned,
            "{ns}: {stderr}"
        );
    }
    // 60 containers are admitted and rewritten.
    let many: Vec<Value> = (0..60)
        .map(|i| json!({"name": format!("c{i}"), "image": format!("registry.k8s.io/app-{i}:1")}))
        .collect();
    let big = create(cp, "nat-enforce", &pod("big", json!(many)), false);
    for i in 0..60 {
        assert_eq!(
            big["spec"]["containers"][i]["image"],
            format!("m.daocloud.io/registry.k8s.io/app-{i}:1")
        );
    }
    // An ephemeral container added by `kubectl debug` is rewritten; the
    // Pod's own containers are not touched again.
    let debug = cp.kubectl(&[
        "debug",
        "-n",
        "nat-enforce",
        "p",
        "--image=k8s.gcr.io/busybox:1.27",
        "--container=dbg",
        "--profile=general",
    ]);
    assert!(
        debug.status.success(),
        "kubectl debug: {}",
        String::from_utf8_lossy(&debug.stderr)
    );
    let debugged = cp.get(&["pod", "-n", "nat-enforce", "p"]);
    assert_eq!(
        debugged["spec"]["ephemeralContainers"][0]["image"],
        "m.daocloud.io/k8s.gcr.io/busybox:1.27"
    );
    assert_eq!(debugged["spec"]["containers"][0]["image"], PAUSE_MIRRORED);
    delete_policies(cp);
}

/// A sidecar that a later mutating webhook adds is rewritten when the
/// apiserver reinvokes the policy, and the record merges both.
#[test]
fn a_sidecar_added_by_a_later_webhook_is_rewritten_on_reinvocation() {
    let _turn = serial();
    let cp = control_plane();
    delete_policies(cp);
    let sidecar = TestWebhook::start(axum::Router::new().route(
        "/inject",
        post(|body: axum::Json<Value>| async move {
            let uid = body["request"]["uid"].clone();
            let containers = body["request"]["object"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            // Idempotent, as injectors are: the apiserver reinvokes it too.
            let patch = if containers.iter().any(|c| c["name"] == "sidecar") {
                json!([])
            } else {
                json!([{"op": "add", "path": format!("/spec/containers/{}", containers.len()),
                        "value": {"name": "sidecar", "image": "k8s.gcr.io/sidecar:1.0"}}])
            };
            use base64::Engine as _;
            axum::Json(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": true, "patchType": "JSONPatch",
                    "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())}}),
            )
        }),
    ));
    let mut hook = sidecar.configuration(
        "sidecar-injector",
        "/inject",
        ("detour.dev/mode", "enforce"),
    );
    hook["webhooks"][0]["reinvocationPolicy"] = json!("IfNeeded");
    cp.apply(&hook.to_string());
    let out = detour(&["policy"]);
    cp.apply(&String::from_utf8(out.stdout).unwrap());
    cp.namespace("nat-sidecar", &[("detour.dev/mode", "enforce")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let stored = create(
            cp,
            "nat-sidecar",
            &pod("p", json!([{"name": "app", "image": PAUSE}])),
            false,
        );
        let images: Vec<&str> = stored["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["image"].as_str().unwrap())
            .collect();
        if images == [PAUSE_MIRRORED, "m.daocloud.io/k8s.gcr.io/sidecar:1.0"] {
            break stored;
        }
        assert!(Instant::now() < deadline, "stored {images:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        stored["metadata"]["annotations"][ORIGINALS],
        format!(r#"{{"app":"{PAUSE}","sidecar":"k8s.gcr.io/sidecar:1.0"}}"#)
    );
    cp.kubectl_ok(&["delete", "mutatingwebhookconfiguration", "sidecar-injector"]);
    delete_policies(cp);
}

/// What a policy cannot do is refused by name with exit 2, never dropped.
#[test]
fn rules_a_policy_cannot_carry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        "rules: [{name: copy quay, source: quay.io, kind: host, target: mirror.example.com, premirror: true}]",
    )
    .unwrap();
    let (code, stderr) = policy_refused(&file);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("\"copy quay\"") && stderr.contains("premirror"),
        "{stderr}"
    );
}

/// The shipped overlay is what `detour policy` prints for the embedded
/// default (regenerate it with the command in its kustomization.yaml).
#[test]
fn the_native_overlay_is_the_policy_of_the_embedded_default() {
    let printed = detour(&["policy"]).stdout;
    let shipped =
        std::fs::read(Path::new(REPO).join("manifests/overlays/native/policy.yaml")).unwrap();
    assert!(
        printed == shipped,
        "manifests/overlays/native/policy.yaml is stale: run `detour policy > manifests/overlays/native/policy.yaml`"
    );
}

/// `detour audit` reads native mode's binding for the namespace modes.
#[test]
fn audit_reads_the_modes_of_native_mode() {
    let _turn = serial();
    let cp = control_plane();
    delete_policies(cp);
    let out = detour(&["policy", "--namespaces", "cluster-wide"]);
    let applied = cp.kubectl_with_input(
        &["apply", "--server-side", "-f", "-"],
        Some(&String::from_utf8(out.stdout).unwrap()),
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    cp.kubectl_ok(&["get", "mutatingadmissionpolicybinding", "detour"]);
    cp.namespace("nat-audited-plain", &[]);
    cp.namespace("nat-audited-off", &[("detour.dev/mode", "off")]);
    let report = audit_report(&cp.kubeconfig, &["audit", "-o", "json", "--no-progress"]);
    assert_eq!(
        report["modesFrom"],
        "MutatingAdmissionPolicyBinding detour (native mode, cluster-wide)"
    );
    assert_eq!(report["namespaces"]["nat-audited-plain"], "enforce");
    assert_eq!(report["namespaces"]["nat-audited-off"], "off");
    assert_eq!(report["namespaces"]["kube-system"], "excluded");
    delete_policies(cp);
}

/// The apiserver's limits, measured: every shipped preset at once and a
/// config of 1,000 rules of every transform kind are accepted and rewrite a
/// 60-container Pod; the largest config `detour policy` compiles (7,400
/// such rules, 1.35 MB per policy) is accepted too, and one past etcd's
/// object size is refused by `detour policy` with the numbers.
#[test]
fn large_configs_are_accepted_and_rewrite_a_60_container_pod() {
    let _turn = serial();
    let cp = control_plane();
    delete_policies(cp);
    cp.namespace("nat-large", &[("detour.dev/mode", "enforce")]);
    let dir = tempfile::tempdir().unwrap();
    let generated = |n: usize| {
        let kinds = ["host", "prefix", "full-reference", "flatten", "join"];
        let mut yaml = String::from("rules:\n");
        for i in 0..n {
            let source = if i % 3 == 0 {
                format!("registry-{i}.example.com/team")
            } else {
                format!("registry-{i}.example.com")
            };
            let kind = kinds[i % 5];
            let target = match kind {
                "host" => format!("mirror-{i}.example.com"),
                "join" => "mirror.example.com/joined".to_string(),
                _ => format!("mirror.example.com/r{i}"),
            };
            let token = if kind == "join" {
                format!(", token: r{i}")
            } else {
                String::new()
            };
            yaml.push_str(&format!(
                "  - {{source: {source}, kind: {kind}, target: {target}{token}}}\n"
            ));
        }
        yaml
    };
    let all_presets = preset_configs().pop().unwrap();
    for (name, text, rules) in [
        ("presets", all_presets, 0),
        ("rules-1000", generated(1000), 1000),
        ("rules-7400", generated(7400), 7400),
    ] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).unwrap();
        let config = Config::load(&file).unwrap();
        let objects = policy(Some(&file), &[]);
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let out = cp.kubectl_with_input(
            &["apply", "--server-side", "-f", "-"],
            Some(&list.to_string()),
        );
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let images: Vec<String> = (0..PER_POD)
            .map(|i| match rules {
                0 => [
                    "registry.k8s.io/pause:3.9",
                    "quay.io/coreos/etcd:v3.5",
                    "gcr.io/google-samples/app:1",
                    "nginx:1.25",
                    "k8s.gcr.io/coredns:1.6.2",
                    "ghcr.io/org/app:2",
                ][i % 6]
                    .to_string(),
                n => format!("registry-{}.example.com/team/app-{i}:1", (i * 37) % n),
            })
            .collect();
        let containers: Vec<Value> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        let expected: Vec<String> = images
            .iter()
            .map(|i| predicted(&config, i).unwrap_or_else(|| i.clone()))
            .collect();
        assert!(
            expected.iter().zip(&images).filter(|(e, i)| e != i).count() >= 40,
            "{name}: the Pod exercises rewrites"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stored = create(cp, "nat-large", &pod("large", json!(containers)), false);
            let (got, _) = stored_images(&stored);
            if got == expected {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: stored {got:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Past etcd's object limit: refused before anything is applied.
    let file = dir.path().join("rules-8000.yaml");
    std::fs::write(&file, generated(8000)).unwrap();
    let (code, stderr) = policy_refused(&file);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("8000 rules") && stderr.contains("1572864"),
        "{stderr}"
    );
    delete_policies(cp);
}
