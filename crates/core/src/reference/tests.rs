//! Grammar table, written from the distribution/reference grammar and
//! `normalize.go` rules (not from this parser's output).

use super::*;

const D64: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ok(input: &str) -> Reference {
    Reference::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
}

fn parts(r: &Reference) -> (&str, &str, Option<&str>, Option<&str>) {
    (r.domain(), r.path(), r.tag(), r.digest())
}

#[test]
fn normalisation_table() {
    type Parts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);
    let cases: &[(&str, Parts)] = &[
        ("nginx", ("docker.io", "library/nginx", None, None)),
        (
            "nginx:1.25",
            ("docker.io", "library/nginx", Some("1.25"), None),
        ),
        ("library/nginx", ("docker.io", "library/nginx", None, None)),
        (
            "docker.io/nginx",
            ("docker.io", "library/nginx", None, None),
        ),
        (
            "index.docker.io/nginx",
            ("docker.io", "library/nginx", None, None),
        ),
        (
            "index.docker.io/bitnami/redis:7",
            ("docker.io", "bitnami/redis", Some("7"), None),
        ),
        // registry-1.docker.io is not canonicalised by the grammar.
        (
            "registry-1.docker.io/nginx",
            ("registry-1.docker.io", "nginx", None, None),
        ),
        ("bitnami/redis", ("docker.io", "bitnami/redis", None, None)),
        // A first component without '.' or ':' that is not localhost is a Docker Hub namespace.
        (
            "myregistry/ns/img",
            ("docker.io", "myregistry/ns/img", None, None),
        ),
        ("localhost/foo", ("localhost", "foo", None, None)),
        (
            "localhost:5000/foo/bar:v1",
            ("localhost:5000", "foo/bar", Some("v1"), None),
        ),
        // A bare host-looking single component is a Docker Hub image name.
        ("localhost", ("docker.io", "library/localhost", None, None)),
        (
            "example.com",
            ("docker.io", "library/example.com", None, None),
        ),
        (
            "localhost:5000",
            ("docker.io", "library/localhost", Some("5000"), None),
        ),
        // Uppercase first component is a host, and keeps its case.
        ("Foo/bar", ("Foo", "bar", None, None)),
        (
            "Registry.K8s.io/pause:3.9",
            ("Registry.K8s.io", "pause", Some("3.9"), None),
        ),
        (
            "quay.io:443/coreos/etcd",
            ("quay.io:443", "coreos/etcd", None, None),
        ),
        ("[::1]:5000/app:v2", ("[::1]:5000", "app", Some("v2"), None)),
        ("[fe80::1]/app", ("[fe80::1]", "app", None, None)),
        (
            "127.0.0.1:5000/a/b/c/d",
            ("127.0.0.1:5000", "a/b/c/d", None, None),
        ),
        (
            "registry.k8s.io/ingress-nginx/controller:v1.9.4",
            (
                "registry.k8s.io",
                "ingress-nginx/controller",
                Some("v1.9.4"),
                None,
            ),
        ),
        (
            "a__b/c--d/e.f_g",
            ("docker.io", "a__b/c--d/e.f_g", None, None),
        ),
        (
            "x:Tag_With.Caps-1",
            ("docker.io", "library/x", Some("Tag_With.Caps-1"), None),
        ),
        (
            "x:_underscore_first",
            ("docker.io", "library/x", Some("_underscore_first"), None),
        ),
        // sha256:<64hex> alone is image "sha256" with a tag.
        (
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            (
                "docker.io",
                "library/sha256",
                Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
                None,
            ),
        ),
    ];
    for (input, expected) in cases {
        let r = ok(input);
        assert_eq!(parts(&r), *expected, "input {input:?}");
    }
}

#[test]
fn tag_and_digest_are_both_kept() {
    let r = ok(&format!(
        "registry.k8s.io/ingress-nginx/controller:v1.9.4@{D64}"
    ));
    assert_eq!(r.tag(), Some("v1.9.4"));
    assert_eq!(r.digest(), Some(D64));
    assert_eq!(
        r.to_string(),
        format!("registry.k8s.io/ingress-nginx/controller:v1.9.4@{D64}")
    );
    let r = ok(&format!("nginx@{D64}"));
    assert_eq!((r.tag(), r.digest()), (None, Some(D64)));
    let r = ok(&format!("localhost:5000/app@{D64}"));
    assert_eq!(
        (r.domain(), r.path(), r.tag()),
        ("localhost:5000", "app", None)
    );
}

#[test]
fn digest_algorithms_and_lengths() {
    let sha384 = format!("sha384:{}", "a".repeat(96));
    let sha512 = format!("sha512:{}", "b".repeat(128));
    assert_eq!(ok(&format!("x@{sha384}")).digest(), Some(sha384.as_str()));
    assert_eq!(ok(&format!("x@{sha512}")).digest(), Some(sha512.as_str()));
    assert_eq!(
        Reference::parse(&format!("x@sha256:{}", "a".repeat(63))),
        Err(ReferenceError::InvalidDigestLength {
            algorithm: "sha256".into(),
            expected: 64,
            got: 63
        })
    );
    assert_eq!(
        Reference::parse(&format!("x@sha512:{}", "a".repeat(64))),
        Err(ReferenceError::InvalidDigestLength {
            algorithm: "sha512".into(),
            expected: 128,
            got: 64
        })
    );
    assert_eq!(
        Reference::parse(&format!("x@md5:{}", "a".repeat(32))),
        Err(ReferenceError::UnsupportedDigestAlgorithm("md5".into()))
    );
    assert_eq!(
        Reference::parse(&format!("x@sha256:{}", "A".repeat(64))),
        Err(ReferenceError::InvalidDigestHex)
    );
    assert!(matches!(
        Reference::parse("x@sha256:xyz"),
        Err(ReferenceError::InvalidDigestFormat(_))
    ));
    assert!(matches!(
        Reference::parse("x@nocolon"),
        Err(ReferenceError::InvalidDigestFormat(_))
    ));
    assert!(matches!(
        Reference::parse("x@1sha:abcd"),
        Err(ReferenceError::InvalidDigestFormat(_))
    ));
    assert!(Reference::parse(&format!("x@{D64}@{D64}")).is_err());
}

#[test]
fn rejections_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("", "empty reference"),
        (
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "64-byte hexadecimal",
        ),
        ("Nginx", "must be lowercase"),
        ("docker.io/Library/nginx", "must be lowercase"),
        ("quay.io/CoreOS/etcd", "must be lowercase"),
        ("quay.io:abc/x", "invalid port"),
        ("quay.io:/x", "invalid port"),
        ("-bad.io/x", "invalid domain"),
        ("bad-.io/x", "invalid domain"),
        ("a..b.io/x", "invalid domain"),
        ("a_b.io/x", "invalid domain"),
        ("[::1/x", "invalid domain"),
        ("[zz::1]/x", "invalid domain"),
        ("[::1]x/y", "invalid domain"),
        ("quay.io/", "at least one component"),
        ("quay.io//x", "invalid path component"),
        ("quay.io/x/", "invalid path component"),
        ("a..b", "invalid path component"),
        ("a___b", "invalid path component"),
        ("a.-b", "invalid path component"),
        ("-a", "invalid path component"),
        ("a-", "invalid path component"),
        ("_a", "invalid path component"),
        ("a b", "invalid path component"),
        ("nginx:", "invalid tag"),
        ("nginx:-x", "invalid tag"),
        ("nginx:.x", "invalid tag"),
        ("nginx:a/b", "invalid port"), // first component has ":", so it is a domain
        ("nginx:1:2", "invalid tag"),
        ("nginx@", "invalid digest format"),
        ("ngin\u{e9}x", "invalid path component"),
    ];
    for (input, needle) in cases {
        let err = Reference::parse(input).expect_err(input).to_string();
        assert!(
            err.contains(needle),
            "{input:?}: error {err:?} should mention {needle:?}"
        );
    }
}

#[test]
fn tag_length_limit_is_128() {
    assert!(Reference::parse(&format!("x:{}", "a".repeat(128))).is_ok());
    assert!(matches!(
        Reference::parse(&format!("x:{}", "a".repeat(129))),
        Err(ReferenceError::InvalidTag(_))
    ));
}

#[test]
fn name_length_limit_counts_the_normalised_path_only() {
    // distribution/reference since v0.6.0: 255 characters of path, the
    // domain not counted; Docker Hub's `library/` is part of the path.
    let cases: &[(String, Result<(), usize>)] = &[
        ("a".repeat(255 - "library/".len()), Ok(())),
        ("a".repeat(256 - "library/".len()), Err(256)),
        (format!("library/{}", "a".repeat(247)), Ok(())),
        (format!("docker.io/{}", "a".repeat(247)), Ok(())),
        (format!("docker.io/ns/{}", "b".repeat(252)), Ok(())),
        (format!("docker.io/ns/{}", "b".repeat(253)), Err(256)),
        (format!("quay.io/{}", "b".repeat(255)), Ok(())),
        (format!("quay.io/{}", "b".repeat(256)), Err(256)),
        // A long domain does not count: 255 + 1 + 255 characters in all.
        (
            format!("{}.io/{}", "d".repeat(252), "p".repeat(255)),
            Ok(()),
        ),
        (
            format!("{}.io/{}:v1", "d".repeat(252), "p".repeat(256)),
            Err(256),
        ),
        (
            format!(
                "localhost:5000/{}@sha256:{}",
                "p".repeat(255),
                "0".repeat(64)
            ),
            Ok(()),
        ),
    ];
    for (input, want) in cases {
        let got = Reference::parse(input).map(|_| ()).map_err(|e| match e {
            ReferenceError::NameTooLong(n) => n,
            other => panic!("{input}: unexpected {other}"),
        });
        assert_eq!(&got, want, "{input}");
    }
    let err = Reference::parse(&"a".repeat(300)).unwrap_err().to_string();
    assert!(
        err.contains("repository name must not be more than 255 characters (got 308)"),
        "{err}"
    );
}

#[test]
fn familiar_and_full_forms() {
    let cases = [
        ("nginx", "docker.io/library/nginx", "nginx"),
        (
            "docker.io/library/nginx:1",
            "docker.io/library/nginx:1",
            "nginx:1",
        ),
        ("library/a/b", "docker.io/library/a/b", "library/a/b"),
        (
            "bitnami/redis:7",
            "docker.io/bitnami/redis:7",
            "bitnami/redis:7",
        ),
        (
            "quay.io/coreos/etcd:v3",
            "quay.io/coreos/etcd:v3",
            "quay.io/coreos/etcd:v3",
        ),
        ("localhost:5000/x", "localhost:5000/x", "localhost:5000/x"),
    ];
    for (input, full, familiar) in cases {
        let r = ok(input);
        assert_eq!(r.to_string(), full, "{input}");
        assert_eq!(r.familiar(), familiar, "{input}");
        assert_eq!(ok(full), r, "full form of {input} parses back");
        assert_eq!(ok(familiar), r, "familiar form of {input} parses back");
    }
}

#[test]
fn path_component_separators() {
    for good in [
        "a", "a1", "a.b", "a_b", "a__b", "a-b", "a---b", "a.b_c-d", "0",
    ] {
        assert!(is_path_component(good), "{good}");
    }
    for bad in [
        "", ".", "a.", ".a", "a..b", "a._b", "a___b", "a_-b", "A", "a+b",
    ] {
        assert!(!is_path_component(bad), "{bad}");
    }
}

#[test]
fn familiar_form_keeps_docker_io_when_the_path_looks_like_a_host() {
    let r = ok("docker.io/a.b/c");
    assert_eq!(r.familiar(), "docker.io/a.b/c");
    assert_eq!(ok(&r.familiar()), r);
    assert_eq!(
        ok("docker.io/localhost/x").familiar(),
        "docker.io/localhost/x"
    );
    assert_eq!(ok("docker.io/library/a.b").familiar(), "a.b");
}
