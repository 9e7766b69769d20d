//! Property tests: the parser never panics, formatting round-trips, and
//! rewriting is idempotent under every preset and a mix of rule kinds.

use detour_core::config::Config;
use detour_core::presets::PRESETS;
use detour_core::reference::Reference;
use proptest::prelude::*;

fn component() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,6}([._-][a-z0-9]{1,4}){0,2}"
}

fn reference_string() -> impl Strategy<Value = String> {
    let domain = prop_oneof![
        Just(None),
        Just(Some("docker.io".to_string())),
        Just(Some("index.docker.io".to_string())),
        Just(Some("registry.k8s.io".to_string())),
        Just(Some("k8s.gcr.io".to_string())),
        Just(Some("gcr.io".to_string())),
        Just(Some("us.gcr.io".to_string())),
        Just(Some("quay.io".to_string())),
        Just(Some("ghcr.io".to_string())),
        Just(Some("localhost:5000".to_string())),
        Just(Some("[::1]:5000".to_string())),
        Just(Some("Registry.K8s.io".to_string())),
        Just(Some("m.daocloud.io".to_string())),
        "[a-z]{1,5}\\.[a-z]{2,3}(:[0-9]{2,4})?".prop_map(Some),
    ];
    let tag = prop_oneof![
        Just(None),
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}".prop_map(Some)
    ];
    let digest = prop_oneof![
        Just(None),
        "[a-f0-9]{64}".prop_map(|h| Some(format!("sha256:{h}")))
    ];
    (
        domain,
        prop::collection::vec(component(), 1..4),
        tag,
        digest,
    )
        .prop_map(|(d, path, tag, digest)| {
            let mut s = d.map(|d| format!("{d}/")).unwrap_or_default();
            s.push_str(&path.join("/"));
            if let Some(t) = tag {
                s.push(':');
                s.push_str(&t);
            }
            if let Some(dg) = digest {
                s.push('@');
                s.push_str(&dg);
            }
            s
        })
}

const MIXED: &str = "
rules:
  - {source: docker.io, kind: host, target: hub.mirror.example, allow: [docker.io/library/**]}
  - {source: '*.gcr.io', kind: prefix, target: gcr.mirror.example/regional}
  - {source: gcr.io, kind: join, target: docker.io/someone, token: gcr, digests: drop}
  - {source: registry.k8s.io, kind: flatten, target: flat.example/google_containers, digests: skip}
  - {source: registry.k8s.io/keep, kind: keep}
  - {source: quay.io, kind: host, target: quay.m.example, digests: require}
  - {source: '*', kind: full-reference, target: harbor.example/proxy}
aliases: [{from: k8s.gcr.io, to: gcr.io/google-containers}]
";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn parse_never_panics_on_arbitrary_strings(s in "\\PC{0,300}") {
        let _ = Reference::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_reference_like_bytes(s in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}") {
        if let Ok(r) = Reference::parse(&s) {
            prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r.clone()));
        }
    }

    #[test]
    fn formatted_reference_parses_back_to_itself(s in reference_string()) {
        // A bare first component with a '.' reads as an (invalid) host.
        let parsed = Reference::parse(&s);
        prop_assume!(parsed.is_ok());
        let r = parsed.unwrap();
        prop_assert_eq!(Reference::parse(&r.to_string()), Ok(r.clone()));
        prop_assert_eq!(Reference::parse(&r.familiar()), Ok(r.clone()));
    }

    #[test]
    fn rewriting_is_idempotent(s in reference_string()) {
        prop_assume!(Reference::parse(&s).is_ok());
        let mut configs: Vec<Config> = PRESETS
            .iter()
            .map(|p| Config::from_yaml(&format!("presets: [{}]", p.name), "p").unwrap())
            .collect();
        configs.push(Config::from_yaml("presets: ['self-hosted=harbor.example/m']", "p").unwrap());
        configs.push(Config::from_yaml(MIXED, "mixed").unwrap());
        configs.push(Config::embedded_default());
        for config in &configs {
            let once = config.rules.rewrite(&s).rewritten().unwrap_or_else(|| s.clone());
            let twice = config.rules.rewrite(&once).rewritten().unwrap_or_else(|| once.clone());
            prop_assert_eq!(&once, &twice, "config {}", config.origin);
            prop_assert!(Reference::parse(&once).is_ok());
        }
    }
}
