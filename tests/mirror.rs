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
