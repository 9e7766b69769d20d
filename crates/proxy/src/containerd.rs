//! `detour containerd-config`: containerd `hosts.toml` files that send a
//! node's pulls of each upstream through the proxy.
//!
//! Layer: pure text generation, plus one function that writes the files.
//! containerd looks up `<config_path>/<registry host>/hosts.toml`, tries
//! each `[host]` in order and then `server` (the upstream itself), and asks a
//! mirror host for `/v2/<repository>/…?ns=<registry host>`, which the proxy
//! routes by `ns`. The Pod's image stays as written; only the node pulls
//! from elsewhere.

use std::path::{Path, PathBuf};

use super::config::ProxyConfig;
use detour_core::reference::DOCKER_HUB;

/// The `hosts.toml` of one upstream.
pub fn hosts_toml(upstream: &str, mirror: &str, ca: Option<&Path>, plain_http: bool) -> String {
    let server = if upstream == DOCKER_HUB {
        "https://registry-1.docker.io".to_string()
    } else if plain_http {
        format!("http://{upstream}")
    } else {
        format!("https://{upstream}")
    };
    let mut out = format!(
        "# Written by `detour containerd-config`: pull {upstream} through the detour proxy,\n\
         # and from {upstream} itself when the proxy cannot answer.\n\
         server = {}\n\n[host.{}]\n  capabilities = [\"pull\", \"resolve\"]\n",
        toml_string(&server),
        toml_string(mirror.trim_end_matches('/')),
    );
    if let Some(ca) = ca {
        out.push_str(&format!(
            "  ca = {}\n",
            toml_string(&ca.display().to_string())
        ));
    }
    out
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks the proxy URL that nodes will use.
pub fn check_mirror_url(mirror: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(mirror).map_err(|e| format!("--mirror {mirror:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!("--mirror {mirror:?}: write https://host[:port]"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "--mirror {mirror:?}: no path: containerd adds /v2/ and the proxy routes by ?ns="
        ));
    }
    Ok(())
}

/// Writes `<dir>/<upstream>/hosts.toml` for every upstream of the config;
/// returns the files written.
pub fn write_all(
    config: &ProxyConfig,
    mirror: &str,
    ca: Option<&Path>,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    check_mirror_url(mirror)?;
    let mut written = Vec::new();
    for upstream in &config.upstreams {
        let host = upstream.host.to_ascii_lowercase();
        let plain = config
            .registry
            .plain_http
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host));
        let target = dir.join(&host);
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let file = target.join("hosts.toml");
        std::fs::write(&file, hosts_toml(&host, mirror, ca, plain))
            .map_err(|e| format!("{}: {e}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_points_at_its_api_host_and_the_mirror_first() {
        let text = hosts_toml(
            "docker.io",
            "https://mirror.example.com:5443/",
            Some(Path::new("/etc/detour/ca.crt")),
            false,
        );
        assert!(
            text.contains("server = \"https://registry-1.docker.io\"\n"),
            "{text}"
        );
        assert!(
            text.contains("[host.\"https://mirror.example.com:5443\"]\n"),
            "{text}"
        );
        assert!(
            text.contains("capabilities = [\"pull\", \"resolve\"]"),
            "{text}"
        );
        assert!(text.contains("ca = \"/etc/detour/ca.crt\""), "{text}");
        let plain = hosts_toml("registry.local:5000", "http://m:5000", None, true);
        assert!(
            plain.contains("server = \"http://registry.local:5000\""),
            "{plain}"
        );
        assert!(!plain.contains("ca ="), "{plain}");
    }

    #[test]
    fn mirror_urls_without_paths_only() {
        assert!(check_mirror_url("https://mirror.example.com:5443").is_ok());
        assert!(check_mirror_url("https://mirror.example.com/v2").is_err());
        assert!(check_mirror_url("ftp://mirror").is_err());
        assert!(check_mirror_url("mirror.example.com").is_err());
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
