use super::*;

fn config(yaml: &str) -> Config {
    detour_core::config::Config::from_yaml(yaml, "test.yaml").unwrap()
}

const RULES: &str =
    "rules:\n  - source: registry.k8s.io\n    kind: full-reference\n    target: m.daocloud.io\n";

fn workload(ns: &str, kind: &'static str, name: &str, images: &[&str]) -> Workload {
    Workload {
        namespace: ns.into(),
        kind,
        name: name.into(),
        skip_label: false,
        mirror_pod: false,
        containers: images
            .iter()
            .enumerate()
            .map(|(i, image)| ContainerImage {
                container: format!("c{i}"),
                image: image.to_string(),
                pull_never: false,
            })
            .collect(),
    }
}

#[test]
fn modes_follow_labels_selection_and_global_mode() {
    let opt_in = Selection::default();
    let cluster_wide = Selection {
        cluster_wide: true,
        ..Selection::default()
    };
    let e = GlobalMode::Enforce;
    assert_eq!(opt_in.mode("a", None, e), Mode::Off);
    assert_eq!(opt_in.mode("a", Some("enforce"), e), Mode::Enforce);
    assert_eq!(opt_in.mode("a", Some("audit"), e), Mode::Audit);
    assert_eq!(opt_in.mode("a", Some("other"), e), Mode::Off);
    assert_eq!(cluster_wide.mode("a", None, e), Mode::Enforce);
    assert_eq!(cluster_wide.mode("a", Some("off"), e), Mode::Off);
    assert_eq!(cluster_wide.mode("a", Some("other"), e), Mode::Enforce);
    assert_eq!(cluster_wide.mode("kube-system", None, e), Mode::Excluded);
    // A label that could not be read is not a label that says off.
    assert_eq!(opt_in.mode_unread("a"), Mode::Unknown);
    assert_eq!(cluster_wide.mode_unread("a"), Mode::Unknown);
    assert_eq!(opt_in.mode_unread("kube-system"), Mode::Excluded);
    assert_eq!(
        opt_in.mode("a", Some("enforce"), GlobalMode::Audit),
        Mode::Audit
    );
}

#[test]
fn findings_decide_each_container_and_the_summary_counts_them() {
    let config = config(RULES);
    let mut skipped = workload("b", "Deployment", "skip", &["registry.k8s.io/pause:3.9"]);
    skipped.skip_label = true;
    let mut never = workload("b", "Pod", "never", &["registry.k8s.io/pause:3.9"]);
    never.containers[0].pull_never = true;
    let workloads = vec![
        workload(
            "a",
            "Pod",
            "p1",
            &["registry.k8s.io/pause:3.9", "nginx:1.25"],
        ),
        workload("a", "Pod", "p2", &["registry.k8s.io/pause:3.9"]),
        workload("b", "CronJob", "bad", &["registry.k8s.io/Pause"]),
        skipped,
        never,
    ];
    let modes = BTreeMap::from([
        ("a".to_string(), Mode::Enforce),
        ("b".to_string(), Mode::Off),
    ]);
    let mut report = Report {
        findings: findings(&workloads, &modes, &config),
        namespaces: modes,
        partial: vec![],
        mirror_errors: BTreeMap::new(),
    };
    let rewrites: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.action == Action::Rewrite)
        .collect();
    assert_eq!(rewrites.len(), 2);
    assert!(rewrites
        .iter()
        .all(|f| f.to.as_deref() == Some("m.daocloud.io/registry.k8s.io/pause:3.9")));
    assert_eq!(
        report.copies(),
        BTreeSet::from([(
            "registry.k8s.io/pause:3.9",
            "m.daocloud.io/registry.k8s.io/pause:3.9"
        )])
    );
    report.set_mirror_states(&BTreeMap::from([(
        "m.daocloud.io/registry.k8s.io/pause:3.9".to_string(),
        MirrorState::Missing,
    )]));
    assert_eq!(
        report.missing(),
        BTreeSet::from(["m.daocloud.io/registry.k8s.io/pause:3.9"])
    );
    let summary = report.summary();
    assert_eq!(summary.objects, 5);
    assert_eq!(summary.containers, 6);
    assert_eq!(summary.rewrite.get("enforce"), Some(&2));
    assert_eq!(summary.distinct_rewrites, 1);
    assert_eq!(
        (summary.unchanged, summary.skipped, summary.invalid),
        (1, 2, 1)
    );
    assert_eq!(summary.mirror_missing, 1);
    // Singular where there is one.
    assert!(
        summary
            .to_string()
            .contains("rewrite: 2 containers (2 enforce) to 1 distinct image; "),
        "{summary}"
    );
    let text = report.text();
    assert!(text.contains("namespace a (enforce"), "{text}");
    assert!(
        text.contains("registry.k8s.io/pause:3.9 -> m.daocloud.io/registry.k8s.io/pause:3.9  (2 objects: Pod/p1, Pod/p2)  [mirror: MISSING]"),
        "{text}"
    );
    assert!(
        text.contains("\"registry.k8s.io/Pause\" invalid: "),
        "{text}"
    );
    assert!(
        text.contains("skipped: labelled detour.dev/skip=true"),
        "{text}"
    );
    assert!(text.contains("skipped: imagePullPolicy is Never"), "{text}");
    assert!(
        !text.contains("nginx"),
        "unchanged images are only counted: {text}"
    );
}
