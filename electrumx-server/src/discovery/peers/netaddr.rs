//! Host classification for peers, with ElectrumX's rules: IP literals and host names,
//! valid / public addresses (`Peer.is_valid`, `Peer.is_public`, Python's `ipaddress`
//! notions of private and global), onion hosts, and the anti-sybil buckets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest host name accepted (DNS limit).
pub const MAX_HOST_LEN: usize = 253;

/// The host as an IP address, if it is an IP literal (brackets around IPv6 allowed).
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Whether the host is a Tor onion service.
pub fn is_onion(host: &str) -> bool {
    host.to_ascii_lowercase().ends_with(".onion")
}

/// aiorpcx's `is_valid_hostname`: labels of letters, digits, `-` and `_` (no leading or
/// trailing `-`), at most 63 characters each, 253 in all, and a TLD that is not all digits.
pub fn is_valid_hostname(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    labels.iter().all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    })
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

/// Python's `ip_address(x).is_private`: loopback, RFC 1918, link-local, documentation,
/// benchmarking, reserved and unique-local ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            const NETS: &[([u8; 4], u32)] = &[
                ([0, 0, 0, 0], 8),
                ([10, 0, 0, 0], 8),
                ([127, 0, 0, 0], 8),
                ([169, 254, 0, 0], 16),
                ([172, 16, 0, 0], 12),
                ([192, 0, 0, 0], 29),
                ([192, 0, 0, 170], 31),
                ([192, 0, 2, 0], 24),
                ([192, 168, 0, 0], 16),
                ([198, 18, 0, 0], 15),
                ([198, 51, 100, 0], 24),
                ([203, 0, 113, 0], 24),
                ([240, 0, 0, 0], 4),
                ([255, 255, 255, 255], 32),
            ];
            NETS.iter().any(|(n, p)| in_v4(v4, *n, *p))
        }
        IpAddr::V6(v6) => {
            const NETS: &[([u16; 8], u32)] = &[
                ([0, 0, 0, 0, 0, 0, 0, 1], 128),
                ([0, 0, 0, 0, 0, 0, 0, 0], 128),
                ([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
                ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
                ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
                ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
                ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
                ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
            ];
            NETS.iter().any(|(n, p)| in_v6(v6, *n, *p))
        }
    }
}

/// Python's `is_global`: neither private nor shared address space (100.64/10).
pub fn is_global(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !is_private(ip) && !in_v4(v4, [100, 64, 0, 0], 10),
        IpAddr::V6(_) => !is_private(ip),
    }
}

/// ElectrumX's `Peer.is_valid`: a global or private, non-multicast, specified address, or
/// a valid host name.
pub fn is_valid_host(host: &str) -> bool {
    match ip_literal(host) {
        Some(ip) => (is_global(ip) || is_private(ip)) && !ip.is_multicast() && !ip.is_unspecified(),
        None => is_valid_hostname(host),
    }
}

/// ElectrumX's `Peer.is_public`: valid, not a private address and not `localhost`.
/// `allow_private` (our `PEER_ALLOW_PRIVATE`) accepts private addresses and `localhost` too.
pub fn is_public_host(host: &str, allow_private: bool) -> bool {
    if !is_valid_host(host) {
        return false;
    }
    if allow_private {
        return true;
    }
    match ip_literal(host) {
        Some(ip) => !is_private(ip),
        None => !host.eq_ignore_ascii_case("localhost"),
    }
}

/// The network of `ip` with `prefix` bits, as `addr/prefix` text.
fn network(ip: IpAddr, prefix4: u32, prefix6: u32) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - prefix4).unwrap_or(0);
            format!("{}/{prefix4}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - prefix6).unwrap_or(0);
            format!("{}/{prefix6}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// ElectrumX's internal bucket: one verified peer per IPv4 address or IPv6 /64;
/// `onion` for onion hosts, empty when the address is unknown.
pub fn internal_bucket(host: &str, ip_addr: Option<IpAddr>) -> String {
    if is_onion(host) {
        return "onion".into();
    }
    match ip_addr.map(|ip| ip.to_canonical()) {
        None => String::new(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(ip @ IpAddr::V6(_)) => network(ip, 32, 64),
    }
}

/// ElectrumX's external bucket: at most two peers per IPv4 /16 or IPv6 /56 in a
/// `server.peers.subscribe` answer; `onion` for onion hosts, empty when unknown.
pub fn external_bucket(host: &str, ip_addr: Option<IpAddr>) -> String {
    if is_onion(host) {
        return "onion".into();
    }
    match ip_addr {
        None => String::new(),
        Some(ip) => network(ip, 16, 56),
    }
}

/// The rate-limit bucket of a `server.add_peer` request: a host name's last two labels;
/// for an IP literal its /16 (IPv4) or /56 (IPv6). ElectrumX puts every IP literal in one
/// shared bucket, which lets one caller block all IP-only peers' announcements.
pub fn add_peer_bucket(host: &str) -> String {
    match ip_literal(host) {
        Some(ip) => network(ip, 16, 56),
        None => {
            let lower = host.to_ascii_lowercase();
            let labels: Vec<&str> = lower.split('.').collect();
            labels[labels.len().saturating_sub(2)..].join(".")
        }
    }
}

/// The blacklist's `*.<second-level domain>` form of a host.
pub fn wildcard_domain(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    format!("*.{}", labels[labels.len().saturating_sub(2)..].join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_aiorpcx() {
        assert!(is_valid_hostname("electrum.hsmiths.com"));
        assert!(is_valid_hostname("a_b.example.org."));
        assert!(!is_valid_hostname("-bad.example.com"));
        assert!(!is_valid_hostname("bad-.example.com"));
        assert!(!is_valid_hostname("1.2.3.999"));
        assert!(!is_valid_hostname(""));
        assert!(!is_valid_hostname("a..b"));
        assert!(!is_valid_hostname(&"a".repeat(64)));
        assert!(!is_valid_hostname("sp ace.com"));
    }

    #[test]
    fn public_and_private_addresses() {
        assert!(is_public_host("8.8.8.8", false));
        assert!(!is_public_host("127.0.0.1", false));
        assert!(is_public_host("127.0.0.1", true));
        assert!(!is_public_host("10.1.2.3", false));
        assert!(!is_public_host("localhost", false));
        assert!(is_public_host("localhost", true));
        assert!(!is_public_host("0.0.0.0", true));
        assert!(!is_public_host("224.0.0.1", true));
        assert!(!is_valid_host("100.64.1.1"));
        assert!(is_public_host("2a01:4f8::1", false));
        assert!(!is_public_host("::1", false));
        assert!(!is_public_host("fe80::1", false));
        assert!(is_public_host("example.onion", false));
    }

    #[test]
    fn buckets() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(internal_bucket("h", ip("1.2.3.4")), "1.2.3.4");
        assert_eq!(external_bucket("h", ip("1.2.3.4")), "1.2.0.0/16");
        assert_eq!(
            internal_bucket("h", ip("2a01:4f8:1:2:3::1")),
            "2a01:4f8:1:2::/64"
        );
        assert_eq!(
            external_bucket("h", ip("2a01:4f8:1:2ff::1")),
            "2a01:4f8:1:200::/56"
        );
        assert_eq!(internal_bucket("x.onion", None), "onion");
        assert_eq!(external_bucket("h", None), "");
        assert_eq!(add_peer_bucket("a.b.Example.COM"), "example.com");
        assert_eq!(add_peer_bucket("5.6.7.8"), "5.6.0.0/16");
        assert_eq!(wildcard_domain("x.y.example.com"), "*.example.com");
        assert_eq!(ip_literal("[::1]"), ip("::1"));
        assert_eq!(ip_literal("::ffff:1.2.3.4"), ip("1.2.3.4"));
    }
}
