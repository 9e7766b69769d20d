//! The webhook's pre-mirroring against real registries: `swap: if-present`
//! keeps the original image until the mirror has it, the copy queued after
//! the admission lands it, and the next Pod is rewritten. Never in audit
//! mode or for dry runs; concurrent admissions queue one copy.

mod common;

use std::time::{Duration, Instant};

use common::registry::*;
use common::*;
use serde_json::{json, Value};

fn pod_review(image: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut r = with_containers(json!([{"name": "app", "image": image}]));
    edit(&mut r);
    r
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_for_manifest(registry: &Registry, repo: &str, reference: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while registry.manifest_status(repo, reference).await != 200 {
        assert!(
            Instant::now() < deadline,
            "{repo}:{reference} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Setup {
    source: Registry,
    mirror: Registry,
    server: Server,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let source = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions::default());
    let (server, _dir) = Server::with_config(&format!(
        "mirror:\n  plainHttp: [\"{src}\", \"{dst}\"]\n  allowLoopback: true\n  lookupBudget: 3s\n  absentTtl: 1s\nrules:\n  - source: {src}/team\n    kind: prefix\n    target: {dst}/mirror/team\n    premirror: true\n    swap: if-present\n",
        src = source.host(),
        dst = mirror.host()
    ));
    Setup {
        source,
        mirror,
        server,
        _dir,
    }
}

#[tokio::test]
async fn if_present_keeps_the_original_until_the_queued_copy_lands() {
    let s = setup().await;
    let image = Image::new(true, &[200_000, 3_000], 21);
    s.source.push_image("team/app", "v1", &image).await;
    let original = format!("{}/team/app:v1", s.source.host());
    let mirrored = format!("{}/mirror/team/app:v1", s.mirror.host());
    let client = s.server.client();

    // First Pod: the mirror lacks the image, so it is left alone and a copy is queued.
    let (status, resp) = post(
        &client,
        &s.server.url("/mutate"),
        &pod_review(&original, |_| {}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"]["patch"].is_null(), "{resp}");
    let warnings = resp["response"]["warnings"].to_string();
    assert!(warnings.contains("mirror lacks"), "{warnings}");

    wait_for_manifest(&s.mirror, "mirror/team/app", "v1").await;
    assert_eq!(
        skopeo_digest(&s.source, "team/app:v1"),
        skopeo_digest(&s.mirror, "mirror/team/app:v1")
    );
    s.server
        .wait_metric(
            "detour_premirror_copies_total{outcome=\"copied\"} 1",
            "copy counted",
        )
        .await;
    let metrics = s.server.metrics();
    assert!(
        metric(&metrics, "detour_premirror_copied_bytes_total") >= 203_000.0,
        "{metrics}"
    );

    // Next Pod: the mirror has it, so it is rewritten; the patch applies with kubectl.
    let review = pod_review(&original, |_| {});
    let (_, resp) = post(&client, &s.server.url("/mutate"), &review).await;
    let patched = kubectl_patch(&review["request"]["object"], &decode_patch(&resp));
    assert_eq!(patched["spec"]["containers"][0]["image"], mirrored);
    // No second copy for an image the mirror has.
    let metrics = s.server.metrics();
    assert_eq!(
        metric(
            &metrics,
            "detour_premirror_copies_total{outcome=\"queued\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn audit_mode_and_dry_runs_never_copy_and_concurrent_pods_queue_one_copy() {
    let s = setup().await;
    let image = Image::new(false, &[50_000], 22);
    s.source.push_image("team/tool", "v1", &image).await;
    let original = format!("{}/team/tool:v1", s.source.host());
    let client = s.server.client();

    let dry = pod_review(&original, |r| r["request"]["dryRun"] = json!(true));
    let (_, resp) = post(&client, &s.server.url("/mutate"), &dry).await;
    assert!(resp["response"]["patch"].is_null());
    let (_, resp) = post(
        &client,
        &s.server.url("/audit"),
        &pod_review(&original, |_| {}),
    )
    .await;
    assert!(resp["response"]["patch"].is_null());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.mirror.manifest_status("mirror/team/tool", "v1").await,
        404
    );
    let metrics = s.server.metrics();
    assert_eq!(
        metric(
            &metrics,
            "detour_premirror_copies_total{outcome=\"queued\"}"
        ),
        0.0,
        "{metrics}"
    );
    // The lookups themselves were made (reads have no side effects).
    assert!(
        metric(
            &metrics,
            "detour_mirror_lookups_total{source=\"registry\",result=\"absent\"}"
        ) >= 1.0,
        "{metrics}"
    );

    // Eight Pods at once: one registry lookup (the others join it or hit the
    // cache it fills) and one copy.
    let asked = |m: &str| {
        ["present", "absent", "unknown"]
            .iter()
            .map(|r| {
                metric(
                    m,
                    &format!("detour_mirror_lookups_total{{source=\"registry\",result=\"{r}\"}}"),
                )
            })
            .sum::<f64>()
    };
    let before = asked(&s.server.metrics());
    let review = pod_review(&original, |_| {});
    let url = s.server.url("/mutate");
    let posts = (0..8).map(|_| post(&client, &url, &review));
    for (status, _) in futures_util::future::join_all(posts).await {
        assert_eq!(status, 200);
    }
    wait_for_manifest(&s.mirror, "mirror/team/tool", "v1").await;
    s.server
        .wait_metric(
            "detour_premirror_copies_total{outcome=\"copied\"} 1",
            "copy counted",
        )
        .await;
    let metrics = s.server.metrics();
    assert_eq!(
        metric(
            &metrics,
            "detour_premirror_copies_total{outcome=\"queued\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(asked(&metrics) - before, 1.0, "{metrics}");
}

#[tokio::test]
async fn swap_always_rewrites_at_once_and_copies_behind() {
    let source = Registry::start(RegistryOptions::default());
    let mirror = Registry::start(RegistryOptions::default());
    let (server, _dir) = Server::with_config(&format!(
        "mirror:\n  plainHttp: [\"{src}\", \"{dst}\"]\n  allowLoopback: true\nrules:\n  - source: {src}\n    kind: host\n    target: {dst}\n    premirror: true\n",
        src = source.host(),
        dst = mirror.host()
    ));
    let image = Image::new(true, &[10_000], 23);
    source.push_image("lib/x", "1", &image).await;
    let review = pod_review(&format!("{}/lib/x:1", source.host()), |_| {});
    let (_, resp) = post(&server.client(), &server.url("/mutate"), &review).await;
    let patched = kubectl_patch(&review["request"]["object"], &decode_patch(&resp));
    assert_eq!(
        patched["spec"]["containers"][0]["image"],
        format!("{}/lib/x:1", mirror.host())
    );
    wait_for_manifest(&mirror, "lib/x", "1").await;
    assert_eq!(skopeo_digest(&mirror, "lib/x:1"), image.digest());
}

#[tokio::test]
async fn a_mirror_that_never_answers_costs_at_most_the_lookup_budget() {
    // Accepts connections (the kernel's backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_host = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let (server, _dir) = Server::with_config(&format!(
        "mirror:\n  plainHttp: [\"{silent_host}\"]\n  allowLoopback: true\n  lookupBudget: 300ms\nrules:\n  - source: quay.io\n    kind: host\n    target: {silent_host}\n    swap: if-present\n"
    ));
    let client = server.client();
    let started = Instant::now();
    let (status, resp) = post(
        &client,
        &server.url("/mutate"),
        &pod_review("quay.io/app/x:1", |_| {}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["allowed"], true);
    assert!(resp["response"]["patch"].is_null(), "{resp}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(
        took >= Duration::from_millis(300),
        "took {took:?}: the budget was not used"
    );
}

#[test]
fn premirror_from_every_registry_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "rules:\n  - source: \"*\"\n    kind: full-reference\n    target: mirror.example/cache\n    premirror: true\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("premirror copies only from registries the rule names"),
        "{text}"
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_admissions_never_wait() {
    // Registries that accept connections and never answer: copies hang.
    let source = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let src = format!("127.0.0.1:{}", source.local_addr().unwrap().port());
    let dst = format!("127.0.0.1:{}", target.local_addr().unwrap().port());
    let (server, _dir) = Server::with_config(&format!(
        "mirror:\n  plainHttp: [\"{src}\", \"{dst}\"]\n  allowLoopback: true\n  queueLength: 1\n  copiesPerRegistry: 1\n  requestTimeout: 20s\nrules:\n  - source: {src}\n    kind: host\n    target: {dst}\n    premirror: true\n"
    ));
    let client = server.client();
    for i in 0..4 {
        let started = Instant::now();
        let review = pod_review(&format!("{src}/app/n{i}:1"), |_| {});
        let (status, resp) = post(&client, &server.url("/mutate"), &review).await;
        assert_eq!(status, 200);
        assert!(
            resp["response"]["patch"].is_string(),
            "swap: always rewrites at once"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "an admission waited on the queue"
        );
        if i == 0 {
            // The first copy takes the registry's only slot, leaving the queue.
            let deadline = Instant::now() + Duration::from_secs(10);
            while metric(&server.metrics(), "detour_premirror_queue_depth") != 0.0 {
                assert!(Instant::now() < deadline, "the first copy never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let metrics = server.metrics();
    // One running, one waiting (the queue's length), two dropped.
    assert_eq!(
        metric(
            &metrics,
            "detour_premirror_copies_total{outcome=\"queued\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "detour_premirror_copies_total{outcome=\"dropped_queue_full\"}"
        ),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "detour_premirror_queue_depth"),
        1.0,
        "{metrics}"
    );
}
