//! Registry credentials and authentication challenges.
//!
//! Layer: pure core plus one file reader. Credentials come from Docker
//! `config.json` files (what a `kubernetes.io/dockerconfigjson` Secret
//! mounts) and are matched by registry host. [`Credentials`] never prints
//! its secret: `Debug` is redacted, and nothing else formats it.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;

use super::MirrorError;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization: Basic` value.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// Credentials by registry host, as written in image references
/// (`docker.io`, `registry.example:5000`).
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    by_host: HashMap<String, Credentials>,
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl CredentialStore {
    /// Reads Docker `config.json` files; later files win for the same host.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, MirrorError> {
        let mut store = CredentialStore::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read(path).map_err(|e| {
                MirrorError::Credentials(format!("{}: cannot read: {e}", path.display()))
            })?;
            store
                .add_docker_config(&text)
                .map_err(|why| MirrorError::Credentials(format!("{}: {why}", path.display())))?;
        }
        Ok(store)
    }

    /// Adds the `auths` of one Docker config file. Errors never quote values.
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<(), String> {
        let config: DockerConfig = serde_json::from_slice(json)
            .map_err(|e| format!("not a Docker config.json (line {})", e.line()))?;
        for (key, entry) in config.auths {
            let host = normalize_host(&key);
            let credentials = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| format!("auths[{host:?}].auth is not base64"))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| format!("auths[{host:?}].auth is not UTF-8"))?;
                    let (user, pass) = text
                        .split_once(':')
                        .ok_or_else(|| format!("auths[{host:?}].auth is not user:password"))?;
                    Credentials::new(user, pass)
                }
                (_, Some(user), Some(pass)) => Credentials::new(user, pass),
                _ => continue,
            };
            self.by_host.insert(host, credentials);
        }
        Ok(())
    }

    pub fn insert(&mut self, host: &str, credentials: Credentials) {
        self.by_host.insert(normalize_host(host), credentials);
    }

    pub fn get(&self, host: &str) -> Option<&Credentials> {
        self.by_host.get(&normalize_host(host))
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://r.example:5000/x` → `r.example:5000`.
pub fn normalize_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(params);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `k="v",k2=v2` with commas allowed inside quotes (scopes contain them).
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn docker_config_hosts_are_normalised_and_secrets_redacted() {
        let mut store = CredentialStore::default();
        let json = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("alice:s3cret")},
            "http://Registry.Example:5000": {"username": "bob", "password": "hunter2"},
            "empty.example": {}
        }});
        store
            .add_docker_config(json.to_string().as_bytes())
            .unwrap();
        let hub = store.get("docker.io").unwrap();
        assert_eq!(hub.username, "alice");
        assert_eq!(
            hub.basic_header(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
            )
        );
        assert!(store.get("registry.example:5000").is_some());
        assert!(store.get("empty.example").is_none());
        let shown = format!("{store:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        let bad = store.add_docker_config(br#"{"auths": {"x": {"auth": "%%%"}}}"#);
        assert!(bad.unwrap_err().contains("not base64"));
    }
}
