//! What detour adds to a Pod create, as the apiserver and its clients see
//! it: N Pods created through a real kube-apiserver (tests/kube) without any
//! webhook; N with a webhook that does nothing (the same axum + rustls stack,
//! answering "allowed" after decoding the review: the cost of any webhook);
//! and N with detour (release build, shipped config) registered through the
//! shipped opt-in overlay. Each with one client, then CLIENTS at once. Not a
//! test: run it with `bash bench/apiserver-latency.sh` (N=2000 CLIENTS=16).
//!
//! Reports client-side p50/p99 of each run; from the apiserver's own
//! `apiserver_admission_webhook_admission_duration_seconds`, the mean and the
//! bucket quantiles of its webhook calls; and for detour, the mean of its own
//! `detour_admission_duration_seconds` (its share of those calls).

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kube::{control_plane, create_pods, metric_value, Created, Installed, TestWebhook};
use common::{Options, Server};

const PAUSE: &str = "registry.k8s.io/pause:3.9";
const WEBHOOK_HISTOGRAM: &str = "apiserver_admission_webhook_admission_duration_seconds";

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

/// Cumulative bucket counts of the apiserver's calls to `webhook`.
fn buckets(metrics: &str, webhook: &str) -> Vec<(f64, f64)> {
    let name = format!("name=\"{webhook}\"");
    let mut out: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{WEBHOOK_HISTOGRAM}_bucket{{")))
        .filter(|l| l.contains(&name) && l.contains(r#"type="admit""#))
        .filter_map(|l| {
            let le = l.split(r#"le=""#).nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    // Several label sets (rejected=false/true) share bounds: add them up.
    out.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    out.dedup_by(|next, kept| {
        if next.0 == kept.0 {
            kept.1 += next.1;
            true
        } else {
            false
        }
    });
    out
}

/// Mean in ms of histogram `name` (with `labels`) between two scrapes.
fn mean_ms(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let read = |text: &str, suffix: &str| metric_value(text, &format!("{name}_{suffix}"), labels);
    let sum = read(after, "sum") - read(before, "sum");
    let count = read(after, "count") - read(before, "count");
    sum / count.max(1.0) * 1000.0
}

/// The q-quantile of the calls between two scrapes, interpolated linearly
/// inside its bucket (the apiserver's buckets are coarse: 5 ms, 25 ms, ...).
fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> String {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(b, _)| b == le).map_or(0.0, |b| b.1);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    if total == 0.0 {
        return "n/a".into();
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, cum) in &delta {
        if cum >= rank {
            if le.is_infinite() {
                return format!("> {} ms", lower.0 * 1000.0);
            }
            let within = if cum > lower.1 {
                (rank - lower.1) / (cum - lower.1)
            } else {
                1.0
            };
            let value = lower.0 + (le - lower.0) * within;
            return format!("{:.2} (≤ {} ms bucket)", value * 1000.0, le * 1000.0);
        }
        lower = (le, cum);
    }
    "n/a".into()
}

struct Run {
    label: String,
    clients: usize,
    results: Vec<Created>,
    took: Duration,
    /// The apiserver's calls to the webhook: mean, p50, p99.
    webhook: Option<(String, String, String)>,
    /// detour's own mean time per admission.
    detour_ms: Option<f64>,
}

/// Which webhook a run goes through, and detour's metrics if it is detour.
#[derive(Clone, Copy)]
enum Through<'a> {
    Nothing,
    Webhook(&'a str),
    Detour(&'a Server),
}

async fn run(ns: &str, label: &str, clients: usize, n: usize, through: Through<'_>) -> Run {
    let cp = control_plane();
    let before = cp.metrics();
    let detour_before = match through {
        Through::Detour(server) => server.metrics(),
        _ => String::new(),
    };
    let started = Instant::now();
    let prefix: String = format!("{label}-{clients}")
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect();
    let results = create_pods(
        cp,
        ns,
        &prefix,
        PAUSE,
        clients,
        n,
        Arc::new(AtomicBool::new(false)),
    )
    .await;
    let took = started.elapsed();
    let after = cp.metrics();
    assert!(
        results.iter().all(|c| c.status == 201),
        "{label}: some Pods were not created"
    );
    let webhook_name = match through {
        Through::Nothing => None,
        Through::Webhook(name) => Some(name),
        Through::Detour(_) => Some("enforce.detour.dev"),
    };
    let webhook = webhook_name.map(|name| {
        let (b, a) = (buckets(&before, name), buckets(&after, name));
        let labels = [("name", name), ("type", "admit")];
        let mean = mean_ms(&before, &after, WEBHOOK_HISTOGRAM, &labels);
        (
            format!("{mean:.2}"),
            bucket_quantile(&b, &a, 0.5),
            bucket_quantile(&b, &a, 0.99),
        )
    });
    let detour_ms = match through {
        Through::Detour(server) => Some(mean_ms(
            &detour_before,
            &server.metrics(),
            "detour_admission_duration_seconds",
            &[],
        )),
        _ => None,
    };
    Run {
        label: label.into(),
        clients,
        results,
        took,
        webhook,
        detour_ms,
    }
}

/// The no-op webhook: decodes the review, answers "allowed", no patch.
async fn allow(axum::Json(review): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": true},
    }))
}

/// Creates single Pods in `ns` until `done` says the webhook answered.
async fn wait_for_webhook(ns: &str, done: impl Fn(&Created) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let probe = run(ns, &format!("probe{attempt}"), 1, 1, Through::Nothing).await;
        if done(&probe.results[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "webhook for {ns} never called");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let n = env_usize("N", 2000);
    let concurrent = env_usize("CLIENTS", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cp = control_plane();
    eprintln!("kube-apiserver {} on 127.0.0.1:{}", cp.version, cp.port);
    cp.namespace("bench-baseline", &[]);
    cp.namespace("bench-noop", &[("bench-webhook", "noop")]);
    cp.namespace("bench-detour", &[("detour.dev/mode", "enforce")]);

    let noop = TestWebhook::start(axum::Router::new().route("/allow", axum::routing::post(allow)));
    cp.apply(
        &noop
            .configuration("bench-noop", "/allow", ("bench-webhook", "noop"))
            .to_string(),
    );
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml");
    let detour = Server::start(Options {
        config: Some(&config),
        log: Some("info"),
        ..Options::default()
    });
    let ca = std::fs::read_to_string(detour.cert_dir.join("ca.crt")).unwrap();
    let _installed = Installed::new(cp, "opt-in", detour.port, &ca);

    let mut runs = Vec::new();
    runtime.block_on(async {
        // The no-op webhook fails closed: a created Pod means it answered.
        wait_for_webhook("bench-noop", |c| c.status == 201).await;
        wait_for_webhook("bench-detour", |c| c.image.starts_with("m.daocloud.io/")).await;
        let subjects = [
            ("bench-baseline", "no webhook", Through::Nothing),
            (
                "bench-noop",
                "no-op webhook",
                Through::Webhook("bench-noop.e2e.test"),
            ),
            ("bench-detour", "detour", Through::Detour(&detour)),
        ];
        for (ns, _, _) in subjects {
            run(ns, "warm-up", 4, 200, Through::Nothing).await;
        }
        // Alternating subjects, so that drift (etcd growing, the machine's
        // other load) falls on all of them alike.
        for clients in [1, concurrent] {
            for round in 1..=2 {
                for (ns, label, through) in subjects {
                    let label = format!("{label} (round {round})");
                    let run = run(ns, &label, clients, n / 2, through).await;
                    if matches!(through, Through::Detour(_)) {
                        assert!(
                            run.results
                                .iter()
                                .all(|c| c.image.starts_with("m.daocloud.io/")),
                            "every Pod is rewritten"
                        );
                    }
                    runs.push(run);
                }
            }
        }
    });

    println!();
    println!("| through | clients | Pods | Pods/s | client p50 ms | client p99 ms | webhook call mean ms | p50 ms | p99 ms | detour's own mean ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let mut lat: Vec<Duration> = r.results.iter().map(|c| c.latency).collect();
        lat.sort();
        let (mean, p50, p99) = r
            .webhook
            .clone()
            .unwrap_or(("-".into(), "-".into(), "-".into()));
        let own = r.detour_ms.map_or("-".into(), |ms| format!("{ms:.3}"));
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.clients,
            r.results.len(),
            r.results.len() as f64 / r.took.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            mean,
            p50,
            p99,
            own
        );
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
