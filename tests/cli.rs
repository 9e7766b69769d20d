//! The real `detour` binary on real files and standard input.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_detour");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn run(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("DETOUR_CONFIG")
        .env_remove("DETOUR_PRESET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn detour");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn explain_json_contract_from_stdin() {
    let input = "nginx:1.25\nregistry.k8s.io/pause:3.9\nNot/Valid Image\nlocalhost:5000/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    let (code, stdout, _) = run(&["explain", "-o", "json", "-"], Some(input));
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 4);
    let keys = [
        "input",
        "valid",
        "error",
        "domain",
        "path",
        "tag",
        "digest",
        "normalized",
        "rewritten",
        "rule",
    ];
    for line in &lines {
        let obj = line.as_object().unwrap();
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            keys.iter().collect::<Vec<_>>(),
            "exact fields, in order"
        );
    }
    assert_eq!(lines[0]["normalized"], "docker.io/library/nginx:1.25");
    assert_eq!(lines[0]["rewritten"], serde_json::Value::Null);
    assert_eq!(
        lines[1]["rewritten"],
        "m.daocloud.io/registry.k8s.io/pause:3.9"
    );
    assert_eq!(lines[1]["rule"], "registry.k8s.io via DaoCloud");
    assert_eq!(lines[2]["valid"], false);
    assert!(lines[2]["error"].as_str().unwrap().contains("lowercase"));
    assert_eq!(lines[2]["domain"], serde_json::Value::Null);
    assert_eq!(lines[3]["domain"], "localhost:5000");
    assert_eq!(lines[3]["tag"], serde_json::Value::Null);
    assert!(lines[3]["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn explain_text_with_config_and_preset_from_env() {
    let config = format!("{FIXTURES}/mirror-config.yaml");
    let (code, stdout, _) = run(
        &["--config", &config, "explain", "quay.io/other/app:1"],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("declined, repository is not on the rule's allow-list"),
        "{stdout}"
    );
    assert!(
        stdout.contains("result:      harbor.example.com/proxy/quay.io/other/app:1"),
        "{stdout}"
    );
    let out = Command::new(BIN)
        .args(["explain", "k8s.gcr.io/pause:3.1"])
        .env("DETOUR_PRESET", "lank8s")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("result:      lank8s.cn/pause:3.1"));
    let (code, _, _) = run(&["explain", "UPPER"], None);
    assert_eq!(code, 1, "an invalid image in text mode exits 1");
}

#[test]
fn rewrite_yaml_stream_every_kind() {
    let config = format!("{FIXTURES}/mirror-config.yaml");
    let file = format!("{FIXTURES}/manifests/workloads.yaml");
    let (code, stdout, stderr) = run(&["--config", &config, "rewrite", "-f", &file], None);
    assert_eq!(code, 0, "{stderr}");
    let docs: Vec<serde_json::Value> = stdout
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).expect("output is YAML"))
        .collect();
    assert_eq!(docs.len(), 4);
    let deploy = &docs[0]["spec"]["template"]["spec"];
    // registry.k8s.io busybox is not on Aliyun's list: falls through to harbor.
    assert_eq!(
        deploy["initContainers"][0]["image"],
        "harbor.example.com/proxy/registry.k8s.io/e2e-test-images/busybox:1.29-4"
    );
    // Aliyun skips digests, so the pinned controller goes to harbor with tag and digest.
    assert_eq!(
        deploy["containers"][0]["image"],
        "harbor.example.com/proxy/registry.k8s.io/ingress-nginx/controller:v1.9.4@sha256:5b161f051d017e55d358435f295f5e9a297e66158f136321d9b04520ec6c48a3"
    );
    assert_eq!(
        deploy["containers"][1]["image"],
        "quay.m.daocloud.io/prometheus/node-exporter:v1.7.0"
    );
    assert_eq!(deploy["containers"][0]["ports"][0]["containerPort"], 80);
    assert_eq!(docs[0]["spec"]["replicas"], 2);
    // Other kinds come out unchanged in meaning.
    assert_eq!(docs[1]["data"]["image"], "registry.k8s.io/pause:3.9");
    assert_eq!(docs[1]["data"]["version"], "1.10");
    // k8s.gcr.io is aliased to registry.k8s.io; pause is on Aliyun's list.
    assert_eq!(
        docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.aliyuncs.com/google_containers/pause:3.1"
    );
    assert_eq!(docs[2]["spec"]["schedule"], "0 3 * * *");
    let pod = &docs[3]["items"][0]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "harbor.example.com/proxy/docker.io/library/nginx:1.25"
    );
    assert_eq!(
        pod["ephemeralContainers"][0]["image"],
        "harbor.example.com/proxy/registry.k8s.io/e2e-test-images/agnhost:2.45"
    );
}

#[test]
fn rewrite_diff_json_and_stdin() {
    let file = format!("{FIXTURES}/manifests/workloads.yaml");
    let (code, stdout, _) = run(&["rewrite", "-f", &file, "--diff"], None);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "default config: quay.io and Docker Hub stay; {stdout}"
    );
    assert!(lines.contains(&"CronJob/nightly: spec.jobTemplate.spec.template.spec.containers[0].image: k8s.gcr.io/pause:3.1 -> m.daocloud.io/k8s.gcr.io/pause:3.1 (k8s.gcr.io via DaoCloud)"));
    let json = std::fs::read_to_string(format!("{FIXTURES}/manifests/pod.json")).unwrap();
    let (code, stdout, _) = run(&["rewrite", "-f", "-"], Some(&json));
    assert_eq!(code, 0);
    let pod: serde_json::Value = serde_json::from_str(&stdout).expect("JSON in, JSON out");
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "m.daocloud.io/registry.k8s.io/pause:3.9"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_nonzero_exit() {
    let (code, _, stderr) = run(
        &[
            "rewrite",
            "-f",
            &format!("{FIXTURES}/manifests/broken.yaml"),
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("document 1: invalid YAML"), "{stderr}");
    let (code, _, stderr) = run(&["rewrite", "-f", "/nonexistent.yaml"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent.yaml"), "{stderr}");
    let (code, _, stderr) = run(&["--preset", "ustc", "explain", "nginx"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("shut down"), "{stderr}");
}

#[test]
fn config_check_prints_rules_or_the_error_with_line() {
    let (code, stdout, _) = run(
        &["config", "check", &format!("{FIXTURES}/mirror-config.yaml")],
        None,
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("rule \"quay via daocloud\": quay.io --host--> quay.m.daocloud.io (digests keep, config), allow 1 repositories"), "{stdout}");
    assert!(stdout.contains("preset aliyun"));
    assert!(stdout.contains("alias k8s.gcr.io = registry.k8s.io"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "rules:\n  - source: quay.io\n    kind: host\n    target: q.example\n    digest: keep\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["config", "check", bad.to_str().unwrap()], None);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("bad.yaml:") && stderr.contains("unknown field `digest`"),
        "{stderr}"
    );
}

/// `detour certs` twice: two CAs with names of their own (an old and a new
/// CA differ where people look, not only by fingerprint), and each serving
/// certificate names its CA's key (authority key identifier = the CA's
/// subject key identifier), as verifiers and people use to tell them apart.
#[test]
fn each_ca_has_its_own_name_and_serving_certificates_name_their_ca_key() {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::pem::parse_x509_pem;
    let dir = tempfile::tempdir().unwrap();
    let mut subjects = Vec::new();
    for n in 0..2 {
        let out = dir.path().join(n.to_string());
        let (code, _, stderr) = run(
            &["certs", "--out", out.to_str().unwrap(), "--ip", "127.0.0.1"],
            None,
        );
        assert_eq!(code, 0, "{stderr}");
        let ca_pem = std::fs::read(out.join("ca.crt")).unwrap();
        let (_, ca_pem) = parse_x509_pem(&ca_pem).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        let leaf_pem = std::fs::read(out.join("tls.crt")).unwrap();
        let (_, leaf_pem) = parse_x509_pem(&leaf_pem).unwrap();
        let leaf = leaf_pem.parse_x509().unwrap();
        let subject = ca.subject().to_string();
        assert!(subject.starts_with("CN=detour webhook CA "), "{subject}");
        assert_eq!(leaf.issuer().to_string(), subject);
        let ski = ca
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .expect("the CA has a subject key identifier");
        let aki = leaf
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("the serving certificate has an authority key identifier");
        assert_eq!(aki, ski);
        subjects.push(subject);
    }
    assert_ne!(subjects[0], subjects[1]);
}

/// Installed as `kubectl-detour` on PATH, kubectl finds it and runs it as
/// `kubectl detour …` (the kubectl that tests/run.sh builds and puts first
/// on PATH); the answers are detour's, and usage says `kubectl detour`.
#[test]
fn the_binary_is_a_kubectl_plugin_as_kubectl_detour() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join("kubectl-detour")).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        Command::new("kubectl")
            .args(args)
            .env("PATH", &path)
            .env_remove("DETOUR_CONFIG")
            .env_remove("DETOUR_PRESET")
            .output()
            .expect("kubectl is on PATH (tests/run.sh builds it)")
    };
    let listed = kubectl(&["plugin", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("kubectl-detour"), "{listed}");
    let image = "registry.k8s.io/pause:3.9";
    let through = kubectl(&[
        "detour", "--preset", "daocloud", "explain", image, "-o", "json",
    ]);
    assert!(
        through.status.success(),
        "{}",
        String::from_utf8_lossy(&through.stderr)
    );
    let (code, direct, _) = run(
        &["--preset", "daocloud", "explain", image, "-o", "json"],
        None,
    );
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8_lossy(&through.stdout), direct);
    assert!(
        direct.contains("m.daocloud.io/registry.k8s.io/pause:3.9"),
        "{direct}"
    );
    let help = kubectl(&["detour", "--help"]);
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl detour [OPTIONS] <COMMAND>"),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
    // Run as itself, it is still `detour`.
    let (_, own_help, _) = run(&["--help"], None);
    assert!(
        own_help.contains("Usage: detour [OPTIONS] <COMMAND>"),
        "{own_help}"
    );
}
