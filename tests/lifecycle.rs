//! Lifecycle of the real server: certificate rotation and config reload the
//! way the kubelet updates mounted Secrets and ConfigMaps (an atomic swap of
//! the `..data` symlink, never a write to the files), graceful shutdown under
//! load, and client-certificate authentication.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn cert_files(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tls.crt", std::fs::read(dir.join("tls.crt")).unwrap()),
        ("tls.key", std::fs::read(dir.join("tls.key")).unwrap()),
    ]
}

fn leaf_der(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(dir.join("tls.crt"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

async fn served_cert(client: &reqwest::Client, server: &Server) -> Vec<u8> {
    let body = with_containers(json!([{"name": "c", "image": "nginx"}]));
    let resp = client
        .post(server.url("/mutate"))
        .json(&body)
        .send()
        .await
        .expect("request succeeds");
    assert_eq!(resp.status(), 200);
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("tls info")
        .clone();
    info.peer_certificate().expect("peer certificate").to_vec()
}

#[tokio::test]
async fn certificate_rotation_by_symlink_swap() {
    let scratch = tempfile::tempdir().unwrap();
    let (a, b) = (scratch.path().join("a"), scratch.path().join("b"));
    make_certs(&a);
    make_certs(&b);
    let cert_dir = scratch.path().join("mounted");
    atomic_write(&cert_dir, 1, &cert_files(&a));
    let server = Server::start(Options {
        cert_dir: Some(cert_dir.clone()),
        ..Default::default()
    });
    let trusted: Vec<PathBuf> = vec![a.join("ca.crt"), b.join("ca.crt")];
    let trusted: Vec<&Path> = trusted.iter().map(PathBuf::as_path).collect();

    // An open HTTP/2 connection from before the rotation.
    let h2 = reqwest::Client::builder()
        .use_preconfigured_tls({
            let mut c = tls_config(&trusted);
            c.alpn_protocols = vec![b"h2".to_vec()];
            c
        })
        .tls_info(true)
        .build()
        .unwrap();
    assert_eq!(served_cert(&h2, &server).await, leaf_der(&a));

    atomic_write(&cert_dir, 2, &cert_files(&b));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let fresh = client_trusting(&trusted);
        if served_cert(&fresh, &server).await == leaf_der(&b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections did not get the new certificate within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The old connection was not broken: it still works, with the old certificate.
    assert_eq!(served_cert(&h2, &server).await, leaf_der(&a));

    let expiry = {
        let der = leaf_der(&b);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.validity().not_after.timestamp()
    };
    assert!(server.metrics().contains(&format!(
        "detour_tls_certificate_expiry_timestamp_seconds {expiry}"
    )));

    // A mismatched pair (A's certificate with B's key) is refused; B keeps serving.
    atomic_write(
        &cert_dir,
        3,
        &[
            ("tls.crt", cert_files(&a)[0].1.clone()),
            ("tls.key", cert_files(&b)[1].1.clone()),
        ],
    );
    server
        .wait_metric(
            r#"detour_tls_reloads_total{result="failure"} 1"#,
            "broken pair was not noticed",
        )
        .await;
    assert_eq!(
        served_cert(&client_trusting(&trusted), &server).await,
        leaf_der(&b)
    );
    server.wait_log(&["new serving certificate refused"]);
    // Garbage is refused too.
    atomic_write(
        &cert_dir,
        4,
        &[
            ("tls.crt", b"not a certificate".to_vec()),
            ("tls.key", b"nor a key".to_vec()),
        ],
    );
    server
        .wait_metric(
            r#"detour_tls_reloads_total{result="failure"} 2"#,
            "garbage pair was not noticed",
        )
        .await;
    assert_eq!(
        served_cert(&client_trusting(&trusted), &server).await,
        leaf_der(&b)
    );
}

#[tokio::test]
async fn config_reload_by_symlink_swap_keeps_the_last_good_config() {
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    let rule = |target: &str| {
        format!("rules: [{{source: registry.k8s.io, kind: host, target: {target}}}]\n").into_bytes()
    };
    atomic_write(
        &config_dir,
        1,
        &[("config.yaml", rule("one.mirror.example"))],
    );
    let config = config_dir.join("config.yaml");
    let server = Server::start(Options {
        config: Some(&config),
        ..Default::default()
    });
    let client = server.client();
    let body = with_containers(json!([{"name": "c", "image": "registry.k8s.io/pause:3.9"}]));
    let rewritten =
        |resp: &serde_json::Value| decode_patch(resp)[0]["value"].as_str().unwrap().to_string();
    let (_, resp) = post(&client, &server.url("/mutate"), &body).await;
    assert_eq!(rewritten(&resp), "one.mirror.example/pause:3.9");

    atomic_write(
        &config_dir,
        2,
        &[("config.yaml", rule("two.mirror.example"))],
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, resp) = post(&client, &server.url("/mutate"), &body).await;
        if rewritten(&resp) == "two.mirror.example/pause:3.9" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "config was not reloaded within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server
        .metrics()
        .contains("detour_config_last_reload_successful 1"));

    atomic_write(
        &config_dir,
        3,
        &[(
            "config.yaml",
            b"rules:\n  - source: nginx\n    kind: host\n".to_vec(),
        )],
    );
    server
        .wait_metric(
            "detour_config_last_reload_successful 0",
            "bad config was not noticed",
        )
        .await;
    let (_, resp) = post(&client, &server.url("/mutate"), &body).await;
    assert_eq!(
        rewritten(&resp),
        "two.mirror.example/pause:3.9",
        "the last good config stays in force"
    );
    assert!(server
        .metrics()
        .contains(r#"detour_config_reloads_total{result="failure"} 1"#));
    // The log names file, line and reason.
    server.wait_log(&["config.yaml:2:3: rules: source \\\"nginx\\\""]);
}

#[tokio::test]
async fn graceful_shutdown_under_load_fails_no_request() {
    let mut server = Server::start(Options::default());
    let body = Arc::new(with_containers(
        json!([{"name": "c", "image": "registry.k8s.io/pause:3.9"}]),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, url, body, stop, ok) = (
            server.client(),
            server.url("/mutate"),
            body.clone(),
            stop.clone(),
            ok.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&*body).send().await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("status {}", r.status())),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    // A slow upload that is still in flight when the server starts draining.
    let review_bytes = serde_json::to_vec(&*body).unwrap();
    let slow = {
        let ca = server.cert_dir.join("ca.crt");
        let port = server.port;
        tokio::spawn(async move {
            slow_post(port, &ca, review_bytes, Duration::from_millis(1200)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();
    // Not ready within the 500 ms shutdown delay, while the listener still
    // takes requests (a busy machine may take a moment to deliver SIGTERM).
    let terminated = Instant::now();
    while http_get(server.admin, "/readyz").unwrap().0 != 503 {
        assert!(
            terminated.elapsed() < Duration::from_millis(450),
            "not ready while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Endpoints stop routing to a pod that is not ready; the load stops too.
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let failures = w.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during shutdown: {failures:?}"
        );
    }
    let slow_answer = slow.await.unwrap();
    assert!(
        slow_answer.starts_with("HTTP/1.1 200"),
        "in-flight request must finish: {slow_answer}"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "load was too light to mean anything"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.logs()
    );
    assert!(server.logs().contains("stopped"));
}

/// POSTs `body` in chunks spread over `spread`, over raw TLS, and returns the answer.
async fn slow_post(port: u16, ca: &Path, body: Vec<u8>, spread: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&[ca])));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let parts = 10;
    let step = body.len().div_ceil(parts);
    for chunk in body.chunks(step) {
        stream.write_all(chunk).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(spread / parts as u32).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn client_ca_requires_a_client_certificate() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let scratch = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut client_params = CertificateParams::new(vec!["kube-apiserver".to_string()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
    let ca_file = scratch.path().join("client-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let server = Server::start(Options {
        extra: vec!["--client-ca", ca_file.to_str().unwrap()],
        ..Default::default()
    });
    let body = with_containers(json!([{"name": "c", "image": "nginx"}]));
    let anonymous = server.client();
    assert!(
        anonymous
            .post(server.url("/mutate"))
            .json(&body)
            .send()
            .await
            .is_err(),
        "no client certificate, no answer"
    );

    let server_ca = server.cert_dir.join("ca.crt");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(root_store(&[&server_ca]))
    .with_client_auth_cert(
        vec![client_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
    )
    .unwrap();
    let authenticated = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap();
    let resp = authenticated
        .post(server.url("/mutate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
