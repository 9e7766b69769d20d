//! `detour mirror` against real registries (Debian's docker-registry on
//! 127.0.0.1), cross-checked with `skopeo inspect --raw`.

mod common;

use std::process::Command;

use common::registry::*;
use common::BIN;
use serde_json::Value;

/// Runs `detour mirror ARGS… -o json --no-progress`; returns (success, reports, stderr).
fn mirror(args: &[&str], extra_env: &[(&str, &str)]) -> (bool, Vec<Value>, String) {
    let out = Command::new(BIN)
        .arg("mirror")
        .args(args)
        .args(["-o", "json", "--no-progress", "--allow-loopback"])
        .envs(extra_env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let reports = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        out.status.success(),
        reports,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn plain(registries: &[&Registry]) -> Vec<String> {
    registries
        .iter()
        .flat_map(|r| ["--plain-http".to_string(), r.host()])
        .collect()
}

fn args<'a>(fixed: &'a [&'a str], extra: &'a [String]) -> Vec<&'a str> {
    fixed
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect()
}

#[tokio::test]
async fn a_docker_schema2_image_is_copied_byte_for_byte_and_a_second_copy_sends_nothing() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let image = Image::new(true, &[300_000, 1_000_000, 5], 1);
    source.push_image("team/app", "v1", &image).await;

    let src = format!("{}/team/app:v1", source.host());
    let dst = format!("{}/mirror/team/app:v1", dest.host());
    let flags = plain(&[&source, &dest]);
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &flags), &[]);
    assert!(ok, "{stderr}");
    let r = &reports[0];
    assert_eq!(r["digest"], image.digest());
    assert_eq!(r["blobsCopied"], 4);
    assert_eq!(r["manifestsCopied"], 1);
    assert_eq!(r["bytesCopied"], 1_300_005 + image.config.len() as u64);
    assert_eq!(
        skopeo_digest(&source, "team/app:v1"),
        skopeo_digest(&dest, "mirror/team/app:v1")
    );
    assert_eq!(skopeo_digest(&dest, "mirror/team/app:v1"), image.digest());

    // Again: everything is there, nothing is sent.
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &flags), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["bytesCopied"], 0);
    assert_eq!(reports[0]["manifestsSkipped"], 1);

    // A second image sharing all but one layer sends only the new bytes.
    let mut layers = image.layers.clone();
    layers.push(random_bytes(200_000, 99));
    let grown = Image::from_layers(true, layers, 2);
    source.push_image("team/app", "v2", &grown).await;
    let (ok, reports, stderr) = mirror(
        &args(
            &[
                &format!("{}/team/app:v2", source.host()),
                "--to",
                &format!("{}/mirror/team/app:v2", dest.host()),
            ],
            &flags,
        ),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["blobsSkipped"], 3, "{}", reports[0]);
    assert_eq!(
        reports[0]["bytesCopied"],
        200_000 + grown.config.len() as u64,
        "shared layers must not be sent again"
    );
}

#[tokio::test]
async fn a_multi_platform_index_keeps_every_platform_and_its_digest() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let amd = Image::new(false, &[100_000, 2_000], 3);
    let arm = Image::new(false, &[120_000], 4);
    let index = source
        .push_index(
            "lib/tool",
            "1.0",
            &[("linux/amd64", &amd), ("linux/arm64/v8", &arm)],
        )
        .await;
    let flags = plain(&[&source, &dest]);
    let src = format!("{}/lib/tool:1.0", source.host());
    let (ok, reports, stderr) = mirror(
        &args(
            &[&src, "--to", &format!("{}/lib/tool", dest.host())],
            &flags,
        ),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["manifestsCopied"], 3);
    assert_eq!(reports[0]["digest"], sha256(&index));
    // The tag comes from the source when the destination has none.
    assert_eq!(skopeo_digest(&dest, "lib/tool:1.0"), sha256(&index));
    for child in [&amd, &arm] {
        let at = format!("lib/tool@{}", child.digest());
        assert_eq!(skopeo_digest(&source, &at), skopeo_digest(&dest, &at));
    }

    // A platform filter copies one platform, under another index digest.
    let (ok, reports, stderr) = mirror(
        &args(
            &[
                &src,
                "--to",
                &format!("{}/filtered/tool:1.0", dest.host()),
                "--platform",
                "linux/arm64",
            ],
            &flags,
        ),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["platformsDropped"], 1);
    let filtered = skopeo_digest(&dest, "filtered/tool:1.0");
    assert_ne!(filtered, sha256(&index));
    assert_eq!(filtered, reports[0]["digest"]);
    assert_eq!(
        dest.manifest_status("filtered/tool", &amd.digest()).await,
        404
    );
    assert_eq!(
        dest.manifest_status("filtered/tool", &arm.digest()).await,
        200
    );

    // A digest-pinned destination cannot take a filtered copy.
    let (ok, reports, _) = mirror(
        &args(
            &[
                &format!("{src}@{}", sha256(&index)),
                "--to",
                &format!("{}/pinned/tool@{}", dest.host(), sha256(&index)),
                "--platform",
                "linux/arm64",
            ],
            &flags,
        ),
        &[],
    );
    assert!(!ok);
    assert!(
        reports[0]["error"].as_str().unwrap().contains("digest"),
        "{}",
        reports[0]
    );
}

#[tokio::test]
async fn tag_at_digest_copies_the_digest_and_points_the_tag_at_it() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let old = Image::new(true, &[10_000], 5);
    let new = Image::new(true, &[10_000], 6);
    source.push_image("app", "stable", &old).await;
    // The tag has since moved on; the pinned digest is what must arrive.
    source.push_image("app", "stable", &new).await;
    let flags = plain(&[&source, &dest]);
    let src = format!("{}/app:stable@{}", source.host(), old.digest());
    let (ok, _, stderr) = mirror(
        &args(&[&src, "--to", &format!("{}/app", dest.host())], &flags),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(skopeo_digest(&dest, "app:stable"), old.digest());
}

#[tokio::test]
async fn blobs_are_mounted_across_repositories_of_one_registry() {
    let registry = Registry::start(RegistryOptions::default());
    let image = Image::new(false, &[50_000, 60_000], 7);
    registry.push_image("upstream/app", "v1", &image).await;
    let flags = plain(&[&registry]);
    let (ok, reports, stderr) = mirror(
        &args(
            &[
                &format!("{}/upstream/app:v1", registry.host()),
                "--to",
                &format!("{}/mirror/app:v1", registry.host()),
            ],
            &flags,
        ),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["blobsMounted"], 3, "{}", reports[0]);
    assert_eq!(reports[0]["bytesCopied"], 0);
    assert_eq!(skopeo_digest(&registry, "mirror/app:v1"), image.digest());
}

#[tokio::test]
async fn basic_auth_over_tls_uses_docker_config_credentials_and_never_logs_them() {
    let source = Registry::start(RegistryOptions::default());
    let secure = Registry::start(RegistryOptions {
        secure: true,
        ..RegistryOptions::default()
    });
    let image = Image::new(true, &[40_000], 8);
    source.push_image("app", "v1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let src = format!("{}/app:v1", source.host());
    let dst = format!("{}/app:v1", secure.host());
    let ca = secure.ca().display().to_string();
    let base = [
        "--plain-http".to_string(),
        source.host(),
        "--ca-file".into(),
        ca,
    ];
    let debug = [("DETOUR_LOG", "debug")];

    // Without credentials: a clear refusal, nothing pushed.
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &base), &debug);
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap();
    assert!(error.contains("authentication failed"), "{error}");
    assert!(!stderr.contains(PASSWORD));

    // Wrong password: refused, and the wrong password is not echoed either.
    let wrong = docker_config(dir.path(), &secure.host(), USER, "wrong-secret-xyz");
    let mut with_wrong = base.to_vec();
    with_wrong.extend(["--credentials".into(), wrong.display().to_string()]);
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &with_wrong), &debug);
    assert!(!ok);
    let text = format!("{}{stderr}", reports[0]);
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("wrong-secret-xyz"), "{text}");

    let good = docker_config(
        dir.path(),
        &format!("https://{}", secure.host()),
        USER,
        PASSWORD,
    );
    let mut with_good = base.to_vec();
    with_good.extend(["--credentials".into(), good.display().to_string()]);
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &with_good), &debug);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains(PASSWORD) && !reports[0].to_string().contains(PASSWORD));
    assert_eq!(skopeo_digest(&secure, "app:v1"), image.digest());

    // An untrusted certificate is refused (no silent downgrade).
    let mut untrusted = vec!["--plain-http".to_string(), source.host()];
    untrusted.extend(["--credentials".into(), good.display().to_string()]);
    let (ok, reports, _) = mirror(&args(&[&src, "--to", &dst], &untrusted), &[]);
    assert!(!ok);
    assert!(
        reports[0]["error"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{}",
        reports[0]
    );
}

#[tokio::test]
async fn loopback_and_metadata_addresses_are_refused_unless_allowed() {
    let source = Registry::start(RegistryOptions::default());
    let out = Command::new(BIN)
        .args([
            "mirror",
            &format!("{}/app:v1", source.host()),
            "--to",
            "169.254.169.254/app:v1",
            "--plain-http",
            &source.host(),
            "-o",
            "json",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The flag that permits it, on the command line.
    assert!(
        text.contains("loopback address (set --allow-loopback"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args([
            "mirror",
            "169.254.169.254/app:v1",
            "--to",
            "registry.example/app:v1",
            "--allow-loopback",
            "-o",
            "json",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cloud metadata address"), "{text}");
}

#[tokio::test]
async fn a_destination_that_dies_mid_copy_gets_no_tag_and_the_retry_completes() {
    let source = Registry::start(RegistryOptions::default());
    let mut dest = Registry::start(RegistryOptions::default());
    let sizes = vec![400_000; 40];
    let image = Image::new(true, &sizes, 9);
    source.push_image("big", "v1", &image).await;
    let src = format!("{}/big:v1", source.host());
    let dst = format!("{}/big:v1", dest.host());
    let child = Command::new(BIN)
        .args([
            "mirror",
            &src,
            "--to",
            &dst,
            "--plain-http",
            &source.host(),
            "--plain-http",
            &dest.host(),
            "--allow-loopback",
            "--concurrency",
            "1",
            "--retries",
            "1",
            "--no-progress",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the destination once some, but not all, blobs have landed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dest.blob_count() < 3 {
        assert!(std::time::Instant::now() < deadline, "copy never started");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    dest.stop();
    let landed = dest.blob_count();
    assert!(landed < 41, "the copy finished before the registry stopped");
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a copy to a dead registry must fail");
    dest.restart();
    assert_eq!(
        dest.manifest_status("big", "v1").await,
        404,
        "no tag before the content"
    );
    assert_eq!(dest.manifest_status("big", &image.digest()).await, 404);

    let flags = plain(&[&source, &dest]);
    let (ok, reports, stderr) = mirror(&args(&[&src, "--to", &dst], &flags), &[]);
    assert!(ok, "{stderr}{reports:?}");
    assert!(
        reports[0]["blobsSkipped"].as_u64().unwrap() >= 2,
        "{}",
        reports[0]
    );
    assert_eq!(skopeo_digest(&dest, "big:v1"), image.digest());
}

#[tokio::test]
async fn a_blob_served_with_the_wrong_content_is_rejected() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let image = Image::new(true, &[64_000, 32_000], 10);
    source.push_image("app", "v1", &image).await;
    // Corrupt one layer on the source's disk (same size, other bytes).
    let layer = sha256(&image.layers[0]);
    let path = source.blob_file(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let flags = plain(&[&source, &dest]);
    let (ok, reports, _) = mirror(
        &args(
            &[
                &format!("{}/app:v1", source.host()),
                "--to",
                &format!("{}/app:v1", dest.host()),
            ],
            &flags,
        ),
        &[],
    );
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap();
    assert!(
        error.contains("digest mismatch") && error.contains(&layer),
        "{error}"
    );
    assert_eq!(dest.blob_status("app", &layer).await, 404);
    assert_eq!(dest.manifest_status("app", "v1").await, 404);
}

// Multi-threaded: the token service runs in this runtime while the test
// blocks on the detour process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_challenges_are_answered_with_configured_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = common::token::TokenService::start(dir.path(), USER, PASSWORD).await;
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions {
        token: Some((tokens.realm.clone(), tokens.cert.clone())),
        ..RegistryOptions::default()
    });
    let image = Image::new(false, &[30_000, 20_000], 11);
    source.push_image("app", "v1", &image).await;
    let src = format!("{}/app:v1", source.host());
    let dst = format!("{}/team/app:v1", dest.host());
    let creds = docker_config(dir.path(), &dest.host(), USER, PASSWORD);
    let mut flags = plain(&[&source, &dest]);
    flags.extend(["--credentials".into(), creds.display().to_string()]);
    let (ok, reports, stderr) = mirror(
        &args(&[&src, "--to", &dst], &flags),
        &[("DETOUR_LOG", "debug")],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["blobsCopied"], 3);
    assert!(!stderr.contains(PASSWORD));
    // Tokens are cached per scope (pull on the destination, pull+push for
    // uploads), not fetched per request, even with parallel uploads.
    assert_eq!(tokens.issued(), 2);
    assert_eq!(skopeo_digest(&dest, "team/app:v1"), image.digest());

    // Without credentials the token service refuses, and the copy says so.
    let (ok, reports, _) = mirror(&args(&[&src, "--to", &dst], &plain(&[&source, &dest])), &[]);
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap();
    assert!(error.contains("token service answered 401"), "{error}");
}

#[tokio::test]
async fn a_docker_manifest_list_is_copied_with_its_digest() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let amd = Image::new(true, &[20_000], 12);
    let arm = Image::new(true, &[21_000], 13);
    let list = source
        .push_index_as(
            "lib/legacy",
            "2",
            DOCKER_LIST,
            &[("linux/amd64", &amd), ("linux/arm/v7", &arm)],
        )
        .await;
    let flags = plain(&[&source, &dest]);
    let (ok, reports, stderr) = mirror(
        &args(
            &[
                &format!("{}/lib/legacy:2", source.host()),
                "--to",
                &format!("{}/lib/legacy:2", dest.host()),
            ],
            &flags,
        ),
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["manifestsCopied"], 3);
    assert_eq!(skopeo_digest(&dest, "lib/legacy:2"), sha256(&list));
    assert_eq!(
        skopeo_digest(&dest, &format!("lib/legacy@{}", arm.digest())),
        arm.digest()
    );
}

/// `skopeo ARGS...`, which must succeed; its standard output.
fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The image names of a layout's index.json, in order.
fn layout_names(layout: &std::path::Path) -> Vec<String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// skopeo reads each image at `location` (`oci:DIR` or `oci-archive:FILE`)
/// as the same bytes, and pushes `push` on to `dest/to` with every platform
/// and the same digest.
fn skopeo_agrees(location: &str, images: &[(&str, String)], push: &str, dest: &Registry, to: &str) {
    for (name, digest) in images {
        let raw = skopeo(&["inspect", "--raw", &format!("{location}:{name}")]);
        assert_eq!(&sha256(&raw), digest, "{name}");
    }
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("{location}:{push}"),
        &format!("docker://{}/{to}", dest.host()),
    ]);
    let pushed = images.iter().find(|(n, _)| *n == push).unwrap();
    assert_eq!(skopeo_digest(dest, to), pushed.1);
}

#[tokio::test]
async fn images_go_into_an_oci_layout_that_skopeo_reads_and_pushes() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let amd = Image::new(false, &[100_000, 2_000], 31);
    let arm = Image::new(false, &[120_000], 32);
    let index = source
        .push_index(
            "lib/tool",
            "1.0",
            &[("linux/amd64", &amd), ("linux/arm64/v8", &arm)],
        )
        .await;
    // A second image shares the amd64 image's first layer.
    let shared = amd.blobs().nth(1).unwrap().clone();
    let app = Image::from_layers(false, vec![shared, random_bytes(30_000, 33)], 34);
    source.push_image("team/app", "2", &app).await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let to = format!("oci:{}", layout.display());
    let tool = format!("{}/lib/tool:1.0", source.host());
    let app_ref = format!("{}/team/app:2", source.host());
    let flags = plain(&[&source, &dest]);
    let (ok, reports, stderr) = mirror(&args(&[&tool, &app_ref, "--to", &to], &flags), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["digest"], sha256(&index));
    assert_eq!(reports[1]["digest"], app.digest());
    // Shared blobs once: every file under blobs/ is a distinct digest, and
    // the count is what the two images hold together.
    let files = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .count();
    let mut distinct: std::collections::HashSet<String> = std::collections::HashSet::new();
    for image in [&amd, &arm, &app] {
        distinct.extend(image.blobs().map(|b| sha256(b)));
        distinct.insert(image.digest());
    }
    distinct.insert(sha256(&index));
    assert_eq!(files, distinct.len());
    assert_eq!(layout_names(&layout), vec![tool.clone(), app_ref.clone()]);

    // skopeo reads the layout: the same bytes, and it pushes them on with
    // every platform and the same digests.
    skopeo_agrees(
        &format!("oci:{}", layout.display()),
        &[(&tool, sha256(&index)), (&app_ref, app.digest())],
        &tool,
        &dest,
        "carried/tool:1.0",
    );

    // Again: nothing new to write.
    let (ok, reports, stderr) = mirror(&args(&[&tool, "--to", &to], &flags), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["blobsCopied"], 0);
    assert_eq!(reports[0]["manifestsCopied"], 0);
}

#[tokio::test]
async fn a_corrupt_blob_never_lands_in_an_oci_layout_and_names_nothing() {
    let source = Registry::start(RegistryOptions::default());
    let image = Image::new(false, &[60_000, 3_000], 41);
    source.push_image("app", "v1", &image).await;
    let layer = sha256(&image.layers[0]);
    let path = source.blob_file(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let flags = plain(&[&source]);
    let (ok, reports, _) = mirror(
        &args(
            &[
                &format!("{}/app:v1", source.host()),
                "--to",
                &format!("oci:{}", layout.display()),
                "--retries",
                "0",
            ],
            &flags,
        ),
        &[],
    );
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap();
    assert!(error.contains("digest mismatch"), "{error}");
    // No file under the corrupt blob's name, no partial file, no name.
    let hex = layer.trim_start_matches("sha256:");
    let blobs: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!blobs.iter().any(|b| b.contains(hex)), "{blobs:?}");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn an_oci_archive_carries_several_images_that_skopeo_reads() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let amd = Image::new(false, &[80_000], 51);
    let arm = Image::new(false, &[90_000], 52);
    let index = source
        .push_index(
            "lib/tool",
            "2.0",
            &[("linux/amd64", &amd), ("linux/arm64", &arm)],
        )
        .await;
    let app = Image::new(false, &[40_000, 500], 53);
    source.push_image("team/app", "3", &app).await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.tar");
    let tool = format!("{}/lib/tool:2.0", source.host());
    let app_ref = format!("{}/team/app:3", source.host());
    let flags = plain(&[&source, &dest]);
    let to = format!("oci-archive:{}", archive.display());
    let (ok, reports, stderr) = mirror(&args(&[&tool, &app_ref, "--to", &to], &flags), &[]);
    assert!(ok, "{stderr}");
    assert_eq!(reports.len(), 2);
    // Only the archive is left beside it.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["images.tar".to_string()]);
    skopeo_agrees(
        &format!("oci-archive:{}", archive.display()),
        &[(&tool, sha256(&index)), (&app_ref, app.digest())],
        &tool,
        &dest,
        "carried/tool:2.0",
    );
}

/// An archive's images are named as the user names them: in `--help`, in
/// the hint when `--to` meets several images, and in each report, failed
/// or not (never the image's own name or a scratch directory).
#[tokio::test]
async fn archive_sources_are_named_as_the_user_names_them() {
    let help = Command::new(BIN)
        .args(["mirror", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for form in [
        "oci:DIR[:NAME]",
        "oci-archive:FILE[:NAME]",
        "docker-archive:FILE[:NAME]",
    ] {
        assert!(help.contains(form), "{form}: {help}");
    }
    let source = Registry::start(RegistryOptions::default());
    let mut dest = Registry::start(RegistryOptions::default());
    source
        .push_image("team/a", "1", &Image::new(false, &[3_000], 91))
        .await;
    source
        .push_image("team/b", "1", &Image::new(false, &[3_000], 92))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("two.tar");
    let (a, b) = (
        format!("{}/team/a:1", source.host()),
        format!("{}/team/b:1", source.host()),
    );
    let to = format!("oci-archive:{}", archive.display());
    let (ok, _, stderr) = mirror_plain(&[&source], &[&a, &b, "--to", &to]);
    assert!(ok, "{stderr}");
    let target = format!("{}/air/x:1", dest.host());
    let (ok, _, stderr) = mirror_plain(&[&dest], &[&to, "--to", &target]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{to} holds several (name one: {to}:NAME)")),
        "{stderr}"
    );
    // A copy that fails (the destination is gone) names the archive's image.
    let one = format!("{to}:{a}");
    let (ok, reports, stderr) = mirror_plain(&[&dest], &[&one, "--to", &target]);
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["source"], one.as_str());
    dest.stop();
    let (ok, reports, _) = mirror_plain(&[&dest], &[&one, "--to", &target, "--retries", "0"]);
    assert!(!ok);
    assert_eq!(reports[0]["source"], one.as_str(), "{reports:?}");
    let out = Command::new(BIN)
        .args([
            "mirror",
            &one,
            "--to",
            &target,
            "--retries",
            "0",
            "--no-progress",
        ])
        .args(["--allow-loopback", "--plain-http", &dest.host()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("FAILED {one} -> {target}: ")),
        "{text}"
    );
}

/// `detour mirror` with `--plain-http` for `registries` and `extra` args.
fn mirror_plain(registries: &[&Registry], fixed: &[&str]) -> (bool, Vec<Value>, String) {
    let flags = plain(registries);
    mirror(&args(fixed, &flags), &[])
}

#[tokio::test]
async fn archives_carry_images_across_byte_for_byte_both_ways_with_skopeo() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let amd = Image::new(false, &[70_000, 900], 61);
    let arm = Image::new(false, &[50_000], 62);
    let index = source
        .push_index(
            "lib/tool",
            "3.0",
            &[("linux/amd64", &amd), ("linux/arm64", &arm)],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let tool = format!("{}/lib/tool:3.0", source.host());

    // detour writes the archive, detour pushes it on the other side.
    let archive = dir.path().join("carried.tar");
    let to = format!("oci-archive:{}", archive.display());
    let (ok, _, stderr) = mirror_plain(&[&source], &[&tool, "--to", &to]);
    assert!(ok, "{stderr}");
    let from = format!("oci-archive:{}:{tool}", archive.display());
    let target = format!("{}/air/tool:3.0", dest.host());
    // Its own temp dir, to see that the unpacked copy is removed.
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let flags = plain(&[&dest]);
    let (ok, reports, stderr) = mirror(
        &args(&[&from, "--to", &target], &flags),
        &[("TMPDIR", scratch.to_str().unwrap())],
    );
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["digest"], sha256(&index));
    assert_eq!(reports[0]["manifestsCopied"], 3);
    assert_eq!(skopeo_digest(&dest, "air/tool:3.0"), sha256(&index));
    // No unpacked copy is left behind.
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);

    // skopeo writes an archive, detour pushes it.
    let skopeo_archive = dir.path().join("by-skopeo.tar");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{tool}"))
        .arg(format!("oci-archive:{}:tool", skopeo_archive.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = format!("oci-archive:{}:tool", skopeo_archive.display());
    let target = format!("{}/air/from-skopeo:3.0", dest.host());
    let (ok, _, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target]);
    assert!(ok, "{stderr}");
    assert_eq!(skopeo_digest(&dest, "air/from-skopeo:3.0"), sha256(&index));
}

#[tokio::test]
async fn hostile_or_damaged_archives_are_refused_and_nothing_is_pushed() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let image = Image::new(false, &[40_000], 71);
    source.push_image("app", "1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tar");
    let app = format!("{}/app:1", source.host());
    let (ok, _, stderr) = mirror_plain(
        &[&source],
        &[&app, "--to", &format!("oci-archive:{}", good.display())],
    );
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&good).unwrap();

    // Truncated.
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // With a symlink.
    let linked = dir.path().join("linked.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&linked).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, "index.json", "/etc/passwd")
            .unwrap();
        tar.finish().unwrap();
    }
    // With a path that leaves the archive (written raw: the tar crate
    // itself refuses to create one).
    let escaping = dir.path().join("escaping.tar");
    {
        let mut header = tar::Header::new_old();
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut raw = header.as_bytes().to_vec();
        raw.extend_from_slice(b"x");
        raw.resize(1024, 0);
        raw.extend_from_slice(&[0; 1024]);
        std::fs::write(&escaping, raw).unwrap();
    }
    // A docker-archive may link inside itself (docker save and skopeo do),
    // never out of itself.
    let docker_linked = dir.path().join("docker-linked.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&docker_linked).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, "abc/layer.tar", "../../etc/passwd")
            .unwrap();
        tar.finish().unwrap();
    }
    for (archive, why, kind) in [
        (&truncated, "cut short", "oci-archive"),
        (&linked, "a link or special file", "oci-archive"),
        (&escaping, "leaves the archive", "oci-archive"),
        (&docker_linked, "links out of the archive", "docker-archive"),
    ] {
        let from = format!("{kind}:{}", archive.display());
        let target = format!("{}/air/app:1", dest.host());
        let out = Command::new(BIN)
            .args([
                "mirror",
                &from,
                "--to",
                &target,
                "--allow-loopback",
                "--plain-http",
            ])
            .arg(dest.host())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{archive:?} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{archive:?}: {stderr}");
        assert_eq!(dest.manifest_status("air/app", "1").await, 404);
    }
    assert!(!dir.path().parent().unwrap().join("escaped").exists());
}

#[tokio::test]
async fn a_docker_save_archive_is_pushed_with_new_digests_over_the_same_files() {
    let dest = Registry::start(RegistryOptions::default());
    let dir = tempfile::tempdir().unwrap();
    // A `docker save` archive: manifest.json, the config, one tar per layer.
    let layer = {
        let mut tar = tar::Builder::new(Vec::new());
        let data = random_bytes(20_000, 81);
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "bin/tool", &data[..]).unwrap();
        tar.into_inner().unwrap()
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    }))
    .unwrap();
    let config_name = format!("{}.json", sha256(&config).trim_start_matches("sha256:"));
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["example.org/team/tool:1.0"],
                                       "Layers": ["abc/layer.tar"]}]);
    let archive = dir.path().join("saved.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        for (name, data) in [
            ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
            (config_name.as_str(), config.clone()),
            ("abc/layer.tar", layer.clone()),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, &data[..]).unwrap();
        }
        tar.finish().unwrap();
    }
    // skopeo reads it as a docker archive: the fixture is the real format.
    let out = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("docker-archive:{}", archive.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let from = format!("docker-archive:{}", archive.display());
    let target = format!("{}/air/tool:1.0", dest.host());
    let (ok, reports, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target]);
    assert!(ok, "{stderr}");
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), reports[0]["digest"].as_str().unwrap());
    let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Same files, so the config and layer digests are those of the files.
    assert_eq!(pushed["config"]["digest"], sha256(&config));
    assert_eq!(pushed["layers"][0]["digest"], sha256(&layer));
    assert_eq!(pushed["layers"][0]["size"], layer.len());
}

#[tokio::test]
async fn a_list_file_fills_an_oci_layout() {
    let source = Registry::start(RegistryOptions::default());
    let one = Image::new(false, &[10_000], 91);
    let two = Image::new(false, &[12_000], 92);
    source.push_image("a/one", "1", &one).await;
    source.push_image("a/two", "2", &two).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("images.txt");
    let (first, second) = (
        format!("{}/a/one:1", source.host()),
        format!("{}/a/two:2", source.host()),
    );
    std::fs::write(&list, format!("# carried\n{first}\n\n{second}\n")).unwrap();
    let layout = dir.path().join("layout");
    let to = format!("oci:{}", layout.display());
    let (ok, reports, stderr) =
        mirror_plain(&[&source], &["-f", list.to_str().unwrap(), "--to", &to]);
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["digest"], one.digest());
    assert_eq!(reports[1]["digest"], two.digest());
    assert_eq!(layout_names(&layout), vec![first.clone(), second.clone()]);
}

/// gzip of `data` in stored (uncompressed) deflate blocks: real gzip, which
/// skopeo decompresses, without a compression library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A tar holding one file of `size` random bytes.
fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let data = random_bytes(size, seed);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, format!("file-{seed}"), &data[..])
        .unwrap();
    tar.into_inner().unwrap()
}

#[tokio::test]
async fn detour_reads_what_skopeo_writes_as_oci_and_docker_archive() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    // Real gzip over real tars, so that skopeo can write a docker archive
    // (which holds layers uncompressed).
    let tars = [layer_tar(101, 30_000), layer_tar(102, 10_000)];
    let image = Image::from_layers(false, tars.iter().map(|t| gzip_stored(t)).collect(), 103);
    source.push_image("team/app", "1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let app = format!("{}/team/app:1", source.host());

    // skopeo's oci: directory, pushed by detour with the same digest.
    let oci = dir.path().join("by-skopeo");
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{app}"))
        .arg(format!("oci:{}:app", oci.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:app", oci.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(sha256(&raw.stdout), image.digest());
    let from = format!("oci:{}:app", oci.display());
    let target = format!("{}/from-oci/app:1", dest.host());
    let (ok, reports, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target]);
    assert!(ok, "{stderr}");
    assert_eq!(reports[0]["digest"], sha256(&raw.stdout));
    assert_eq!(skopeo_digest(&dest, "from-oci/app:1"), sha256(&raw.stdout));

    // skopeo's docker-archive: layers uncompressed, so the pushed layers are
    // the tars themselves, and their digests are the config's diff_ids.
    let archive = dir.path().join("saved.tar");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{app}"))
        .arg(format!(
            "docker-archive:{}:example.org/team/app:1",
            archive.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = format!("docker-archive:{}", archive.display());
    let target = format!("{}/from-docker/app:1", dest.host());
    let (ok, _, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target]);
    assert!(ok, "{stderr}");
    let pushed = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    let pushed: Value = serde_json::from_slice(&pushed.stdout).unwrap();
    let layers: Vec<&str> = pushed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
    assert_eq!(layers, expected);
}

#[tokio::test]
async fn a_layout_blob_with_the_wrong_digest_is_not_pushed() {
    let source = Registry::start(RegistryOptions::default());
    let dest = Registry::start(RegistryOptions::default());
    let image = Image::new(false, &[30_000], 111);
    source.push_image("app", "1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let app = format!("{}/app:1", source.host());
    let (ok, _, stderr) = mirror_plain(
        &[&source],
        &[&app, "--to", &format!("oci:{}", layout.display())],
    );
    assert!(ok, "{stderr}");
    // Damage the layer on disk (same size, other bytes).
    let layer = sha256(&image.layers[0]);
    let path = layout
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let from = format!("oci:{}:{app}", layout.display());
    let target = format!("{}/air/app:1", dest.host());
    let (ok, reports, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target, "--retries", "0"]);
    assert!(!ok);
    // Refused while planning, before any request to the destination.
    assert!(reports.is_empty(), "{reports:?}");
    assert!(
        stderr.contains(&format!(
            "layer 1 {layer} has bytes of another digest, sha256:"
        )),
        "{stderr}"
    );
    assert_eq!(dest.manifest_status("air/app", "1").await, 404);
    assert_eq!(dest.blob_status("air/app", &layer).await, 404);
    assert_nothing_stored(&dest);
}

/// The destination holds no repository at all: no blob, no manifest, no
/// upload session was ever opened.
fn assert_nothing_stored(registry: &Registry) {
    let repositories = registry.storage().join("docker/registry/v2/repositories");
    let blobs = registry.storage().join("docker/registry/v2/blobs");
    assert!(!repositories.exists(), "{repositories:?} exists");
    assert!(!blobs.exists(), "{blobs:?} exists");
}

/// An archive cut anywhere (at each member boundary, inside each header and
/// inside each member's data) is refused before the first request to the
/// destination, with a line that says what is missing; the destination's
/// storage shows nothing was uploaded, upload sessions included. Only the
/// cut after the last member (the end-of-archive blocks missing, every
/// byte of every image there and checked) is pushed.
#[tokio::test]
async fn an_archive_cut_anywhere_is_refused_before_anything_is_pushed() {
    let source = Registry::start(RegistryOptions::default());
    let amd = Image::new(false, &[30_000, 700], 81);
    let arm = Image::new(false, &[20_000], 82);
    source
        .push_index(
            "lib/tool",
            "1",
            &[("linux/amd64", &amd), ("linux/arm64", &arm)],
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tar");
    let tool = format!("{}/lib/tool:1", source.host());
    let (ok, _, stderr) = mirror_plain(
        &[&source],
        &[&tool, "--to", &format!("oci-archive:{}", good.display())],
    );
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&good).unwrap();
    // Where each member's header and data start, and where the last ends.
    let mut members = Vec::new();
    let mut archive = tar::Archive::new(std::io::Cursor::new(&bytes));
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let data = entry.raw_file_position();
        members.push((entry.raw_header_position(), data, entry.size()));
    }
    assert!(members.len() >= 10, "{members:?}");
    let (_, last_data, last_size) = *members.last().unwrap();
    let end = last_data + last_size.div_ceil(512) * 512;
    let mut cuts = Vec::new();
    for &(header, data, size) in &members {
        cuts.push((header, "boundary"));
        cuts.push((header + 100, "inside a header"));
        if size > 1 {
            cuts.push((data + size / 2, "inside data"));
        }
    }
    for (n, (at, how)) in cuts.into_iter().enumerate() {
        let dest = Registry::start(RegistryOptions::default());
        let cut = dir.path().join(format!("cut-{n}.tar"));
        std::fs::write(&cut, &bytes[..at as usize]).unwrap();
        let from = format!("oci-archive:{}", cut.display());
        let target = format!("{}/air/tool:1", dest.host());
        let (ok, reports, stderr) =
            mirror_plain(&[&dest], &[&from, "--to", &target, "--retries", "0"]);
        let context = format!("cut {how} at {at} of {}: {stderr} {reports:?}", bytes.len());
        assert!(!ok, "{context}");
        assert!(reports.is_empty(), "{context}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "{context}");
        assert!(line.starts_with("detour: "), "{context}");
        assert!(line.contains(&cut.display().to_string()), "{context}");
        assert!(line.contains("cut short"), "{context}");
        // No scratch path: the user never saw that directory.
        assert!(!line.contains("detour-archive-"), "{context}");
        assert_nothing_stored(&dest);
    }
    // Cut after the last member: everything is there.
    let dest = Registry::start(RegistryOptions::default());
    let whole = dir.path().join("no-trailer.tar");
    std::fs::write(&whole, &bytes[..end as usize]).unwrap();
    let from = format!("oci-archive:{}", whole.display());
    let target = format!("{}/air/tool:1", dest.host());
    let (ok, _, stderr) = mirror_plain(&[&dest], &[&from, "--to", &target]);
    assert!(ok, "{stderr}");
    assert_eq!(dest.manifest_status("air/tool", "1").await, 200);
}
