use std::net::IpAddr;

use ipnet::IpNet;

use super::RuleError;

/// A compiled list of networks; single addresses become /32 or /128 networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist {
    nets: Vec<IpNet>,
}

impl IpAllowlist {
    /// Parses CIDRs and single addresses, IPv4 and IPv6, naming the first that is not one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, RuleError> {
        let nets = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_entry(entry.as_ref()).ok_or_else(|| RuleError::Cidr {
                    index,
                    value: entry.as_ref().to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether the address falls in any network. An IPv4-mapped IPv6 address is compared as
    /// the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_entry(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        // A mapped IPv6 network is stored as its IPv4 equivalent so that it matches mapped
        // and plain peers alike.
        return Some(match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?,
                None => net,
            },
            other => other,
        });
    }
    let ip = canonical(s.parse::<IpAddr>().ok()?);
    Some(IpNet::from(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> IpAllowlist {
        IpAllowlist::parse(entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_and_single_addresses_match_in_both_families() {
        let l = list(&["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]);
        assert!(l.contains(ip("203.0.113.200")));
        assert!(l.contains(ip("198.51.100.7")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(!l.contains(ip("198.51.100.8")));
        assert!(!l.contains(ip("2001:db9::1")));
    }

    #[test]
    fn mapped_ipv6_peers_compare_as_ipv4() {
        let l = list(&["203.0.113.0/24"]);
        assert!(l.contains(ip("::ffff:203.0.113.5")));
        assert!(!l.contains(ip("::ffff:198.51.100.5")));
        let mapped_rule = list(&["::ffff:203.0.113.0/120"]);
        assert!(mapped_rule.contains(ip("203.0.113.5")));
    }

    #[test]
    fn nearly_valid_entries_are_refused() {
        for bad in [
            "203.0.113.0/33",
            "203.0.113",
            "2001:db8::/129",
            "10.0.0.1/",
            "host",
            "",
            "1.2.3.4/-1",
        ] {
            assert!(IpAllowlist::parse(&[bad]).is_err(), "{bad:?}");
        }
    }
}
