//! The worked examples of the project's background material
//! (`tests/fixtures/seed-examples.tsv`, copied from shared/fixtures): every
//! row through the CLI as a user would run it.

mod common;

use std::process::Command;

use common::BIN;
use serde_json::Value;

const EXAMPLES: &str = include_str!("fixtures/seed-examples.tsv");

struct Example<'a> {
    preset: &'a str,
    original: &'a str,
    rewritten: &'a str,
}

fn examples() -> Vec<Example<'static>> {
    EXAMPLES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split('\t').collect();
            assert!(fields.len() >= 3, "row {l:?}");
            Example {
                preset: fields[0],
                original: fields[1],
                rewritten: fields[2],
            }
        })
        .collect()
}

/// The preset argument a row names: a preset, or the host-style template
/// with the row's domain.
fn preset_arg(preset: &str) -> String {
    match preset.strip_prefix("host-style self-hosted, domain ") {
        Some(domain) => format!("self-hosted-hosts={domain}"),
        None => preset.to_string(),
    }
}

fn explain(args: &[&str], image: &str) -> (bool, Value, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["explain", "-o", "json", image])
        .env_remove("DETOUR_CONFIG")
        .env_remove("DETOUR_PRESET")
        .output()
        .unwrap();
    let record = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        record,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The fully qualified form, so `anjia0532/x` and `docker.io/anjia0532/x`
/// compare equal (the row's note says Docker Hub is meant).
fn normalized(image: &str) -> String {
    let (_, record, _) = explain(&["--config", "/dev/null"], image);
    record["normalized"]
        .as_str()
        .unwrap_or_else(|| panic!("{image} does not parse: {record}"))
        .to_string()
}

#[test]
fn every_worked_example_is_what_its_preset_gives() {
    let rows = examples();
    assert_eq!(rows.len(), 9, "the fixture's rows");
    let mut checked = 0;
    for row in &rows {
        let preset = preset_arg(row.preset);
        let (ok, record, stderr) = explain(&["--preset", &preset], row.original);
        if row.preset == "ustc" {
            // A service that is gone is refused by name, with the reason...
            assert!(!ok, "ustc accepted");
            assert!(
                stderr.contains(
                    "preset \"ustc\" is not offered: USTC's registry caches are shut down"
                ),
                "{stderr}"
            );
            // ... and the same rewrite is a one-line user rule.
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("ustc.yaml");
            std::fs::write(
                &config,
                "rules:\n  - {source: quay.io, kind: host, target: quay.mirrors.ustc.edu.cn}\n",
            )
            .unwrap();
            let (ok, record, stderr) =
                explain(&["--config", config.to_str().unwrap()], row.original);
            assert!(ok, "{stderr}");
            assert_eq!(
                record["rewritten"].as_str().map(normalized),
                Some(normalized(row.rewritten)),
                "{record}"
            );
            checked += 1;
            continue;
        }
        assert!(ok, "{preset}: {stderr}");
        let got = record["rewritten"]
            .as_str()
            .unwrap_or_else(|| panic!("{preset} leaves {} alone: {record}", row.original));
        assert_eq!(
            normalized(got),
            normalized(row.rewritten),
            "{preset}: {}",
            row.original
        );
        checked += 1;
    }
    assert_eq!(checked, rows.len());
}

#[test]
fn the_host_style_preset_covers_each_upstream_and_refuses_a_path() {
    let cases = [
        ("nginx:alpine", "docker.mirror.example/library/nginx:alpine"),
        ("registry.k8s.io/pause:3.9", "k8s.mirror.example/pause:3.9"),
        ("k8s.gcr.io/pause:3.1", "k8s-gcr.mirror.example/pause:3.1"),
        ("ghcr.io/org/tool:2", "ghcr.mirror.example/org/tool:2"),
        ("quay.io/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000", "quay.mirror.example/a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
    ];
    for (image, want) in cases {
        let (ok, record, stderr) =
            explain(&["--preset", "self-hosted-hosts=mirror.example"], image);
        assert!(ok, "{stderr}");
        assert_eq!(record["rewritten"], want, "{image}");
    }
    // Already on a mirror host: left alone (idempotent).
    let (_, record, _) = explain(
        &["--preset", "self-hosted-hosts=mirror.example"],
        "docker.mirror.example/library/nginx:alpine",
    );
    assert_eq!(record["rewritten"], Value::Null);
    for bad in [
        "self-hosted-hosts",
        "self-hosted-hosts=",
        "self-hosted-hosts=example.com/path",
    ] {
        let (ok, _, stderr) = explain(&["--preset", bad], "nginx");
        assert!(!ok, "{bad} accepted");
        assert!(stderr.contains("self-hosted-hosts"), "{bad}: {stderr}");
    }
}
