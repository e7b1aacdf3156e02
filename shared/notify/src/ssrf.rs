//! Keeps webhook deliveries away from the platform's own network: only public addresses may
//! be reached. A URL is checked when an endpoint is saved, and every connection resolves its
//! host through [`GuardedResolver`], so a name that later resolves to a private address (DNS
//! rebinding) is refused at connect time too. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What a deployment may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TargetPolicy {
    /// Dev mode only: loopback targets (a receiver on the developer's machine) and plain http.
    pub dev_mode: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    #[error("`{0}` is not a URL")]
    NotAUrl(String),
    #[error("webhook URLs must use https")]
    NotHttps,
    #[error("webhook URLs may not carry credentials; use the endpoint secret")]
    Credentials,
    #[error("webhook URL has no host")]
    NoHost,
    #[error("write the URL as a browser reads it: `{normal}`")]
    NotNormal { normal: String },
    #[error("{host} resolves to {ip}, a {reason} address")]
    Forbidden {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("{host} does not resolve: {reason}")]
    Unresolvable { host: String, reason: String },
}

/// Why `ip` may not be a webhook target, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr, policy: TargetPolicy) -> Option<&'static str> {
    if policy.dev_mode && ip.is_loopback() {
        return None;
    }
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "unspecified",
        (127, ..) => "loopback",
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => "private",
        // 169.254.169.254 is the instance metadata service.
        (169, 254, _) => "link-local",
        (100, 64..=127, _) => "carrier-grade NAT",
        (192, 0, 0) => "IETF protocol assignment",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return forbidden_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    // 6to4 (2002::/16) reaches the IPv4 address in its second and third groups.
    if segments[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(segments[1]) << 16) | u32::from(segments[2]));
        if let Some(reason) = forbidden_v4(v4) {
            return Some(reason);
        }
    }
    Some(match segments[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "unique-local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // Teredo hides its client's IPv4 address; webhooks have no business there.
        0x2001 if segments[1] == 0x0000 => "Teredo tunnel",
        // Local-use NAT64 translates to whatever the operator's network routes.
        0x0064 if segments[1] == 0xff9b && segments[2] == 0x0001 => "local-use NAT64",
        // The rest of ::/8 (IPv4-compatible and other reserved forms).
        0x0000..=0x00ff => "reserved",
        _ => return None,
    })
}

/// Checks a URL's shape and, when its host is an address, the address. Host names are checked
/// when they are resolved, by [`GuardedResolver`].
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<Url, SsrfError> {
    let url = Url::parse(raw).map_err(|_| SsrfError::NotAUrl(raw.to_owned()))?;
    // What is checked is what will be requested: a URL a browser would rewrite (backslashes,
    // spaces, odd case or encodings) could mean one host here and another there.
    let normal = url.as_str();
    if normal != raw && normal != format!("{raw}/") {
        return Err(SsrfError::NotNormal {
            normal: normal.to_owned(),
        });
    }
    match url.scheme() {
        "https" => {}
        "http" if policy.dev_mode => {}
        _ => return Err(SsrfError::NotHttps),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Credentials);
    }
    let host = url.host_str().ok_or(SsrfError::NoHost)?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>()
        && let Some(reason) = forbidden(ip, policy)
    {
        return Err(SsrfError::Forbidden {
            host: host.to_owned(),
            ip,
            reason,
        });
    }
    Ok(url)
}

/// Name resolution, replaceable in tests (the system resolver cannot be told that a name
/// points at 10.0.0.5).
pub trait Lookup: Send + Sync {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|addr| addr.ip())
                .collect())
        })
    }
}

/// Resolves a host and refuses it unless every address it resolves to is allowed (one
/// private answer among public ones is enough to refuse: the connection could use it).
pub async fn resolve(
    host: &str,
    policy: TargetPolicy,
    lookup: &dyn Lookup,
) -> Result<Vec<IpAddr>, SsrfError> {
    let ips = lookup
        .lookup(host.to_owned())
        .await
        .map_err(|e| SsrfError::Unresolvable {
            host: host.to_owned(),
            reason: e.to_string(),
        })?;
    if ips.is_empty() {
        return Err(SsrfError::Unresolvable {
            host: host.to_owned(),
            reason: "no addresses".into(),
        });
    }
    for &ip in &ips {
        if let Some(reason) = forbidden(ip, policy) {
            return Err(SsrfError::Forbidden {
                host: host.to_owned(),
                ip,
                reason,
            });
        }
    }
    Ok(ips)
}

/// The HTTP client's resolver: every connection's host goes through [`resolve`].
pub struct GuardedResolver {
    pub policy: TargetPolicy,
    pub lookup: Arc<dyn Lookup>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, lookup) = (self.policy, Arc::clone(&self.lookup));
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = resolve(&host, policy, lookup.as_ref()).await?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    const PROD: TargetPolicy = TargetPolicy { dev_mode: false };
    const DEV: TargetPolicy = TargetPolicy { dev_mode: true };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn urls_a_browser_would_rewrite_are_refused() {
        for (raw, normal) in [
            (
                "https://hooks.example.com\\services\\T0",
                "https://hooks.example.com/services/T0",
            ),
            ("https://HOOKS.example.com/x", "https://hooks.example.com/x"),
            (
                "https://hooks.example.com/a b",
                "https://hooks.example.com/a%20b",
            ),
            (
                "https://hooks.example.com/a/../b",
                "https://hooks.example.com/b",
            ),
            ("https://0x7f.1/x", "https://127.0.0.1/x"),
        ] {
            assert!(
                matches!(check_url(raw, PROD), Err(SsrfError::NotNormal { normal: n }) if n == normal),
                "{raw}: {:?}",
                check_url(raw, PROD)
            );
        }
        for fine in [
            "https://hooks.slack.com/services/T000/B000/XXXX",
            "https://hooks.example.com",
            "https://hooks.example.com/x?token=abc#frag",
        ] {
            assert!(check_url(fine, PROD).is_ok(), "{fine}");
        }
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for (addr, reason) in [
            ("10.1.2.3", "private"),
            ("172.31.255.1", "private"),
            ("192.168.0.10", "private"),
            ("127.0.0.1", "loopback"),
            ("127.8.8.8", "loopback"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.100.100.200", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2001:db8::1", "documentation"),
            ("2002:a00:1::1", "private"),
            ("2002:7f00:1::1", "loopback"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo tunnel"),
            ("64:ff9b:1::a00:1", "local-use NAT64"),
        ] {
            assert_eq!(forbidden(ip(addr), PROD), Some(reason), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "2002:808:808::1",
        ] {
            assert_eq!(forbidden(ip(public), PROD), None, "{public}");
        }
    }

    #[test]
    fn dev_mode_allows_loopback_only() {
        assert_eq!(forbidden(ip("127.0.0.1"), DEV), None);
        assert_eq!(forbidden(ip("::1"), DEV), None);
        assert_eq!(forbidden(ip("10.0.0.1"), DEV), Some("private"));
        assert_eq!(forbidden(ip("169.254.169.254"), DEV), Some("link-local"));
    }

    #[test]
    fn urls_are_checked_before_they_are_saved() {
        assert!(check_url("https://hooks.slack.com/services/T/B/X", PROD).is_ok());
        assert_eq!(
            check_url("http://example.com/", PROD),
            Err(SsrfError::NotHttps)
        );
        assert!(check_url("http://127.0.0.1:8080/", DEV).is_ok());
        assert_eq!(
            check_url("ftp://example.com/", DEV),
            Err(SsrfError::NotHttps)
        );
        assert_eq!(
            check_url("https://user:pw@example.com/", PROD),
            Err(SsrfError::Credentials)
        );
        assert!(matches!(
            check_url("https://169.254.169.254/latest/meta-data", PROD),
            Err(SsrfError::Forbidden {
                reason: "link-local",
                ..
            })
        ));
        assert!(matches!(
            check_url("https://[::1]:8443/", PROD),
            Err(SsrfError::Forbidden {
                reason: "loopback",
                ..
            })
        ));
        assert!(matches!(
            check_url("https://[fc00::5]/", PROD),
            Err(SsrfError::Forbidden {
                reason: "unique-local",
                ..
            })
        ));
        assert!(matches!(
            check_url("not a url", PROD),
            Err(SsrfError::NotAUrl(_))
        ));
    }

    struct FakeDns(HashMap<&'static str, Vec<IpAddr>>);

    impl Lookup for FakeDns {
        fn lookup(
            &self,
            host: String,
        ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let answer = self.0.get(host.as_str()).cloned();
            Box::pin(async move { answer.ok_or_else(|| std::io::Error::other("NXDOMAIN")) })
        }
    }

    #[tokio::test]
    async fn names_resolving_to_forbidden_addresses_are_refused() {
        let dns = FakeDns(HashMap::from([
            ("hooks.example.com", vec![ip("203.0.114.7")]),
            ("internal.example.com", vec![ip("10.0.0.5")]),
            ("metadata.example.com", vec![ip("169.254.169.254")]),
            ("mixed.example.com", vec![ip("8.8.8.8"), ip("fd00::1")]),
        ]));
        assert!(resolve("hooks.example.com", PROD, &dns).await.is_ok());
        for (host, reason) in [
            ("internal.example.com", "private"),
            ("metadata.example.com", "link-local"),
            ("mixed.example.com", "unique-local"),
        ] {
            let err = resolve(host, PROD, &dns).await.unwrap_err();
            assert!(
                matches!(&err, SsrfError::Forbidden { reason: r, .. } if *r == reason),
                "{host}: {err}"
            );
        }
        assert!(matches!(
            resolve("nowhere.example.com", PROD, &dns).await,
            Err(SsrfError::Unresolvable { .. })
        ));
        // The real resolver: localhost is loopback.
        let err = resolve("localhost", PROD, &SystemLookup).await.unwrap_err();
        assert!(
            matches!(
                err,
                SsrfError::Forbidden {
                    reason: "loopback",
                    ..
                }
            ),
            "{err}"
        );
        assert!(resolve("localhost", DEV, &SystemLookup).await.is_ok());
    }
}
