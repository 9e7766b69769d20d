//! What detour adds to a Pod create, as the apiserver and its clients see
//! it, through a real kube-apiserver (tests/kube), in alternating rounds of
//! N Pods from CLIENTS clients, for 3-container Pods (two images to rewrite)
//! and 60-container Pods (40 to rewrite):
//!
//! - no webhook and no policy;
//! - a no-op webhook (the same axum + rustls stack, answering "allowed"
//!   after decoding the review: the cost of any webhook);
//! - an ideal webhook: it answers detour's exact patch for the Pod's shape
//!   with no work beyond finding the request's uid;
//! - detour's webhook (release build, shipped config, shipped opt-in overlay);
//! - native mode: `detour policy` for the shipped config, so that the
//!   apiserver rewrites in-process (MutatingAdmissionPolicy).
//!
//! Not a test: run it with `bash bench/apiserver-latency.sh`. Reports
//! client-side p50/p99 and the apiserver's own admission time per Pod
//! create: `apiserver_admission_webhook_admission_duration_seconds` for a
//! webhook, `apiserver_admission_controller_admission_duration_seconds` of
//! the MutatingAdmissionPolicy plugin (and of the ValidatingAdmissionPolicy
//! plugin, which native mode also uses) for the policy.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kube::{control_plane, metric_value, Installed, TestWebhook};
use common::{Options, Server};
use serde_json::{json, Value};

const WEBHOOK_HISTOGRAM: &str = "apiserver_admission_webhook_admission_duration_seconds";
const PLUGIN_HISTOGRAM: &str = "apiserver_admission_controller_admission_duration_seconds";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Mean in ms of histogram `name` (with `labels`) between two scrapes.
fn mean_ms(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let read = |text: &str, suffix: &str| metric_value(text, &format!("{name}_{suffix}"), labels);
    let sum = read(after, "sum") - read(before, "sum");
    let count = read(after, "count") - read(before, "count");
    sum / count.max(1.0) * 1000.0
}

/// The containers of a Pod of `size` containers: with 3, two images the
/// shipped config rewrites and one it leaves; with 60, 40 and 20.
fn containers(size: usize) -> Vec<Value> {
    (0..size)
        .map(|i| {
            let image = match (size, i) {
                (3, 0) => "registry.k8s.io/pause:3.9".to_string(),
                (3, 1) => "k8s.gcr.io/coredns:1.6.2".to_string(),
                (3, _) => "docker.io/library/nginx:1.25".to_string(),
                (_, i) if i % 3 == 2 => format!("docker.io/library/nginx:1.{i}"),
                (_, i) => format!("registry.k8s.io/app-{i}:v1.{i}"),
            };
            json!({"name": format!("c{i}"), "image": image})
        })
        .collect()
}

/// What detour's webhook answers for a Pod of `size` containers under `config`.
fn detour_patch(config: &detour_core::config::Config, size: usize) -> Vec<u8> {
    let mut ops = Vec::new();
    let mut originals = std::collections::BTreeMap::new();
    for (i, c) in containers(size).iter().enumerate() {
        let image = c["image"].as_str().unwrap();
        if let Some(to) = config.rules.rewrite(image).rewritten() {
            ops.push(json!({"op": "replace", "path": format!("/spec/containers/{i}/image"), "value": to}));
            originals.insert(c["name"].as_str().unwrap().to_string(), image.to_string());
        }
    }
    ops.push(json!({"op": "add", "path": "/metadata/annotations",
                    "value": {"detour.dev/original-images": serde_json::to_string(&originals).unwrap()}}));
    serde_json::to_vec(&ops).unwrap()
}

/// The ideal webhook: the precomputed patch, the uid found by a byte search.
fn ideal_router(config: &std::path::Path) -> axum::Router {
    let config = detour_core::config::Config::load(config).unwrap();
    use base64::Engine as _;
    let patches: Arc<Vec<(usize, String)>> = Arc::new(
        [3, 60]
            .iter()
            .map(|&n| {
                (
                    n,
                    base64::engine::general_purpose::STANDARD.encode(detour_patch(&config, n)),
                )
            })
            .collect(),
    );
    axum::Router::new().route(
        "/ideal",
        axum::routing::post(move |body: axum::body::Bytes| {
            let patches = patches.clone();
            async move {
                let text = std::str::from_utf8(&body).unwrap_or_default();
                let uid = text
                    .split("\"uid\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default();
                // The shape is told by the count of container names.
                let size = if text.matches("\"name\":\"c").count() > 3 { 60 } else { 3 };
                let patch = &patches.iter().find(|(n, _)| *n == size).unwrap().1;
                (
                    [("content-type", "application/json")],
                    format!(
                        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{{"uid":"{uid}","allowed":true,"patchType":"JSONPatch","patch":"{patch}"}}}}"#
                    ),
                )
            }
        }),
    )
}

/// The no-op webhook: decodes the review, answers "allowed", no patch.
async fn allow(axum::Json(review): axum::Json<Value>) -> axum::Json<Value> {
    axum::Json(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": true},
    }))
}

#[derive(Clone, Copy, PartialEq)]
enum Through {
    Nothing,
    Webhook(&'static str),
    Native,
}

struct Run {
    label: &'static str,
    size: usize,
    latencies: Vec<Duration>,
    took: Duration,
    /// The apiserver's admission time per Pod: webhook call, or the
    /// mutating and validating policy plugins.
    admission_ms: Option<f64>,
    validating_ms: Option<f64>,
}

/// Creates `n` Pods of `size` containers in `ns` from `clients` tasks;
/// checks that each was stored with the images `expect` gives.
async fn run(
    ns: &str,
    label: &'static str,
    size: usize,
    clients: usize,
    n: usize,
    through: Through,
    rewritten: bool,
) -> Run {
    let cp = control_plane();
    let before = cp.metrics();
    let client = cp.client();
    let url = cp.url(&format!("/api/v1/namespaces/{ns}/pods"));
    let next = Arc::new(AtomicUsize::new(0));
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let batch = SEQ.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        let ns = ns.to_string();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return latencies;
                }
                let body = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("b{batch}-{i}")},
                    "spec": {"containers": containers(size)}});
                let t = Instant::now();
                let resp = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 201, "{ns}: Pod not created");
                let pod: Value = resp.json().await.unwrap();
                latencies.push(t.elapsed());
                let first = pod["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default();
                assert_eq!(
                    first.starts_with("m.daocloud.io/"),
                    rewritten,
                    "{ns}: {first}"
                );
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let after = cp.metrics();
    let (admission_ms, validating_ms) = match through {
        Through::Nothing => (None, None),
        Through::Webhook(name) => (
            Some(mean_ms(
                &before,
                &after,
                WEBHOOK_HISTOGRAM,
                &[("name", name), ("type", "admit")],
            )),
            None,
        ),
        Through::Native => (
            Some(mean_ms(
                &before,
                &after,
                PLUGIN_HISTOGRAM,
                &[
                    ("name", "MutatingAdmissionPolicy"),
                    ("operation", "CREATE"),
                    ("type", "admit"),
                ],
            )),
            Some(mean_ms(
                &before,
                &after,
                PLUGIN_HISTOGRAM,
                &[
                    ("name", "ValidatingAdmissionPolicy"),
                    ("operation", "CREATE"),
                    ("type", "validate"),
                ],
            )),
        ),
    };
    Run {
        label,
        size,
        latencies,
        took,
        admission_ms,
        validating_ms,
    }
}

/// Until a Pod in `ns` is stored rewritten (or not): a new webhook or
/// binding takes a moment to reach the apiserver's informers.
async fn wait_until(ns: &str, rewritten: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cp = control_plane();
        let body = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "probe-"},
                          "spec": {"containers": containers(3)}});
        let resp = cp
            .client()
            .post(cp.url(&format!("/api/v1/namespaces/{ns}/pods?dryRun=All")))
            .json(&body)
            .send()
            .await
            .unwrap();
        let pod: Value = resp.json().await.unwrap_or_default();
        let first = pod["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default();
        if first.starts_with("m.daocloud.io/") == rewritten && !first.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{ns} never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let n = env_usize("N", 400);
    let clients = env_usize("CLIENTS", 4);
    let rounds = env_usize("ROUNDS", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cp = control_plane();
    eprintln!("kube-apiserver {} on 127.0.0.1:{}", cp.version, cp.port);
    cp.namespace("bench-baseline", &[]);
    cp.namespace("bench-noop", &[("bench-webhook", "noop")]);
    cp.namespace("bench-ideal", &[("bench-webhook", "ideal")]);
    cp.namespace("bench-detour", &[("detour.dev/mode", "enforce")]);
    cp.namespace("bench-native", &[("bench-native", "true")]);

    let noop = TestWebhook::start(axum::Router::new().route("/allow", axum::routing::post(allow)));
    cp.apply(
        &noop
            .configuration("bench-noop", "/allow", ("bench-webhook", "noop"))
            .to_string(),
    );
    // Every subject that rewrites does it with the shipped config.
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml");
    let ideal = TestWebhook::start(ideal_router(&config));
    cp.apply(
        &ideal
            .configuration("bench-ideal", "/ideal", ("bench-webhook", "ideal"))
            .to_string(),
    );
    let detour = Server::start(Options {
        config: Some(&config),
        log: Some("info"),
        ..Options::default()
    });
    let ca = std::fs::read_to_string(detour.cert_dir.join("ca.crt")).unwrap();
    let _installed = Installed::new(cp, "opt-in", detour.port, &ca);
    // Native mode: the shipped config's policy, its mutation bound to
    // bench-native only (the validating policy stays on audit namespaces,
    // as shipped: there are none here).
    let out = common::detour(&["policy", "--config", config.to_str().unwrap(), "-o", "json"]);
    let mut list: Value = serde_json::from_slice(&out.stdout).unwrap();
    for item in list["items"].as_array_mut().unwrap() {
        if item["kind"] == "MutatingAdmissionPolicyBinding" {
            item["spec"]["matchResources"]["namespaceSelector"] =
                json!({"matchLabels": {"bench-native": "true"}});
        }
    }
    cp.apply(&list.to_string());

    let subjects: [(&str, &'static str, Through, bool); 5] = [
        ("bench-baseline", "no webhook", Through::Nothing, false),
        (
            "bench-noop",
            "no-op webhook",
            Through::Webhook("bench-noop.e2e.test"),
            false,
        ),
        (
            "bench-ideal",
            "ideal webhook",
            Through::Webhook("bench-ideal.e2e.test"),
            true,
        ),
        (
            "bench-detour",
            "detour webhook",
            Through::Webhook("enforce.detour.dev"),
            true,
        ),
        ("bench-native", "native policy", Through::Native, true),
    ];
    let mut runs = Vec::new();
    runtime.block_on(async {
        for (ns, _, _, rewritten) in subjects {
            wait_until(ns, rewritten).await;
        }
        for size in [3, 60] {
            for (ns, label, through, rewritten) in subjects {
                run(ns, label, size, clients, n / 4, through, rewritten).await;
            }
            // Alternating subjects, so that drift (etcd growing, the
            // machine's other load) falls on all of them alike.
            for _ in 0..rounds {
                for (ns, label, through, rewritten) in subjects {
                    runs.push(run(ns, label, size, clients, n, through, rewritten).await);
                }
            }
        }
    });

    println!();
    println!("{rounds} rounds of {n} Pods from {clients} clients each; admission ms is the apiserver's own time per Pod create, mean of the rounds");
    println!();
    println!("| containers | through | Pods/s | client p50 ms | client p99 ms | admission ms (webhook call, or mutating policy) | validating policy ms |");
    println!("|---|---|---|---|---|---|---|");
    for size in [3, 60] {
        for (_, label, _, _) in subjects {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.label == label && r.size == size)
                .collect();
            let mut lat: Vec<Duration> = mine.iter().flat_map(|r| r.latencies.clone()).collect();
            lat.sort();
            let pods = lat.len() as f64;
            let secs: f64 = mine.iter().map(|r| r.took.as_secs_f64()).sum();
            let mean = |f: &dyn Fn(&Run) -> Option<f64>| -> String {
                let v: Vec<f64> = mine.iter().filter_map(|r| f(r)).collect();
                if v.is_empty() {
                    "-".into()
                } else {
                    let rounds: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                    format!(
                        "{:.2} ({})",
                        v.iter().sum::<f64>() / v.len() as f64,
                        rounds.join(", ")
                    )
                }
            };
            println!(
                "| {size} | {label} | {:.0} | {} | {} | {} | {} |",
                pods / secs,
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                mean(&|r| r.admission_ms),
                mean(&|r| r.validating_ms),
            );
        }
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", detour.child.id()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        .unwrap_or_default();
    println!();
    println!("detour peak RSS: {rss} kB");
}
