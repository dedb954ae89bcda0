//! Which address a request comes from, given the proxies that are trusted.

use std::net::IpAddr;

use crate::guardrails::IpAllowlist;

/// The source address of a request.
///
/// It is the TCP peer, unless the peer is a trusted proxy. Only then is `X-Forwarded-For`
/// read, from the right, skipping addresses that are themselves trusted proxies; the first
/// one that is not is the client. An entry that does not parse stops the walk at the last
/// trusted hop, since nothing to its left can be believed. An untrusted peer can therefore
/// never move its address with the header.
pub fn resolve<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a str>,
    trusted: &IpAllowlist,
) -> IpAddr {
    let peer = crate::guardrails::canonical_ip(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = forwarded_for
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut current = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            return current;
        };
        current = crate::guardrails::canonical_ip(ip);
        if !trusted.contains(current) {
            return current;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> IpAllowlist {
        IpAllowlist::parse(&["10.0.0.0/8", "::1"]).unwrap()
    }

    #[test]
    fn an_untrusted_peer_cannot_move_its_address() {
        let got = resolve(ip("203.0.113.9"), ["198.51.100.1"].into_iter(), &trusted());
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_forwards_the_right_most_untrusted_address() {
        let got = resolve(
            ip("10.0.0.2"),
            ["198.51.100.1, 203.0.113.7, 10.0.0.5"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("203.0.113.7"));
        let split = resolve(
            ip("10.0.0.2"),
            ["198.51.100.1", "203.0.113.7"].into_iter(),
            &trusted(),
        );
        assert_eq!(split, ip("203.0.113.7"));
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let got = resolve(
            ip("10.0.0.2"),
            ["203.0.113.7, nonsense, 10.0.0.5"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("10.0.0.5"));
    }

    #[test]
    fn mapped_addresses_are_folded() {
        let got = resolve(
            ip("::ffff:10.0.0.2"),
            ["::ffff:203.0.113.7"].into_iter(),
            &trusted(),
        );
        assert_eq!(got, ip("203.0.113.7"));
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = IpAllowlist::default();
        assert_eq!(
            resolve(ip("127.0.0.1"), ["203.0.113.7"].into_iter(), &none),
            ip("127.0.0.1")
        );
    }
}
