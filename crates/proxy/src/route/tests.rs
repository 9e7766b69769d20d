use super::*;

fn router() -> Router {
    let k8s_names = vec!["k8s.mirror.example.com".to_string()];
    let none: Vec<String> = vec![];
    let upstream = |host, name, host_names| UpstreamNames {
        host,
        name,
        host_names,
    };
    Router::new([
        upstream("registry.k8s.io", None, k8s_names.as_slice()),
        upstream("docker.io", None, none.as_slice()),
        upstream("127.0.0.1:5001", Some("local"), none.as_slice()),
    ])
}

fn manifest(tag: &str) -> Target {
    Target::Manifest(Reference::Tag(tag.into()))
}

#[test]
fn path_routing_names_the_upstream_first() {
    let r = router();
    let route = r
        .route(
            Some("mirror.example.com"),
            "/v2/registry.k8s.io/pause/manifests/3.9",
            None,
        )
        .unwrap();
    assert_eq!(route.upstream, 0);
    assert_eq!(route.repository, "pause");
    assert_eq!(route.target, manifest("3.9"));
    let route = r
        .route(
            None,
            "/v2/127.0.0.1:5001/team/app/blobs/sha256:"
                .to_string()
                .as_str(),
            None,
        )
        .unwrap_err();
    assert_eq!(route, RouteError::InvalidDigest("sha256:".into()));
    let digest = format!("sha256:{}", "a".repeat(64));
    let route = r
        .route(
            None,
            &format!("/v2/127.0.0.1:5001/team/app/blobs/{digest}"),
            None,
        )
        .unwrap();
    assert_eq!((route.upstream, route.repository.as_str()), (2, "team/app"));
    assert_eq!(route.target, Target::Blob(digest.clone()));
    // The configured name of an upstream whose host has a port.
    let route = r
        .route(None, &format!("/v2/local/team/app/blobs/{digest}"), None)
        .unwrap();
    assert_eq!((route.upstream, route.repository.as_str()), (2, "team/app"));
}

#[test]
fn docker_hub_gets_library_and_its_aliases() {
    let r = router();
    for path in [
        "/v2/docker.io/nginx/manifests/latest",
        "/v2/index.docker.io/nginx/manifests/latest",
        "/v2/registry-1.docker.io/library/nginx/manifests/latest",
        "/v2/Docker.IO/nginx/manifests/latest",
    ] {
        let route = r.route(None, path, None).unwrap();
        assert_eq!(
            (route.upstream, route.repository.as_str()),
            (1, "library/nginx"),
            "{path}"
        );
    }
    let route = r
        .route(None, "/v2/docker.io/bitnami/redis/tags/list", None)
        .unwrap();
    assert_eq!(route.repository, "bitnami/redis");
    assert_eq!(route.target, Target::TagList);
}

#[test]
fn host_routing_and_containerd_ns() {
    let r = router();
    let route = r
        .route(
            Some("K8S.mirror.example.com:5443"),
            "/v2/pause/manifests/3.9",
            None,
        )
        .unwrap();
    assert_eq!((route.upstream, route.repository.as_str()), (0, "pause"));
    // containerd: the upstream repository path plus ?ns=
    let route = r
        .route(
            Some("10.0.0.5:5443"),
            "/v2/library/busybox/manifests/1.36",
            Some("docker.io"),
        )
        .unwrap();
    assert_eq!(
        (route.upstream, route.repository.as_str()),
        (1, "library/busybox")
    );
    assert_eq!(
        r.route(None, "/v2/busybox/manifests/1", Some("quay.io")),
        Err(RouteError::UnknownUpstream("quay.io".into()))
    );
}

#[test]
fn refuses_what_is_not_allow_listed_or_not_grammar() {
    let r = router();
    let unknown = |path: &str| r.route(Some("mirror"), path, None).unwrap_err();
    assert_eq!(
        unknown("/v2/quay.io/coreos/etcd/manifests/v3"),
        RouteError::UnknownUpstream("quay.io".into())
    );
    assert_eq!(
        unknown("/v2/169.254.169.254/latest/manifests/x"),
        RouteError::UnknownUpstream("169.254.169.254".into())
    );
    assert_eq!(
        unknown("/v2/127.0.0.1:5002/a/manifests/x"),
        RouteError::UnknownUpstream("127.0.0.1:5002".into())
    );
    // Escapes and grammar violations never reach an upstream or the disk.
    for path in [
        "/v2/registry.k8s.io/../etc/manifests/x",
        "/v2/registry.k8s.io/a/./b/manifests/x",
        "/v2/registry.k8s.io/a//b/manifests/x",
        "/v2/registry.k8s.io/UPPER/manifests/x",
        "/v2/registry.k8s.io/a%2f..%2fb/manifests/x",
        "/v2/registry.k8s.io//manifests/x",
    ] {
        assert!(
            matches!(unknown(path), RouteError::InvalidName(_)),
            "{path}: {:?}",
            unknown(path)
        );
    }
    assert!(matches!(
        unknown("/v2/registry.k8s.io/pause/manifests/..%2f..%2fx"),
        RouteError::InvalidReference(_)
    ));
    assert!(matches!(
        unknown("/v2/registry.k8s.io/pause/manifests/.hidden"),
        RouteError::InvalidReference(_)
    ));
    assert!(matches!(
        unknown("/v2/registry.k8s.io/pause/manifests/sha256:ABC"),
        RouteError::InvalidDigest(_)
    ));
    assert!(matches!(
        unknown(&format!(
            "/v2/registry.k8s.io/pause/blobs/md5:{}",
            "a".repeat(32)
        )),
        RouteError::InvalidDigest(_)
    ));
    assert_eq!(unknown("/v1/_ping"), RouteError::NotApi);
    assert_eq!(
        unknown("/v2/registry.k8s.io/pause/other/x"),
        RouteError::NotApi
    );
    assert_eq!(
        r.route(None, "/v2/registry.k8s.io/pause/blobs/uploads/", None)
            .unwrap()
            .target,
        Target::Upload
    );
}

#[test]
fn digests_that_can_be_verified() {
    assert!(is_digest(&format!("sha256:{}", "0f".repeat(32))));
    assert!(is_digest(&format!("sha512:{}", "0f".repeat(64))));
    assert!(!is_digest(&format!("sha256:{}", "0F".repeat(32))));
    assert!(!is_digest(&format!("sha256:{}", "0f".repeat(31))));
    assert!(!is_digest("sha256"));
}

#[test]
fn the_ns_parameter_is_decoded_as_a_query() {
    // What containerd (Go's url.Values) sends for an upstream with a port.
    assert_eq!(
        ns_param("ns=127.0.0.1%3A5001").as_deref(),
        Some("127.0.0.1:5001")
    );
    assert_eq!(
        ns_param("ns=127.0.0.1:5001").as_deref(),
        Some("127.0.0.1:5001")
    );
    assert_eq!(ns_param("n=1&ns=docker.io&x").as_deref(), Some("docker.io"));
    assert_eq!(ns_param("ns="), None);
    assert_eq!(ns_param("nsx=docker.io"), None);
    // The decoded value routes to the upstream with that port.
    let r = router();
    let ns = ns_param("ns=127.0.0.1%3A5001");
    let route = r
        .route(Some("10.0.0.5:5443"), "/v2/app/manifests/v1", ns.as_deref())
        .unwrap();
    assert_eq!(r.host(route.upstream), "127.0.0.1:5001");
}
