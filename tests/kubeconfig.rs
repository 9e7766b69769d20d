//! Kubeconfigs as users have them, mistakes included. Every command that
//! reads one (`audit`, `mirror --from-cluster`, `serve --manage-certs`)
//! answers a bad one with one line that names what to fix, exit 2, and
//! nothing of what the file holds: a kubeconfig carries tokens and keys.
//! None of these needs a cluster (the file is refused before any request);
//! wrong tokens and untrusted CAs are in tests/cluster.rs, against the
//! real apiserver.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{free_port, BIN};

/// Secrets that must never be printed; each is unlike any word detour writes.
const TOKEN: &str = "tok3n-Zq8vX2-never-printed";
const KEY_DATA: &str = "S2V5RGF0YU5ldmVyUHJpbnRlZA==";
const CERT_DATA: &str = "Q2VydERhdGFOZXZlclByaW50ZWQ=";

/// A kind-style kubeconfig: token and client key inline.
fn kubeconfig(users: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: kind\n\
         \x20 cluster:\n\
         \x20   server: https://127.0.0.1:{port}\n\
         \x20   insecure-skip-tls-verify: true\n\
         contexts:\n\
         - name: kind\n\
         \x20 context: {{cluster: kind, user: admin}}\n\
         current-context: kind\n\
         users:\n{users}",
        port = free_port()
    )
}

fn admin_user() -> String {
    format!(
        "- name: admin\n\
         \x20 user:\n\
         \x20   token: {TOKEN}\n\
         \x20   client-certificate-data: {CERT_DATA}\n\
         \x20   client-key-data: {KEY_DATA}\n"
    )
}

/// The mistakes: (what, the file's text, words the error must hold).
fn broken_files() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let good = kubeconfig(&admin_user());
    vec![
        (
            // A tab where YAML wants spaces, on the token's line.
            "tab on the token line",
            good.replace("    token:", "\t  token:"),
            vec!["not a valid kubeconfig", "credentials"],
        ),
        (
            "unterminated quote before the key",
            good.replace(
                &format!("token: {TOKEN}"),
                &format!("token: \"{TOKEN}"),
            ),
            vec!["not a valid kubeconfig"],
        ),
        (
            // A string where a list belongs: a parser's message quotes it.
            "a scalar where the users list belongs",
            kubeconfig(&format!("  {TOKEN} {KEY_DATA}\n")).replace("users:\n", "users: "),
            vec!["not a valid kubeconfig"],
        ),
        (
            "an unknown field type in the user",
            kubeconfig(&format!(
                "- name: admin\n  user:\n    token: [{TOKEN}]\n    client-key-data: {KEY_DATA}\n"
            )),
            vec!["not a valid kubeconfig"],
        ),
        (
            "client-key-data that is not base64",
            kubeconfig(&format!(
                "- name: admin\n  user:\n    token: {TOKEN}\n    client-certificate-data: {CERT_DATA}\n    client-key-data: '{KEY_DATA}%%'\n"
            )),
            vec!["client-key", "base64"],
        ),
        (
            "a context whose user is missing",
            kubeconfig(&format!("- name: someone-else\n  user: {{token: {TOKEN}}}\n"))
                .replace("current-context: kind", "current-context: nowhere"),
            vec!["no context named \"nowhere\""],
        ),
    ]
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("DETOUR_CONFIG")
        .env_remove("DETOUR_PRESET")
        .env_remove("DETOUR_KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

/// The commands that read a kubeconfig, with it at `path`.
fn commands(path: &Path, certs: &Path) -> Vec<Vec<String>> {
    let path = path.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    vec![
        vec!["audit".into(), "--kubeconfig".into(), path.clone()],
        vec![
            "mirror".into(),
            "--from-cluster".into(),
            "--kubeconfig".into(),
            path.clone(),
        ],
        vec![
            "serve".into(),
            "--manage-certs".into(),
            "--kubeconfig".into(),
            path,
            "--listen".into(),
            listen,
            "--admin-listen".into(),
            admin,
            "--cert-dir".into(),
            certs.display().to_string(),
        ],
    ]
}

fn assert_one_clean_line(what: &str, command: &[String], out: &Output, wanted: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("{what}: detour {}\nstderr: {stderr}", command.join(" "));
    assert_eq!(out.status.code(), Some(2), "{context}");
    for secret in [TOKEN, KEY_DATA, CERT_DATA] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{context}"
        );
    }
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("detour: "))
        .collect();
    assert_eq!(lines.len(), 1, "{context}");
    // Logging may precede it (serve logs as it starts), but nothing follows
    // the error, and the error is one line.
    assert!(stderr.trim_end().ends_with(lines[0]), "{context}");
    for word in wanted {
        assert!(lines[0].contains(word), "{word:?} missing: {context}");
    }
    assert!(!stderr.contains("panicked"), "{context}");
}

#[test]
fn broken_kubeconfigs_are_one_line_without_secrets_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for (n, (what, text, wanted)) in broken_files().into_iter().enumerate() {
        let path = dir.path().join(format!("kubeconfig-{n}"));
        std::fs::write(&path, &text).unwrap();
        for command in commands(&path, &dir.path().join("certs")) {
            let args: Vec<&str> = command.iter().map(String::as_str).collect();
            let out = run(&args);
            let mut wanted = wanted.clone();
            let shown = path.display().to_string();
            wanted.push(&shown);
            assert_one_clean_line(what, &command, &out, &wanted);
        }
    }
}

#[test]
fn a_missing_kubeconfig_and_an_unknown_context_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-kubeconfig");
    for command in commands(&missing, &dir.path().join("certs")) {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let out = run(&args);
        let shown = missing.display().to_string();
        assert_one_clean_line(
            "missing file",
            &command,
            &out,
            &[&shown, "No such file or directory"],
        );
        // The path is written once, as it is, not as a quoted debug string.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(&format!("\"{shown}\"")), "{stderr}");
    }

    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, kubeconfig(&admin_user())).unwrap();
    let shown = path.display().to_string();
    let out = run(&[
        "audit",
        "--kubeconfig",
        &shown,
        "--context",
        "no-such-context",
    ]);
    assert_one_clean_line(
        "unknown context",
        &["audit".into(), "--context".into()],
        &out,
        &["no context named \"no-such-context\"", "--context"],
    );
}
