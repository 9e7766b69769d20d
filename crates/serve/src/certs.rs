//! Certificates for the webhook's Service: a CA and a serving certificate.
//!
//! Layer: adapter (rcgen; writes files). Used by `detour certs` and by
//! `detour serve --dev`, which makes throwaway certificates for 127.0.0.1.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Write(String, std::io::Error),
    #[error("no names: give a service and namespace, or --dns/--ip")]
    NoNames,
    #[error("cannot read certificate: {0}")]
    Parse(String),
}

/// What the serving certificate is for.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub service: Option<String>,
    pub namespace: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Validity of the serving certificate; the CA lives ten times as long.
    pub days: i64,
}

pub struct CertBundle {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertRequest {
    /// The DNS names the apiserver may use for a Service: `svc`, `svc.ns`,
    /// `svc.ns.svc`, `svc.ns.svc.cluster.local`, then any extra names.
    pub fn dns_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(svc) = &self.service {
            let ns = &self.namespace;
            names.extend([
                svc.clone(),
                format!("{svc}.{ns}"),
                format!("{svc}.{ns}.svc"),
                format!("{svc}.{ns}.svc.cluster.local"),
            ]);
        }
        names.extend(self.dns.iter().cloned());
        names
    }
}

/// A CA that signs serving certificates: made here, or restored from the
/// PEM pair that self-managed certificates keep in a Secret.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// A new self-signed CA, valid for `days`.
    pub fn generate(days: i64) -> Result<Self, CertError> {
        Self::generate_valid_for(Duration::days(days))
    }

    /// A new self-signed CA, valid for `validity` from now.
    pub fn generate_valid_for(validity: Duration) -> Result<Self, CertError> {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        // Each CA's own name (its day and its key's fingerprint), so that an
        // old CA and a new one differ where people look: subject and issuer.
        let fingerprint = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let id: String = fingerprint.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("detour webhook CA {} {id}", now.date()),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + validity;
        let key_pem = key.serialize_pem();
        let certified = CertifiedIssuer::self_signed(params, key)?;
        Self::from_pem(&certified.pem(), &key_pem)
    }

    /// A CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let not_after = OffsetDateTime::from_unix_timestamp(not_after_of_pem(cert_pem)?)
            .map_err(|e| CertError::Parse(e.to_string()))?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            not_after,
        })
    }

    pub fn pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A serving certificate for `req`'s names, valid `req.days`.
    pub fn issue(&self, req: &CertRequest) -> Result<(String, String), CertError> {
        self.issue_valid_for(req, Duration::days(req.days))
    }

    /// A serving certificate for `req`'s names, signed by this CA, valid for
    /// `validity` but never past the CA; returns certificate and key, PEM.
    pub fn issue_valid_for(
        &self,
        req: &CertRequest,
        validity: Duration,
    ) -> Result<(String, String), CertError> {
        let names = req.dns_names();
        if names.is_empty() && req.ips.is_empty() {
            return Err(CertError::NoNames);
        }
        let now = OffsetDateTime::now_utc();
        let mut leaf = CertificateParams::new(names.clone())?;
        for ip in &req.ips {
            leaf.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let common_name = names
            .first()
            .cloned()
            .unwrap_or_else(|| req.ips[0].to_string());
        leaf.distinguished_name
            .push(DnType::CommonName, common_name);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.not_before = now - Duration::hours(1);
        leaf.not_after = (now + validity).min(self.not_after);
        // Names the CA's key: clients and people can tell which CA signed it.
        leaf.use_authority_key_identifier_extension = true;
        let leaf_key = KeyPair::generate()?;
        let cert = leaf.signed_by(&leaf_key, &self.issuer)?;
        Ok((cert.pem(), leaf_key.serialize_pem()))
    }
}

/// notAfter of the first certificate in `pem`, Unix seconds.
pub fn not_after_of_pem(pem: &str) -> Result<i64, CertError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| CertError::Parse("no certificate in PEM".into()))?
        .map_err(|e| CertError::Parse(e.to_string()))?;
    not_after(&der).map_err(CertError::Parse)
}

/// notAfter of a DER certificate, Unix seconds; the parser's error.
pub fn not_after(der: &rustls_pki_types::CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

/// A new CA (valid ten times as long as the serving certificate) and a
/// serving certificate signed by it.
pub fn generate(req: &CertRequest) -> Result<CertBundle, CertError> {
    if req.dns_names().is_empty() && req.ips.is_empty() {
        return Err(CertError::NoNames);
    }
    let ca = CertificateAuthority::generate(req.days * 10)?;
    let (cert_pem, key_pem) = ca.issue(req)?;
    Ok(CertBundle {
        ca_pem: ca.pem(),
        cert_pem,
        key_pem,
    })
}

/// Whether `dir` holds a serving certificate and its key (`tls.crt`,
/// `tls.key`), whatever they hold: loading checks them.
pub fn pair_exists(dir: &Path) -> bool {
    dir.join(CERT_FILE).exists() && dir.join(KEY_FILE).exists()
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write(bundle: &CertBundle, dir: &Path) -> Result<(), CertError> {
    let err = |p: &Path, e| CertError::Write(p.display().to_string(), e);
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    for (name, content, private) in [
        (CA_FILE, &bundle.ca_pem, false),
        (CERT_FILE, &bundle.cert_pem, false),
        (KEY_FILE, &bundle.key_pem, true),
    ] {
        let path = dir.join(name);
        write_file(&path, content.as_bytes(), private).map_err(|e| err(&path, e))?;
    }
    Ok(())
}

fn write_file(path: &Path, content: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    options.open(path)?.write_all(content)
}
