//! The client's address behind trusted proxies.
//!
//! The per-IP connection limit and `BROKER.PRESENCE`'s `ip` need the
//! client's address. Behind a proxy the TCP peer is the proxy, so every
//! client would share its address (and the default limit of 20). When the
//! peer is one of `trusted_proxies`, the gateway reads `X-Forwarded-For`
//! from the right, skipping trusted addresses, and takes the first one it
//! does not trust: a client can prepend whatever it likes to the header,
//! but not get past the proxies that append the address they saw.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` the gateway believes.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `trusted_proxies` entries: addresses (`10.0.0.7`, `::1`) or
    /// networks (`10.0.0.0/8`).
    ///
    /// # Errors
    /// The first entry that is neither, quoted.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{e:?} is not an IP address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// True when `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or when `peer` is trusted, the
    /// rightmost untrusted address of `forwarded_for` (the values of every
    /// `X-Forwarded-For` header, in order). An unreadable entry ends the
    /// search there, at the last address read.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = canonical(peer);
        if !self.trusts(client) {
            return client;
        }
        let hops = forwarded_for.rev().flat_map(|v| v.rsplit(','));
        for hop in hops {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The name a client address counts under for the per-IP limits
/// (`limits.max_conns_per_ip` in the module, `limits.max_preauth_per_ip`
/// on the node) and that `BROKER.PRESENCE` shows as `ip`: an IPv4 address
/// (also one mapped into IPv6) as itself; an IPv6 address as its network
/// of `ipv6_prefix_len` bits (`2001:db8:1:2::/64`), so that one host, which
/// usually holds a whole /64, cannot walk around the limit by changing its
/// interface identifier. 128 (or more) names each IPv6 address alone.
pub fn limit_key(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) if ipv6_prefix_len >= 128 => v6.to_string(),
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix_len);
            // `checked_shl` is `None` for a shift by 128 (prefix 0): no bits kept.
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{bits}")
        }
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.7`, from a dual-stack
/// listener) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        TrustedProxies::parse(&entries).expect("valid entries")
    }

    #[test]
    fn ipv6_addresses_count_by_their_network() {
        let key = |s: &str, len: u8| limit_key(ip(s), len);
        // One /64: one name, whatever the interface identifier.
        assert_eq!(key("2001:db8:1:2::5", 64), "2001:db8:1:2::/64");
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64),
            "2001:db8:1:2::/64"
        );
        // The next /64 is another name.
        assert_eq!(key("2001:db8:1:3::5", 64), "2001:db8:1:3::/64");
        // Other lengths, bits that are not on a group boundary.
        assert_eq!(key("2001:db8:1:2::5", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8:1:ffff::5", 49), "2001:db8:1:8000::/49");
        assert_eq!(key("2001:db8::1", 127), "2001:db8::/127");
        assert_eq!(key("2001:db8::1", 0), "::/0");
        // 128: each address alone, as the address.
        assert_eq!(key("2001:db8::1", 128), "2001:db8::1");
        assert_eq!(key("::1", 128), "::1");
        // IPv4, and IPv4 mapped into IPv6, count per address.
        assert_eq!(key("198.51.100.7", 64), "198.51.100.7");
        assert_eq!(key("::ffff:198.51.100.7", 64), "198.51.100.7");
        assert_eq!(key("::ffff:198.51.100.7", 0), "198.51.100.7");
        // Every name is a valid module `ip` argument.
        for name in [
            key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 127),
            key("::1", 64),
        ] {
            assert!(broker::names::validate_ip(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn entries_are_addresses_or_networks() {
        let t = proxies(&["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8"]);
        assert!(t.trusts(ip("10.1.2.3")));
        assert!(t.trusts(ip("192.168.1.7")));
        assert!(!t.trusts(ip("192.168.1.8")));
        assert!(t.trusts(ip("::1")));
        assert!(t.trusts(ip("fd12::5")));
        assert!(t.trusts(ip("::ffff:10.0.0.1")), "IPv4-mapped");
        let bad = TrustedProxies::parse(&["10.0.0.0/33".to_string()]);
        assert!(bad.is_err(), "{bad:?}");
        assert!(TrustedProxies::parse(&["proxy.local".to_string()]).is_err());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = proxies(&["10.0.0.0/8"]);
        let got = t.client_ip(ip("203.0.113.9"), ["198.51.100.1"].into_iter());
        assert_eq!(got, ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), ["198.51.100.1"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = proxies(&["10.0.0.0/8"]);
        // The client made up the first entry; the proxies appended the rest.
        let header = "1.2.3.4, 198.51.100.7, 10.0.0.2";
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), [header].into_iter()),
            ip("198.51.100.7")
        );
        // Several headers read as one list, in order.
        let headers = ["1.2.3.4", "198.51.100.8, 10.0.0.3"];
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), headers.into_iter()),
            ip("198.51.100.8")
        );
        // No header: the proxy itself.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), std::iter::empty()),
            ip("10.0.0.1")
        );
        // Garbage stops the walk at the last address read.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), ["198.51.100.9, junk, 10.0.0.4"].into_iter()),
            ip("10.0.0.4")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), ["10.9.9.9, 10.0.0.2"].into_iter()),
            ip("10.9.9.9")
        );
    }
}
