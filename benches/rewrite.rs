//! Criterion benchmarks of the pure core: explain one reference, and rewrite
//! all images of a 60-container Pod with 10 and with 10,000 rules.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use detour_core::config::Config;
use detour_core::rules::RuleSet;
use std::hint::black_box;

// The allocator the `detour` binary runs with, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rule_set(n: usize) -> RuleSet {
    // Realistic shape: a handful of real registries plus many synthetic hosts
    // and per-repository rules, so lookups hit populated hash buckets.
    let mut yaml = String::from(
        "rules:
  - {source: registry.k8s.io, kind: full-reference, target: m.daocloud.io}
  - {source: quay.io, kind: host, target: quay.m.daocloud.io}
  - {source: '*.gcr.io', kind: host, target: gcr.m.daocloud.io}
  - {source: docker.io, kind: host, target: docker.m.daocloud.io, allow: [docker.io/library/**]}
  - {source: ghcr.io, kind: prefix, target: harbor.example/ghcr}
",
    );
    for i in 5..n {
        if i % 2 == 0 {
            yaml.push_str(&format!(
                "  - {{source: r{i}.example.com, kind: host, target: m{i}.mirror.example}}\n"
            ));
        } else {
            yaml.push_str(&format!(
                "  - {{source: quay.io/org{i}, kind: prefix, target: q.mirror.example/o{i}}}\n"
            ));
        }
    }
    let set = Config::from_yaml(&yaml, "bench").unwrap().rules;
    assert_eq!(set.rules().len(), n.max(5));
    set
}

fn pod_images() -> Vec<String> {
    let bases = [
        "nginx:1.25",
        "registry.k8s.io/ingress-nginx/controller:v1.9.4",
        "quay.io/prometheus/node-exporter:v1.7.0",
        "us.gcr.io/project/app:2",
        "ghcr.io/org/tool@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "bitnami/redis:7.2",
    ];
    (0..60)
        .map(|i| bases[i % bases.len()].to_string())
        .collect()
}

fn bench(c: &mut Criterion) {
    let small = rule_set(10);
    c.bench_function(
        "explain registry.k8s.io/ingress-nginx/controller:v1.9.4",
        |b| {
            b.iter(|| {
                detour_core::explain::record(
                    &small,
                    black_box("registry.k8s.io/ingress-nginx/controller:v1.9.4"),
                )
            })
        },
    );
    let images = pod_images();
    for (label, set) in [("10 rules", small), ("10000 rules", rule_set(10_000))] {
        c.bench_function(&format!("rewrite 60-container pod, {label}"), |b| {
            b.iter_batched(
                || (),
                |_| {
                    let mut changed = 0;
                    for image in &images {
                        changed += usize::from(set.rewrite(black_box(image)).rewritten().is_some());
                    }
                    assert!(changed >= 40);
                    changed
                },
                BatchSize::SmallInput,
            )
        });
    }
}

/// A recorded-shape AdmissionReview body with `n` containers.
fn review_body(n: usize) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/fixtures/kube-apiserver-v1.19-pod-create.json"
    ))
    .unwrap();
    let template = review["request"]["object"]["spec"]["containers"][0].clone();
    let images = pod_images();
    let containers: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = format!("c{i}").into();
            c["image"] = images[i % images.len()].clone().into();
            c
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = containers.into();
    serde_json::to_vec(&review).unwrap()
}

fn bench_admission(c: &mut Criterion) {
    let config = Config::from_yaml(
        "rules: [{source: registry.k8s.io, kind: full-reference, target: m.daocloud.io}, {source: quay.io, kind: host, target: quay.m.daocloud.io}]",
        "bench",
    )
    .unwrap();
    for n in [3, 60] {
        let body = review_body(n);
        c.bench_function(&format!("admission decode, {n}-container pod"), |b| {
            b.iter(|| {
                detour_webhook::admission::decode::decode(black_box(&body))
                    .map(|(e, _)| e.request.is_some())
            })
        });
        c.bench_function(&format!("admission review, {n}-container pod"), |b| {
            b.iter(|| {
                detour_webhook::admission::review(
                    black_box(&body),
                    detour_webhook::admission::Mode::Enforce,
                    &config,
                )
                .unwrap()
            })
        });
    }
}

criterion_group!(benches, bench, bench_admission);
criterion_main!(benches);
