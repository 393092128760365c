//! IP subnets (`10.0.0.0/8`, `::1/128`, a bare address) for settings that name addresses,
//! and the per-address session counts that `MAX_SESSIONS_PER_IP` checks.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;

/// An IP subnet: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or subnet"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    /// Parses a comma-separated list (empty: none).
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Vec<Cidr> {
        Cidr::parse_list("127.0.0.0/8,::1/128").expect("valid subnets")
    }

    /// Whether `ip` lies in the subnet (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The key sessions are counted under: the IPv4 address, or the IPv6 /64 (one host
/// commonly holds a whole /64).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
        v4 => v4,
    }
}

/// Live sessions per address, for `MAX_SESSIONS_PER_IP`.
#[derive(Default)]
pub struct SessionsPerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl SessionsPerIp {
    /// Counts a new session from `ip` unless that address already has `max` (0: no
    /// limit) and is not in `exempt`; false if refused.
    pub fn admit(&self, ip: IpAddr, max: usize, exempt: &[Cidr]) -> bool {
        let mut counts = self.counts.lock();
        let n = counts.entry(address_key(ip)).or_default();
        if max > 0 && *n >= max && !exempt.iter().any(|c| c.contains(ip)) {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets a session admitted from `ip`.
    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock();
        let key = address_key(ip);
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Sessions counted for `ip`'s address.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .get(&address_key(ip))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_match() {
        let nets = Cidr::parse_list("10.0.0.0/8, ::1, 2001:db8::/32").unwrap();
        assert!(nets[0].contains("10.1.2.3".parse().unwrap()));
        assert!(nets[0].contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!nets[0].contains("11.0.0.1".parse().unwrap()));
        assert!(nets[1].contains("::1".parse().unwrap()));
        assert!(!nets[1].contains("::2".parse().unwrap()));
        assert!(nets[2].contains("2001:db8:1::5".parse().unwrap()));
        assert!(Cidr::parse_list("").unwrap().is_empty());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn sessions_per_address_are_capped_unless_exempt() {
        let s = SessionsPerIp::default();
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(s.admit(a, 2, &[]) && s.admit(a, 2, &[]));
        assert!(
            !s.admit(a, 2, &[]),
            "a third from the same address is refused"
        );
        s.release(a);
        assert!(s.admit(a, 2, &[]), "room again after one left");
        // IPv6 addresses of one /64 count together.
        let (b, c): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::ffff".parse().unwrap(),
        );
        assert!(s.admit(b, 1, &[]));
        assert!(!s.admit(c, 1, &[]));
        // Exempt addresses and no limit.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(s.admit(lo, 1, &Cidr::loopback()));
            assert!(s.admit(a, 0, &[]));
        }
        assert_eq!(s.count(lo), 5);
    }
}
