//! One peer server: its host, the features it reported, and what we know from verifying
//! it. Real names (`"host v1.4 s50002 t50001"`, as on IRC, in LocalRPC's `add_peer` and in
//! `server.peers.subscribe` answers) are parsed and written as ElectrumX does.

use super::netaddr;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Most host entries kept from one peer's `server.features`.
pub const MAX_HOSTS: usize = 16;
/// Longest string kept from a peer (versions, genesis hash, source).
const MAX_TEXT: usize = 100;

/// How a peer is dialed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TLS (certificates are not verified, as in ElectrumX).
    Ssl,
    /// Plain TCP.
    Tcp,
}

impl Transport {
    /// ElectrumX's log name.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Ssl => "SSL",
            Transport::Tcp => "TCP",
        }
    }
}

/// Ports a host offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPorts {
    /// Electrum over TCP.
    pub tcp_port: Option<u16>,
    /// Electrum over TLS.
    pub ssl_port: Option<u16>,
}

/// A peer's `server.features`, canonicalised as ElectrumX's `Peer` does.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Features {
    /// Host names and their ports.
    pub hosts: BTreeMap<String, HostPorts>,
    /// Genesis block hash (display hex), if reported.
    pub genesis_hash: Option<String>,
    /// Software version, if known.
    pub server_version: Option<String>,
    /// Oldest protocol version (`"0.0"` when unknown or malformed).
    pub protocol_min: String,
    /// Newest protocol version (`"0.0"` when unknown or malformed).
    pub protocol_max: String,
    /// Pruning limit, when pruning.
    pub pruning: Option<u64>,
}

/// ElectrumX's `_integer`: a JSON integer, or a string holding one.
fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn port(v: Option<&Value>) -> Option<u16> {
    integer(v)
        .filter(|p| (1..65536).contains(p))
        .map(|p| p as u16)
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(|s| s.chars().take(MAX_TEXT).collect())
}

/// ElectrumX's `version_string(protocol_tuple(s))`: `"1.4"` stays, `"1"` becomes `"1.0"`,
/// anything malformed `"0.0"`.
pub fn canonical_version(s: Option<&str>) -> String {
    let parts: Option<Vec<u64>> = s
        .filter(|s| s.len() <= 32)
        .map(|s| s.split('.').map(|p| p.trim().parse().ok()).collect())
        .unwrap_or(None);
    let mut parts = parts.unwrap_or_else(|| vec![0]);
    while parts.len() < 2 {
        parts.push(0);
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

impl Features {
    /// Reads a `server.features` dict; `None` if it is not a dict. At most [`MAX_HOSTS`]
    /// hosts are kept, `keep` (the dialed host) always among them when present.
    pub fn from_json(v: &Value, keep: Option<&str>) -> Option<Features> {
        let obj = v.as_object()?;
        let mut hosts = BTreeMap::new();
        if let Some(Value::Object(h)) = obj.get("hosts") {
            let kept = keep.and_then(|k| h.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)));
            for (name, ports) in kept.into_iter().chain(h.iter()) {
                if hosts.len() >= MAX_HOSTS {
                    break;
                }
                if name.is_empty() || name.len() > netaddr::MAX_HOST_LEN {
                    continue;
                }
                let ports = ports.as_object();
                hosts.entry(name.clone()).or_insert(HostPorts {
                    tcp_port: port(ports.and_then(|p| p.get("tcp_port"))),
                    ssl_port: port(ports.and_then(|p| p.get("ssl_port"))),
                });
            }
        }
        Some(Features {
            hosts,
            genesis_hash: text(obj.get("genesis_hash")),
            server_version: text(obj.get("server_version")),
            protocol_min: canonical_version(obj.get("protocol_min").and_then(Value::as_str)),
            protocol_max: canonical_version(obj.get("protocol_max").and_then(Value::as_str)),
            pruning: integer(obj.get("pruning"))
                .filter(|p| *p > 0)
                .map(|p| p as u64),
        })
    }

    /// The ports of `host` (matched without regard to case).
    pub fn ports_of(&self, host: &str) -> HostPorts {
        self.hosts
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    /// As JSON, with the top-level `tcp_port`/`ssl_port` of `host` ElectrumX adds.
    pub fn to_json(&self, host: &str) -> Value {
        let hosts: Map<String, Value> = self
            .hosts
            .iter()
            .map(|(h, p)| {
                (
                    h.clone(),
                    json!({"tcp_port": p.tcp_port, "ssl_port": p.ssl_port}),
                )
            })
            .collect();
        let own = self.ports_of(host);
        let mut v = json!({
            "hosts": hosts,
            "server_version": self.server_version,
            "protocol_min": self.protocol_min,
            "protocol_max": self.protocol_max,
            "pruning": self.pruning,
            "tcp_port": own.tcp_port,
            "ssl_port": own.ssl_port,
        });
        if let Some(g) = &self.genesis_hash {
            v["genesis_hash"] = json!(g);
        }
        v
    }
}

/// Verification status, as ElectrumX reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Verified within the stale period (3 h).
    Good,
    /// Verified once, but not within the stale period.
    Stale,
    /// Never verified.
    Never,
    /// Failed verification (wrong chain, blacklisted, bad answers, too many in its bucket).
    Bad,
}

impl Status {
    /// ElectrumX's name.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Good => "good",
            Status::Stale => "stale",
            Status::Never => "never",
            Status::Bad => "bad",
        }
    }
}

/// A peer server and our record of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    /// Host name or IP address, as given.
    pub host: String,
    /// What it reported (or what its real name said).
    pub features: Features,
    /// Where we heard of it: `coins.py` style seed list, `env`, `RPC`, a peer, an IP, a nick.
    pub source: String,
    /// The address we last reached it at (not for onion peers).
    pub ip_addr: Option<IpAddr>,
    /// Unix time of the last successful verification (0: never).
    pub last_good: f64,
    /// Unix time of the last attempt (0: never).
    pub last_try: f64,
    /// Attempts since the last success.
    pub try_count: u32,
    /// Failed verification.
    pub bad: bool,
    /// Ports heard of that differ from the registered ones, tried once after them.
    pub other_ports: Vec<(Transport, u16)>,
}

impl Peer {
    /// A peer for `host` with `features`, never tried.
    pub fn new(host: &str, features: Features, source: &str) -> Peer {
        Peer {
            host: host.to_string(),
            features,
            source: source.chars().take(MAX_TEXT).collect(),
            ip_addr: None,
            last_good: 0.0,
            last_try: 0.0,
            try_count: 0,
            bad: false,
            other_ports: Vec::new(),
        }
    }

    /// Parses a real name, `"host [v<protocol>] [p<pruning>] [s[port]] [t[port]]"`; a bare
    /// `s`/`t` means the coin's default port. Like ElectrumX, unknown parts are ignored and
    /// an empty name gives the host `nohost`.
    pub fn from_real_name(
        real_name: &str,
        source: &str,
        default_tcp: u16,
        default_ssl: u16,
    ) -> Peer {
        let mut parts = real_name.split_whitespace();
        let host = parts.next().unwrap_or("nohost");
        let mut ports = HostPorts::default();
        let mut version = None;
        let mut pruning = None;
        for part in parts {
            let mut chars = part.chars();
            let (Some(letter), rest) = (chars.next(), chars.as_str()) else {
                continue;
            };
            match letter {
                's' | 't' => {
                    let p = if rest.is_empty() {
                        Some(if letter == 's' {
                            default_ssl
                        } else {
                            default_tcp
                        })
                    } else {
                        port(Some(&Value::String(rest.to_string())))
                    };
                    if letter == 's' {
                        ports.ssl_port = p;
                    } else {
                        ports.tcp_port = p;
                    }
                }
                'v' => version = Some(canonical_version(Some(rest))),
                'p' => pruning = rest.parse::<u64>().ok().filter(|p| *p > 0),
                _ => {}
            }
        }
        let version = version.unwrap_or_else(|| canonical_version(None));
        let features = Features {
            hosts: BTreeMap::from([(host.to_string(), ports)]),
            genesis_hash: None,
            server_version: None,
            protocol_min: version.clone(),
            protocol_max: version,
            pruning,
        };
        Peer::new(host, features, source)
    }

    /// The peers a `server.features` dict describes (`server.add_peer`), one per host.
    pub fn from_features(features: &Value, source: &str) -> Vec<Peer> {
        let Some(hosts) = features.get("hosts").and_then(Value::as_object) else {
            return Vec::new();
        };
        hosts
            .keys()
            .filter(|h| !h.is_empty() && h.len() <= netaddr::MAX_HOST_LEN)
            .take(MAX_HOSTS)
            .filter_map(|h| Features::from_json(features, Some(h)).map(|f| Peer::new(h, f, source)))
            .collect()
    }

    /// The real name: `host v<max> [p<pruning>] [s<port>] [t<port>]`. Ports are always
    /// written out, as ElectrumX writes them.
    pub fn real_name(&self) -> String {
        let mut parts = vec![
            self.host.clone(),
            format!("v{}", self.features.protocol_max),
        ];
        if let Some(p) = self.features.pruning {
            parts.push(format!("p{p}"));
        }
        if let Some(p) = self.ssl_port() {
            parts.push(format!("s{p}"));
        }
        if let Some(p) = self.tcp_port() {
            parts.push(format!("t{p}"));
        }
        parts.join(" ")
    }

    /// The `[ip_or_host, host, [features…]]` entry of a `server.peers.subscribe` answer.
    pub fn to_tuple(&self) -> Value {
        let name = self.real_name();
        let details: Vec<&str> = name.split(' ').skip(1).collect();
        let first = match self.ip_addr {
            Some(ip) => ip.to_string(),
            None => self.host.clone(),
        };
        json!([first, self.host, details])
    }

    /// ElectrumX's `Peer.serialize()`: host, features, source, ip_addr, last_good,
    /// last_try, try_count.
    pub fn serialize(&self) -> Value {
        json!({
            "host": self.host,
            "features": self.features.to_json(&self.host),
            "source": self.source,
            "ip_addr": self.ip_addr.map(|ip| ip.to_string()),
            "last_good": self.last_good,
            "last_try": self.last_try,
            "try_count": self.try_count,
        })
    }

    /// Reads back what [`Peer::serialize`] wrote; `None` if malformed.
    pub fn deserialize(v: &Value) -> Option<Peer> {
        let host = v.get("host")?.as_str()?;
        if host.is_empty() || host.len() > netaddr::MAX_HOST_LEN {
            return None;
        }
        let features = Features::from_json(v.get("features")?, Some(host))?;
        let mut peer = Peer::new(host, features, v.get("source")?.as_str()?);
        peer.ip_addr = v
            .get("ip_addr")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        peer.last_good = v.get("last_good")?.as_f64()?;
        peer.last_try = v.get("last_try")?.as_f64()?;
        peer.try_count = u32::try_from(v.get("try_count")?.as_u64()?).ok()?;
        Some(peer)
    }

    /// TLS port of this host.
    pub fn ssl_port(&self) -> Option<u16> {
        self.features.ports_of(&self.host).ssl_port
    }

    /// TCP port of this host.
    pub fn tcp_port(&self) -> Option<u16> {
        self.features.ports_of(&self.host).tcp_port
    }

    /// Whether the host is an onion service.
    pub fn is_tor(&self) -> bool {
        netaddr::is_onion(&self.host)
    }

    /// The host as an IP address, if it is one.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        netaddr::ip_literal(&self.host)
    }

    /// ElectrumX's `is_public` (private addresses too with `allow_private`).
    pub fn is_public(&self, allow_private: bool) -> bool {
        netaddr::is_public_host(&self.host, allow_private)
    }

    /// Bucket for the one-verified-peer-per-address rule.
    pub fn internal_bucket(&self) -> String {
        netaddr::internal_bucket(&self.host, self.ip_addr)
    }

    /// Bucket for the two-per-subnet rule of `server.peers.subscribe`.
    pub fn external_bucket(&self) -> String {
        netaddr::external_bucket(&self.host, self.ip_addr)
    }

    /// ElectrumX's `matches`: same host (any case), or one's host is the other's address.
    pub fn matches(&self, other: &Peer) -> bool {
        other.host.eq_ignore_ascii_case(&self.host)
            || self
                .ip_addr
                .is_some_and(|ip| other.ip_literal() == Some(ip))
            || other
                .ip_addr
                .is_some_and(|ip| self.ip_literal() == Some(ip))
    }

    /// The (transport, port) pairs to try, registered ones first, then others heard of
    /// (each of those once).
    pub fn connection_attempts(&mut self) -> Vec<(Transport, u16)> {
        let mut pairs: Vec<(Transport, u16)> = [
            self.ssl_port().map(|p| (Transport::Ssl, p)),
            self.tcp_port().map(|p| (Transport::Tcp, p)),
        ]
        .into_iter()
        .flatten()
        .collect();
        for pair in self.other_ports.drain(..) {
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
        pairs
    }

    /// Remembers ports of `other` that differ from ours (an operator may have changed
    /// them); true if there is something new to try.
    pub fn check_ports(&mut self, other: &Peer) -> bool {
        for (t, mine, theirs) in [
            (Transport::Ssl, self.ssl_port(), other.ssl_port()),
            (Transport::Tcp, self.tcp_port(), other.tcp_port()),
        ] {
            if let Some(p) = theirs
                && theirs != mine
                && !self.other_ports.contains(&(t, p))
            {
                self.other_ports.push((t, p));
            }
        }
        !self.other_ports.is_empty()
    }

    /// Replaces the features with what the peer reported, if it lists our host.
    pub fn update_features(&mut self, features: Features) {
        if features
            .hosts
            .keys()
            .any(|h| h.eq_ignore_ascii_case(&self.host))
        {
            self.features = features;
        }
    }

    /// Status at unix time `now`, with `stale_secs` as the good period.
    pub fn status(&self, now: f64, stale_secs: f64) -> Status {
        if self.bad {
            Status::Bad
        } else if self.last_good > now - stale_secs {
            Status::Good
        } else if self.last_good > 0.0 {
            Status::Stale
        } else {
            Status::Never
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Peer {
        Peer::from_real_name(s, "test", 50001, 50002)
    }

    #[test]
    fn real_names_parse_as_electrumx() {
        let p = parse("electrum.hsmiths.com s t");
        assert_eq!((p.ssl_port(), p.tcp_port()), (Some(50002), Some(50001)));
        assert_eq!(p.features.protocol_max, "0.0");
        assert_eq!(p.real_name(), "electrum.hsmiths.com v0.0 s50002 t50001");
        let p = parse("ecdsa.net s110 t");
        assert_eq!((p.ssl_port(), p.tcp_port()), (Some(110), Some(50001)));
        let p = parse("host v1.4 s50002 t50001");
        assert_eq!(p.features.protocol_min, "1.4");
        assert_eq!(p.real_name(), "host v1.4 s50002 t50001");
        let p = parse("v7gtzf7nua6hdmb2wtqaqioqmesdb4xrlly4zwr7bvayxv2bpg665pqd.onion t");
        assert!(p.is_tor());
        assert_eq!((p.ssl_port(), p.tcp_port()), (None, Some(50001)));
        let p = parse("h.org v1.4.2 p10000 s995 tx t70000 q");
        assert_eq!(p.features.pruning, Some(10000));
        assert_eq!(p.features.protocol_max, "1.4.2");
        assert_eq!(
            p.tcp_port(),
            None,
            "t70000 is no port, and tx was overwritten"
        );
        assert_eq!(p.real_name(), "h.org v1.4.2 p10000 s995");
        assert_eq!(parse("").host, "nohost");
        assert_eq!(parse("h vjunk").features.protocol_max, "0.0");
        assert_eq!(parse("h v1").features.protocol_max, "1.0");
    }

    #[test]
    fn real_names_round_trip() {
        for name in [
            "electrum.hsmiths.com s t",
            "ecdsa.net s110 t",
            "host v1.4 s50002 t50001",
            "explorerzydxu5ecjrkwceayqybizmpjjznk5izmitf2modhcusuqlid.onion t110",
            "5.9.83.108 s",
            "h.org v1.7 p5000 s1",
        ] {
            let p = parse(name);
            let again = parse(&p.real_name());
            assert_eq!(again.host, p.host, "{name}");
            assert_eq!(again.features, p.features, "{name}");
            assert_eq!(again.real_name(), p.real_name(), "{name}");
        }
    }

    #[test]
    fn features_and_tuples() {
        let f = json!({
            "hosts": {"Example.com": {"tcp_port": "50001", "ssl_port": 0}, "x.onion": {"tcp_port": 1}},
            "genesis_hash": "00ab", "server_version": "ElectrumX 2.0.0",
            "protocol_min": "1.4", "protocol_max": "1.7.0", "pruning": null,
        });
        let peers = Peer::from_features(&f, "1.2.3.4");
        assert_eq!(peers.len(), 2);
        let mut p = peers.into_iter().find(|p| p.host == "Example.com").unwrap();
        assert_eq!((p.tcp_port(), p.ssl_port()), (Some(50001), None));
        assert_eq!(p.real_name(), "Example.com v1.7.0 t50001");
        p.ip_addr = Some("1.2.3.4".parse().unwrap());
        assert_eq!(
            p.to_tuple(),
            json!(["1.2.3.4", "Example.com", ["v1.7.0", "t50001"]])
        );
        let back = Peer::deserialize(&p.serialize()).unwrap();
        assert_eq!(back.features, p.features);
        assert_eq!(back.ip_addr, p.ip_addr);
        assert!(Peer::from_features(&json!({"hosts": []}), "x").is_empty());
        assert!(Peer::from_features(&json!("junk"), "x").is_empty());
    }

    #[test]
    fn matching_and_ports() {
        let mut a = parse("a.example.com s t");
        a.ip_addr = Some("1.2.3.4".parse().unwrap());
        let b = parse("1.2.3.4 t");
        let c = parse("A.EXAMPLE.COM t60001");
        assert!(a.matches(&b) && b.matches(&a));
        assert!(a.matches(&c));
        assert!(!b.matches(&parse("1.2.3.5 t")));
        assert!(a.check_ports(&c));
        assert_eq!(
            a.connection_attempts(),
            vec![
                (Transport::Ssl, 50002),
                (Transport::Tcp, 50001),
                (Transport::Tcp, 60001)
            ]
        );
        assert_eq!(
            a.connection_attempts().len(),
            2,
            "other ports are tried once"
        );
    }

    #[test]
    fn status_transitions() {
        let mut p = parse("h.example.com t");
        let now = 1_000_000.0;
        assert_eq!(p.status(now, 10_800.0), Status::Never);
        p.last_good = now - 10.0;
        assert_eq!(p.status(now, 10_800.0), Status::Good);
        assert_eq!(p.status(now + 10_800.0, 10_800.0), Status::Stale);
        p.bad = true;
        assert_eq!(p.status(now, 10_800.0), Status::Bad);
    }
}
