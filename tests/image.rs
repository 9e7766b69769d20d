//! detour's own container image, built without Docker by `dist/image.sh`
//! (a static release binary and an OCI archive written by
//! dist/oci-image.py), read by the clients users run: skopeo reads its
//! index and config, `detour mirror` pushes it into a registry with the
//! same digest, and podman runs it (`--version`, and `serve --dev`
//! answering /readyz); krew installs the same binary as the kubectl plugin
//! from the archive and manifest `dist/kubectl-plugin.sh` writes, and
//! kubectl runs it as `kubectl detour`. podman runs containers on this machine only with
//! its ulimits lowered to what the sandbox allows (`--ulimit`), which the
//! test passes; nothing else differs from a user's run.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::registry::{Registry, RegistryOptions};
use common::{free_port, http_get, BIN};
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const REF: &str = "ghcr.io/detour-dev/detour:0.1.0";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// dist/image.sh rebuilds dist/rootfs, which dist/kubectl-plugin.sh reads:
/// one test at a time.
static ROOTFS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rootfs_turn() -> std::sync::MutexGuard<'static, ()> {
    ROOTFS.lock().unwrap_or_else(|p| p.into_inner())
}

/// `dist/image.sh` into `dir`: (the archive, the index digest it printed).
fn build_image(dir: &Path) -> (String, String) {
    let archive = dir.join("detour.oci.tar");
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("dist/image.sh"))
        .env("OUT", &archive)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "dist/image.sh failed");
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    (archive.display().to_string(), digest)
}

fn podman(args: &[&str]) -> Output {
    let limits = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let mut all = vec!["run", "--rm", "--network", "host"];
    all.extend(limits);
    all.extend(args);
    run("podman", &all)
}

#[test]
fn the_image_built_without_docker_is_read_pushed_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let turn = rootfs_turn();
    let (archive, digest) = build_image(dir.path());
    let image = format!("oci-archive:{archive}:{REF}");

    // skopeo: the index (one platform, shaped for more) and the config.
    let raw: Value = serde_json::from_str(&ok("skopeo", &["inspect", "--raw", &image])).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"][0]["platform"]["architecture"], "amd64");
    assert_eq!(raw["manifests"][0]["platform"]["os"], "linux");
    let config: Value =
        serde_json::from_str(&ok("skopeo", &["inspect", "--config", &image])).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/detour"]));
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(
        c["Labels"]["org.opencontainers.image.source"],
        "https://github.com/detour-dev/detour"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);

    // The same bytes twice: the build is reproducible.
    let again = tempfile::tempdir().unwrap();
    let (_, second) = build_image(again.path());
    assert_eq!(second, digest, "a second build has the same digest");
    drop(turn);

    // Into a registry with detour (the air-gapped path), digest unchanged.
    let registry = Registry::start(RegistryOptions::default());
    let target = format!("{}/detour/detour:0.1.0", registry.host());
    let out = run(
        BIN,
        &[
            "mirror",
            &format!("oci-archive:{archive}"),
            "--to",
            &target,
            "--plain-http",
            &registry.host(),
            "--allow-loopback",
            "--no-progress",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        common::registry::skopeo_digest(&registry, "detour/detour:0.1.0"),
        digest
    );

    // podman runs it: the version, then the webhook in development mode.
    let version = podman(&[&image, "--version"]);
    assert!(
        version.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&version.stderr)
    );
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("0.1.0"),
        "{version:?}"
    );
    let admin = free_port();
    let listen = free_port();
    let name = format!("detour-image-test-{}", std::process::id());
    let mut serve = Command::new("podman")
        .args(["run", "--rm", "--name", &name, "--network", "host"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["--read-only", "--user", "65532:65532"])
        .arg(&image)
        .args(["serve", "--dev"])
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(admin, "/readyz").map(|r| r.0).unwrap_or(0) != 200 {
        if let Ok(Some(status)) = serve.try_wait() {
            let mut stderr = String::new();
            use std::io::Read;
            serve
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the container exited ({status}): {stderr}");
        }
        assert!(Instant::now() < deadline, "/readyz never answered 200");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = run("podman", &["stop", "-t", "2", &name]);
    let _ = serve.wait();
    let _ = run("podman", &["rmi", "-f", REF]);
}

/// krew installs the plugin archive offline (`--archive`) from its manifest,
/// and kubectl finds it: `kubectl detour explain`, `kubectl detour --version`.
#[test]
fn krew_installs_the_kubectl_plugin_and_kubectl_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let turn = rootfs_turn();
    build_image(dir.path());
    let out_dir = dir.path().join("plugin");
    let out = Command::new("bash")
        .arg(Path::new(REPO).join("dist/kubectl-plugin.sh"))
        .env("OUT_DIR", &out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    drop(turn);
    let manifest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let archive = out_dir.join("kubectl-detour_v0.1.0_linux_amd64.tar.gz");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let sha = ok("sha256sum", &[archive.to_str().unwrap()]);
    assert!(text.contains(&format!("sha256: {}", &sha[..64])), "{text}");

    let krew_root = dir.path().join("krew");
    let kube_bin = std::env::var("DETOUR_KUBE_BIN")
        .expect("DETOUR_KUBE_BIN (kubectl): run the tests with `bash tests/run.sh`");
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        krew_root.join("bin").display(),
        kube_bin
    );
    let install = Command::new(common::registry::oci_tool("krew"))
        .args(["install", &format!("--manifest={manifest}")])
        .arg(format!("--archive={}", archive.display()))
        .env("KREW_ROOT", &krew_root)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(install.status.success(), "krew install: {install:?}");
    let kubectl = |args: &[&str]| {
        Command::new(Path::new(&kube_bin).join("kubectl"))
            .args(args)
            .env("PATH", &path)
            .env("KREW_ROOT", &krew_root)
            .output()
            .unwrap()
    };
    let plugins = kubectl(&["plugin", "list"]);
    assert!(
        String::from_utf8_lossy(&plugins.stdout).contains("kubectl-detour"),
        "{plugins:?}"
    );
    let explained = kubectl(&["detour", "explain", "registry.k8s.io/pause:3.10"]);
    assert!(explained.status.success(), "{explained:?}");
    assert!(
        String::from_utf8_lossy(&explained.stdout)
            .contains("m.daocloud.io/registry.k8s.io/pause:3.10"),
        "{explained:?}"
    );
    let version = kubectl(&["detour", "--version"]);
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("0.1.0"),
        "{version:?}"
    );
}
