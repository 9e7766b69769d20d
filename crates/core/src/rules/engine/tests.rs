//! Rule engine tables: every transformation kind of mirrors.md §4, matching
//! boundaries, specificity, aliases, digest policies, lists, idempotency.

use crate::config::Config;
use crate::rules::{Outcome, RuleSet, Unchanged};

const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn rules(yaml: &str) -> RuleSet {
    Config::from_yaml(yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .rules
}

/// The rewritten image, or None when left alone (and idempotency checked).
fn rw(set: &RuleSet, image: &str) -> Option<String> {
    let out = set.rewrite(image).rewritten();
    if let Some(new) = &out {
        assert_eq!(
            set.rewrite(new).rewritten(),
            None,
            "rewrite of {image} -> {new} must be a fixed point"
        );
    }
    out
}

#[test]
fn t1_host_replace_keeps_path_and_library() {
    let set = rules("rules: [{source: docker.io, kind: host, target: docker.m.daocloud.io}, {source: quay.io, kind: host, target: quay.m.daocloud.io}]");
    assert_eq!(
        rw(&set, "nginx").as_deref(),
        Some("docker.m.daocloud.io/library/nginx")
    );
    assert_eq!(
        rw(&set, "docker.io/nginx:1.25").as_deref(),
        Some("docker.m.daocloud.io/library/nginx:1.25")
    );
    assert_eq!(
        rw(&set, "index.docker.io/bitnami/redis").as_deref(),
        Some("docker.m.daocloud.io/bitnami/redis")
    );
    assert_eq!(
        rw(&set, "quay.io/coreos/etcd:v3.5.9").as_deref(),
        Some("quay.m.daocloud.io/coreos/etcd:v3.5.9")
    );
    // No implicit :latest.
    assert_eq!(
        rw(&set, "quay.io/coreos/etcd").as_deref(),
        Some("quay.m.daocloud.io/coreos/etcd")
    );
}

#[test]
fn t2_prefix_replace() {
    let set = rules("rules: [{source: k8s.gcr.io, kind: prefix, target: gcr.mirrors.example.org/google-containers}, {source: quay.io/org, kind: prefix, target: harbor.local/quay-org}]");
    assert_eq!(
        rw(&set, "k8s.gcr.io/pause:3.1").as_deref(),
        Some("gcr.mirrors.example.org/google-containers/pause:3.1")
    );
    assert_eq!(
        rw(&set, "quay.io/org/app:v1").as_deref(),
        Some("harbor.local/quay-org/app:v1")
    );
    assert_eq!(
        rw(&set, "quay.io/org/a/b").as_deref(),
        Some("harbor.local/quay-org/a/b")
    );
    // Component boundary: quay.io/org does not cover quay.io/organisation.
    assert_eq!(rw(&set, "quay.io/organisation/app"), None);
}

#[test]
fn t3_full_reference_prefix() {
    let set = rules("rules: [{source: '*', kind: full-reference, target: m.daocloud.io}]");
    assert_eq!(
        rw(&set, "nginx").as_deref(),
        Some("m.daocloud.io/docker.io/library/nginx")
    );
    assert_eq!(
        rw(&set, "docker.io/nginx").as_deref(),
        Some("m.daocloud.io/docker.io/library/nginx")
    );
    assert_eq!(
        rw(&set, "Registry.K8s.io/pause:3.9").as_deref(),
        Some("m.daocloud.io/registry.k8s.io/pause:3.9")
    );
    // A port cannot be a path component: left alone rather than made invalid.
    assert_eq!(rw(&set, "localhost:5000/foo"), None);
    assert!(matches!(
        set.rewrite("localhost:5000/foo"),
        Outcome::Unchanged(_, Unchanged::Declined)
    ));
}

#[test]
fn t4_flatten_and_t6_renames() {
    let set = rules(
        "rules:
  - source: registry.k8s.io
    kind: flatten
    target: registry.aliyuncs.com/google_containers
    renames:
      registry.k8s.io/ingress-nginx/controller: registry.aliyuncs.com/google_containers/nginx-ingress-controller",
    );
    assert_eq!(
        rw(
            &set,
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0"
        )
        .as_deref(),
        Some("registry.aliyuncs.com/google_containers/csi-node-driver-registrar:v2.9.0")
    );
    assert_eq!(
        rw(&set, "registry.k8s.io/coredns/coredns:v1.11.1").as_deref(),
        Some("registry.aliyuncs.com/google_containers/coredns:v1.11.1")
    );
    assert_eq!(
        rw(&set, "registry.k8s.io/ingress-nginx/controller:v1.6.4").as_deref(),
        Some("registry.aliyuncs.com/google_containers/nginx-ingress-controller:v1.6.4")
    );
    // A rename is exact: a sub-repository falls back to flatten.
    assert_eq!(
        rw(&set, "registry.k8s.io/ingress-nginx/controller/x:1").as_deref(),
        Some("registry.aliyuncs.com/google_containers/x:1")
    );
}

#[test]
fn t5_join_with_dots() {
    let set = rules("rules: [{source: gcr.io, kind: join, target: docker.io/anjia0532, token: ''}, {source: k8s.gcr.io, kind: join, target: docker.io/anjia0532, token: google-containers}, {source: quay.io, kind: join, target: docker.io/anjia0532, token: quay}]");
    assert_eq!(
        rw(&set, "gcr.io/google-containers/etcd:3.2.24").as_deref(),
        Some("docker.io/anjia0532/google-containers.etcd:3.2.24")
    );
    assert_eq!(
        rw(&set, "k8s.gcr.io/ingress-nginx/controller:v1.1.1").as_deref(),
        Some("docker.io/anjia0532/google-containers.ingress-nginx.controller:v1.1.1")
    );
    assert_eq!(
        rw(&set, "quay.io/coreos/etcd:v3.5.9").as_deref(),
        Some("docker.io/anjia0532/quay.coreos.etcd:v3.5.9")
    );
}

#[test]
fn t8_aliases() {
    let set = rules("rules: [{source: gcr.io, kind: host, target: gcr.azk8s.example}]\naliases: [{from: k8s.gcr.io, to: gcr.io/google_containers}]");
    assert_eq!(
        rw(&set, "k8s.gcr.io/pause-amd64:3.1").as_deref(),
        Some("gcr.azk8s.example/google_containers/pause-amd64:3.1")
    );
    let explained = set.explain("k8s.gcr.io/pause-amd64:3.1");
    assert!(matches!(
        explained.outcome,
        Outcome::Rewritten { alias: Some(_), .. }
    ));
    // A direct exact rule is as specific as the aliased one and wins.
    let set = rules("rules: [{source: gcr.io, kind: host, target: gcr.a.example}, {source: k8s.gcr.io, kind: host, target: k8s.b.example}]\naliases: [{from: k8s.gcr.io, to: gcr.io/google-containers}]");
    assert_eq!(
        rw(&set, "k8s.gcr.io/pause").as_deref(),
        Some("k8s.b.example/pause")
    );
    // An aliased exact rule beats a direct catch-all.
    let set = rules("rules: [{source: gcr.io, kind: host, target: gcr.a.example}, {source: '*', kind: full-reference, target: harbor.local}]\naliases: [{from: k8s.gcr.io, to: gcr.io/google-containers}]");
    assert_eq!(
        rw(&set, "k8s.gcr.io/pause").as_deref(),
        Some("gcr.a.example/google-containers/pause")
    );
}

#[test]
fn t9_host_matching_case_ports_wildcards_boundaries() {
    let set = rules("rules: [{source: docker.io, kind: host, target: hub.mirror.example}, {source: '*.gcr.io', kind: host, target: gcr.mirror.example}, {source: quay.io, kind: host, target: quay.mirror.example}]");
    assert_eq!(rw(&set, "docker.io.evil.example/x"), None);
    assert_eq!(
        rw(&set, "Quay.IO/x/y").as_deref(),
        Some("quay.mirror.example/x/y")
    );
    assert_eq!(
        rw(&set, "quay.io:443/x/y"),
        None,
        "a port makes it another registry"
    );
    assert_eq!(
        rw(&set, "us.gcr.io/p/img").as_deref(),
        Some("gcr.mirror.example/p/img")
    );
    assert_eq!(
        rw(&set, "a.b.gcr.io/p/img").as_deref(),
        Some("gcr.mirror.example/p/img")
    );
    assert_eq!(
        rw(&set, "gcr.io/p/img"),
        None,
        "*.gcr.io covers subdomains only"
    );
    assert_eq!(rw(&set, "evilgcr.io/p/img"), None);
    let set = rules("rules: [{source: gcr.io/a, kind: host, target: m.example}]");
    assert_eq!(rw(&set, "gcr.io/ab/x"), None);
    assert_eq!(rw(&set, "gcr.io/a/x").as_deref(), Some("m.example/a/x"));
    assert_eq!(rw(&set, "gcr.io/a").as_deref(), Some("m.example/a"));
}

#[test]
fn most_specific_rule_wins_whatever_the_order() {
    let yaml_a = "rules: [{name: any, source: '*', kind: full-reference, target: all.example}, {name: wild, source: '*.k8s.io', kind: host, target: wild.example}, {name: host, source: registry.k8s.io, kind: host, target: host.example}, {name: deep, source: registry.k8s.io/sig-storage, kind: prefix, target: deep.example/storage}]";
    let yaml_b = "rules: [{name: deep, source: registry.k8s.io/sig-storage, kind: prefix, target: deep.example/storage}, {name: host, source: registry.k8s.io, kind: host, target: host.example}, {name: wild, source: '*.k8s.io', kind: host, target: wild.example}, {name: any, source: '*', kind: full-reference, target: all.example}]";
    for yaml in [yaml_a, yaml_b] {
        let set = rules(yaml);
        assert_eq!(
            rw(&set, "registry.k8s.io/sig-storage/csi-attacher:v4").as_deref(),
            Some("deep.example/storage/csi-attacher:v4")
        );
        assert_eq!(
            rw(&set, "registry.k8s.io/pause:3.9").as_deref(),
            Some("host.example/pause:3.9")
        );
        assert_eq!(
            rw(&set, "other.k8s.io/pause").as_deref(),
            Some("wild.example/pause")
        );
        assert_eq!(
            rw(&set, "quay.io/a/b").as_deref(),
            Some("all.example/quay.io/a/b")
        );
    }
}

#[test]
fn t10_digest_policies() {
    let set = rules("rules: [{source: a.io, kind: host, target: a.m}, {source: b.io, kind: host, target: b.m, digests: drop}, {source: c.io, kind: host, target: c.m, digests: skip}, {source: e.io, kind: host, target: e.m, digests: require}]");
    let both = |h: &str| format!("{h}/x:v1@{D}");
    assert_eq!(
        rw(&set, &both("a.io")),
        Some(format!("a.m/x:v1@{D}")),
        "keep: tag and digest both kept"
    );
    assert_eq!(rw(&set, &both("b.io")).as_deref(), Some("b.m/x:v1"));
    assert_eq!(
        rw(&set, &format!("b.io/x@{D}")),
        None,
        "drop with no tag left alone"
    );
    assert_eq!(rw(&set, &both("c.io")), None);
    assert_eq!(rw(&set, "c.io/x:v1").as_deref(), Some("c.m/x:v1"));
    assert_eq!(rw(&set, "e.io/x:v1"), None);
    assert_eq!(rw(&set, &format!("e.io/x@{D}")), Some(format!("e.m/x@{D}")));
}

#[test]
fn t11_skip_and_t12_allow_lists_fall_through_to_less_specific_rules() {
    let set = rules(
        "rules:
  - {name: dao, source: docker.io, kind: full-reference, target: m.daocloud.io, allow: [docker.io/library/nginx, docker.io/bitnami/**], skip: [docker.io/bitnami/secret]}
  - {name: own, source: '*', kind: full-reference, target: harbor.local/proxy}
skip: [quay.io/private/**]",
    );
    assert_eq!(
        rw(&set, "nginx:1").as_deref(),
        Some("m.daocloud.io/docker.io/library/nginx:1")
    );
    assert_eq!(
        rw(&set, "bitnami/redis").as_deref(),
        Some("m.daocloud.io/docker.io/bitnami/redis")
    );
    assert_eq!(
        rw(&set, "bitnami/secret").as_deref(),
        Some("harbor.local/proxy/docker.io/bitnami/secret")
    );
    assert_eq!(
        rw(&set, "busybox").as_deref(),
        Some("harbor.local/proxy/docker.io/library/busybox")
    );
    assert_eq!(rw(&set, "quay.io/private/app"), None);
    assert!(matches!(
        set.rewrite("quay.io/private/app"),
        Outcome::Unchanged(_, Unchanged::GlobalSkip)
    ));
    let why = set.explain("bitnami/secret");
    assert_eq!(why.candidates.len(), 2);
    assert!(why.candidates[0].declined.is_some() && why.candidates[1].declined.is_none());
}

#[test]
fn keep_rules_are_exceptions() {
    let set = rules("rules: [{source: quay.io, kind: host, target: quay.m.example}, {source: quay.io/internal, kind: keep}]");
    assert_eq!(rw(&set, "quay.io/internal/app"), None);
    assert!(matches!(
        set.rewrite("quay.io/internal/app"),
        Outcome::Unchanged(_, Unchanged::Kept(_))
    ));
    assert_eq!(
        rw(&set, "quay.io/public/app").as_deref(),
        Some("quay.m.example/public/app")
    );
}

#[test]
fn placeholders_invalid_and_already_mirrored() {
    let set = rules("rules: [{source: '*', kind: full-reference, target: m.daocloud.io}]");
    assert_eq!(set.rewrite("auto"), Outcome::Placeholder);
    assert!(matches!(set.rewrite("Not A Ref"), Outcome::Invalid(_)));
    assert!(matches!(
        set.rewrite("m.daocloud.io/docker.io/library/nginx"),
        Outcome::Unchanged(_, Unchanged::AlreadyOnMirror(_))
    ));
    let custom = rules("placeholders: []\nrules: [{source: docker.io, kind: host, target: hub.m}]");
    assert_eq!(rw(&custom, "auto").as_deref(), Some("hub.m/library/auto"));
}

#[test]
fn result_too_long_is_left_alone() {
    let set = rules("rules: [{source: quay.io, kind: prefix, target: quay.mirror.example/a/very/long/prefix/to/push/it/over}]");
    let long = format!("quay.io/{}", "x".repeat(240));
    assert!(matches!(
        set.rewrite(&long),
        Outcome::Unchanged(_, Unchanged::Declined)
    ));
}

#[test]
fn lookups_do_not_depend_on_rule_count() {
    // 10,000 host rules; the right one is found and unrelated ones ignored.
    let mut yaml = String::from("rules:\n");
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  - {{source: r{i}.example.com, kind: host, target: m{i}.mirror.example}}\n"
        ));
    }
    let set = rules(&yaml);
    assert_eq!(
        rw(&set, "r9999.example.com/app:1").as_deref(),
        Some("m9999.mirror.example/app:1")
    );
    assert_eq!(rw(&set, "r10000.example.com/app:1"), None);
}
