//! The client's address, for the failed-login limits and the audit trail:
//! the connection's peer, or, when that peer is a proxy the operator
//! trusts (`[http] trusted_proxies`), the address those proxies reported
//! in `X-Forwarded-For`.
//!
//! The header is read from the right: each trusted proxy appends the
//! address it received from, so the rightmost entry that is not a trusted
//! proxy is the client. Entries to its left were written by the client
//! and are never believed. A peer that is not trusted is the client
//! whatever its headers say, so a client cannot choose its own address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// The address a request came from, as this module decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Trust `networks` (none: the peer is always the client).
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks.into())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request from `peer` with `headers`; an IPv4
    /// address as itself, also when a dual-stack listener saw it mapped
    /// (`::ffff:192.0.2.1`), so that the audit trail records one client
    /// one way, through a proxy or not.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For header, in order, as one list; walked from
        // its right end for as long as the hops are trusted proxies.
        // Split as bytes: a byte a client wrote that is not text spoils its
        // own entry only, not the proxies' entries appended after it.
        let entries: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .collect();
        for entry in entries.iter().rev() {
            let hop = std::str::from_utf8(entry)
                .ok()
                .and_then(|text| parse_hop(text.trim()));
            match hop {
                // Reported by a trusted hop: believed, and the walk goes on
                // only if this one is a trusted proxy too.
                Some(hop) => {
                    client = hop;
                    if !self.trusts(hop) {
                        break;
                    }
                }
                // Garbage where an address should be: what the last trusted
                // hop said cannot be read, so the walk stops at that hop.
                None => break,
            }
        }
        client
    }
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or with a
/// port (`192.0.2.1:443`, `[2001:db8::1]:443`).
fn parse_hop(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// An IPv4 address mapped into IPv6 (`::ffff:192.0.2.1`, which a
/// dual-stack listener reports) as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The middleware: records each request's [`ClientAddress`] (none when
/// the listener gave no peer, as in tests that call the router directly).
pub async fn record(
    State(trusted): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let client = trusted.client(peer, request.headers());
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    /// A dual-stack listener sees IPv4 clients mapped: the client is the
    /// IPv4 address all the same, with or without a proxy between.
    #[test]
    fn a_mapped_ipv4_peer_is_its_ipv4_address() {
        let t = trusted();
        let none = HeaderMap::new();
        assert_eq!(t.client(ip("::ffff:203.0.113.9"), &none), ip("203.0.113.9"));
        assert_eq!(t.client(ip("::ffff:10.0.0.2"), &none), ip("10.0.0.2"));
        let forwarded = headers(&["::ffff:198.51.100.7"]);
        assert_eq!(
            t.client(ip("::ffff:10.0.0.2"), &forwarded),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_peer_not_trusted_is_the_client_whatever_it_claims() {
        let t = trusted();
        let forged = headers(&["198.51.100.7"]);
        assert_eq!(t.client(ip("203.0.113.9"), &forged), ip("203.0.113.9"));
        // Trusting nobody (the default) believes no header.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &forged), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_hop_not_trusted_is_the_client() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        assert_eq!(
            t.client(peer, &headers(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        // Two proxies; what the client wrote on the left is not believed.
        let chain = headers(&["198.51.100.7, 203.0.113.9, 10.0.0.3"]);
        assert_eq!(t.client(peer, &chain), ip("203.0.113.9"));
        // The same list split over several headers.
        let split = headers(&["198.51.100.7", "203.0.113.9", "10.0.0.3"]);
        assert_eq!(t.client(peer, &split), ip("203.0.113.9"));
        // Ports and IPv6, and an IPv4 peer seen through a dual-stack socket.
        let ported = headers(&["[2001:db8::1]:443, 203.0.113.9:5000"]);
        assert_eq!(t.client(peer, &ported), ip("203.0.113.9"));
        assert_eq!(
            t.client(peer, &headers(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client(ip("::ffff:10.0.0.2"), &headers(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn what_cannot_be_read_stops_the_walk_at_a_trusted_hop() {
        let t = trusted();
        let peer = ip("10.0.0.2");
        // No header: the proxy itself.
        assert_eq!(t.client(peer, &HeaderMap::new()), peer);
        // Garbage from the client's side, left of a real address.
        let garbage = headers(&["not an address, 203.0.113.9"]);
        assert_eq!(t.client(peer, &garbage), ip("203.0.113.9"));
        // Garbage where the proxy's report should be: the proxy.
        assert_eq!(t.client(peer, &headers(&["unknown"])), peer);
        // Every hop a trusted proxy: the leftmost.
        let inside = headers(&["10.1.1.1, 10.0.0.3"]);
        assert_eq!(t.client(peer, &inside), ip("10.1.1.1"));
        // A byte that is not text in what the client wrote spoils only its
        // own entry, not the address its proxy appended after it.
        let mut bytes = HeaderMap::new();
        bytes.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.\xff, 203.0.113.9").unwrap(),
        );
        assert_eq!(t.client(peer, &bytes), ip("203.0.113.9"));
    }
}
