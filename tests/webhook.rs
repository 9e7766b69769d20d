//! The real server over TLS on 127.0.0.1, fed bodies shaped like the recorded
//! kube-apiserver request; every returned patch is applied with kubectl.
//! (No apiserver runs here: the recorded body stands in for it.)

mod common;

use common::*;
use serde_json::{json, Value};

fn object(review: &Value) -> Value {
    review["request"]["object"].clone()
}

#[tokio::test]
async fn enforce_patch_applies_with_kubectl_and_changes_only_images() {
    let server = Server::start(Options::default());
    let body = review(|r| {
        let spec = &mut r["request"]["object"]["spec"];
        spec["containers"][0]["image"] = "registry.k8s.io/ingress-nginx/controller:v1.9.4".into();
        let mut init = spec["containers"][0].clone();
        init["name"] = "init".into();
        init["image"] = "k8s.gcr.io/pause:3.1".into();
        spec["initContainers"] = json!([init]);
        let mut web = spec["containers"][0].clone();
        web["name"] = "web".into();
        web["image"] = "nginx:1.25".into();
        spec["containers"].as_array_mut().unwrap().push(web);
    });
    let (status, resp) = post(&server.client(), &server.url("/mutate?timeout=5s"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(resp["response"]["uid"], body["request"]["uid"]);
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let before = object(&body);
    let after = kubectl_patch(&before, &decode_patch(&resp));
    assert_eq!(
        after["spec"]["containers"][0]["image"],
        "m.daocloud.io/registry.k8s.io/ingress-nginx/controller:v1.9.4"
    );
    assert_eq!(after["spec"]["containers"][1]["image"], "nginx:1.25");
    assert_eq!(
        after["spec"]["initContainers"][0]["image"],
        "m.daocloud.io/k8s.gcr.io/pause:3.1"
    );
    let originals: Value = serde_json::from_str(
        after["metadata"]["annotations"]["detour.dev/original-images"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        originals,
        json!({"c": "registry.k8s.io/ingress-nginx/controller:v1.9.4", "init": "k8s.gcr.io/pause:3.1"})
    );
    // Nothing else changed.
    let mut normalised = after.clone();
    normalised["spec"]["containers"][0]["image"] = before["spec"]["containers"][0]["image"].clone();
    normalised["spec"]["initContainers"][0]["image"] =
        before["spec"]["initContainers"][0]["image"].clone();
    normalised["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let mut before_without_managed = before.clone();
    // `kubectl patch --local -o json` prints objects without managedFields.
    before_without_managed["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(normalised, before_without_managed);
    server.wait_log(&["registry.k8s.io/ingress-nginx/controller:v1.9.4 -> m.daocloud.io"]);
    assert!(server
        .metrics()
        .contains(r#"detour_admissions_total{mode="enforce",outcome="patched"} 1"#));
}

#[tokio::test]
async fn audit_path_and_dry_run() {
    let server = Server::start(Options::default());
    let client = server.client();
    let body = with_containers(json!([{"name": "app", "image": "registry.k8s.io/pause:3.9"}]));
    let (status, resp) = post(&client, &server.url("/audit"), &body).await;
    assert_eq!(status, 200);
    assert!(
        resp["response"].get("patch").is_none(),
        "audit never patches"
    );
    assert_eq!(resp["response"]["warnings"][0], "detour: would rewrite app: registry.k8s.io/pause:3.9 -> m.daocloud.io/registry.k8s.io/pause:3.9");
    assert!(resp["response"]["auditAnnotations"]["would-rewrite"]
        .as_str()
        .unwrap()
        .contains("m.daocloud.io"));
    assert!(server
        .metrics()
        .contains(r#"detour_admissions_total{mode="audit",outcome="would_patch"} 1"#));

    let (_, normal) = post(&client, &server.url("/mutate"), &body).await;
    let mut dry = body.clone();
    dry["request"]["dryRun"] = true.into();
    let (_, dry_resp) = post(&client, &server.url("/mutate"), &dry).await;
    assert_eq!(
        normal, dry_resp,
        "a server-side dry run is answered exactly as usual"
    );
    server.wait_log(&[r#""dry_run":true"#]);
}

#[tokio::test]
async fn reinvocation_after_a_sidecar_injector_keeps_everything_consistent() {
    let server = Server::start(Options::default());
    let client = server.client();
    let first = with_containers(json!([{"name": "app", "image": "registry.k8s.io/pause:3.9"}]));
    let (_, resp) = post(&client, &server.url("/mutate"), &first).await;
    let mut pod = kubectl_patch(&object(&first), &decode_patch(&resp));
    // Another webhook injects a sidecar, then the apiserver reinvokes detour.
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "proxy", "image": "registry.k8s.io/proxy:1"}));
    let second = review(|r| r["request"]["object"] = pod.clone());
    let (_, resp) = post(&client, &server.url("/mutate"), &second).await;
    let pod = kubectl_patch(&pod, &decode_patch(&resp));
    assert_eq!(
        pod["spec"]["containers"][0]["image"],
        "m.daocloud.io/registry.k8s.io/pause:3.9"
    );
    assert_eq!(
        pod["spec"]["containers"][1]["image"],
        "m.daocloud.io/registry.k8s.io/proxy:1"
    );
    let originals: Value = serde_json::from_str(
        pod["metadata"]["annotations"]["detour.dev/original-images"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        originals,
        json!({"app": "registry.k8s.io/pause:3.9", "proxy": "registry.k8s.io/proxy:1"})
    );
    // A third pass changes nothing at all.
    let third = review(|r| r["request"]["object"] = pod.clone());
    let (_, resp) = post(&client, &server.url("/mutate"), &third).await;
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn kubectl_debug_ephemeral_container_update() {
    let server = Server::start(Options::default());
    let body = review(|r| {
        let req = &mut r["request"];
        req["operation"] = "UPDATE".into();
        req["subResource"] = "ephemeralcontainers".into();
        req["resource"] = json!({"group": "", "version": "v1", "resource": "pods"});
        req["object"]["spec"]["containers"][0]["image"] = "registry.k8s.io/app:1".into();
        req["oldObject"] = req["object"].clone();
        req["object"]["spec"]["ephemeralContainers"] =
            json!([{"name": "debugger", "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"}]);
        req["options"] = json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"});
    });
    let (_, resp) = post(&server.client(), &server.url("/mutate"), &body).await;
    let after = kubectl_patch(&object(&body), &decode_patch(&resp));
    assert_eq!(
        after["spec"]["ephemeralContainers"][0]["image"],
        "m.daocloud.io/registry.k8s.io/e2e-test-images/agnhost:2.45"
    );
    assert_eq!(
        after["spec"]["containers"][0]["image"], "registry.k8s.io/app:1",
        "existing containers are not touched"
    );
}

#[tokio::test]
async fn skips_and_v1beta1() {
    let server = Server::start(Options::default());
    let client = server.client();
    let pause = json!([{"name": "c", "image": "registry.k8s.io/pause:3.9"}]);
    let mirror = review(|r| {
        r["request"]["object"]["metadata"]["annotations"] =
            json!({"kubernetes.io/config.mirror": "x"});
        r["request"]["object"]["spec"]["containers"] = pause.clone();
    });
    let labelled = review(|r| {
        r["request"]["object"]["metadata"]["labels"] = json!({"detour.dev/skip": "true"});
        r["request"]["object"]["spec"]["containers"] = pause.clone();
    });
    let never = with_containers(
        json!([{"name": "c", "image": "registry.k8s.io/pause:3.9", "imagePullPolicy": "Never"}]),
    );
    for body in [&mirror, &labelled, &never] {
        let (status, resp) = post(&client, &server.url("/mutate"), body).await;
        assert_eq!(status, 200);
        assert_eq!(resp["response"]["allowed"], true);
        assert!(resp["response"].get("patch").is_none());
    }
    let invalid = with_containers(json!([{"name": "c", "image": "Bad Image"}]));
    let (_, resp) = post(&client, &server.url("/mutate"), &invalid).await;
    assert!(resp["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not a valid reference"));
    server.wait_log(&[
        "static mirror pod",
        "detour.dev/skip=true",
        "imagePullPolicy is Never",
        "not a valid image reference",
    ]);

    let beta = review(|r| {
        r["apiVersion"] = "admission.k8s.io/v1beta1".into();
        r["request"]["object"]["spec"]["containers"] = pause.clone();
    });
    let (_, resp) = post(&client, &server.url("/mutate"), &beta).await;
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(
        decode_patch(&resp)[0]["value"],
        "m.daocloud.io/registry.k8s.io/pause:3.9"
    );
}

#[tokio::test]
async fn bad_input_never_gets_a_500() {
    let server = Server::start(Options::default());
    let client = server.client();
    let send = |body: Vec<u8>| {
        let c = client.clone();
        let url = server.url("/mutate");
        async move {
            let r = c
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = send(b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("malformed AdmissionReview"));
    let (status, body) =
        send(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "AdmissionReview has no request");
    // A declared Content-Length over the limit is refused before reading.
    let answer = raw_exchange(&server, "Content-Length: 8388608\r\n", Vec::new()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 7 MiB"), "{answer}");
    // A chunked body is cut off at the limit while it streams.
    let mut chunks = Vec::new();
    for _ in 0..8 {
        chunks.extend_from_slice(format!("{:x}\r\n", 1024 * 1024).as_bytes());
        chunks.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        chunks.extend_from_slice(b"\r\n");
    }
    chunks.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&server, "Transfer-Encoding: chunked\r\n", chunks).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let deployment = review(|r| {
        r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        r["request"]["object"] = json!({"kind": "Deployment", "spec": {"template": {}}});
    });
    let (status, resp) = post(&client, &server.url("/mutate"), &deployment).await;
    assert_eq!((status, &resp["response"]["allowed"]), (200, &json!(true)));
    assert_eq!(resp["response"]["uid"], deployment["request"]["uid"]);
    let weird = review(|r| r["request"]["object"]["spec"]["containers"] = json!("nope"));
    let (status, resp) = post(&client, &server.url("/mutate"), &weird).await;
    assert_eq!(
        (status, &resp["response"]["allowed"]),
        (200, &json!(true)),
        "fail open"
    );
    assert!(server.metrics().contains(r#"outcome="failed_open""#));
    assert!(server
        .metrics()
        .contains(r#"detour_rejected_requests_total{reason="too_large"} 2"#));
}

#[tokio::test]
async fn http2_and_http11_keep_alive() {
    let server = Server::start(Options::default());
    let body = with_containers(json!([{"name": "c", "image": "registry.k8s.io/pause:3.9"}]));
    let h1 = reqwest::Client::builder()
        .use_preconfigured_tls({
            let mut c = tls_config(&[&server.cert_dir.join("ca.crt")]);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        })
        .http1_only()
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = h1
            .post(server.url("/mutate"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.status(), 200);
    }
    let h2 = reqwest::Client::builder()
        .use_preconfigured_tls({
            let mut c = tls_config(&[&server.cert_dir.join("ca.crt")]);
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            c
        })
        .build()
        .unwrap();
    let r = h2
        .post(server.url("/mutate"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

/// Sends request headers (and a body, written concurrently) over a raw TLS
/// stream and returns what the server answered.
async fn raw_exchange(server: &Server, header: &str, body: Vec<u8>) -> String {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_config(&[&server.cert_dir.join("ca.crt")])));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = format!("POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{header}\r\n");
    writer.write_all(head.as_bytes()).await.unwrap();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&body).await;
        let _ = writer.flush().await;
        writer
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), reader.read(&mut answer))
        .await
        .unwrap()
        .unwrap_or(0);
    writing.abort();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
