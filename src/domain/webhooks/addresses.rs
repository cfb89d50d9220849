//! Which receiver addresses webhooks may reach (SSRF protection).
//!
//! A webhook makes the server send requests to an address a program admin chose; without
//! these rules it could probe the server's own network, its database port or the cloud
//! metadata service. URLs are checked when saved and again at every delivery, after DNS
//! resolution (a name may point elsewhere by then), and redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use url::{Host, Url};

/// What an administrator allowed through the environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `REFERDESK_WEBHOOK_ALLOW_HTTP=1`: plain `http://` URLs too.
    pub allow_http: bool,
    /// `REFERDESK_WEBHOOK_ALLOW_PRIVATE=1`: loopback, private and link-local receivers too
    /// (on-premise receivers, tests).
    pub allow_private: bool,
}

/// Why an address may not be reached, or `None` when it may be.
pub fn forbidden_reason(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => forbidden_v4(v4),
            None => forbidden_v6(v6),
        },
    }
}

fn forbidden_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = address.octets();
    if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_private() {
        Some("a private address")
    } else if address.is_link_local() {
        // 169.254.0.0/16 holds the cloud metadata service (169.254.169.254).
        Some("a link-local or metadata address")
    } else if address.is_multicast() {
        Some("a multicast address")
    } else if address.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if address.is_broadcast() || a >= 240 {
        Some("a reserved address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (carrier-grade NAT) address")
    } else if a == 192 && b == 0 && address.octets()[2] == 0 {
        Some("a reserved address")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("a benchmarking address")
    } else {
        None
    }
}

fn forbidden_v6(address: Ipv6Addr) -> Option<&'static str> {
    let first = address.segments()[0];
    if address.is_loopback() {
        Some("a loopback address")
    } else if address.is_unspecified() {
        Some("an unspecified address")
    } else if address.is_multicast() {
        Some("a multicast address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if first & 0xfe00 == 0xfc00 {
        // Unique local addresses, the private range of IPv6 (and AWS's metadata fd00:ec2::254).
        Some("a private address")
    } else if first == 0x64 && address.segments()[1] == 0xff9b {
        // NAT64 embeds an IPv4 address that was not checked.
        Some("a NAT64 address")
    } else {
        None
    }
}

/// Checks a URL's form: absolute, `https` (or `http` when allowed), a host, no user info.
/// Returns the host and port to resolve.
pub fn check_form(raw: &str, policy: Policy) -> Result<Url, String> {
    let url = Url::parse(raw.trim())
        .map_err(|_| "Enter a full URL, e.g. https://example.com/webhooks.".to_string())?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        "http" => {
            return Err("The URL must start with https:// (plain http:// is allowed only when the server sets REFERDESK_WEBHOOK_ALLOW_HTTP=1).".into())
        }
        _ => return Err("The URL must start with https://.".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("The URL may not carry a user name or password.".into());
    }
    if url.host().is_none() {
        return Err("The URL needs a host name.".into());
    }
    Ok(url)
}

/// The message for a receiver address the policy refuses.
pub fn refusal(address: IpAddr, reason: &str) -> String {
    format!(
        "The receiver's address {address} is {reason}; webhooks may not reach it \
         (REFERDESK_WEBHOOK_ALLOW_PRIVATE=1 allows it for on-premise receivers)."
    )
}

/// Checks resolved addresses: every one must be allowed.
pub fn check_addresses(addresses: &[SocketAddr], policy: Policy) -> Result<(), String> {
    if addresses.is_empty() {
        return Err("The receiver's host name does not resolve to any address.".into());
    }
    if policy.allow_private {
        return Ok(());
    }
    for address in addresses {
        if let Some(reason) = forbidden_reason(address.ip()) {
            return Err(refusal(address.ip(), reason));
        }
    }
    Ok(())
}

/// The save-time check: the form, then the addresses the host resolves to now (blocking
/// DNS). Returns the URL as it will be stored.
pub fn check_url(raw: &str, policy: Policy) -> Result<String, String> {
    let url = check_form(raw, policy)?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(v4)) => vec![SocketAddr::new(IpAddr::V4(v4), port)],
        Some(Host::Ipv6(v6)) => vec![SocketAddr::new(IpAddr::V6(v6), port)],
        Some(Host::Domain(name)) => (name, port)
            .to_socket_addrs()
            .map_err(|_| format!("The host name {name} could not be resolved."))?
            .collect(),
        None => Vec::new(),
    };
    check_addresses(&addresses, policy)?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_link_local_and_metadata_are_refused() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = address.parse().unwrap();
            assert!(forbidden_reason(ip).is_some(), "{address} should be refused");
        }
        for address in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            let ip: IpAddr = address.parse().unwrap();
            assert_eq!(forbidden_reason(ip), None, "{address} should be allowed");
        }
    }

    #[test]
    fn only_https_unless_http_is_allowed() {
        let strict = Policy::default();
        assert!(check_form("http://example.com/hook", strict).is_err());
        assert!(check_form("https://example.com/hook", strict).is_ok());
        assert!(check_form("ftp://example.com/hook", strict).is_err());
        assert!(check_form("https://user:pw@example.com/hook", strict).is_err());
        let http = Policy {
            allow_http: true,
            ..strict
        };
        assert!(check_form("http://example.com/hook", http).is_ok());
    }
}
