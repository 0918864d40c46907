//! Who is calling, by address: the client a request came from, as far as it can be told.
//!
//! A request's TCP peer is its client — unless the peer is a proxy this server trusts (a TLS
//! terminator in front of the gateway; the gateway in front of a service), whose
//! `X-Forwarded-For` then names the client: the rightmost address in it that is not itself a
//! trusted proxy. A header from anyone else is ignored, so a client cannot claim another
//! address. Limits per client (login attempts, sign-ups, live streams, connections) count by
//! this address.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// The header a trusted proxy names the client in.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses and CIDR ranges, comma-separated (`127.0.0.1/32,10.0.0.0/8`); empty: none.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR range"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for entry in value.split(',') {
                match entry.trim().parse() {
                    Ok(address) => chain.push(address),
                    // A chain with anything unreadable in it tells nothing for sure.
                    Err(_) => return peer,
                }
            }
        }
        chain
            .iter()
            .rev()
            .find(|&&address| !self.contains(address))
            .or(chain.first())
            .copied()
            .unwrap_or(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, value.parse().expect("a header value"));
        headers
    }

    fn ip(address: &str) -> IpAddr {
        address.parse().expect("an address")
    }

    #[test]
    fn a_header_from_a_peer_not_trusted_is_ignored() {
        let trusted = TrustedProxies::parse("10.0.0.1").expect("valid");
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &forwarded("198.51.100.1")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_address() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").expect("valid");
        let headers = forwarded("198.51.100.7, 203.0.113.9, 10.0.0.3");
        assert_eq!(trusted.client(ip("127.0.0.1"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_without_a_readable_header_is_its_own_client() {
        let trusted = TrustedProxies::parse("127.0.0.1").expect("valid");
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &forwarded("not-an-address")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn a_list_that_is_not_addresses_is_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/8, nowhere").is_err());
        assert!(TrustedProxies::parse("").expect("valid").0.is_empty());
    }
}
