//! Which network addresses detour may talk to when it copies images.
//!
//! Layer: adapter helper. A crafted image string or a registry's token realm
//! must not turn detour into a proxy for cloud metadata services or the
//! node's own loopback services. Every host name is resolved through
//! [`GuardedResolver`], which drops refused addresses (this also defeats DNS
//! rebinding: the check is on the address actually connected to), and
//! literal IP hosts are checked with [`AddressPolicy::check_host`] before a
//! request is built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Cloud metadata endpoints outside the link-local range.
const METADATA_V4: [Ipv4Addr; 2] = [
    // Alibaba Cloud ECS metadata.
    Ipv4Addr::new(100, 100, 100, 200),
    // Oracle Cloud (also link-local, listed for the message).
    Ipv4Addr::new(192, 0, 0, 192),
];
/// AWS IMDS over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback is refused unless the config allows it (tests, or a mirror
    /// on the node itself).
    pub allow_loopback: bool,
    /// The config key or flag that allows it, named in the refusal.
    pub loopback_setting: &'static str,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy {
            allow_loopback: false,
            loopback_setting: detour_core::mirror_settings::ALLOW_LOOPBACK_KEY,
        }
    }
}

impl AddressPolicy {
    /// Why `ip` is refused, or `None` when detour may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let loopback = || {
            format!(
                "a loopback address (set {} to permit it)",
                self.loopback_setting
            )
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                if METADATA_V4.contains(&v4) || v4 == Ipv4Addr::new(169, 254, 169, 254) {
                    Some("a cloud metadata address".into())
                } else if v4.is_link_local() {
                    Some("a link-local address".into())
                } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                    Some("not a unicast address".into())
                } else if v4.is_loopback() && !self.allow_loopback {
                    Some(loopback())
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if METADATA_V6.contains(&v6) {
                    Some("a cloud metadata address".into())
                } else if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    Some("a link-local address".into())
                } else if v6.is_unspecified() || v6.is_multicast() {
                    Some("not a unicast address".into())
                } else if v6.is_loopback() && !self.allow_loopback {
                    Some(loopback())
                } else {
                    None
                }
            }
        }
    }

    /// Checks a URL host that is an IP literal (names are checked at
    /// resolution). `host` is as in a URL: `[::1]` or `10.0.0.1`.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => match self.refusal(ip) {
                Some(why) => Err(format!("{host} is {why}")),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }

    /// A registry reached through a forward proxy: the proxy resolves its
    /// name, so detour checks first. An IP literal is checked as such; a name
    /// that resolves here to any refused address is refused; a name that
    /// does not resolve here (common behind a proxy) is left to the proxy.
    pub async fn check_proxied_target(&self, host: &str, port: u16) -> Result<(), String> {
        self.check_host(host)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let Ok(found) = tokio::net::lookup_host((bare, port)).await else {
            return Ok(());
        };
        for address in found {
            if let Some(why) = self.refusal(address.ip()) {
                return Err(format!("{host} resolves to {}, {why}", address.ip()));
            }
        }
        Ok(())
    }
}

/// Resolves names with the system resolver and drops refused addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub policy: AddressPolicy,
    /// Configured proxies: infrastructure, allowed wherever they are.
    pub exempt: Vec<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let exempt = self
            .exempt
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name.as_str()));
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if exempt {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.refusal(a.ip()) {
                    Some(why) => {
                        refused = Some(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| "no address".into());
                return Err(format!("{host} resolves only to refused addresses ({why})").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

impl GuardedResolver {
    pub fn shared(policy: AddressPolicy, exempt: Vec<String>) -> Arc<Self> {
        Arc::new(GuardedResolver { policy, exempt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_link_local_and_loopback_are_refused() {
        let strict = AddressPolicy::default();
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "fd00:ec2::254",
            "fe80::1",
            "127.0.0.1",
            "::1",
            "::ffff:169.254.169.254",
            "0.0.0.0",
        ] {
            assert!(strict.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert_eq!(strict.refusal(ip.parse().unwrap()), None, "{ip}");
        }
        let loose = AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        };
        assert_eq!(loose.refusal("127.0.0.1".parse().unwrap()), None);
        // The refusal names the setting of where the settings came from.
        let proxy = AddressPolicy {
            loopback_setting: "registry.allowLoopback",
            ..AddressPolicy::default()
        };
        assert_eq!(
            proxy.check_host("127.0.0.1").unwrap_err(),
            "127.0.0.1 is a loopback address (set registry.allowLoopback to permit it)"
        );
        assert!(strict
            .check_host("127.0.0.1")
            .unwrap_err()
            .contains("set mirror.allowLoopback"));
        assert!(loose.refusal("169.254.169.254".parse().unwrap()).is_some());
        assert!(strict.check_host("[::1]").is_err());
        assert!(strict.check_host("registry.example").is_ok());
    }

    #[tokio::test]
    async fn proxied_targets_are_checked_here_and_proxies_are_exempt() {
        let strict = AddressPolicy::default();
        assert!(strict
            .check_proxied_target("169.254.169.254", 80)
            .await
            .is_err());
        assert!(strict
            .check_proxied_target("[fd00:ec2::254]", 443)
            .await
            .is_err());
        let err = strict
            .check_proxied_target("localhost", 443)
            .await
            .unwrap_err();
        assert!(err.contains("resolves to"), "{err}");
        // Not resolvable here: the proxy resolves it.
        assert!(strict
            .check_proxied_target("registry.invalid", 443)
            .await
            .is_ok());
        let proxy_on_loopback = GuardedResolver {
            policy: strict,
            exempt: vec!["localhost".into()],
        };
        assert!(proxy_on_loopback
            .resolve("localhost".parse().unwrap())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let resolver = GuardedResolver {
            policy: AddressPolicy::default(),
            exempt: vec![],
        };
        let err = match resolver.resolve("localhost".parse().unwrap()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("localhost must be refused"),
        };
        assert!(err.contains("refused"), "{err}");
        let loose = GuardedResolver {
            policy: AddressPolicy {
                allow_loopback: true,
                ..AddressPolicy::default()
            },
            exempt: vec![],
        };
        let addrs: Vec<_> = loose
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
