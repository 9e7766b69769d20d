//! HTTP(S) forward proxies for registry traffic: which request goes through
//! which proxy, from `mirror.proxy` or, without it, `HTTPS_PROXY`,
//! `HTTP_PROXY` and `NO_PROXY` as every client reads them.
//!
//! Layer: part of the registry adapter. The proxy itself is configured
//! infrastructure (it may be on loopback); the registries behind it are still
//! checked by the address guard before anything is sent (see
//! [`super::safety::AddressPolicy::check_proxied_target`]), since the proxy
//! resolves their names, not detour. Credentials are never printed: `Debug`
//! redacts them and URLs are kept without user info.

use std::fmt;
use std::path::Path;

use reqwest::Url;

/// Where proxied requests go, and which hosts bypass the proxy.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// For `http://` registries.
    pub http: Option<Url>,
    /// For `https://` registries (tunnelled with CONNECT).
    pub https: Option<Url>,
    /// `NO_PROXY` entries: `host`, `.domain` / `domain` (and its subdomains),
    /// `host:port`, or `*`.
    pub no_proxy: Vec<String>,
    /// Basic credentials for the proxy.
    pub auth: Option<(String, String)>,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("http", &self.http.as_ref().map(Url::as_str))
            .field("https", &self.https.as_ref().map(Url::as_str))
            .field("no_proxy", &self.no_proxy)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A proxy URL: `http://host:port` (a bare `host:port` means http), with
/// any `user:password@` moved into credentials.
fn parse_proxy(text: &str) -> Result<(Url, Option<(String, String)>), String> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| format!("proxy URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "proxy URL: scheme {} is not http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("proxy URL has no host".into());
    }
    // The URL holds user info percent-encoded (RFC 3986 §3.2.1: a password
    // with `@` or `:` can be written no other way); the proxy wants it as
    // the user typed it, as curl and Go's clients send it.
    let decoded = |part: &str, what: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("proxy URL: the {what} is not UTF-8 once percent-decoded"))
    };
    let auth = match url.username() {
        "" => None,
        user => Some((
            decoded(user, "user name")?,
            decoded(url.password().unwrap_or_default(), "password")?,
        )),
    };
    // Credentials travel only in Proxy-Authorization, never in the URL.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, auth))
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .filter(|v| !v.trim().is_empty())
}

impl ProxySettings {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY` (either case). An unusable
    /// value is an error rather than a silent direct connection.
    pub fn from_env() -> Result<Self, String> {
        let mut settings = ProxySettings::default();
        if let Some(v) = env(&["HTTPS_PROXY", "https_proxy"]) {
            let (url, auth) = parse_proxy(&v).map_err(|e| format!("HTTPS_PROXY: {e}"))?;
            settings.https = Some(url);
            settings.auth = settings.auth.or(auth);
        }
        if let Some(v) = env(&["HTTP_PROXY", "http_proxy"]) {
            let (url, auth) = parse_proxy(&v).map_err(|e| format!("HTTP_PROXY: {e}"))?;
            settings.http = Some(url);
            settings.auth = settings.auth.or(auth);
        }
        if let Some(v) = env(&["NO_PROXY", "no_proxy"]) {
            settings.no_proxy = v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        Ok(settings)
    }

    /// `mirror.proxy` for every registry, with `mirror.noProxy` and the
    /// credentials in `credentials_file` (`user:password`, one line).
    pub fn configured(
        proxy: &str,
        no_proxy: &[String],
        credentials_file: Option<&Path>,
    ) -> Result<Self, String> {
        let (url, mut auth) = parse_proxy(proxy)?;
        if let Some(path) = credentials_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("proxy credentials {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or_default().trim();
            let (user, password) = line.split_once(':').ok_or_else(|| {
                format!(
                    "proxy credentials {}: expected user:password",
                    path.display()
                )
            })?;
            auth = Some((user.to_string(), password.to_string()));
        }
        Ok(ProxySettings {
            http: Some(url.clone()),
            https: Some(url),
            no_proxy: no_proxy.to_vec(),
            auth,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// The proxy for a request to `url`, or `None` to connect directly.
    pub fn proxy_for(&self, url: &Url) -> Option<&Url> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port_or_known_default();
        let bypass = self.no_proxy.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = match entry.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') => (n.to_string(), p.parse::<u16>().ok()),
                _ => (entry.clone(), None),
            };
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            let name = name.trim_start_matches("*.").trim_start_matches('.');
            let host = host.to_ascii_lowercase();
            host == name || host.ends_with(&format!(".{name}"))
        });
        (!bypass).then_some(proxy)
    }

    /// The proxies' host names, which the address guard lets through.
    pub fn proxy_hosts(&self) -> Vec<String> {
        [&self.http, &self.https]
            .into_iter()
            .flatten()
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn no_proxy_matches_hosts_domains_ports_and_star() {
        let p = ProxySettings {
            https: Some(url("http://proxy.internal:3128")),
            http: Some(url("http://proxy.internal:3128")),
            no_proxy: vec![
                "registry.local".into(),
                ".corp.example".into(),
                "10.1.2.3".into(),
                "harbor.example:5000".into(),
            ],
            auth: None,
        };
        assert!(p.proxy_for(&url("https://quay.io/v2/")).is_some());
        assert!(p.proxy_for(&url("https://registry.local/v2/")).is_none());
        assert!(p.proxy_for(&url("https://a.corp.example/v2/")).is_none());
        assert!(p.proxy_for(&url("https://corp.example/v2/")).is_none());
        assert!(p.proxy_for(&url("https://notcorp.example/v2/")).is_some());
        assert!(p.proxy_for(&url("http://10.1.2.3:5000/v2/")).is_none());
        assert!(p
            .proxy_for(&url("https://harbor.example:5000/v2/"))
            .is_none());
        assert!(p.proxy_for(&url("https://harbor.example/v2/")).is_some());
        let all = ProxySettings {
            no_proxy: vec!["*".into()],
            ..p.clone()
        };
        assert!(all.proxy_for(&url("https://quay.io/v2/")).is_none());
        assert_eq!(p.proxy_hosts(), vec!["proxy.internal", "proxy.internal"]);
    }

    #[test]
    fn credentials_leave_the_url_and_are_redacted() {
        let (u, auth) = parse_proxy("http://alice:s3cret@proxy:3128").unwrap();
        assert_eq!(u.as_str(), "http://proxy:3128/");
        assert_eq!(auth, Some(("alice".into(), "s3cret".into())));
        let settings = ProxySettings {
            https: Some(u),
            auth,
            ..ProxySettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        assert_eq!(
            parse_proxy("proxy:3128").unwrap().0.as_str(),
            "http://proxy:3128/"
        );
        assert!(parse_proxy("socks5://proxy:1080").is_err());
        // Reserved characters are percent-encoded in the URL and sent decoded.
        let (_, auth) = parse_proxy("http://us%40er:p%40ss%3Aw%25rd@proxy:3128").unwrap();
        assert_eq!(auth, Some(("us@er".into(), "p@ss:w%rd".into())));
        let (_, auth) = parse_proxy("http://bob@proxy:3128").unwrap();
        assert_eq!(auth, Some(("bob".into(), String::new())));
        assert!(parse_proxy("http://bob:%FF@proxy:3128").is_err());
        assert!(parse_proxy("http://").is_err());
    }
}
