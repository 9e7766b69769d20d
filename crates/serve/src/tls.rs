//! The serving certificate: load, validate, and hot-swap.
//!
//! Layer: adapter (files → rustls). A new pair is used only if it parses, the
//! key matches the certificate (rustls checks), and it has not expired;
//! otherwise the pair in use keeps serving. Only new connections see a new
//! certificate, so open connections are never broken.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::certs::{CERT_FILE, KEY_FILE};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: no certificate in PEM")]
    NoCertificate(String),
    #[error("{0}: invalid PEM: {1}")]
    Pem(String, String),
    #[error("{0}: certificate cannot be parsed: {1}")]
    Certificate(String, String),
    #[error("{0}: certificate expired")]
    Expired(String),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA refused: {0}")]
    ClientCa(String),
}

/// Where the serving certificate and the optional client CA live.
#[derive(Debug, Clone)]
pub struct TlsSource {
    pub cert_dir: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// A validated server config and what the metrics report about it.
pub struct LoadedTls {
    pub config: Arc<ServerConfig>,
    /// notAfter of the leaf certificate, Unix seconds.
    pub not_after: i64,
}

impl TlsSource {
    pub fn cert_path(&self) -> PathBuf {
        self.cert_dir.join(CERT_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.cert_dir.join(KEY_FILE)
    }

    /// Changes when the certificate, key or client CA files change.
    pub fn fingerprint(&self) -> Option<u64> {
        let (cert, key) = (self.cert_path(), self.key_path());
        let mut paths = vec![cert.as_path(), key.as_path()];
        paths.extend(self.client_ca.as_deref());
        crate::watch::fingerprint(&paths)
    }

    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        let cert_path = self.cert_path();
        let key_path = self.key_path();
        self.from_pem(
            &read(&cert_path)?,
            &read(&key_path)?,
            &cert_path.display().to_string(),
            &key_path.display().to_string(),
        )
    }

    /// Builds the server config from a PEM pair (files, or a Secret's data
    /// for self-managed certificates), with the same checks.
    pub fn from_pem(
        &self,
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_label: &str,
        key_label: &str,
    ) -> Result<LoadedTls, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem(cert_label.to_string(), e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert_label.to_string()))?;
        let not_after = crate::certs::not_after(leaf)
            .map_err(|e| TlsError::Certificate(cert_label.to_string(), e))?;
        if not_after < now_unix() {
            return Err(TlsError::Expired(cert_label.to_string()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError::Pem(key_label.to_string(), e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let ca_pem = read(ca_path)?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&ca_pem) {
                    let cert = cert
                        .map_err(|e| TlsError::Pem(ca_path.display().to_string(), e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        // with_single_cert refuses a key that does not match the certificate.
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(LoadedTls {
            config: Arc::new(config),
            not_after,
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
