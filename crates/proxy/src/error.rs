//! Why the proxy could not answer, as the service and the blob fills tell
//! it and the HTTP layer maps it (one classification of upstream failures).
//!
//! Layer: pure.

use detour_registry::MirrorError;

/// Why a request could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The upstream has no such manifest, blob or repository.
    #[error("{0}")]
    NotFound(String),
    /// The upstream could not be reached or failed; worth retrying.
    #[error("upstream unavailable: {0}")]
    Unavailable(String),
    /// The upstream refused or answered something unusable.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The upstream's address is refused by the address guard.
    #[error("{0}")]
    Refused(String),
    #[error("cache: {0}")]
    Cache(String),
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
}

impl From<MirrorError> for ProxyError {
    fn from(e: MirrorError) -> Self {
        match &e {
            MirrorError::Status { status: 404, .. } => ProxyError::NotFound(e.to_string()),
            MirrorError::Refused(_) => ProxyError::Refused(e.to_string()),
            _ if e.is_retryable() => ProxyError::Unavailable(e.to_string()),
            _ => ProxyError::Upstream(e.to_string()),
        }
    }
}
