use super::*;

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn digest() -> String {
    format!("sha256:{HEX}")
}

fn entry(digest: &str, artifact_type: Option<&str>) -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: digest.into(),
        size: 10,
        artifact_type: artifact_type.map(str::to_string),
        annotations: None,
        other: serde_json::Map::new(),
    }
}

#[test]
fn cosign_tags_are_found_by_digest_and_read_back() {
    let stem = format!("sha256-{HEX}");
    let tags: Vec<String> = vec![
        "latest".into(),
        format!("{stem}.sbom"),
        format!("{stem}.sig"),
        stem.clone(),
        format!("{stem}.sig.bak"),
        "sha256-00.sig".into(),
    ];
    assert_eq!(
        cosign_tags(&digest(), &tags),
        vec![
            (format!("{stem}.sig").as_str(), "sig"),
            (format!("{stem}.sbom").as_str(), "sbom")
        ]
    );
    assert!(cosign_tags("latest", &tags).is_empty());
    assert_eq!(tag_stem(&digest()), Some(stem.clone()));
    assert_eq!(tag_stem("sha256:"), None);
    assert_eq!(tag_stem("SHA256:ab"), None);
    assert_eq!(
        parse_cosign_tag(&format!("{stem}.att")),
        Some((digest(), "att"))
    );
    assert_eq!(parse_cosign_tag(&stem), None);
    assert_eq!(parse_cosign_tag(&format!("{stem}.zip")), None);
    assert_eq!(parse_cosign_tag("v1.2.sig"), None);
    assert_eq!(parse_cosign_tag("sha256-xyz.sig"), None);
}

#[test]
fn the_fallback_index_gains_only_what_it_lacks_and_keeps_unknown_fields() {
    let a = entry("sha256:aa", Some("application/spdx+json"));
    let b = entry("sha256:bb", None);
    let first = merge_fallback(None, std::slice::from_ref(&a))
        .unwrap()
        .expect("a new index");
    let value: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(value["mediaType"], OCI_INDEX);
    assert_eq!(value["schemaVersion"], 2);
    assert_eq!(descriptors(&first).unwrap(), vec![a.clone()]);
    assert_eq!(
        merge_fallback(Some(&first), std::slice::from_ref(&a)).unwrap(),
        None
    );
    let second = merge_fallback(Some(&first), &[b.clone(), a.clone()])
        .unwrap()
        .expect("b added");
    assert_eq!(descriptors(&second).unwrap(), vec![a.clone(), b]);
    // An entry with fields this code does not know keeps them.
    let odd = br#"{"manifests":[{"mediaType":"m","digest":"sha256:cc","size":3,"platform":{"os":"linux"},"data":"e30="}]}"#;
    let merged = merge_fallback(Some(odd), &[a]).unwrap().unwrap();
    let value: serde_json::Value = serde_json::from_slice(&merged).unwrap();
    assert_eq!(value["manifests"][0]["platform"]["os"], "linux");
    assert_eq!(value["manifests"][0]["data"], "e30=");
    assert!(descriptors(b"{not json").is_err());
}

#[test]
fn a_referrer_is_described_by_its_artifact_type_else_its_config() {
    let with_type = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44","size":2},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:5e","size":9},"annotations":{"org.opencontainers.image.created":"2026-12-06"}}"#;
    let (subject, d) = referrer_of(
        "application/vnd.oci.image.manifest.v1+json",
        "sha256:ab",
        with_type,
    )
    .unwrap();
    assert_eq!(subject, "sha256:5e");
    assert_eq!(d.artifact_type.as_deref(), Some("application/spdx+json"));
    assert_eq!(d.size, with_type.len() as u64);
    assert_eq!(
        d.annotations.unwrap()["org.opencontainers.image.created"],
        "2026-12-06"
    );
    let by_config = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.dev.cosign.artifact.sig.v1+json","digest":"sha256:44","size":2},"layers":[],"subject":{"digest":"sha256:5e"}}"#;
    let (_, d) = referrer_of("m", "sha256:cd", by_config).unwrap();
    assert_eq!(
        d.artifact_type.as_deref(),
        Some("application/vnd.dev.cosign.artifact.sig.v1+json")
    );
    assert!(referrer_of("m", "sha256:ef", br#"{"schemaVersion":2,"layers":[]}"#).is_none());
    assert!(referrer_of("m", "sha256:ef", b"[1,2").is_none());
}

#[test]
fn artifact_type_filtering_and_pagination_links() {
    let list = vec![
        entry("sha256:aa", Some("application/spdx+json")),
        entry(
            "sha256:bb",
            Some("application/vnd.dev.sigstore.bundle.v0.3+json"),
        ),
        entry("sha256:cc", None),
    ];
    let only = filtered(list, "application/spdx+json");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].digest, "sha256:aa");
    assert_eq!(
        next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#),
        Some("/v2/a/tags/list?n=2&last=b")
    );
    assert_eq!(
        next_link(r#"<https://r/x?page=1>; rel="prev", <https://r/x?page=3>; rel=next"#),
        Some("https://r/x?page=3")
    );
    assert_eq!(next_link(r#"</x>; rel="prev""#), None);
    assert_eq!(next_link("garbage"), None);
}
