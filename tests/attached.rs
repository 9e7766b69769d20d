//! Signatures, attestations, SBOMs and referrers travel with every copy,
//! checked with the clients that made them: cosign (v2) signs and attests
//! with a key pair (cosign's tags) and signs as an OCI 1.1 referrer; oras
//! attaches an SBOM. After `detour mirror` between a registry that answers
//! the referrers API, distribution v3 and Debian's distribution 2.8 (both
//! fallback tags only), after an archive round trip, and through `detour
//! proxy` with its upstream up and then down, `cosign verify`, `cosign
//! verify-attestation` and `oras discover` pass at the destination, with
//! the source's digests. The tools and the two Go registries are built by
//! tests/oci/build.sh (tests/run.sh exports DETOUR_OCI_BIN).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::registry::{oci_tool, Image, Registry, RegistryOptions, RegistryServer};
use common::{free_port, http_get, BIN};
use serde_json::Value;

const KEY_PASSWORD: &str = "key-pass@with%odd";
const SBOM_TYPE: &str = "application/spdx+json";
const REPO: &str = "team/app";

fn registry(server: RegistryServer) -> Registry {
    Registry::start(RegistryOptions {
        server,
        access_log: true,
        ..Default::default()
    })
}

fn run(tool: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(oci_tool(tool));
    command
        .args(args)
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .env("HOME", std::env::temp_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command.output().unwrap()
}

fn ok(tool: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(tool, args, env);
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image signed every way users sign: the index signed and attested
/// with cosign's tags, its first child signed as a referrer, an SBOM
/// attached with oras, and the SBOM signed with a cosign tag.
struct Signed {
    index: String,
    child: String,
    sbom: String,
    keys: tempfile::TempDir,
}

impl Signed {
    fn public(&self) -> String {
        self.keys.path().join("cosign.pub").display().to_string()
    }
}

async fn signed_image(src: &Registry, seed: u64) -> Signed {
    signed(src, seed, true).await
}

/// The image signed and attested with cosign's tags, and, with
/// `referrers`, the child's referrer signature, the SBOM and its signature.
async fn signed(src: &Registry, seed: u64, referrers: bool) -> Signed {
    let amd = Image::new(false, &[3000, 500], seed);
    let arm = Image::new(false, &[2000], seed + 1);
    let index = src
        .push_index(REPO, "v1", &[("linux/amd64", &amd), ("linux/arm64", &arm)])
        .await;
    let index = common::registry::sha256(&index);
    let child = amd.digest();
    let keys = tempfile::tempdir().unwrap();
    let at = |digest: &str| format!("{}/{REPO}@{digest}", src.host());
    let dir = keys.path().to_str().unwrap();
    let out = Command::new(oci_tool("cosign"))
        .args(["generate-key-pair"])
        .current_dir(dir)
        .env("COSIGN_PASSWORD", KEY_PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = keys.path().join("cosign.key").display().to_string();
    let sign = ["sign", "--key", &key, "--tlog-upload=false", "-y"];
    let http = "--allow-http-registry";
    ok("cosign", &[&sign[..], &[http, &at(&index)]].concat(), &[]);
    if referrers {
        ok(
            "cosign",
            &[
                &sign[..],
                &[http, "--registry-referrers-mode=oci-1-1", &at(&child)],
            ]
            .concat(),
            &[("COSIGN_EXPERIMENTAL", "1")],
        );
    }
    let predicate = keys.path().join("predicate.json");
    std::fs::write(&predicate, r#"{"builder":"detour tests"}"#).unwrap();
    ok(
        "cosign",
        &[
            "attest",
            "--key",
            &key,
            "--tlog-upload=false",
            "-y",
            http,
            "--type",
            "custom",
            "--predicate",
            predicate.to_str().unwrap(),
            &at(&index),
        ],
        &[],
    );
    if !referrers {
        return Signed {
            index,
            child,
            sbom: String::new(),
            keys,
        };
    }
    let sbom_file = keys.path().join("sbom.spdx.json");
    std::fs::write(&sbom_file, r#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
    let attached = oras_in(
        keys.path(),
        &[
            "attach",
            "--plain-http",
            "--artifact-type",
            SBOM_TYPE,
            "--format",
            "json",
            &at(&index),
            "sbom.spdx.json",
        ],
    );
    let sbom = serde_json::from_str::<Value>(&attached)
        .unwrap_or_else(|e| panic!("{e}: {attached}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    ok("cosign", &[&sign[..], &[http, &at(&sbom)]].concat(), &[]);
    Signed {
        index,
        child,
        sbom,
        keys,
    }
}

/// Runs oras in the directory of the SBOM file it attaches.
fn oras_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(oci_tool("oras"))
        .args(args)
        .current_dir(dir)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "oras {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything the source's clients verify, verified at `repository`
/// (`host/path`, a registry or the proxy).
fn assert_verifies(repository: &str, signed: &Signed) {
    let at = |digest: &str| format!("{repository}@{digest}");
    let verify = [
        "verify",
        "--key",
        &signed.public(),
        "--insecure-ignore-tlog",
        "--allow-http-registry",
    ];
    ok(
        "cosign",
        &[&verify[..], &[&at(&signed.index)]].concat(),
        &[],
    );
    ok("cosign", &[&verify[..], &[&at(&signed.sbom)]].concat(), &[]);
    ok(
        "cosign",
        &[&verify[..], &["--experimental-oci11", &at(&signed.child)]].concat(),
        &[("COSIGN_EXPERIMENTAL", "1")],
    );
    let attestation = ok(
        "cosign",
        &[
            "verify-attestation",
            "--key",
            &signed.public(),
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            "--type",
            "custom",
            &at(&signed.index),
        ],
        &[],
    );
    assert!(attestation.contains("payload"), "{attestation}");
    let discovered = discover(&at(&signed.index), None);
    let sboms: Vec<&Value> = discovered
        .iter()
        .filter(|r| r["artifactType"] == SBOM_TYPE)
        .collect();
    assert_eq!(sboms.len(), 1, "{discovered:?}");
    assert_eq!(sboms[0]["digest"], signed.sbom.as_str());
}

/// `oras discover -o json`: the referrers of `reference`.
fn discover(reference: &str, artifact_type: Option<&str>) -> Vec<Value> {
    let mut args = vec!["discover", "--plain-http", "--format", "json", reference];
    if let Some(t) = artifact_type {
        args.extend(["--artifact-type", t]);
    }
    let out = ok("oras", &args, &[]);
    let value: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    value["referrers"]
        .as_array()
        .or(value["manifests"].as_array())
        .cloned()
        .unwrap_or_default()
}

fn mirror(args: &[&str], hosts: &[&Registry]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("mirror").args(args);
    for r in hosts {
        command.args(["--plain-http", &r.host()]);
    }
    command
        .args(["--allow-loopback", "--no-progress"])
        .output()
        .unwrap()
}

fn mirror_json(args: &[&str], hosts: &[&Registry]) -> Value {
    let out = mirror(&[args, &["-o", "json"]].concat(), hosts);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "detour mirror {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The attached artifacts a report lists, as (kind, subject) pairs, sorted.
fn attached_kinds(report: &Value) -> Vec<(String, String)> {
    let mut kinds: Vec<(String, String)> = report["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn expected_kinds(signed: &Signed) -> Vec<(String, String)> {
    let mut kinds = vec![
        ("cosign signature".to_string(), signed.index.clone()),
        ("cosign attestation".to_string(), signed.index.clone()),
        ("referrer".to_string(), signed.child.clone()),
        ("referrer".to_string(), signed.index.clone()),
        ("cosign signature".to_string(), signed.sbom.clone()),
    ];
    kinds.sort();
    kinds
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_carries_them_between_registries_with_and_without_the_referrers_api() {
    let api = registry(RegistryServer::Referrers);
    let v3 = registry(RegistryServer::DistributionV3);
    let debian = registry(RegistryServer::Debian);
    let from_api = signed_image(&api, 1).await;
    let from_v3 = signed_image(&v3, 2).await;
    let all = [&api, &v3, &debian];

    // Each direction between the referrers API and fallback tags, and into
    // distribution 2.8.
    let copies = [
        (&api, &from_api, &v3, "from-api"),
        (&api, &from_api, &debian, "from-api"),
        (&v3, &from_v3, &api, "from-v3"),
    ];
    for (src, signed, dst, path) in copies {
        let source = format!("{}/{REPO}:v1", src.host());
        let target = format!("{}/{path}/app:v1", dst.host());
        let report = mirror_json(&[&source, "--to", &target], &all);
        assert_eq!(report["digest"], signed.index.as_str());
        assert_eq!(attached_kinds(&report), expected_kinds(signed), "{report}");
        assert!(report["attached"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["copied"] == true));
        assert_verifies(&format!("{}/{path}/app", dst.host()), signed);

        // Again: everything is there already, nothing is copied, and the
        // fallback index is not rewritten.
        let before = dst.requests(&["PUT "]);
        let again = mirror_json(&[&source, "--to", &target], &all);
        assert_eq!(attached_kinds(&again), expected_kinds(signed));
        assert!(
            again["attached"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["copied"] == false),
            "{again}"
        );
        assert_eq!(
            dst.requests(&["PUT "]),
            before,
            "a second copy pushes nothing"
        );
    }

    // Fallback-only destinations keep the fallback tag: an index of the
    // subject's referrers, with the source's descriptors.
    let fallback = format!("sha256-{}", &from_api.index["sha256:".len()..]);
    let index = v3.manifest_bytes("from-api/app", &fallback).await;
    let listed: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![from_api.sbom.as_str()]);
    assert_eq!(index["manifests"][0]["artifactType"], SBOM_TYPE);

    // The opt-out copies the image alone, and cosign then fails there: the
    // verification above depended on what travelled.
    let source = format!("{}/{REPO}:v1", api.host());
    let bare = format!("{}/bare/app:v1", debian.host());
    let report = mirror_json(&[&source, "--to", &bare, "--no-attached-artifacts"], &all);
    assert_eq!(report["attached"], serde_json::json!([]));
    let refused = run(
        "cosign",
        &[
            "verify",
            "--key",
            &from_api.public(),
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            &format!("{}/bare/app@{}", debian.host(), from_api.index),
        ],
        &[],
    );
    assert!(!refused.status.success());
    assert!(discover(
        &format!("{}/bare/app@{}", debian.host(), from_api.index),
        None
    )
    .is_empty());

    // The text report says what travelled, one line each.
    let out = mirror(
        &[&source, "--to", &format!("{}/text/app:v1", v3.host())],
        &all,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("\n  with ").count(), 5, "{text}");
    assert!(text.contains("with cosign attestation "), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_carry_them_and_push_them_back() {
    let api = registry(RegistryServer::Referrers);
    let v3 = registry(RegistryServer::DistributionV3);
    let signed = signed_image(&api, 3).await;
    let all = [&api, &v3];
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("app.tar");
    let source = format!("{}/{REPO}:v1", api.host());
    let report = mirror_json(
        &[
            &source,
            "--to",
            &format!("oci-archive:{}", archive.display()),
        ],
        &all,
    );
    assert_eq!(attached_kinds(&report), expected_kinds(&signed));

    // oras reads the layout as its own: the SBOM is a referrer of the image.
    let layout = dir.path().join("layout");
    let report = mirror_json(
        &[&source, "--to", &format!("oci:{}", layout.display())],
        &all,
    );
    assert_eq!(attached_kinds(&report), expected_kinds(&signed));
    let out = oras_in(
        dir.path(),
        &[
            "discover",
            "--oci-layout",
            "--format",
            "json",
            &format!("{}@{}", layout.display(), signed.index),
        ],
    );
    assert!(out.contains(&signed.sbom), "{out}");

    // A layout whose SBOM lost its manifest is refused before anything is
    // sent, naming what is missing.
    let cut = dir.path().join("cut");
    let copied = Command::new("cp")
        .args(["-r", layout.to_str().unwrap(), cut.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::remove_file(
        cut.join("blobs/sha256")
            .join(&signed.sbom["sha256:".len()..]),
    )
    .unwrap();
    let refused = mirror(
        &[
            &format!("oci:{}", cut.display()),
            "--to",
            &format!("{}/cut/app:v1", v3.host()),
        ],
        &all,
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("artifact {}", signed.sbom)) && stderr.contains("missing"),
        "{stderr}"
    );
    assert_eq!(v3.manifest_status("cut/app", &signed.index).await, 404);

    // Pushed back from the archive (one image in it, its artifacts beside),
    // to a registry with the referrers API and to one without.
    for (dst, path) in [(&api, "restored"), (&v3, "restored")] {
        let target = format!("{}/{path}/app:v1", dst.host());
        let back = mirror_json(
            &[
                &format!("oci-archive:{}", archive.display()),
                "--to",
                &target,
            ],
            &all,
        );
        assert_eq!(back["digest"], signed.index.as_str());
        assert_eq!(attached_kinds(&back), expected_kinds(&signed), "{back}");
        assert_verifies(&format!("{}/{path}/app", dst.host()), &signed);
    }
}

/// `detour proxy` in front of `upstreams`, each named `up<port>`.
struct Proxy {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start(upstreams: &[&Registry], tag_ttl: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("upstreams:\n");
        for u in upstreams {
            config.push_str(&format!(
                "  - host: \"{}\"\n    name: up{}\n",
                u.host(),
                u.port
            ));
        }
        config.push_str(
            "registry:\n  allowLoopback: true\n  retries: 0\n  requestTimeout: 2s\n  plainHttp:\n",
        );
        for u in upstreams {
            config.push_str(&format!("    - \"{}\"\n", u.host()));
        }
        config.push_str(&format!(
            "cache:\n  directory: {}\n  tagTtl: {tag_ttl}\n  serveStale: 1h\n",
            dir.path().join("cache").display()
        ));
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let admin = free_port();
        let child = Command::new(BIN)
            .args(["proxy", "--config", path.to_str().unwrap(), "--plain-http"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--shutdown-delay", "0s"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("proxy.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(admin, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
            assert!(Instant::now() < deadline, "proxy not ready");
            std::thread::sleep(Duration::from_millis(30));
        }
        Proxy {
            child,
            port,
            _dir: dir,
        }
    }

    fn repository(&self, upstream: &Registry) -> String {
        format!("127.0.0.1:{}/up{}/{REPO}", self.port, upstream.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_them_with_the_upstream_up_and_then_down() {
    let mut api = registry(RegistryServer::Referrers);
    let mut v3 = registry(RegistryServer::DistributionV3);
    let from_api = signed_image(&api, 4).await;
    let from_v3 = signed_image(&v3, 5).await;
    // A TTL of one second: the second round finds every tag and referrers
    // list expired, and is served them stale from the cache.
    let proxy = Proxy::start(&[&api, &v3], "1s");
    for (upstream, signed) in [(&api, &from_api), (&v3, &from_v3)] {
        let repository = proxy.repository(upstream);
        assert_verifies(&repository, signed);
        // The referrers API of the proxy filters by artifact type, whatever
        // the upstream does.
        let at = format!("{repository}@{}", signed.index);
        let sboms = discover(&at, Some(SBOM_TYPE));
        assert_eq!(sboms.len(), 1);
        assert_eq!(sboms[0]["digest"], signed.sbom.as_str());
        assert!(discover(&at, Some("application/x-none")).is_empty());
    }
    api.stop();
    v3.stop();
    std::thread::sleep(Duration::from_millis(1500));
    for (upstream, signed) in [(&api, &from_api), (&v3, &from_v3)] {
        assert_verifies(&proxy.repository(upstream), signed);
    }
}

/// Source requests that looking for attached artifacts adds, for an
/// unsigned two-platform image: one tag list per repository, and one
/// referrers request per digest where the API exists (once per registry
/// where it does not).
#[tokio::test(flavor = "multi_thread")]
async fn an_image_with_nothing_attached_costs_a_tag_list_and_a_referrers_request_per_digest() {
    for server in [RegistryServer::Referrers, RegistryServer::Debian] {
        let src = registry(server);
        let dst = registry(RegistryServer::Debian);
        let amd = Image::new(false, &[1000], 10);
        let arm = Image::new(false, &[1000], 11);
        src.push_index(REPO, "v1", &[("linux/amd64", &amd), ("linux/arm64", &arm)])
            .await;
        let count = || src.requests(&["GET "]) + src.requests(&["HEAD "]);
        let source = format!("{}/{REPO}:v1", src.host());
        let before = count();
        let bare = mirror_json(
            &[
                &source,
                "--to",
                &format!("{}/bare/app:v1", dst.host()),
                "--no-attached-artifacts",
            ],
            &[&src, &dst],
        );
        let alone = count() - before;
        let before = count();
        let with = mirror_json(
            &[&source, "--to", &format!("{}/with/app:v1", dst.host())],
            &[&src, &dst],
        );
        let extra = count() - before - alone;
        assert_eq!(bare["digest"], with["digest"]);
        assert_eq!(with["attached"], serde_json::json!([]));
        let referrers = src.requests(&["/referrers/"]);
        let tag_lists = src.requests(&["/tags/list"]);
        assert_eq!(tag_lists, 1, "{server:?}");
        let expected_referrers = if server == RegistryServer::Referrers {
            3
        } else {
            1
        };
        assert_eq!(referrers, expected_referrers, "{server:?}");
        assert_eq!(
            extra,
            tag_lists + referrers,
            "{server:?}: nothing else was asked"
        );
    }
}

/// Pre-mirroring from the webhook copies what is attached too: once the
/// copy an admission queued is done, the signatures verify at the mirror.
#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_premirrors_them_with_the_image() {
    let api = registry(RegistryServer::Referrers);
    let mirror = registry(RegistryServer::DistributionV3);
    let signed = signed_image(&api, 6).await;
    let (server, _dir) = common::Server::with_config(&format!(
        "mirror:\n  plainHttp: [\"{src}\", \"{dst}\"]\n  allowLoopback: true\nrules:\n  - source: {src}/team\n    kind: prefix\n    target: {dst}/mirror/team\n    premirror: true\n",
        src = api.host(),
        dst = mirror.host()
    ));
    let image = format!("{}/{REPO}:v1", api.host());
    let review = common::with_containers(serde_json::json!([{"name": "app", "image": image}]));
    let (status, response) = common::post(&server.client(), &server.url("/mutate"), &review).await;
    assert_eq!(status, 200);
    let patched = common::kubectl_patch(
        &review["request"]["object"],
        &common::decode_patch(&response),
    );
    let rewritten = format!("{}/mirror/{REPO}:v1", mirror.host());
    assert_eq!(patched["spec"]["containers"][0]["image"], rewritten);
    server
        .wait_metric(
            "detour_premirror_copies_total{outcome=\"copied\"} 1",
            "the queued copy",
        )
        .await;
    assert_verifies(&format!("{}/mirror/{REPO}", mirror.host()), &signed);
}

/// A registry that will not let this client read its referrers API (403)
/// still gets the image copied, with what its tags carry (cosign's
/// signature and attestation), not a failed copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_referrers_api_costs_the_referrers_not_the_copy() {
    let src = registry(RegistryServer::ReferrersRefused);
    let dst = registry(RegistryServer::Debian);
    // cosign cannot sign as a referrer there (it reads the API first).
    let signed = signed(&src, 7, false).await;
    let source = format!("{}/{REPO}:v1", src.host());
    let target = format!("{}/copy/app:v1", dst.host());
    let report = mirror_json(&[&source, "--to", &target], &[&src, &dst]);
    assert_eq!(report["digest"], signed.index.as_str());
    let mut kinds = attached_kinds(&report);
    kinds.sort();
    let mut expected = vec![
        ("cosign attestation".to_string(), signed.index.clone()),
        ("cosign signature".to_string(), signed.index.clone()),
    ];
    expected.sort();
    assert_eq!(kinds, expected, "{report}");
    let at = format!("{}/copy/app@{}", dst.host(), signed.index);
    ok(
        "cosign",
        &[
            "verify",
            "--key",
            &signed.public(),
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            &at,
        ],
        &[],
    );
}
