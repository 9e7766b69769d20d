use super::*;

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, "test").unwrap()
}

#[test]
fn the_embedded_default_compiles_to_four_objects() {
    let objects = compile(&Config::embedded_default(), Namespaces::OptIn).unwrap();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "MutatingAdmissionPolicy",
            "MutatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    let spec = &objects[0]["spec"];
    assert_eq!(spec["failurePolicy"], "Ignore");
    assert_eq!(spec["reinvocationPolicy"], "IfNeeded");
    let binding = &objects[1]["spec"]["matchResources"];
    assert_eq!(
        binding["namespaceSelector"]["matchExpressions"][1]["values"],
        json!(["enforce"])
    );
    assert_eq!(
        binding["objectSelector"]["matchExpressions"][0]["key"],
        SKIP_LABEL
    );
}

#[test]
fn cluster_wide_selects_all_but_off() {
    let objects = compile(&Config::embedded_default(), Namespaces::ClusterWide).unwrap();
    let enforce = &objects[1]["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"];
    assert_eq!(enforce[0]["values"], json!(EXCLUDED_NAMESPACES));
    assert_eq!(enforce[1]["operator"], "NotIn");
    assert_eq!(enforce[1]["values"], json!(["off", "audit"]));
}

#[test]
fn global_audit_mode_has_no_mutation() {
    let objects = compile(
        &config("mode: audit\nrules: [{source: quay.io, kind: host, target: m.example}]"),
        Namespaces::OptIn,
    )
    .unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["kind"], "ValidatingAdmissionPolicy");
    // Every selected namespace is audited: enforce ones too.
    let audited = &objects[1]["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][1];
    assert_eq!(audited["values"], json!(["enforce", "audit"]));
    assert_eq!(
        objects[0]["spec"]["validations"][0]["expression"],
        "size(variables.changes) == 0"
    );
}

#[test]
fn warnings_are_bound_to_audit_namespaces_only() {
    for namespaces in [Namespaces::OptIn, Namespaces::ClusterWide] {
        let objects = compile(&Config::embedded_default(), namespaces).unwrap();
        let audited =
            &objects[3]["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"];
        assert_eq!(audited[0]["values"], json!(EXCLUDED_NAMESPACES));
        assert_eq!(audited[1]["operator"], "In");
        assert_eq!(audited[1]["values"], json!(["audit"]));
    }
}

#[test]
fn rules_that_need_io_are_refused_by_name() {
    let premirror = config(
        "rules: [{name: copy-quay, source: quay.io, kind: host, target: m.example, premirror: true}]",
    );
    let err = compile(&premirror, Namespaces::OptIn).unwrap_err();
    assert!(err.to_string().contains("\"copy-quay\""), "{err}");
    assert!(err.to_string().contains("premirror"), "{err}");
    let if_present = config(
        "rules: [{name: swap-quay, source: quay.io, kind: host, target: m.example, swap: if-present}]",
    );
    let err = compile(&if_present, Namespaces::OptIn).unwrap_err();
    assert!(err.to_string().contains("\"swap-quay\""), "{err}");
    assert!(err.to_string().contains("swap: if-present"), "{err}");
}

#[test]
fn a_policy_past_etcds_object_limit_is_refused_with_numbers() {
    let mut yaml = String::from("rules:\n");
    for i in 0..8000 {
        yaml.push_str(&format!(
            "  - {{source: registry-{i}.example.com/some/long/path, kind: prefix, target: mirror.example.com/registry-{i}}}\n"
        ));
    }
    let Err(err) = compile(&config(&yaml), Namespaces::OptIn) else {
        panic!("8,000 rules compiled into objects etcd refuses");
    };
    let text = err.to_string();
    assert!(
        matches!(err, NativeError::ObjectTooLarge { count: 8000, .. }),
        "{text}"
    );
    assert!(text.contains("1572864"), "{text}");
}

#[test]
fn rule_text_cannot_escape_its_string_literal() {
    let objects = compile(
        &config(
            r#"rules: [{name: "a\" + 'b' + \"c", source: quay.io, kind: host, target: m.example}]"#,
        ),
        Namespaces::OptIn,
    )
    .unwrap();
    let vars = objects[0]["spec"]["variables"].as_array().unwrap();
    let names = vars.iter().find(|v| v["name"] == "names").unwrap();
    // The JSON-encoded name, then CEL-quoted: every quote is escaped.
    assert_eq!(names["expression"], r#"["\"a\\\" + 'b' + \\\"c\""]"#);
}
