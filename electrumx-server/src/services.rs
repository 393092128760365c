//! `SERVICES` / `REPORT_SERVICES` in ElectrumX's syntax: `tcp://host:port,ssl://…,rpc://`.

use crate::protocol::version::Version;
use std::fmt;

/// A transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Electrum over TCP.
    Tcp,
    /// Electrum over TLS.
    Ssl,
    /// Electrum over WebSocket.
    Ws,
    /// Electrum over secure WebSocket.
    Wss,
    /// The admin RPC port (LocalRPC).
    Rpc,
    /// Prometheus metrics over HTTP (`/metrics`).
    Metrics,
}

impl Protocol {
    fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "ssl" => Protocol::Ssl,
            "ws" => Protocol::Ws,
            "wss" => Protocol::Wss,
            "rpc" => Protocol::Rpc,
            "metrics" => Protocol::Metrics,
            _ => return None,
        })
    }

    /// The scheme name.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Ssl => "ssl",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
            Protocol::Rpc => "rpc",
            Protocol::Metrics => "metrics",
        }
    }
}

/// One service: protocol, host (empty: all interfaces) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Transport.
    pub protocol: Protocol,
    /// Host to bind or report; empty means all interfaces.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.protocol.name(),
                self.host,
                self.port
            )
        } else {
            write!(f, "{}://{}:{}", self.protocol.name(), self.host, self.port)
        }
    }
}

impl Service {
    /// The address to bind: `host:port`, all interfaces for an empty host.
    pub fn bind_addr(&self) -> String {
        match self.host.as_str() {
            "" => format!("0.0.0.0:{}", self.port),
            h if h.contains(':') => format!("[{h}]:{}", self.port),
            h => format!("{h}:{}", self.port),
        }
    }
}

/// Parses a comma-separated list; `var` names the setting in errors. Ports default to the
/// coin's (`tcp`, `ssl`), 50003/50004 (`ws`, `wss`), `localhost:8000` (`rpc`) and
/// `localhost:4224` (`metrics`, electrs' monitoring port).
pub fn parse_services(
    s: &str,
    var: &str,
    tcp_port: u16,
    ssl_port: u16,
) -> Result<Vec<Service>, String> {
    let mut out: Vec<Service> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let (proto, rest) = item
            .split_once("://")
            .ok_or_else(|| format!("{var}: {item:?} lacks a protocol://"))?;
        let protocol = Protocol::parse(proto)
            .ok_or_else(|| format!("{var}: unknown protocol {proto:?} in {item:?}"))?;
        let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
            let (h, after) = stripped
                .split_once(']')
                .ok_or_else(|| format!("{var}: bad IPv6 address in {item:?}"))?;
            (h.to_string(), after.strip_prefix(':').unwrap_or(""))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (rest.to_string(), ""),
            }
        };
        let port = if port.is_empty() {
            match protocol {
                Protocol::Tcp => tcp_port,
                Protocol::Ssl => ssl_port,
                Protocol::Ws => 50003,
                Protocol::Wss => 50004,
                Protocol::Rpc => 8000,
                Protocol::Metrics => 4224,
            }
        } else {
            port.parse()
                .map_err(|_| format!("{var}: bad port {port:?} in {item:?}"))?
        };
        let host = if host.is_empty() && matches!(protocol, Protocol::Rpc | Protocol::Metrics) {
            "localhost".to_string()
        } else {
            host
        };
        let svc = Service {
            protocol,
            host,
            port,
        };
        if out
            .iter()
            .any(|o| o.protocol == svc.protocol && o.host == svc.host && o.port == svc.port)
        {
            return Err(format!("{var}: {svc} given twice"));
        }
        out.push(svc);
    }
    Ok(out)
}

/// The host other servers should reach us at: the first `tcp://` or `ssl://` service of
/// `report` with a clearnet host (not empty, not `.onion`). IRC advertises this host.
pub fn advertised_host(report: &[Service]) -> Option<&str> {
    report
        .iter()
        .filter(|s| matches!(s.protocol, Protocol::Tcp | Protocol::Ssl))
        .map(|s| s.host.as_str())
        .find(|h| !h.is_empty() && !h.to_ascii_lowercase().ends_with(".onion"))
}

/// ElectrumX's "real name" of a server, as advertised on IRC and in peer lists:
/// `"<host> v<protocol_max> s<ssl_port> t<tcp_port>"`, for the [`advertised_host`] of
/// `report` and that host's first `ssl://` and `tcp://` ports (`s` before `t`, each left out
/// when not offered), e.g. `"electrum.example.com v1.7 s50002 t50001"`. `None` when
/// `report` has no clearnet `tcp://` or `ssl://` service.
pub fn real_name(report: &[Service], protocol_max: Version) -> Option<String> {
    let host = advertised_host(report)?;
    let port = |p: Protocol| {
        report
            .iter()
            .find(|s| s.protocol == p && s.host == host)
            .map(|s| s.port)
    };
    let mut name = format!("{host} v{protocol_max}");
    if let Some(p) = port(Protocol::Ssl) {
        name.push_str(&format!(" s{p}"));
    }
    if let Some(p) = port(Protocol::Tcp) {
        name.push_str(&format!(" t{p}"));
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn electrumx_forms() {
        let s = parse_services(
            "tcp://:50001, ssl://example.com:50002,wss://[::1]:50004,rpc://",
            "SERVICES",
            50001,
            50002,
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].bind_addr(), "0.0.0.0:50001");
        assert_eq!(s[1].host, "example.com");
        assert_eq!(s[2].host, "::1");
        assert_eq!(s[2].bind_addr(), "[::1]:50004");
        assert_eq!((s[3].host.as_str(), s[3].port), ("localhost", 8000));
        assert!(
            parse_services("http://x:1", "SERVICES", 1, 2)
                .unwrap_err()
                .contains("SERVICES")
        );
        assert!(parse_services("tcp://x:notaport", "SERVICES", 1, 2).is_err());
        assert!(parse_services("", "SERVICES", 1, 2).unwrap().is_empty());
    }

    #[test]
    fn real_name_in_electrumx_format() {
        let v = Version(1, 7, 0);
        let report = |s: &str| parse_services(s, "REPORT_SERVICES", 50001, 50002).unwrap();
        assert_eq!(
            real_name(
                &report("tcp://e.example.com:50001,ssl://e.example.com:50002"),
                v
            )
            .as_deref(),
            Some("e.example.com v1.7 s50002 t50001")
        );
        assert_eq!(
            real_name(&report("tcp://e.example.com:50001"), Version(1, 4, 2)).as_deref(),
            Some("e.example.com v1.4.2 t50001")
        );
        assert_eq!(
            real_name(&report("ssl://e.example.com"), v).as_deref(),
            Some("e.example.com v1.7 s50002")
        );
        // Onion hosts are skipped; only the chosen host's ports count.
        let mixed = report(
            "tcp://abcdefghij.onion:50001,wss://e.example.com:50004,ssl://e.example.com:443,tcp://other.example.com:1",
        );
        assert_eq!(advertised_host(&mixed), Some("e.example.com"));
        assert_eq!(
            real_name(&mixed, v).as_deref(),
            Some("e.example.com v1.7 s443")
        );
        assert_eq!(
            real_name(&report("tcp://x.onion:1,wss://e.example.com"), v),
            None
        );
        assert_eq!(real_name(&report("tcp://:50001"), v), None);
        assert_eq!(real_name(&[], v), None);
    }
}
