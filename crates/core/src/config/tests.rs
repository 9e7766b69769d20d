//! Config loading: the embedded default, and refusals with file, line, reason.

use super::*;

fn refused(yaml: &str) -> String {
    match Config::from_yaml(yaml, "bad.yaml") {
        Ok(_) => panic!("config should be refused:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_default_loads_and_is_narrow() {
    let config =
        Config::from_yaml(EMBEDDED_DEFAULT, "embedded").expect("embedded default must load");
    let set = &config.rules;
    assert_eq!(
        set.rewrite("registry.k8s.io/pause:3.9")
            .rewritten()
            .as_deref(),
        Some("m.daocloud.io/registry.k8s.io/pause:3.9")
    );
    assert_eq!(
        set.rewrite("k8s.gcr.io/pause:3.1").rewritten().as_deref(),
        Some("m.daocloud.io/k8s.gcr.io/pause:3.1")
    );
    // Registries that also host private or non-allow-listed images stay as they are.
    for image in [
        "nginx",
        "quay.io/x/y",
        "ghcr.io/o/i",
        "gcr.io/my-project/app",
        "mcr.microsoft.com/x",
        "localhost:5000/a",
    ] {
        assert_eq!(
            set.rewrite(image).rewritten(),
            None,
            "{image} must not be rewritten by default"
        );
    }
    assert_eq!(Config::embedded_default().rules.rules().len(), 2);
}

#[test]
fn errors_carry_file_line_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("rules:\n  - source: quay.io\n    kind: hots\n    target: q.m\n", "bad.yaml:3:", "unknown variant `hots`"),
        ("rules:\n  - source: quay.io\n    kind: host\n    target: q.m\n    colour: red\n", "bad.yaml:", "unknown field `colour`"),
        ("presets: [daocloud]\nrulez: []\n", "bad.yaml:2:", "unknown field `rulez`"),
        ("rules:\n  - source: nginx\n    kind: host\n    target: q.m\n", "bad.yaml:2:", "not a registry host"),
        ("rules:\n  - source: quay.io\n    kind: host\n", "bad.yaml:", "kind host needs a target"),
        ("rules:\n  - source: quay.io\n    kind: host\n    target: q.m/path\n", "bad.yaml:", "without a path"),
        ("rules:\n  - source: quay.io\n    kind: prefix\n    target: Q_M/x\n", "bad.yaml:", "invalid domain"),
        ("rules:\n  - source: quay.io\n    kind: keep\n    target: q.m\n", "bad.yaml:", "takes no target"),
        ("rules:\n  - source: quay.io\n    kind: host\n    target: q.m\n    token: x\n", "bad.yaml:", "only used by kind join"),
        ("rules:\n  - source: quay.io\n    kind: host\n    target: q.m\n    digests: sometimes\n", "bad.yaml:5:", "unknown variant `sometimes`"),
        ("rules:\n  - source: quay.io\n    kind: host\n    target: q.m\n    allow: [nginx]\n", "bad.yaml:", "write the registry host first"),
        ("rules:\n  - source: quay.io\n    kind: flatten\n    target: a.b/c\n    renames: {ghcr.io/x/y: a.b/c/y}\n", "bad.yaml:", "not under this rule's source"),
        ("presets: [ustc]\n", "bad.yaml:1:", "shut down"),
        ("presets: [azk8s]\n", "bad.yaml:1:", "Azure China"),
        ("presets: [nope]\n", "bad.yaml:1:", "unknown preset"),
        ("presets: [self-hosted]\n", "bad.yaml:1:", "needs the mirror"),
        ("aliases: [{from: '*.gcr.io', to: gcr.io}]\n", "bad.yaml:1:", "not a wildcard"),
        ("skip: ['quay.io/*/x']\n", "bad.yaml:1:", "only an exact repository"),
        ("rules: [\n", "bad.yaml:", "did not find expected"),
        ("- just\n- a list\n", "bad.yaml:1:", "invalid type"),
    ];
    for (yaml, location, reason) in cases {
        let e = refused(yaml);
        assert!(
            e.starts_with(location),
            "{e:?} should start with {location:?}"
        );
        assert!(e.contains(reason), "{e:?} should contain {reason:?}");
    }
}

#[test]
fn empty_file_is_an_empty_config() {
    let config = Config::from_yaml("", "empty.yaml").unwrap();
    assert!(config.rules.rules().is_empty());
    assert_eq!(
        config.rules.rewrite("auto"),
        crate::rules::Outcome::Placeholder
    );
}

#[test]
fn hostile_inputs_are_refused_without_panic() {
    let big = "#".repeat((MAX_CONFIG_BYTES + 1) as usize);
    assert!(matches!(
        Config::from_yaml(&big, "big.yaml"),
        Err(ConfigError::TooLarge { .. })
    ));
    // Alias expansion bomb ("billion laughs").
    let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nrules: *g\n";
    assert!(Config::from_yaml(bomb, "bomb.yaml").is_err());
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Config::from_yaml(&deep, "deep.yaml").is_err());
    assert!(matches!(
        Config::load(Path::new("/nonexistent/detour.yaml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn user_rules_take_precedence_over_presets_with_the_same_source() {
    let config = Config::from_yaml(
        "presets: [lank8s]\nrules: [{source: registry.k8s.io, kind: host, target: mine.example}]",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        config
            .rules
            .rewrite("registry.k8s.io/pause")
            .rewritten()
            .as_deref(),
        Some("mine.example/pause")
    );
    assert_eq!(
        config.rules.rewrite("ghcr.io/o/i").rewritten().as_deref(),
        Some("ghcr.lank8s.cn/o/i")
    );
}

#[test]
fn mirror_settings_are_typed_and_checked() {
    let c = Config::from_yaml(
        "mirror:\n  lookupBudget: 250ms\n  platforms: [linux/amd64]\nrules:\n  - source: quay.io\n    kind: host\n    target: harbor.example\n    premirror: true\n    swap: if-present\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        c.mirror.lookup_budget.0,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(c.mirror.queue_length, 256);
    let rule = &c.rules.rules()[0];
    assert!(rule.mirror.premirror);
    assert_eq!(rule.mirror.swap, crate::rules::Swap::IfPresent);

    let refused = |yaml: &str, needle: &str| {
        let e = refused(yaml);
        assert!(e.contains(needle), "{yaml}\n=> {e}");
    };
    refused("mirror:\n  lookupBudget: soon\n", "invalid duration");
    refused(
        "mirror:\n  queueLength: 0\n",
        "queueLength must be between 1",
    );
    refused("mirror:\n  credential: [x]\n", "unknown field");
    refused("mirror:\n  platforms: [linux]\n", "os/arch");
    refused(
        "rules:\n  - source: quay.io\n    kind: keep\n    premirror: true\n",
        "no target to mirror into",
    );
    refused(
        "mirror:\n  platforms: [linux/amd64]\nrules:\n  - source: quay.io\n    kind: host\n    target: harbor.example\n    premirror: true\n",
        "use swap: if-present",
    );
    refused(
        "rules:\n  - source: quay.io\n    kind: host\n    target: harbor.example\n    swap: sometimes\n",
        "unknown variant",
    );
}
