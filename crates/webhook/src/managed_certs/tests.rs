use super::plan::*;
use detour_serve::certs::CertRequest;

const DAY: i64 = 86_400;

fn names() -> CertRequest {
    CertRequest {
        service: Some("detour".into()),
        namespace: "detour-system".into(),
        dns: vec![],
        ips: vec![],
        days: 1,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn certs_in(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

#[test]
fn create_renew_and_rotate_with_an_overlap() {
    let policy = Policy {
        ca_validity: time::Duration::days(30),
        cert_validity: time::Duration::days(9),
        propagation: time::Duration::seconds(60),
    };
    policy.check().unwrap();
    let t0 = now();
    let created = next(None, t0, &policy, &names()).unwrap().unwrap();
    assert_eq!(created.phase, Phase::Steady);
    assert_eq!(created.bundle, created.ca.cert);
    // Round trip through the Secret's data.
    assert_eq!(Stored::from_data(&created.to_data()).unwrap(), created);
    // Nothing to do while everything is fresh.
    assert_eq!(
        next(Some(&created), t0 + 60, &policy, &names()).unwrap(),
        None
    );

    // Two thirds into the serving certificate's life: renewed by the same CA.
    let renewed = next(Some(&created), t0 + 7 * DAY, &policy, &names())
        .unwrap()
        .unwrap();
    assert_ne!(renewed.serving, created.serving);
    assert_eq!(renewed.ca, created.ca);
    assert_eq!(renewed.bundle, created.bundle);

    // Two thirds into the CA's life: a new CA joins the bundle first.
    let t = t0 + 21 * DAY;
    let adding = next(Some(&created), t, &policy, &names()).unwrap().unwrap();
    assert_eq!(adding.phase, Phase::Adding);
    assert_eq!(adding.ca, created.ca);
    assert_eq!(
        adding.serving, created.serving,
        "nothing signed by the new CA yet"
    );
    assert_eq!(certs_in(&adding.bundle), 2);
    let new_ca = adding.next_ca.clone().unwrap();
    assert!(adding.bundle.contains(&new_ca.cert));
    assert_eq!(Stored::from_data(&adding.to_data()).unwrap(), adding);
    // Not before every replica can have seen it.
    let waiting = next(Some(&adding), t + 30, &policy, &names()).unwrap();
    assert!(waiting
        .as_ref()
        .is_none_or(|w| w.phase == Phase::Adding && w.ca == created.ca));

    // Then the new CA signs the serving certificate; both stay trusted.
    let removing = next(Some(&adding), t + 61, &policy, &names())
        .unwrap()
        .unwrap();
    assert_eq!(removing.phase, Phase::Removing);
    assert_eq!(removing.ca, new_ca);
    assert_ne!(removing.serving, adding.serving);
    assert_eq!(certs_in(&removing.bundle), 2);
    let ca =
        detour_serve::certs::CertificateAuthority::from_pem(&new_ca.cert, &new_ca.key).unwrap();
    let _ = ca; // the stored pair is a usable CA

    // Finally the old CA leaves the bundle.
    let steady = next(Some(&removing), t + 122, &policy, &names())
        .unwrap()
        .unwrap();
    assert_eq!(steady.phase, Phase::Steady);
    assert_eq!(steady.bundle, new_ca.cert);
    assert_eq!(steady.serving, removing.serving);
}

#[test]
fn broken_secrets_and_bad_policies_are_refused() {
    let mut data = std::collections::BTreeMap::new();
    assert!(Stored::from_data(&data).unwrap_err().contains("no "));
    data.insert("phase".to_string(), b"sideways".to_vec());
    assert!(Stored::from_data(&data).is_err());
    let policy = Policy {
        ca_validity: time::Duration::seconds(30),
        cert_validity: time::Duration::seconds(10),
        propagation: time::Duration::seconds(10),
    };
    assert!(policy.check().unwrap_err().contains("too short"));
    let policy = Policy {
        ca_validity: time::Duration::days(1),
        cert_validity: time::Duration::days(2),
        propagation: time::Duration::seconds(10),
    };
    assert!(policy.check().is_err());
}
