//! What the stored certificates should become next: creation, serving
//! certificate renewal, and CA rotation with an overlap.
//!
//! Layer: pure decisions (plus key generation). Every replica runs the same
//! plan on the Secret it read; the Secret's resourceVersion makes the first
//! writer win and the others re-read, so the plan must be a function of the
//! stored state and the time only.
//!
//! CA rotation, in three states a sync interval or more apart:
//! 1. `steady`: the CA signs the serving certificate; the bundle is [CA].
//! 2. `adding`: a new CA is made and added: bundle [CA, new]. Nothing is yet
//!    signed by it, so whatever the apiserver trusts still works.
//! 3. `removing` (after `propagation`: every replica has put the bundle into
//!    the webhook configuration): the new CA becomes the CA and signs a new
//!    serving certificate; the old one stays in the bundle.
//!    After `propagation` again (every replica serves the new certificate),
//!    back to `steady` with the bundle [new CA].

use std::collections::BTreeMap;

use time::Duration;

use detour_serve::certs::{not_after_of_pem, CertError, CertRequest, CertificateAuthority};

/// A certificate and its key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Steady,
    Adding,
    Removing,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Adding => "adding",
            Phase::Removing => "removing",
        }
    }
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub ca: Pair,
    pub serving: Pair,
    /// The CAs the apiserver must trust, concatenated PEM.
    pub bundle: String,
    pub next_ca: Option<Pair>,
    pub phase: Phase,
    /// When `phase` began, Unix seconds.
    pub since: i64,
}

/// Lifetimes and the time every replica needs to notice a change.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub ca_validity: Duration,
    pub cert_validity: Duration,
    /// At least two sync intervals: every replica has read the Secret and
    /// written the webhook configuration (or reloaded its certificate).
    pub propagation: Duration,
}

impl Policy {
    /// Renewal starts when a third of a lifetime is left; a rotation must
    /// fit in that third with room to spare.
    pub fn check(&self) -> Result<(), String> {
        if self.propagation * 3 > self.ca_validity / 3 {
            return Err(format!(
                "CA validity {} is too short for a rotation that takes 2 x {} (sync interval x 2 each step)",
                self.ca_validity, self.propagation
            ));
        }
        if self.cert_validity > self.ca_validity {
            return Err("the serving certificate cannot outlive its CA".into());
        }
        Ok(())
    }
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const BUNDLE: &str = "ca-bundle.crt";
const NEXT_CRT: &str = "next-ca.crt";
const NEXT_KEY: &str = "next-ca.key";
const PHASE: &str = "phase";
const SINCE: &str = "since";

impl Stored {
    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        let mut data: BTreeMap<String, Vec<u8>> = [
            (CA_CRT, &self.ca.cert),
            (CA_KEY, &self.ca.key),
            (TLS_CRT, &self.serving.cert),
            (TLS_KEY, &self.serving.key),
            (BUNDLE, &self.bundle),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        if let Some(next) = &self.next_ca {
            data.insert(NEXT_CRT.into(), next.cert.as_bytes().to_vec());
            data.insert(NEXT_KEY.into(), next.key.as_bytes().to_vec());
        }
        data.insert(PHASE.into(), self.phase.as_str().as_bytes().to_vec());
        data.insert(SINCE.into(), self.since.to_string().into_bytes());
        data
    }

    /// Reads the Secret's data; `Err` says what is missing or wrong.
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Stored, String> {
        let text = |key: &str| -> Result<String, String> {
            let bytes = data.get(key).ok_or_else(|| format!("no {key}"))?;
            String::from_utf8(bytes.clone()).map_err(|_| format!("{key} is not text"))
        };
        let pair = |cert: &str, key: &str| -> Result<Pair, String> {
            Ok(Pair {
                cert: text(cert)?,
                key: text(key)?,
            })
        };
        let phase = match text(PHASE)?.as_str() {
            "steady" => Phase::Steady,
            "adding" => Phase::Adding,
            "removing" => Phase::Removing,
            other => return Err(format!("unknown phase {other:?}")),
        };
        let next_ca = match (data.contains_key(NEXT_CRT), phase) {
            (true, _) => Some(pair(NEXT_CRT, NEXT_KEY)?),
            (false, Phase::Adding) => return Err("phase adding without next-ca.crt".into()),
            (false, _) => None,
        };
        let stored = Stored {
            ca: pair(CA_CRT, CA_KEY)?,
            serving: pair(TLS_CRT, TLS_KEY)?,
            bundle: text(BUNDLE)?,
            next_ca,
            phase,
            since: text(SINCE)?
                .parse()
                .map_err(|_| "since is not a number".to_string())?,
        };
        // Every certificate must parse: a broken Secret is replaced whole.
        for pem in [&stored.ca.cert, &stored.serving.cert] {
            not_after_of_pem(pem).map_err(|e| e.to_string())?;
        }
        Ok(stored)
    }
}

/// The state to write, or `None` when the stored one is good as it is.
/// `current` is `None` when there is no Secret, or its data is unusable.
pub fn next(
    current: Option<&Stored>,
    now: i64,
    policy: &Policy,
    names: &CertRequest,
) -> Result<Option<Stored>, CertError> {
    let Some(current) = current else {
        let ca = CertificateAuthority::generate_valid_for(policy.ca_validity)?;
        let serving = issue(&ca, names, policy)?;
        return Ok(Some(Stored {
            bundle: ca.pem(),
            ca: pair_of(&ca),
            serving,
            next_ca: None,
            phase: Phase::Steady,
            since: now,
        }));
    };
    let expiring = |pem: &str, validity: Duration| -> Result<bool, CertError> {
        let left = not_after_of_pem(pem)? - now;
        Ok(left < validity.whole_seconds() / 3)
    };
    let settled = now - current.since >= policy.propagation.whole_seconds();
    let mut next = current.clone();
    match current.phase {
        Phase::Steady if expiring(&current.ca.cert, policy.ca_validity)? => {
            let new_ca = CertificateAuthority::generate_valid_for(policy.ca_validity)?;
            next.bundle = format!("{}{}", current.ca.cert, new_ca.pem());
            next.next_ca = Some(pair_of(&new_ca));
            next.phase = Phase::Adding;
            next.since = now;
            return Ok(Some(next));
        }
        Phase::Adding if settled => {
            let new = current
                .next_ca
                .clone()
                .ok_or_else(|| CertError::Parse("phase adding without a new CA".into()))?;
            let ca = CertificateAuthority::from_pem(&new.cert, &new.key)?;
            next.serving = issue(&ca, names, policy)?;
            next.ca = new;
            next.next_ca = None;
            next.phase = Phase::Removing;
            next.since = now;
            return Ok(Some(next));
        }
        Phase::Removing if settled => {
            next.bundle = current.ca.cert.clone();
            next.phase = Phase::Steady;
            next.since = now;
            return Ok(Some(next));
        }
        _ => {}
    }
    // A serving certificate capped at its CA's end is not renewed again
    // until the CA has rotated: a new one would end no later.
    let ca_outlives_it =
        not_after_of_pem(&current.ca.cert)? > not_after_of_pem(&current.serving.cert)?;
    if expiring(&current.serving.cert, policy.cert_validity)? && ca_outlives_it {
        let ca = CertificateAuthority::from_pem(&current.ca.cert, &current.ca.key)?;
        next.serving = issue(&ca, names, policy)?;
        return Ok(Some(next));
    }
    Ok(None)
}

fn pair_of(ca: &CertificateAuthority) -> Pair {
    Pair {
        cert: ca.pem(),
        key: ca.key_pem().to_string(),
    }
}

fn issue(
    ca: &CertificateAuthority,
    names: &CertRequest,
    policy: &Policy,
) -> Result<Pair, CertError> {
    let (cert, key) = ca.issue_valid_for(names, policy.cert_validity)?;
    Ok(Pair { cert, key })
}
