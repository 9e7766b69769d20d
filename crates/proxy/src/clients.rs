//! Who may pull through the proxy, and how much at once.
//!
//! Layer: adapter helpers for [`super::http`]. Basic auth against an
//! htpasswd file of bcrypt entries (`htpasswd -B`, what distribution's
//! registry accepts too); a bcrypt check costs tens of milliseconds, so a
//! verified header is remembered (as a SHA-256 of it, never the password)
//! for a few minutes. The per-client limit counts requests in flight per
//! client address, including the time their bodies take to send.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const VERIFIED_FOR: Duration = Duration::from_secs(300);
const MAX_REMEMBERED: usize = 4096;

pub struct Htpasswd {
    users: HashMap<String, String>,
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: not user:hash", n + 1))?;
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(format!(
                    "line {}: user {user:?} has no bcrypt hash (create entries with htpasswd -B)",
                    n + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err("no users".into());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Whether an `Authorization` header carries a known user's password.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(header) = authorization else {
            return false;
        };
        let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, header.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified
                .get(&key)
                .is_some_and(|t| t.elapsed() < VERIFIED_FOR)
            {
                return true;
            }
        }
        let ok = Self::check(&self.users, header);
        if ok {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= MAX_REMEMBERED {
                verified.retain(|_, t| t.elapsed() < VERIFIED_FOR);
                if verified.len() >= MAX_REMEMBERED {
                    verified.clear();
                }
            }
            verified.insert(key, Instant::now());
        }
        ok
    }

    fn check(users: &HashMap<String, String>, header: &str) -> bool {
        let Some(encoded) = header.strip_prefix("Basic ").map(str::trim) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        users
            .get(user)
            .is_some_and(|hash| bcrypt::verify(password, hash).unwrap_or(false))
    }
}

/// Requests in flight per client address.
pub struct ClientLimit {
    per_client: usize,
    clients: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl ClientLimit {
    /// `per_client` 0: no limit.
    pub fn new(per_client: usize) -> ClientLimit {
        ClientLimit {
            per_client,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// A permit held while the request (and its body) is served; `None`
    /// when the client is at its limit. `Some(None)` when there is no limit.
    pub fn admit(&self, client: IpAddr) -> Option<Option<OwnedSemaphorePermit>> {
        if self.per_client == 0 {
            return Some(None);
        }
        let semaphore = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            if clients.len() > 4096 {
                // Forget idle clients.
                let limit = self.per_client;
                clients.retain(|_, s| s.available_permits() < limit);
            }
            clients
                .entry(client)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_client)))
                .clone()
        };
        semaphore.try_acquire_owned().ok().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_accepts_bcrypt_users_only() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let file = Htpasswd::parse(&format!("# users\nalice:{hash}\n")).unwrap();
        let header = |user: &str, password: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )
        };
        assert!(file.allows(Some(&header("alice", "s3cret"))));
        // Remembered, and still right.
        assert!(file.allows(Some(&header("alice", "s3cret"))));
        assert!(!file.allows(Some(&header("alice", "wrong"))));
        assert!(!file.allows(Some(&header("bob", "s3cret"))));
        assert!(!file.allows(Some("Bearer abc")));
        assert!(!file.allows(Some("Basic !!!")));
        assert!(!file.allows(None));
        let error = Htpasswd::parse("carol:{SHA}abc=\n").err().unwrap();
        assert!(error.contains("htpasswd -B"), "{error}");
        assert!(Htpasswd::parse("# nobody\n").is_err());
    }

    #[test]
    fn client_limit_counts_requests_in_flight_per_address() {
        let limit = ClientLimit::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.admit(a).unwrap();
        let _second = limit.admit(a).unwrap();
        assert!(limit.admit(a).is_none(), "third request of a refused");
        assert!(limit.admit(b).is_some(), "b has its own budget");
        drop(first);
        assert!(limit.admit(a).is_some(), "a finished request frees a slot");
        assert!(ClientLimit::new(0).admit(a).unwrap().is_none());
    }
}
