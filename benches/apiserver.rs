//! What detour adds to a Pod create, as the apiserver and its clients see
//! it: N Pods created through a real kube-apiserver (tests/kube) without any
//! webhook, then N with detour (release build, shipped config) registered
//! through the shipped opt-in overlay. Not a test: run it with
//! `bash bench/apiserver-latency.sh` (N=2000 CLIENTS=16 to change).
//!
//! Reports client-side p50/p99 of each run and, from the apiserver's own
//! `apiserver_admission_webhook_admission_duration_seconds`, the mean and the
//! bucket quantiles of the calls to detour.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kube::{control_plane, create_pods, Created, Installed};
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

/// Cumulative bucket counts of the calls to detour's enforce webhook.
fn buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{WEBHOOK_HISTOGRAM}_bucket{{")))
        .filter(|l| l.contains(r#"name="enforce.detour.dev""#) && l.contains(r#"type="admit""#))
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

fn sum_and_count(metrics: &str) -> (f64, f64) {
    let read = |suffix: &str| {
        common::kube::metric_value(
            metrics,
            &format!("{WEBHOOK_HISTOGRAM}_{suffix}"),
            &[("name", "enforce.detour.dev"), ("type", "admit")],
        )
    };
    (read("sum"), read("count"))
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
    webhook: Option<(String, String, String)>,
}

async fn run(ns: &str, label: &str, clients: usize, n: usize, webhook: bool) -> Run {
    let cp = control_plane();
    let before = cp.metrics();
    let started = Instant::now();
    let prefix = format!("{label}-{clients}").replace(' ', "-");
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
    let webhook = webhook.then(|| {
        let (b, a) = (buckets(&before), buckets(&after));
        let (sum0, count0) = sum_and_count(&before);
        let (sum1, count1) = sum_and_count(&after);
        let mean = (sum1 - sum0) / (count1 - count0).max(1.0) * 1000.0;
        (
            format!("{mean:.2}"),
            bucket_quantile(&b, &a, 0.5),
            bucket_quantile(&b, &a, 0.99),
        )
    });
    Run {
        label: label.into(),
        clients,
        results,
        took,
        webhook,
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
    cp.namespace("bench-detour", &[("detour.dev/mode", "enforce")]);

    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/config.yaml");
    let detour = Server::start(Options {
        config: Some(&config),
        log: Some("info"),
        ..Options::default()
    });
    let ca = std::fs::read_to_string(detour.cert_dir.join("ca.crt")).unwrap();

    let mut runs = Vec::new();
    runtime.block_on(async {
        // Warm-up without detour, then the baseline.
        run("bench-baseline", "warm-up", 4, 200, false).await;
        for clients in [1, concurrent] {
            runs.push(run("bench-baseline", "without detour", clients, n, false).await);
        }
    });
    let _installed = Installed::new(cp, "opt-in", detour.port, &ca);
    runtime.block_on(async {
        // Until the apiserver calls detour (its webhook informer catches up).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe = run("bench-detour", "probe", 1, 1, false).await;
            if probe.results[0].image.starts_with("m.daocloud.io/") {
                break;
            }
            assert!(Instant::now() < deadline, "detour never called");
            tokio::time::sleep(Duration::from_millis(200)).await;
            cp.kubectl_ok(&["delete", "pod", "-n", "bench-detour", "probe-1-0"]);
        }
        run("bench-detour", "warm-up", 4, 200, true).await;
        for clients in [1, concurrent] {
            let run = run("bench-detour", "with detour", clients, n, true).await;
            assert!(
                run.results
                    .iter()
                    .all(|c| c.image.starts_with("m.daocloud.io/")),
                "every Pod is rewritten"
            );
            runs.push(run);
        }
    });

    println!();
    println!("| run | clients | Pods | Pods/s | client p50 ms | client p99 ms | apiserver→detour mean ms | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let mut lat: Vec<Duration> = r.results.iter().map(|c| c.latency).collect();
        lat.sort();
        let (mean, p50, p99) = r
            .webhook
            .clone()
            .unwrap_or(("-".into(), "-".into(), "-".into()));
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} |",
            r.label,
            r.clients,
            r.results.len(),
            r.results.len() as f64 / r.took.as_secs_f64(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99)),
            mean,
            p50,
            p99
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
