//! Every preset loads and maps the examples of mirrors.md.

use super::*;
use crate::config::Config;

fn with(preset: &str) -> crate::rules::RuleSet {
    Config::from_yaml(&format!("presets: ['{preset}']"), "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .rules
}

fn check(preset: &str, cases: &[(&str, Option<&str>)]) {
    let set = with(preset);
    for (input, expected) in cases {
        let got = set.rewrite(input).rewritten();
        assert_eq!(got.as_deref(), *expected, "preset {preset}: {input}");
        if let Some(out) = &got {
            assert_eq!(
                set.rewrite(out).rewritten(),
                None,
                "preset {preset}: {out} must be left alone"
            );
        }
    }
}

const D: &str = "sha256:54f7fe2c0000000000000000000000000000000000000000000000000000abcd";

#[test]
fn every_preset_loads_with_status_and_date() {
    for p in PRESETS {
        let set = with(p.name);
        assert!(!set.rules().is_empty(), "{}", p.name);
        assert!(
            p.newest_info.len() == 10 && p.newest_info.starts_with("20"),
            "{}",
            p.name
        );
        assert!(set.rules().iter().all(|r| r.name.starts_with(p.name)));
    }
}

#[test]
fn daocloud_prefix_and_host_modes() {
    check(
        "daocloud",
        &[
            (
                "registry.k8s.io/coredns/coredns:v1.11.1",
                Some("m.daocloud.io/registry.k8s.io/coredns/coredns:v1.11.1"),
            ),
            (
                "gcr.io/kubebuilder/kube-rbac-proxy:v0.8.0",
                Some("m.daocloud.io/gcr.io/kubebuilder/kube-rbac-proxy:v0.8.0"),
            ),
            ("nginx", None),
            ("quay.io/coreos/etcd", None),
        ],
    );
    check(
        "daocloud-hosts",
        &[
            (
                "registry.k8s.io/coredns/coredns",
                Some("k8s.m.daocloud.io/coredns/coredns"),
            ),
            (
                "k8s.gcr.io/pause:3.1",
                Some("k8s-gcr.m.daocloud.io/pause:3.1"),
            ),
            (
                &format!("gcr.io/a/b:1@{D}"),
                Some(&format!("gcr.m.daocloud.io/a/b:1@{D}")),
            ),
        ],
    );
}

#[test]
fn lank8s_sjtu_nju() {
    check(
        "lank8s",
        &[
            ("k8s.gcr.io/pause:3.1", Some("lank8s.cn/pause:3.1")),
            (
                "registry.k8s.io/ingress-nginx/controller:v1.3.1",
                Some("registry.lank8s.cn/ingress-nginx/controller:v1.3.1"),
            ),
            ("ghcr.io/org/img", Some("ghcr.lank8s.cn/org/img")),
            ("quay.io/org/img", None),
        ],
    );
    check(
        "sjtu",
        &[
            (
                "registry.k8s.io/pause:3.9",
                Some("registry-k8s-io.mirrors.sjtug.sjtu.edu.cn/pause:3.9"),
            ),
            ("k8s.gcr.io/pause:3.1", None),
            ("nginx", None),
        ],
    );
    check(
        "nju",
        &[
            ("nginx:1.25", Some("docker.nju.edu.cn/library/nginx:1.25")),
            (
                "registry.k8s.io/sig-storage/nfs-provisioner:v4.0.8",
                Some("k8s.nju.edu.cn/sig-storage/nfs-provisioner:v4.0.8"),
            ),
            ("k8s.gcr.io/x", Some("k8s-gcr.nju.edu.cn/x")),
        ],
    );
}

#[test]
fn aliyun_flattens_renames_allow_lists_and_skips_digests() {
    check(
        "aliyun",
        &[
            (
                "registry.k8s.io/pause:3.9",
                Some("registry.aliyuncs.com/google_containers/pause:3.9"),
            ),
            (
                "registry.k8s.io/coredns/coredns:v1.11.3",
                Some("registry.aliyuncs.com/google_containers/coredns:v1.11.3"),
            ),
            (
                "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0",
                Some("registry.aliyuncs.com/google_containers/csi-node-driver-registrar:v2.13.0"),
            ),
            (
                "registry.k8s.io/ingress-nginx/controller:v1.6.4",
                Some("registry.aliyuncs.com/google_containers/nginx-ingress-controller:v1.6.4"),
            ),
            (
                "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.0",
                Some("registry.aliyuncs.com/google_containers/kube-webhook-certgen:v1.4.0"),
            ),
            ("registry.k8s.io/some/other-image:v1", None),
            (&format!("registry.k8s.io/pause:3.9@{D}"), None),
            (
                "k8s.gcr.io/coredns:1.7.0",
                Some("registry.aliyuncs.com/google_containers/coredns:1.7.0"),
            ),
        ],
    );
}

#[test]
fn anjia0532_joins_and_refuses_digests() {
    check("anjia0532", &[
        ("gcr.io/google-containers/etcd:3.2.24", Some("docker.io/anjia0532/google-containers.etcd:3.2.24")),
        ("k8s.gcr.io/sig-storage/nfs-subdir-external-provisioner:v4", Some("docker.io/anjia0532/google-containers.sig-storage.nfs-subdir-external-provisioner:v4")),
        ("quay.io/coreos/etcd:v3.5.9", Some("docker.io/anjia0532/quay.coreos.etcd:v3.5.9")),
        (&format!("registry.k8s.io/ingress-nginx/controller:v1.9.4@{D}"), None),
    ]);
}

#[test]
fn self_hosted_template_keeps_source_host_and_leaves_its_own_registry() {
    check(
        "self-hosted=harbor.example.com/mirror",
        &[
            (
                "nginx",
                Some("harbor.example.com/mirror/docker.io/library/nginx"),
            ),
            (
                "registry.k8s.io/coredns/coredns:v1",
                Some("harbor.example.com/mirror/registry.k8s.io/coredns/coredns:v1"),
            ),
            (
                "registry.k8s.io/coredns:1.7.0",
                Some("harbor.example.com/mirror/registry.k8s.io/coredns:1.7.0"),
            ),
            ("harbor.example.com/team/app:1", None),
            ("harbor.example.com/mirror/quay.io/x/y", None),
        ],
    );
}

#[test]
fn retired_and_unknown_presets_are_refused_by_name() {
    assert!("ustc"
        .parse::<PresetRef>()
        .unwrap_err()
        .contains("shut down"));
    assert!("azk8s"
        .parse::<PresetRef>()
        .unwrap_err()
        .contains("Azure China"));
    assert!("usct"
        .parse::<PresetRef>()
        .unwrap_err()
        .contains("known presets"));
    assert!("self-hosted=NotAHost".parse::<PresetRef>().is_err());
    assert_eq!(
        "self-hosted=h.example/m"
            .parse::<PresetRef>()
            .unwrap()
            .to_string(),
        "self-hosted=h.example/m"
    );
}

#[test]
fn aliyun_treats_frozen_k8s_gcr_io_like_registry_k8s_io() {
    // k8s.gcr.io redirects to registry.k8s.io: every repository the preset
    // allows or renames under one is rewritten the same under the other.
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(include_str!("aliyun.yaml")).unwrap();
    let set = with("aliyun");
    let registry = &yaml["rules"][0];
    assert_eq!(registry["source"], "registry.k8s.io");
    let allowed = registry["allow"].as_sequence().unwrap().iter();
    let renamed = registry["renames"].as_mapping().unwrap().keys();
    let repos: Vec<&str> = allowed
        .chain(renamed)
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(repos.len() >= 16);
    for repo in repos {
        let new = format!("{repo}:v1");
        let old = new.replace("registry.k8s.io/", "k8s.gcr.io/");
        let expected = set.rewrite(&new).rewritten();
        assert!(expected.is_some(), "{new}");
        assert_eq!(set.rewrite(&old).rewritten(), expected, "{old}");
    }
}

#[test]
fn host_style_self_hosted_names_one_host_per_upstream() {
    check(
        "self-hosted-hosts=xxx.com",
        &[
            ("nginx:alpine", Some("docker.xxx.com/library/nginx:alpine")),
            (
                "quay.io/coreos/kube-state-metrics:v1.5.0",
                Some("quay.xxx.com/coreos/kube-state-metrics:v1.5.0"),
            ),
            (
                "gcr.io/google-containers/etcd:3.2.24",
                Some("gcr.xxx.com/google-containers/etcd:3.2.24"),
            ),
            ("registry.k8s.io/pause:3.9", Some("k8s.xxx.com/pause:3.9")),
            ("k8s.gcr.io/pause:3.1", Some("k8s-gcr.xxx.com/pause:3.1")),
            ("ghcr.io/a/b:1", Some("ghcr.xxx.com/a/b:1")),
            ("registry.example.org/a:1", None),
        ],
    );
    assert_eq!(
        "self-hosted-hosts=xxx.com"
            .parse::<PresetRef>()
            .unwrap()
            .to_string(),
        "self-hosted-hosts=xxx.com"
    );
}
