//! Registry traffic through a real forward proxy (Debian's tinyproxy on
//! 127.0.0.1): copies and mirror lookups tunnel through it with CONNECT,
//! `NO_PROXY` bypasses it, proxy credentials are sent and never printed,
//! the address guard still applies to registries behind the proxy, and a
//! proxy that refuses or is gone gives a clear error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{
    docker_config, skopeo_digest, Image, Registry, RegistryOptions, PASSWORD, USER,
};
use common::*;
use serde_json::Value;

const PROXY_USER: &str = "proxy-user";
const PROXY_PASSWORD: &str = "proxy-secret-not-for-logs";

struct Tinyproxy {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start(basic_auth: bool) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\nAllow 127.0.0.1\n\
             LogFile \"{}\"\nLogLevel Info\nDisableViaHeader Yes\n",
            log.display()
        );
        // No ConnectPort line: CONNECT to any port (the test registries').
        if basic_auth {
            config.push_str(&format!("BasicAuth {PROXY_USER} {PROXY_PASSWORD}\n"));
        }
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is installed (tests/run.sh installs it)");
        wait_listening(port, "tinyproxy", 10);
        Tinyproxy {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CONNECT requests tinyproxy logged for `host`.
    fn connects_to(&self, host: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("CONNECT {host}")))
            .count()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's squid, as companies run it: CONNECT for every port, Basic auth
/// against an htpasswd file (`basic_ncsa_auth`), the access log unbuffered.
/// squid drops to its `proxy` user, so its directory is readable by all.
struct Squid {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// A password with the characters that a URL must percent-encode.
const SQUID_PASSWORD: &str = "p@ss:w%rd/x#y?z";

impl Squid {
    fn start() -> Squid {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("htpasswd")
            .args(["-nbm", PROXY_USER, SQUID_PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils) is installed");
        assert!(out.status.success());
        std::fs::write(root.join("passwd"), &out.stdout).unwrap();
        for log in ["access.log", "cache.log"] {
            std::fs::write(root.join(log), "").unwrap();
            std::fs::set_permissions(root.join(log), std::fs::Permissions::from_mode(0o666))
                .unwrap();
        }
        let port = free_port();
        let conf = root.join("squid.conf");
        std::fs::write(
            &conf,
            format!(
                "http_port 127.0.0.1:{port}\n\
                 auth_param basic program /usr/lib/squid/basic_ncsa_auth {0}/passwd\n\
                 auth_param basic realm detour-tests\n\
                 acl authed proxy_auth REQUIRED\n\
                 http_access allow authed\nhttp_access deny all\n\
                 access_log stdio:{0}/access.log\ncache_log {0}/cache.log\n\
                 pid_filename none\nnetdb_filename none\ncache deny all\n\
                 coredump_dir {0}\nshutdown_lifetime 0 seconds\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new("squid")
            .arg("-N")
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid is installed (tests/run.sh installs it)");
        wait_listening(port, "squid", 20);
        Squid { child, port, dir }
    }

    /// The proxy URL with user info, percent-encoded as RFC 3986 wants.
    fn url_with(&self, user: &str, password: &str) -> String {
        let encode = |text: &str| {
            text.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        format!(
            "http://{}:{}@127.0.0.1:{}",
            encode(user),
            encode(password),
            self.port
        )
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `detour mirror` as a user runs it, with `env` added.
fn mirror(args: &[&str], env: &[(&str, &str)]) -> (bool, Vec<Value>, String) {
    let out = Command::new(BIN)
        .arg("mirror")
        .args(args)
        .args([
            "-o",
            "json",
            "--no-progress",
            "--allow-loopback",
            "--retries",
            "1",
        ])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let reports = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status.success(),
        reports,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Two TLS registries (the destination behind Basic auth) and an image.
struct Setup {
    source: Registry,
    dest: Registry,
    image: Image,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new() -> Setup {
        let secure = || {
            Registry::start(RegistryOptions {
                secure: true,
                ..RegistryOptions::default()
            })
        };
        let (source, dest) = (secure(), secure());
        let image = Image::new(false, &[50_000, 20_000], 21);
        source.push_image("team/app", "1.0", &image).await;
        Setup {
            source,
            dest,
            image,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// CA files and credentials for both registries.
    fn flags(&self) -> Vec<String> {
        let creds = self.dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        let config = docker_config(&creds, &self.dest.host(), USER, PASSWORD);
        let source_config = self.dir.path().join("source-creds");
        std::fs::create_dir_all(&source_config).unwrap();
        let source_config = docker_config(&source_config, &self.source.host(), USER, PASSWORD);
        vec![
            "--ca-file".into(),
            self.source.ca().display().to_string(),
            "--ca-file".into(),
            self.dest.ca().display().to_string(),
            "--credentials".into(),
            config.display().to_string(),
            "--credentials".into(),
            source_config.display().to_string(),
        ]
    }

    fn src(&self) -> String {
        format!("{}/team/app:1.0", self.source.host())
    }

    fn dst(&self, tag: &str) -> String {
        format!("{}/mirror/app:{tag}", self.dest.host())
    }
}

fn with<'a>(fixed: &[&'a str], flags: &'a [String]) -> Vec<&'a str> {
    fixed
        .iter()
        .copied()
        .chain(flags.iter().map(String::as_str))
        .collect()
}

#[tokio::test]
async fn copies_tunnel_through_the_proxy_from_the_environment_and_no_proxy_bypasses_it() {
    let setup = Setup::new().await;
    let proxy = Tinyproxy::start(false);
    let flags = setup.flags();
    let (src, dst) = (setup.src(), setup.dst("1.0"));
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str())];
    let (ok, reports, stderr) = mirror(&with(&[&src, "--to", &dst], &flags), &env);
    assert!(ok, "{stderr}\n{reports:?}");
    assert_eq!(reports[0]["digest"], setup.image.digest());
    assert_eq!(
        skopeo_digest(&setup.dest, "mirror/app:1.0"),
        setup.image.digest()
    );
    // Both registries were reached through CONNECT tunnels.
    assert!(
        proxy.connects_to(&setup.source.host()) >= 1,
        "{}",
        proxy.log()
    );
    assert!(
        proxy.connects_to(&setup.dest.host()) >= 1,
        "{}",
        proxy.log()
    );

    // NO_PROXY for the destination: its traffic goes direct.
    let before_dest = proxy.connects_to(&setup.dest.host());
    let before_source = proxy.connects_to(&setup.source.host());
    let dst2 = setup.dst("2.0");
    let env = [
        ("HTTPS_PROXY", url.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let (ok, _, stderr) = mirror(&with(&[&src, "--to", &dst2], &flags), &env);
    assert!(ok, "{stderr}");
    assert_eq!(proxy.connects_to(&setup.dest.host()), before_dest);
    assert_eq!(proxy.connects_to(&setup.source.host()), before_source);
    assert_eq!(
        skopeo_digest(&setup.dest, "mirror/app:2.0"),
        setup.image.digest()
    );
}

#[tokio::test]
async fn the_configured_proxy_gets_credentials_from_a_file_that_are_never_printed() {
    let setup = Setup::new().await;
    let proxy = Tinyproxy::start(true);
    let flags = setup.flags();
    let (src, dst) = (setup.src(), setup.dst("1.0"));
    let url = proxy.url();
    // Without credentials the proxy refuses (407): a clear error.
    let (ok, reports, stderr) = mirror(
        &with(&[&src, "--to", &dst, "--proxy", &url], &flags),
        &[("DETOUR_LOG", "debug")],
    );
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap_or(&stderr).to_string();
    assert!(error.contains("proxy") || error.contains("407"), "{error}");

    let creds = setup.dir.path().join("proxy-credentials");
    std::fs::write(&creds, format!("{PROXY_USER}:{PROXY_PASSWORD}\n")).unwrap();
    let creds = creds.display().to_string();
    let (ok, reports, stderr) = mirror(
        &with(
            &[
                &src,
                "--to",
                &dst,
                "--proxy",
                &url,
                "--proxy-credentials",
                &creds,
            ],
            &flags,
        ),
        &[("DETOUR_LOG", "debug")],
    );
    assert!(ok, "{stderr}\n{reports:?}");
    assert!(proxy.connects_to(&setup.dest.host()) >= 1);
    assert_eq!(
        skopeo_digest(&setup.dest, "mirror/app:1.0"),
        setup.image.digest()
    );
    let everything = format!("{stderr}{reports:?}");
    assert!(
        !everything.contains(PROXY_PASSWORD),
        "proxy password printed"
    );
    assert!(!everything.contains(PASSWORD), "registry password printed");
}

#[tokio::test]
async fn the_address_guard_applies_behind_the_proxy_and_a_dead_proxy_is_a_clear_error() {
    let proxy = Tinyproxy::start(false);
    let url = proxy.url();
    let env = [("HTTPS_PROXY", url.as_str())];
    // A cloud metadata address, and a name that resolves here to loopback
    // (without --allow-loopback): refused before anything reaches the proxy.
    for (target, why) in [
        ("169.254.169.254/x/y:1", "169.254.169.254"),
        ("localhost:5000/x/y:1", "resolves to"),
    ] {
        let out = Command::new(BIN)
            .args([
                "mirror",
                target,
                "--to",
                "registry.invalid/x/y:1",
                "-o",
                "json",
                "--no-progress",
            ])
            .envs(env)
            .env_remove("NO_PROXY")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(stdout.contains(why), "{target}: {stdout}");
    }
    assert_eq!(proxy.connects_to("169.254.169.254"), 0, "{}", proxy.log());
    assert_eq!(proxy.connects_to("localhost"), 0, "{}", proxy.log());

    // The proxy is gone: an error that names the connection, after retries.
    let setup = Setup::new().await;
    let flags = setup.flags();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let (ok, reports, stderr) = mirror(
        &with(
            &[&setup.src(), "--to", &setup.dst("1.0"), "--proxy", &dead],
            &flags,
        ),
        &[],
    );
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap_or(&stderr).to_string();
    // The proxy's failure, named as the proxy's, with its address.
    let dead_at = dead.trim_start_matches("http://");
    assert!(
        error.contains(&format!("cannot go through the forward proxy {dead_at}")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The webhook's `swap: if-present` lookups go through `mirror.proxy` too.
#[tokio::test]
async fn webhook_mirror_lookups_go_through_the_configured_proxy() {
    let setup = Setup::new().await;
    let proxy = Tinyproxy::start(false);
    // The mirror has the image under the rewritten name.
    setup
        .dest
        .push_image("mirror/team/app", "1.0", &setup.image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = docker_config(dir.path(), &setup.dest.host(), USER, PASSWORD);
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "mirror:\n  proxy: {}\n  caFiles: [\"{}\"]\n  credentials: [\"{}\"]\n  allowLoopback: true\n  lookupBudget: 5s\n\
             rules:\n  - source: {src}/team\n    kind: prefix\n    target: {dst}/mirror/team\n    swap: if-present\n",
            proxy.url(),
            setup.dest.ca().display(),
            creds.display(),
            src = setup.source.host(),
            dst = setup.dest.host(),
        ),
    )
    .unwrap();
    let server = Server::start(Options {
        config: Some(Path::new(&config)),
        ..Options::default()
    });
    let body = with_containers(serde_json::json!([{"name": "app", "image": setup.src()}]));
    let (status, resp) = post(&server.client(), &server.url("/mutate"), &body).await;
    assert_eq!(status, 200);
    let patch = decode_patch(&resp);
    assert!(
        patch
            .to_string()
            .contains(&format!("{}/mirror/team/app:1.0", setup.dest.host())),
        "{patch}"
    );
    assert!(
        proxy.connects_to(&setup.dest.host()) >= 1,
        "{}",
        proxy.log()
    );
}

/// squid with Basic auth, the password in HTTPS_PROXY with `@`, `:`, `%`,
/// `/`, `#` and `?` percent-encoded (the only way to write it in a URL): it
/// is sent decoded, as curl and Go's clients send it, and squid lets the
/// CONNECT tunnels through; a wrong password is squid's 407, said to be
/// the proxy's, with its address.
#[tokio::test]
async fn squid_takes_a_percent_encoded_password_from_the_environment() {
    let setup = Setup::new().await;
    let squid = Squid::start();
    let flags = setup.flags();
    let (src, dst) = (setup.src(), setup.dst("1.0"));
    let url = squid.url_with(PROXY_USER, SQUID_PASSWORD);
    let (ok, reports, stderr) = mirror(
        &with(&[&src, "--to", &dst], &flags),
        &[("HTTPS_PROXY", url.as_str()), ("DETOUR_LOG", "debug")],
    );
    assert!(ok, "{stderr}\n{reports:?}\n{}", squid.access_log());
    assert_eq!(
        skopeo_digest(&setup.dest, "mirror/app:1.0"),
        setup.image.digest()
    );
    let log = squid.access_log();
    for registry in [&setup.source, &setup.dest] {
        let tunnel = format!("CONNECT {} {PROXY_USER}", registry.host());
        assert!(
            log.lines()
                .any(|l| l.contains("TCP_TUNNEL/200") && l.contains(&tunnel)),
            "{log}"
        );
    }
    let everything = format!("{stderr}{reports:?}");
    assert!(!everything.contains(SQUID_PASSWORD), "password printed");
    assert!(!everything.contains("p%40ss"), "encoded password printed");

    let wrong = squid.url_with(PROXY_USER, "not-the-password");
    let (ok, reports, stderr) = mirror(
        &with(&[&src, "--to", &setup.dst("2.0")], &flags),
        &[("HTTPS_PROXY", wrong.as_str())],
    );
    assert!(!ok);
    let error = reports[0]["error"].as_str().unwrap_or(&stderr).to_string();
    let at = format!("forward proxy 127.0.0.1:{}", squid.port);
    assert!(
        error.contains(&at) && error.contains("proxy authorization required"),
        "{error}"
    );
}
