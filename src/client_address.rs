//! Where a request comes from, for both faces (the dashboard and the API).

use std::net::{IpAddr, SocketAddr};

use actix_web::web;
use ipnet::IpNet;

use crate::AppState;

/// The address a request comes from, for the audit log and the throttles of both faces:
/// the TCP peer, unless the peer is a trusted reverse proxy (`REFERDESK_TRUSTED_PROXIES`);
/// then the client that proxy names in `X-Forwarded-For`.
pub fn client_address(req: &actix_web::HttpRequest) -> String {
    let Some(peer) = req.peer_addr() else {
        return "unknown".to_string();
    };
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.config.trusted_proxies.as_slice())
        .unwrap_or_default();
    let forwarded: Vec<String> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .collect();
    forwarded_client(peer.ip(), &forwarded, trusted).to_string()
}

/// Walks `X-Forwarded-For` from the right (each proxy appends the address it saw) while
/// the hops are trusted proxies: the first untrusted hop is the client. Anything left of it
/// was written by the client and may be forged; an unreadable hop ends the walk at the last
/// address a trusted proxy vouched for.
fn forwarded_client(peer: IpAddr, forwarded_for: &[String], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| trusted.iter().any(|net| net.contains(address));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = forwarded_for.iter().flat_map(|value| value.split(',')).collect();
    for hop in hops.into_iter().rev() {
        let Some(address) = parse_hop(hop) else {
            return client;
        };
        client = address;
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`[::1]:443`, `1.2.3.4:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .or_else(|_| {
            hop.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        })
        .ok()
        .map(|address| address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_client_is_believed_only_from_a_trusted_proxy() {
        let proxies = crate::config::parse_trusted_proxies("127.0.0.1, 10.0.0.0/8").unwrap();
        let at = |peer: &str, forwarded: &[&str], trusted: &[IpNet]| {
            let forwarded: Vec<String> = forwarded.iter().map(|value| value.to_string()).collect();
            forwarded_client(peer.parse().unwrap(), &forwarded, trusted).to_string()
        };
        // No trusted proxies configured: the header is ignored.
        assert_eq!(at("127.0.0.1", &["203.0.113.7"], &[]), "127.0.0.1");
        // A peer that is not a trusted proxy: ignored too.
        assert_eq!(at("198.51.100.1", &["203.0.113.7"], &proxies), "198.51.100.1");
        // From a trusted proxy: the rightmost hop that is not a trusted proxy.
        assert_eq!(at("127.0.0.1", &["203.0.113.7"], &proxies), "203.0.113.7");
        assert_eq!(
            at("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.2.3"], &proxies),
            "203.0.113.7",
            "a forged hop left of the client is never believed"
        );
        assert_eq!(
            at("127.0.0.1", &["6.6.6.6", "203.0.113.7"], &proxies),
            "203.0.113.7"
        );
        assert_eq!(at("127.0.0.1", &["[2001:db8::7]:443"], &proxies), "2001:db8::7");
        assert_eq!(at("127.0.0.1", &["::ffff:203.0.113.7"], &proxies), "203.0.113.7");
        // Garbage where a proxy's hop should be: the last vouched-for address.
        assert_eq!(at("127.0.0.1", &["203.0.113.7, junk"], &proxies), "127.0.0.1");
        assert_eq!(at("127.0.0.1", &["junk, 10.1.2.3"], &proxies), "10.1.2.3");
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(at("127.0.0.1", &[], &proxies), "127.0.0.1");
        assert_eq!(at("::ffff:127.0.0.1", &["203.0.113.7"], &proxies), "203.0.113.7");
    }
}
